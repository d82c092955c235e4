//! accept (TLS): rustls server configuration from PEM files, ALPN for HTTP/2 and HTTP/1.1, optional client
//! certificates (mTLS) whose name becomes the workload principal: the first URI subject-alternative name, else
//! the first DNS one, else the first email one, else the subject's common name; the kind it came from is kept. With
//! a SPIFFE trust domain configured, only the certificate's one `spiffe://<trust domain>/...` URI SAN names it.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::authenticate::request::{ClientCert, SanKind};
use crate::config::TlsConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(String),
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let f = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(f))
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate found"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let f = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| file_err(path, e))?
        .ok_or_else(|| file_err(path, "no PEM private key found"))
}

/// Builds the rustls server configuration.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(ca)? {
                roots.add(c).map_err(|e| file_err(ca, e))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if cfg.require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder
                .with_client_cert_verifier(v.build().map_err(|e| TlsError::Rustls(e.to_string()))?)
        }
    };
    let mut config = builder
        .with_single_cert(load_certs(&cfg.cert)?, load_key(&cfg.key)?)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Completes the TLS handshake of `stream` from `peer` within `limit`; a failed or slow handshake is logged (at
/// debug: it is the caller's problem) and gives `None`. `listener` names the listener in that log line.
pub async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    limit: std::time::Duration,
    listener: &'static str,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, listener, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, listener, "TLS handshake timed out");
            None
        }
    }
}

/// The principal a verified client certificate names, and where in the certificate it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertName {
    /// The principal id.
    pub id: String,
    /// The kind of name it came from.
    pub kind: SanKind,
}

/// What the verified client certificate of a connection says: `None` when it names nobody (the connection then
/// counts as one without a certificate), a refusal when it may not name anybody here (see
/// [`principal_from_cert`]) or its name holds characters a reader cannot see.
pub fn client_cert(
    cert: &CertificateDer<'_>,
    principal_type: &str,
    trust_domain: Option<&str>,
) -> Option<ClientCert> {
    match principal_from_cert(cert, trust_domain) {
        Ok(None) => None,
        Ok(Some(name)) => Some(
            match crate::authenticate::visible_principal_id(name.kind.as_str(), &name.id) {
                Ok(()) => ClientCert::Named {
                    entity: jitgate_engine::EntityRef::new(principal_type, name.id),
                    kind: name.kind,
                },
                Err(why) => ClientCert::Refused(why),
            },
        ),
        Err(why) => Some(ClientCert::Refused(why)),
    }
}

/// The principal a verified client certificate names (see the module docs), `Ok(None)` when it names none, or
/// why it is refused when `trust_domain` is set and its one URI SAN is not a SPIFFE ID in that trust domain.
pub fn principal_from_cert(
    cert: &CertificateDer<'_>,
    trust_domain: Option<&str>,
) -> Result<Option<CertName>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("the client certificate cannot be read: {e}"))?;
    let names: Vec<&GeneralName<'_>> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            return Err(format!(
                "the client certificate's subject alternative names cannot be read: {e}"
            ));
        }
    };
    let uris: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    if let Some(domain) = trust_domain {
        // SPIFFE X.509-SVID, section 2: exactly one URI SAN, the SPIFFE ID.
        return match uris.as_slice() {
            [one] => spiffe_id_in(one, domain)
                .map(|()| {
                    Some(CertName {
                        id: (*one).to_string(),
                        kind: SanKind::Uri,
                    })
                })
                .map_err(|why| format!("the client certificate's URI SAN `{one}` {why}")),
            [] => Err(format!(
                "the client certificate has no URI SAN; a SPIFFE ID in trust domain `{domain}` is required"
            )),
            many => Err(format!(
                "the client certificate has {} URI SANs; a SPIFFE certificate has exactly one",
                many.len()
            )),
        };
    }
    if let Some(u) = uris.first() {
        return Ok(Some(CertName {
            id: (*u).to_string(),
            kind: SanKind::Uri,
        }));
    }
    let first = |pick: fn(&GeneralName<'_>) -> Option<String>| names.iter().find_map(|n| pick(n));
    if let Some(d) = first(|n| match n {
        GeneralName::DNSName(d) => Some((*d).to_string()),
        _ => None,
    }) {
        return Ok(Some(CertName {
            id: d,
            kind: SanKind::Dns,
        }));
    }
    if let Some(e) = first(|n| match n {
        GeneralName::RFC822Name(e) => Some((*e).to_string()),
        _ => None,
    }) {
        return Ok(Some(CertName {
            id: e,
            kind: SanKind::Email,
        }));
    }
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .map(|cn| CertName {
            id: cn.to_string(),
            kind: SanKind::Cn,
        });
    Ok(cn)
}

/// Whether `uri` is a SPIFFE ID in trust domain `domain` (SPIFFE-ID, section 2): `spiffe://<domain>/<path>` with
/// a non-empty path of segments of letters, digits, `.`, `-` and `_`, none empty, `.` or `..`; no query, fragment,
/// port or user info. Says why not.
pub fn spiffe_id_in(uri: &str, domain: &str) -> Result<(), String> {
    let Some(rest) = uri.strip_prefix("spiffe://") else {
        return Err("is not a SPIFFE ID (`spiffe://...`)".to_string());
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host != domain {
        return Err(format!(
            "is in trust domain `{host}`, not the configured `{domain}`"
        ));
    }
    if path.is_empty() {
        return Err("names a trust domain, not a workload (its path is empty)".to_string());
    }
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!(
                "has a path segment `{segment}` a SPIFFE ID may not have"
            ));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(format!(
                "has `{c}` in its path, which a SPIFFE ID may not have"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_are_checked_against_the_trust_domain() {
        assert_eq!(
            spiffe_id_in("spiffe://example.org/ci/runner", "example.org"),
            Ok(())
        );
        for (uri, why) in [
            ("https://example.org/ci", "is not a SPIFFE ID"),
            ("spiffe://evil.org/ci", "is in trust domain `evil.org`"),
            (
                "spiffe://example.org.evil.org/ci",
                "is in trust domain `example.org.evil.org`",
            ),
            (
                "spiffe://user@example.org/ci",
                "is in trust domain `user@example.org`",
            ),
            (
                "spiffe://example.org:443/ci",
                "is in trust domain `example.org:443`",
            ),
            ("spiffe://example.org", "its path is empty"),
            ("spiffe://example.org/", "its path is empty"),
            ("spiffe://example.org/a//b", "path segment ``"),
            ("spiffe://example.org/a/../b", "path segment `..`"),
            ("spiffe://example.org/a?x=1", "has `?`"),
            ("spiffe://example.org/a#f", "has `#`"),
            ("spiffe://example.org/a%2Fb", "has `%`"),
        ] {
            let err = spiffe_id_in(uri, "example.org").err();
            assert!(
                err.as_deref().is_some_and(|e| e.contains(why)),
                "{uri}: {err:?} should say {why}"
            );
        }
    }
}
