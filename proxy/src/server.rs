//! accept: the data-plane listener. tokio accepts, rustls terminates TLS when configured, hyper serves HTTP/1.1
//! and HTTP/2 (ALPN over TLS, prior knowledge on plain TCP). The limits and the graceful shutdown it shares with
//! the admin listener live in [`crate::listener`]; here each connection gets its [`ConnInfo`] and the pipeline.

use std::future::Future;
use std::sync::Arc;

use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::authenticate::request::ClientCert;
use crate::listener::{Accepted, Limits};
use crate::pipeline::ConnInfo;
use crate::state::Proxy;

/// Serves the data plane on `listener` until `shutdown` resolves, then stops accepting and drains in-flight
/// requests for up to the configured grace period.
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let config = &proxy.config;
    let limits = Limits {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
        max_header_bytes: config.max_header_bytes,
        idle_timeout: config.idle_timeout,
        shutdown_grace: config.shutdown_grace,
    };
    let trust_domain = config
        .tls
        .as_ref()
        .and_then(|t| t.spiffe_trust_domain.clone());
    let make_service = move |conn: Accepted<'_>| {
        let client_cert = conn.client_cert.and_then(|c| {
            crate::tls::client_cert(c, &proxy.client_principal_type, trust_domain.as_deref())
        });
        if let Some(ClientCert::Refused(why)) = &client_cert {
            tracing::info!(peer = %conn.peer, reason = %why, "client certificate refused: its requests get 401");
        }
        let info = ConnInfo {
            peer: conn.peer,
            tls: conn.tls,
            client_cert,
        };
        let proxy = proxy.clone();
        service_fn(move |req| {
            let proxy = proxy.clone();
            let info = info.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, info).await) }
        })
    };
    crate::listener::serve("data plane", listener, tls, limits, shutdown, make_service).await;
}
