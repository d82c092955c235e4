//! The accept loop and connection serving that both listeners (the data plane and the admin API) share: connection
//! limit, TLS handshake, the first-bytes bound, HTTP/1.1 and HTTP/2 with their header limits, the idle timeout,
//! backoff on accept errors and the graceful drain. A leaf: it knows nothing of the services it serves.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one listener allows its callers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most concurrent connections; a connection over the limit is closed at once, unanswered.
    pub max_connections: usize,
    /// Time for the TLS handshake, for the first bytes (the protocol choice) and for each HTTP/1.1 request head.
    pub header_timeout: Duration,
    /// Largest request head (bytes).
    pub max_header_bytes: usize,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 keep-alive and HTTP/2 alike).
    pub idle_timeout: Duration,
    /// How long a shutdown waits for the requests in flight.
    pub shutdown_grace: Duration,
}

/// One accepted connection, as the service made for it sees it.
#[derive(Debug, Clone, Copy)]
pub struct Accepted<'a> {
    /// The caller's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The caller's verified certificate (the leaf), over TLS with client certificates.
    pub client_cert: Option<&'a CertificateDer<'static>>,
}

/// Serves `listener` (TLS with `tls`) under `limits` until `shutdown` resolves, with a service made by
/// `make_service` for each connection; then stops accepting and drains the requests in flight for up to
/// `limits.shutdown_grace`. `name` names the listener in logs.
pub async fn serve<M, S, B>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    make_service: M,
) where
    M: Fn(Accepted<'_>) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let builder = Arc::new(builder(&limits));
    let make_service = Arc::new(make_service);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut backoff = AcceptBackoff::default();
    let mut refused = Burst::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                if let Some(failures) = backoff.succeeded() {
                    tracing::warn!(listener = name, failures, "accepting connections again");
                }
                a
            }
            Err(e) if is_connection_error(&e) => {
                // One caller's connection went before we took it: nothing is wrong with the listener.
                tracing::debug!(listener = name, error = %e, "accept: connection already gone");
                continue;
            }
            Err(e) => {
                // Out of file descriptors or memory: retrying at once only spins (and logs) until something
                // frees up, starving everything else on the runtime.
                let (wait, first) = backoff.failed();
                if first {
                    tracing::warn!(
                        listener = name,
                        error = %e,
                        "accept failed; backing off (further failures are counted, then reported once)"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        // Over the connection limit: close at once rather than queue work we cannot do.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if refused.hit() {
                tracing::warn!(
                    listener = name,
                    %peer,
                    max_connections = limits.max_connections,
                    "connection limit reached; closing new connections (counted, then reported once)"
                );
            }
            continue;
        };
        if let Some(closed) = refused.end() {
            tracing::warn!(listener = name, closed, "below the connection limit again");
        }
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let make_service = make_service.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let within = limits.header_timeout;
            match tls {
                None => {
                    let service = make_service(Accepted {
                        peer,
                        tls: false,
                        client_cert: None,
                    });
                    let io = FirstBytes::new(stream, within);
                    serve_connection(&builder, io, service, &limits, &stop, peer, name).await;
                }
                Some(acceptor) => {
                    let Some(stream) =
                        crate::tls::handshake(&acceptor, stream, peer, within, name).await
                    else {
                        return;
                    };
                    let service = make_service(Accepted {
                        peer,
                        tls: true,
                        client_cert: stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first()),
                    });
                    let io = FirstBytes::new(stream, within);
                    serve_connection(&builder, io, service, &limits, &stop, peer, name).await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!(
        listener = name,
        "shutting down: draining in-flight requests"
    );
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "shutdown grace period passed with requests still in flight"
        );
    }
}

/// The HTTP/1.1 and HTTP/2 settings of a listener.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Pings find a peer that vanished without a FIN while a request is in flight, which the idle watchdog
        // (below) leaves alone: an unanswered ping ends the connection.
        .keep_alive_interval(limits.idle_timeout)
        .keep_alive_timeout(limits.header_timeout);
    builder
}

/// Serves one connection until it ends, it has been idle for `limits.idle_timeout`, or `stop` (shutdown) fires.
///
/// hyper has no idle timeout for HTTP/2 (and HTTP/1.1's `header_read_timeout` is no idle timeout either), so the
/// connection's requests are counted from the head's arrival until their response body is done or dropped
/// ([`Activity`]); with none in flight for the idle timeout, the connection is shut down gracefully: HTTP/2 sends
/// GOAWAY and HTTP/1.1 closes. A peer that does not let it end within another `header_timeout` without a request
/// in flight is dropped.
async fn serve_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    limits: &Limits,
    stop: &CancellationToken,
    peer: SocketAddr,
    name: &'static str,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let activity = Activity::default();
    let service = Counted {
        inner: service,
        activity: activity.clone(),
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = tokio::select! {
        r = conn.as_mut() => return ended(r, peer, name),
        () = activity.idle_for(limits.idle_timeout) => true,
        () = stop.cancelled() => false,
    };
    conn.as_mut().graceful_shutdown();
    if !idle {
        // Shutdown: the drain's own deadline bounds the wait.
        return ended(conn.await, peer, name);
    }
    tracing::debug!(listener = name, %peer, "closing an idle connection");
    tokio::select! {
        r = conn.as_mut() => ended(r, peer, name),
        () = activity.idle_for(limits.header_timeout) => {
            tracing::debug!(listener = name, %peer, "an idle connection did not close in time; dropped");
        }
    }
}

fn ended(r: Result<(), BoxError>, peer: SocketAddr, name: &'static str) {
    if let Err(e) = r {
        tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
    }
}

/// Whether an accept error concerns only the connection being accepted (the caller went away first), not the
/// listener or the process.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

/// A run of like events, logged once: the first, then how many there were when the run ends.
#[derive(Debug, Default)]
pub(crate) struct Burst {
    count: u64,
}

impl Burst {
    /// Counts one event; true for the first of a run (the one to log).
    pub(crate) fn hit(&mut self) -> bool {
        self.count += 1;
        self.count == 1
    }

    /// Ends the run: how many events it had, if it had any.
    pub(crate) fn end(&mut self) -> Option<u64> {
        (self.count > 0).then(|| std::mem::take(&mut self.count))
    }
}

/// The first wait after a failed accept.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(5);
/// The longest wait between failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// When to retry a failing accept: [`ACCEPT_BACKOFF_FIRST`], doubling up to [`ACCEPT_BACKOFF_MAX`], back to the
/// start after a success; the failures of one run are logged once.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    /// The wait after the next failure; zero before the first.
    next: Duration,
    failures: Burst,
}

impl AcceptBackoff {
    /// An accept failed: how long to wait before the next one, and whether this failure is the first of its run
    /// (the one to log).
    pub(crate) fn failed(&mut self) -> (Duration, bool) {
        let wait = if self.next.is_zero() {
            ACCEPT_BACKOFF_FIRST
        } else {
            self.next
        };
        self.next = wait.saturating_mul(2).min(ACCEPT_BACKOFF_MAX);
        (wait, self.failures.hit())
    }

    /// An accept succeeded: the number of failures before it, if it ends a run of them.
    pub(crate) fn succeeded(&mut self) -> Option<u64> {
        self.next = Duration::ZERO;
        self.failures.end()
    }
}

/// The number of requests a connection has in flight, and a way to wait for it to be idle.
///
/// A request's start and end are a few atomic operations and a clock read: no task is woken and no timer is set per
/// request. The watchdog ([`Activity::idle_for`]) sleeps until a period after the last change it knows of and looks
/// again then; it wakes once a period at most, however many requests the connection serves.
#[derive(Debug, Clone, Default)]
struct Activity(Arc<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    /// Requests in flight.
    in_flight: AtomicUsize,
    /// Bumped at each start and end, after `last` is stored: a watchdog that finds it unchanged knows that nothing
    /// started or ended since it last looked.
    changes: AtomicU64,
    /// When the latest start or end happened, in nanoseconds since `epoch`.
    last: AtomicU64,
    epoch: Instant,
}

impl Default for ActivityState {
    fn default() -> Self {
        ActivityState {
            in_flight: AtomicUsize::new(0),
            changes: AtomicU64::new(0),
            last: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl ActivityState {
    /// A request started or ended (after `in_flight` is updated).
    fn changed(&self) {
        let since = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(since, Ordering::Release);
        self.changes.fetch_add(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// A request began; it ends when the guard is dropped.
    fn begin(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        self.0.changed();
        InFlight(self.0.clone())
    }

    /// Resolves once no request has been in flight for `period` (any request's start or end restarts it).
    async fn idle_for(&self, period: Duration) {
        let state = &self.0;
        let mut seen = state.changes.load(Ordering::Acquire);
        let mut since = Instant::now();
        loop {
            tokio::time::sleep_until((since + period).into()).await;
            let now = state.changes.load(Ordering::Acquire);
            if now != seen {
                // Something started or ended meanwhile: a whole period from the latest change.
                seen = now;
                since = state.epoch + Duration::from_nanos(state.last.load(Ordering::Acquire));
                continue;
            }
            if state.in_flight.load(Ordering::Acquire) == 0
                && state.changes.load(Ordering::Acquire) == seen
            {
                return;
            }
            // A request has been in flight for the whole period (a slow upstream, a long stream): look again a
            // period from now.
            since = Instant::now();
        }
    }
}

/// One request in flight, from its head to the end (or drop) of its response body.
#[derive(Debug)]
struct InFlight(Arc<ActivityState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed();
    }
}

/// A service whose requests are counted in the connection's [`Activity`].
struct Counted<S> {
    inner: S,
    activity: Activity,
}

impl<S, B> Service<Request<Incoming>> for Counted<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<CountedBody<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        // Boxed where it is made: the request's future is large, and moving it by value into the async block
        // below (and that block into its box) copied it twice per request (callgrind: ~14k instructions of memcpy).
        let response = Box::pin(self.inner.call(req));
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| CountedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request counted as in flight until it is done or dropped.
struct CountedBody<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_logs_once_per_burst_and_resets_on_success() {
        let mut b = AcceptBackoff::default();
        // A run of 10 failures (EMFILE, say): 5 ms doubling, capped at 1 s; only the first is logged.
        let run: Vec<_> = (0..10).map(|_| b.failed()).collect();
        let waits: Vec<_> = run.iter().map(|(w, _)| *w).collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000].map(ms)
        );
        let logged: Vec<_> = run.iter().map(|(_, log)| *log).collect();
        assert_eq!(logged, [[true].as_slice(), &[false; 9]].concat());
        // The success that ends it reports the count once; a success without failures reports nothing.
        assert_eq!(b.succeeded(), Some(10));
        assert_eq!(b.succeeded(), None);
        // The next run starts again from 5 ms, and is logged again.
        assert_eq!(b.failed(), (ms(5), true));
        assert_eq!(b.failed(), (ms(10), false));
        assert_eq!(b.succeeded(), Some(2));
    }

    #[test]
    fn only_errors_of_the_listener_back_off() {
        use std::io::{Error, ErrorKind};
        for kind in [ErrorKind::ConnectionAborted, ErrorKind::ConnectionReset] {
            assert!(is_connection_error(&Error::from(kind)));
        }
        // EMFILE and ENFILE: the process or the system is out of file descriptors.
        for errno in [24, 23] {
            assert!(!is_connection_error(&Error::from_raw_os_error(errno)));
        }
    }

    #[tokio::test]
    async fn a_connection_is_idle_only_with_no_request_in_flight() {
        let activity = Activity::default();
        let busy = activity.begin();
        let idle = activity.idle_for(ms(50));
        tokio::pin!(idle);
        // A request in flight for far longer than the idle timeout keeps the connection busy.
        assert!(
            tokio::time::timeout(ms(300), idle.as_mut()).await.is_err(),
            "idle while a request was in flight"
        );
        // Idle a whole period after the request's end, not after the watchdog last looked.
        let start = std::time::Instant::now();
        drop(busy);
        tokio::time::timeout(Duration::from_secs(10), idle)
            .await
            .expect("idle once the request ended");
        assert!(start.elapsed() >= ms(50));
    }

    #[tokio::test]
    async fn every_request_start_and_end_restarts_the_idle_period() {
        let activity = Activity::default();
        let idle = activity.idle_for(ms(500));
        tokio::pin!(idle);
        // A short request, then 100 ms with none in flight, eight times: never 500 ms since the last end, so never
        // idle meanwhile, though the watchdog started 800 ms ago (more than a period).
        let start = std::time::Instant::now();
        let mut last_end = start;
        for i in 0..8 {
            last_end = std::time::Instant::now();
            drop(activity.begin());
            assert!(
                tokio::time::timeout(ms(100), idle.as_mut()).await.is_err(),
                "idle 100 ms after request {i} ended, with a 500 ms period"
            );
        }
        tokio::time::timeout(Duration::from_secs(10), idle)
            .await
            .expect("idle once the requests stopped");
        assert!(last_end.elapsed() >= ms(500));
        assert!(start.elapsed() >= ms(1200));
    }
}
