//! Connection hygiene: no peer can hold a connection, a descriptor or the shutdown forever.
//!
//! - The accept loop (`accept`) backs off when accepting fails (out of descriptors, say)
//!   and logs it once a second, instead of spinning.
//! - Every accepted connection is a `GuardedIo`. Until its first gRPC request arrives it
//!   has [`Limits::handshake`] to get there (a bare TCP connection, a half-open TLS or HTTP/2
//!   handshake are closed then); afterwards, once no request is in flight for
//!   [`Limits::idle`], it is closed. A stream in progress (Follow, ExportTx) is a request in
//!   flight: it is never idle; a frozen peer on it is found by HTTP/2 keepalive pings.
//! - `ConnLayer` marks the requests: which connection they came on, when they end.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long connections may take and may idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accept to the first request (TCP, TLS and HTTP/2 handshakes included).
    pub handshake: Duration,
    /// With no request in flight.
    pub idle: Duration,
}

/// Default [`Limits::handshake`].
pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default [`Limits::idle`].
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake: HANDSHAKE_TIMEOUT_DEFAULT,
            idle: IDLE_TIMEOUT_DEFAULT,
        }
    }
}

/// What a connection's requests tell its guard.
#[derive(Debug)]
pub(crate) struct ConnState {
    accepted: Instant,
    first_request: AtomicBool,
    in_flight: AtomicUsize,
    last_done: Mutex<Instant>,
}

impl ConnState {
    /// When the connection is closed if nothing changes, if ever.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if !self.first_request.load(Ordering::Acquire) {
            return Some(self.accepted + limits.handshake);
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let done = *self
            .last_done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(done + limits.idle)
    }
}

/// The connection a request came on (in its extensions, with TLS or without).
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub peer: Option<SocketAddr>,
    state: Arc<ConnState>,
}

/// An accepted TCP connection that closes itself at its deadline.
pub(crate) struct GuardedIo {
    inner: tokio::net::TcpStream,
    info: ConnInfo,
    limits: Limits,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl GuardedIo {
    fn new(inner: tokio::net::TcpStream, limits: Limits) -> GuardedIo {
        let now = Instant::now();
        let info = ConnInfo {
            peer: inner.peer_addr().ok(),
            state: Arc::new(ConnState {
                accepted: now,
                first_request: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                last_done: Mutex::new(now),
            }),
        };
        GuardedIo {
            inner,
            info,
            limits,
            timer: Box::pin(tokio::time::sleep(limits.handshake)),
        }
    }

    /// `Err` once the deadline has passed; else arms the timer so that the task wakes at it.
    fn check(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        let Some(deadline) = self.info.state.deadline(&self.limits) else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            let what = if self.info.state.first_request.load(Ordering::Acquire) {
                "idle connection closed"
            } else {
                "no request within the handshake deadline"
            };
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, what));
        }
        self.timer
            .as_mut()
            .reset(tokio::time::Instant::from_std(deadline));
        // Registers the waker; it fires at the deadline, and the next poll closes.
        let _ = self.timer.as_mut().poll(cx);
        Ok(())
    }
}

use std::future::Future as _;

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => match self.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            ready => ready,
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => match self.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            ready => ready,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => match self.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for GuardedIo {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// Accepts connections on `listener` into the returned stream until it is dropped, with
/// Nagle's algorithm off (a proof answer is written in more than one piece, and waiting for
/// the peer's delayed ACK added 40 ms to it). Accept errors (too many open files, say) are
/// logged at most once a second and backed off from 10 ms up to 1 s.
pub(crate) fn accept(
    listener: tokio::net::TcpListener,
    limits: Limits,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<GuardedIo>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(10);
        let mut last_log: Option<Instant> = None;
        let mut failures = 0u64;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            match accepted {
                Ok((conn, _)) => {
                    backoff = Duration::from_millis(10);
                    if let Err(e) = conn.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY");
                    }
                    if tx.send(Ok(GuardedIo::new(conn, limits))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    failures += 1;
                    if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, failures, retry_in_ms = backoff.as_millis() as u64, "cannot accept connections");
                        last_log = Some(Instant::now());
                        failures = 0;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Marks each request on its connection: the first one ends the handshake deadline, and the
/// connection idles only while none is in flight (a response counts until its body ends).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConnLayer;

impl<S> tower_layer::Layer<S> for ConnLayer {
    type Service = ConnService<S>;
    fn layer(&self, inner: S) -> ConnService<S> {
        ConnService { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ConnService<S> {
    inner: S,
}

/// Ends a request on its connection when dropped.
struct InFlight(Option<Arc<ConnState>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            *s.last_done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
            s.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A response body that holds its request in flight until it ends.
pub(crate) struct GuardedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for ConnService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body + Unpin,
{
    type Response = http::Response<GuardedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let state = req.extensions().get::<ConnInfo>().map(|i| i.state.clone());
        if let Some(s) = &state {
            s.in_flight.fetch_add(1, Ordering::AcqRel);
            s.first_request.store(true, Ordering::Release);
        }
        let guard = InFlight(state);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| GuardedBody {
                inner,
                _in_flight: guard,
            }))
        })
    }
}

/// The peer address of the connection a request came on.
pub(crate) fn peer_of<T>(req: &tonic::Request<T>) -> String {
    req.extensions()
        .get::<ConnInfo>()
        .and_then(|i| i.peer)
        .map(|a| a.to_string())
        .unwrap_or_default()
}
