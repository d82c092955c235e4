//! The authenticate stage of a request: a bearer token, else a verified client certificate, else nobody (fine for
//! public routes only, which `map` decides). A token bound to a grant is refused once that grant is not active.

use http::{Request, header};
use jitgate_engine::EntityRef;

use super::{Authenticator, Identity};
use crate::metrics::Counter;
use crate::respond::Refusal;
use crate::trace::Trace;

/// What the stage needs besides the request.
#[derive(Debug)]
pub struct Credentials<'a, G, A> {
    /// The principal of the connection's verified client certificate (mTLS), if any.
    pub client_cert: Option<&'a EntityRef>,
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
    let identity: Option<Identity> = match (header, creds.client_cert) {
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
        (None, Some(cert)) => Some(certificate_identity(
            cert.clone(),
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

/// The identity of a verified client certificate (mTLS): no claims, groups from configuration.
fn certificate_identity(principal: EntityRef, groups: Vec<String>) -> Identity {
    Identity {
        principal,
        groups,
        claims: Default::default(),
        issuer: "mtls".into(),
        expires_at: i64::MAX,
        grant_id: None,
    }
}
