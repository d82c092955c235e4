//! The authenticate stage of a request: a bearer token, else a verified client certificate, else nobody (fine for
//! public routes only, which `map` decides). A token bound to a grant is refused once that grant is not active.

use http::{Request, header};
use jitgate_engine::EntityRef;

use super::{Authenticator, Identity};
use crate::metrics::Counter;
use crate::respond::Refusal;
use crate::trace::Trace;

/// Which part of a client certificate named its principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    /// A URI subject-alternative name (a SPIFFE ID, say).
    Uri,
    /// A DNS subject-alternative name.
    Dns,
    /// An email (RFC 822) subject-alternative name.
    Email,
    /// The subject's common name (the certificate has no SAN of the other kinds).
    Cn,
}

impl SanKind {
    /// The name recorded in the identity's claims and the decision record (`uri`, `dns`, `email`, `cn`).
    pub fn as_str(self) -> &'static str {
        match self {
            SanKind::Uri => "uri",
            SanKind::Dns => "dns",
            SanKind::Email => "email",
            SanKind::Cn => "cn",
        }
    }
}

/// What a connection's verified client certificate says about its caller (see `crate::tls::client_cert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// The certificate names this principal, found in a name of this kind.
    Named {
        /// The principal (of the listener's `client_principal_type`).
        entity: EntityRef,
        /// Where in the certificate its id was found.
        kind: SanKind,
    },
    /// The certificate may not name a principal here (a configured SPIFFE trust domain it is not in, a name a
    /// reader cannot see): every request on the connection is refused (401), whatever else it carries.
    Refused(String),
}

/// What the stage needs besides the request.
#[derive(Debug)]
pub struct Credentials<'a, G, A> {
    /// What the connection's verified client certificate (mTLS) says, if any.
    pub client_cert: Option<&'a ClientCert>,
    /// The configured groups of a certificate principal.
    pub cert_groups: G,
    /// Whether a principal's grant (by id) is active now.
    pub grant_active: A,
    /// Counted on every failure.
    pub failures: &'a Counter,
    /// Now (Unix seconds).
    pub now: i64,
}

/// The authenticate stage: the caller's identity, `None` when the request carries no credential.
#[inline]
pub async fn authenticate<B, G, A>(
    auth: &Authenticator,
    req: &Request<B>,
    creds: Credentials<'_, G, A>,
    trace: &mut Trace,
) -> Result<Option<Identity>, Refusal>
where
    G: FnOnce(&EntityRef) -> Vec<String>,
    A: FnOnce(&EntityRef, &str) -> bool,
{
    let header = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            creds.failures.inc();
            trace.error =
                Some("authentication failed: the Authorization header is not text".into());
            Refusal::Unauthenticated {
                message: "the Authorization header is not readable text".into(),
                challenge: "Bearer realm=\"jitgate\", error=\"invalid_request\"".into(),
            }
        })?),
    };
    // A certificate that may not name anybody here (outside the SPIFFE trust domain) refuses its connection's
    // requests whatever else they carry: a bearer token does not make a wrong workload right.
    let client_cert = match creds.client_cert {
        Some(ClientCert::Refused(why)) => {
            creds.failures.inc();
            trace.error = Some(format!("authentication failed: {why}"));
            return Err(Refusal::Unauthenticated {
                message: "the client certificate is not accepted here".into(),
                challenge: "Bearer realm=\"jitgate\"".into(),
            });
        }
        Some(ClientCert::Named { entity, kind }) => Some((entity, *kind)),
        None => None,
    };
    let identity: Option<Identity> = match (header, client_cert) {
        (Some(h), _) => match auth.authenticate(Some(h), creds.now).await {
            Ok(id) => Some(id),
            Err(e) => {
                creds.failures.inc();
                trace.error = Some(format!("authentication failed: {e}"));
                return Err(Refusal::Unauthenticated {
                    message: e.public_message().to_string(),
                    challenge: e.www_authenticate(),
                });
            }
        },
        (None, Some((cert, kind))) => Some(certificate_identity(
            cert.clone(),
            kind,
            (creds.cert_groups)(cert),
        )),
        (None, None) => None,
    };
    if let Some(id) = &identity {
        trace.principal = Some(id.principal.to_string());
        // A grant-bound token is useless once its grant is not active (revoked, expired, used up).
        if let Some(gid) = &id.grant_id {
            if !(creds.grant_active)(&id.principal, gid) {
                creds.failures.inc();
                trace.error = Some(format!("token bound to grant {gid}, which is not active"));
                return Err(Refusal::Unauthenticated {
                    message: "the token's grant is no longer active".into(),
                    challenge: "Bearer realm=\"jitgate\", error=\"invalid_token\"".into(),
                });
            }
        }
    }
    Ok(identity)
}

/// The claim of a certificate identity that says which kind of name in the certificate named it (`uri`, `dns`,
/// `email`, `cn`): seen by policies as `context.claims.san_kind` and recorded in the decision record.
pub const SAN_KIND_CLAIM: &str = "san_kind";

/// The identity of a verified client certificate (mTLS): groups from configuration, and one claim, the kind of
/// name it came from ([`SAN_KIND_CLAIM`]).
fn certificate_identity(principal: EntityRef, kind: SanKind, groups: Vec<String>) -> Identity {
    let mut claims = serde_json::Map::new();
    claims.insert(SAN_KIND_CLAIM.into(), kind.as_str().into());
    Identity {
        principal,
        groups,
        group_type: None,
        attrs: Default::default(),
        claims,
        issuer: "mtls".into(),
        expires_at: i64::MAX,
        grant_id: None,
    }
}
