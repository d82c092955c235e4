//! accept: the data-plane listener. tokio accepts, rustls terminates TLS when configured, hyper serves HTTP/1.1
//! and HTTP/2 (ALPN over TLS, prior knowledge on plain TCP). Limits and graceful shutdown live here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use jitgate_engine::EntityRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

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
    let config = proxy.config.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(config.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over the connection limit: close at once rather than queue work we cannot do.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let config = config.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let info = ConnInfo {
                        peer,
                        tls: false,
                        client_cert: None,
                    };
                    let svc = service_fn(move |req| {
                        let proxy = proxy.clone();
                        let info = info.clone();
                        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, info).await) }
                    });
                    let stream = FirstBytes::new(stream, config.header_timeout);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                Some(acceptor) => {
                    let Some(tls_stream) = crate::tls::handshake(
                        &acceptor,
                        stream,
                        peer,
                        proxy.config.header_timeout,
                        "data plane",
                    )
                    .await
                    else {
                        return;
                    };
                    let client_cert = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(crate::tls::principal_from_cert)
                        .map(|id| EntityRef::new(proxy.client_principal_type.clone(), id));
                    let info = ConnInfo {
                        peer,
                        tls: true,
                        client_cert,
                    };
                    let svc = service_fn(move |req| {
                        let proxy = proxy.clone();
                        let info = info.clone();
                        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, info).await) }
                    });
                    let tls_stream = FirstBytes::new(tls_stream, config.header_timeout);
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period passed with requests still in flight");
    }
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4), which hyper's protocol detection reads up to.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection that must show its protocol before a deadline: its first bytes must differ from the HTTP/2
/// preface (HTTP/1.1) or be the whole of it. hyper's `header_read_timeout` only starts once HTTP/1.1 is chosen,
/// and choosing reads without a timeout: without this, a client that connects and sends nothing (or
/// `PRI * HTTP/2.0` and no more) would hold one of `max_connections` for good.
struct FirstBytes<S> {
    inner: S,
    left: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FirstBytes<S> {
    fn new(inner: S, within: Duration) -> Self {
        FirstBytes {
            inner,
            left: H2_PREFACE.len(),
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if this.deadline.is_some() {
                    // Done once the whole preface is in, or as soon as the bytes cannot be it: hyper then serves
                    // HTTP/1.1, whose own header timeout governs the rest of the connection.
                    let at = H2_PREFACE.len() - this.left;
                    for (i, b) in buf.filled().iter().skip(before).enumerate() {
                        if H2_PREFACE.get(at + i) != Some(b) {
                            this.left = 0;
                            break;
                        }
                        this.left = this.left.saturating_sub(1);
                    }
                    if this.left == 0 {
                        this.deadline = None;
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sent too little within the header timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
