//! accept (TLS): rustls server configuration from PEM files, ALPN for HTTP/2 and HTTP/1.1, optional client
//! certificates (mTLS) whose first URI or DNS subject-alternative name becomes the workload principal.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

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

/// The principal id from a verified client certificate: its first URI SAN, else its first DNS SAN.
pub fn principal_from_cert(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok().flatten()?;
    let mut dns = None;
    for name in &san.value.general_names {
        match name {
            x509_parser::extensions::GeneralName::URI(u) => return Some((*u).to_string()),
            x509_parser::extensions::GeneralName::DNSName(d) if dns.is_none() => {
                dns = Some((*d).to_string())
            }
            _ => {}
        }
    }
    dns
}
