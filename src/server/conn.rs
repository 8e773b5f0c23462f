//! Serving connections with bounded resources: the accept loop with its cap on open
//! connections, and each connection's read deadlines.
//!
//! * **Cap.** Each accepted TCP connection takes a permit from a semaphore of
//!   `max_connections` and holds it until its socket closes — an HTTP connection when hyper
//!   drops it, a WebSocket when its task ends. With every permit taken the loop stops
//!   accepting: new connections wait in the kernel's listen backlog and are served, in order,
//!   as slots free.
//! * **Header read timeout.** A request's head (request line and headers) must be complete
//!   within `header_read_timeout` of the connection's opening (first request) or of its first
//!   byte (later requests on a keep-alive connection); a trickle of bytes does not extend it.
//!   Past it the connection is closed without an answer.
//! * **Body read timeout.** A request's body must be complete within `body_read_timeout` of its
//!   head; past it the request is answered HTTP 408 with `Connection: close`.
//! * **Idle timeout.** A keep-alive connection between requests is closed after
//!   `idle_timeout` without a byte from the client. (WebSockets keep their own idle clock, by
//!   frames: see `ws.rs`.)
//!
//! Each connection's task polls hyper's connection and then a [`Watchdog`] holding the
//! deadline of the connection's current phase, which the connection's [`ConnService`] moves (a
//! request arrives, its answer is ready, it upgraded to a WebSocket) and its socket
//! ([`Counted`]) advances (the first byte after an idle period starts the header deadline).
//! Both change only while hyper's connection is polled, and the watchdog is polled right after
//! it, so it always counts down to the current deadline; past it, the task drops the connection.
//! hyper's own `header_read_timeout` is off: it counts from the end of the last answer, so it
//! would cut idle keep-alive connections at the header timeout.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};

use super::direct::{ConnBody, DirectRpc};

/// The connection limits of [`super::ServerConfig`], validated.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) header_read: Duration,
    pub(super) body_read: Duration,
    pub(super) idle: Duration,
    pub(super) max_connections: u32,
}

/// How often, at most, a saturated accept loop says so in the log.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// How long the accept loop pauses after an error that is not about one connection (e.g. the
/// process is out of file descriptors), as axum's loop does.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Accepts and serves connections until `shutdown` completes; then stops accepting, lets each
/// HTTP connection finish the request in flight, tells WebSockets to close (`closing`), and
/// returns once every connection has closed.
pub(super) async fn serve(
    listener: TcpListener,
    app: super::App,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let super::App {
        router,
        direct,
        closing,
    } = app;
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let (stop, stopping) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    // Our deadlines replace hyper's (see the module's documentation).
    http.header_read_timeout(None).keep_alive(true);
    let http = Arc::new(http);
    let service = TowerToHyperService::new(router);
    let mut last_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached: new connections wait in the listen backlog \
                         until one closes"
                    );
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break, // never closed
                    },
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_about_one_connection(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        // Answers are small and go out at once: no Nagle delay on them.
        let _ = tcp.set_nodelay(true);
        let shared = Arc::new(Shared::default());
        let io = TokioIo::new(Counted {
            tcp,
            shared: shared.clone(),
            _permit: permit,
        });
        let service = ConnService {
            inner: service.clone(),
            direct: direct.clone(),
            shared: shared.clone(),
            body_read: limits.body_read,
        };
        let watchdog = Watchdog::new(shared, limits);
        tokio::spawn(connection(
            http.clone(),
            io,
            service,
            watchdog,
            peer,
            stopping.clone(),
        ));
    }
    drop(listener);
    tracing::debug!("shutting down: no new connections; finishing those open");
    closing.send_replace(true);
    stop.send_replace(true);
    // Each connection returns its permit when its socket closes.
    let _all = permits.acquire_many(limits.max_connections).await;
    Ok(())
}

/// Serves one HTTP/1.1 connection (and hands it over if it upgrades to a WebSocket), within
/// its deadlines.
async fn connection(
    http: Arc<hyper::server::conn::http1::Builder>,
    io: TokioIo<Counted>,
    service: ConnService,
    mut watchdog: Watchdog,
    peer: SocketAddr,
    stopping: watch::Receiver<bool>,
) {
    let conn = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let mut stopping = Stopping::new(stopping);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            // The watchdog after the connection: it sees what this poll of it changed.
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            deadline = std::future::poll_fn(|cx| watchdog.poll_expired(cx)) => {
                tracing::debug!(%peer, "closing the connection: {}", deadline.describe());
                return;
            }
            () = &mut stopping, if !shutting_down => {
                // Close when idle; a request in flight is answered first.
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Completes once the flag is `true`; never if its sender is gone without setting it.
pub(super) async fn until_set(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|set| *set).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Completes once the server's stop flag is set, like [`until_set`], but cheap to poll again:
/// a connection's task polls it each time it wakes (once or twice a request), and polling a
/// channel's waiting future takes the lock of a list shared by every connection. After the
/// first poll has put the task's waker on that list, a later poll only reads the channel's
/// version (one atomic load) and polls the waiting future again only when the flag changed or
/// the task's waker did.
struct Stopping {
    flag: watch::Receiver<bool>,
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The waker the waiting future last saw.
    waker: Option<std::task::Waker>,
}

impl Stopping {
    fn new(flag: watch::Receiver<bool>) -> Self {
        let mut waiting = flag.clone();
        Self {
            flag,
            wait: Box::pin(async move { until_set(&mut waiting).await }),
            waker: None,
        }
    }
}

impl Future for Stopping {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let registered = this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        // `has_changed` errs once the sender is gone: the waiting future knows what that means.
        if registered && matches!(this.flag.has_changed(), Ok(false)) {
            return Poll::Pending;
        }
        this.waker = Some(cx.waker().clone());
        this.wait.as_mut().poll(cx)
    }
}

/// Errors of `accept` that concern the one connection being accepted, not the listener.
fn is_about_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

// Phases of a connection, as far as its read deadline goes.
/// Accepted, no request yet: the header deadline counts from the accept.
const FRESH: u32 = 0;
/// Between requests: the idle deadline, then the header deadline from the first byte.
const IDLE: u32 = 1;
/// A request is being handled: its body has its own deadline ([`TimedBody`]).
const REQUEST: u32 = 2;
/// Upgraded to a WebSocket, which keeps its own idle clock.
const UPGRADED: u32 = 3;

/// What a connection's service and socket tell its watchdog.
#[derive(Debug, Default)]
struct Shared {
    /// `generation << 2 | phase`: every change bumps the generation, so the watchdog sees a
    /// new idle period even when a whole request came and went between two of its polls.
    phase: AtomicU32,
    /// Reads that returned bytes (wrapping): a change since `reads_at_idle` means the next
    /// request has begun.
    reads: AtomicU32,
    /// `reads` when the connection last went idle.
    reads_at_idle: AtomicU32,
    /// Set by a request body whose deadline passed: its request is answered 408.
    body_timed_out: AtomicBool,
}

impl Shared {
    fn enter(&self, phase: u32) {
        if phase == IDLE {
            let reads = self.reads.load(Ordering::Acquire);
            self.reads_at_idle.store(reads, Ordering::Release);
        }
        // One writer: the connection's service.
        let word = self.phase.load(Ordering::Acquire);
        let next = ((word >> 2).wrapping_add(1) << 2) | phase;
        self.phase.store(next, Ordering::Release);
    }
}

/// A deadline a [`Watchdog`] counts down to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Header,
    Idle,
}

impl Deadline {
    fn describe(self) -> &'static str {
        match self {
            Deadline::Header => "no complete request head within the header read timeout",
            Deadline::Idle => "silent for the idle timeout",
        }
    }
}

/// The read deadline of one connection's current phase.
#[derive(Debug)]
struct Watchdog {
    shared: Arc<Shared>,
    /// The phase word last seen.
    seen: u32,
    armed: Option<Deadline>,
    sleep: Pin<Box<Sleep>>,
    header_read: Duration,
    idle: Duration,
}

impl Watchdog {
    /// A watchdog for a connection accepted now: its first head is due within the header
    /// read timeout.
    fn new(shared: Arc<Shared>, limits: Limits) -> Self {
        Self {
            shared,
            seen: FRESH,
            armed: Some(Deadline::Header),
            sleep: Box::pin(tokio::time::sleep(limits.header_read)),
            header_read: limits.header_read,
            idle: limits.idle,
        }
    }

    fn arm(&mut self, deadline: Deadline, after: Duration) {
        self.armed = Some(deadline);
        self.sleep.as_mut().reset(Instant::now() + after);
    }

    /// Ready with the deadline that passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Deadline> {
        let word = self.shared.phase.load(Ordering::Acquire);
        if word != self.seen {
            self.seen = word;
            match word & 3 {
                IDLE => self.arm(Deadline::Idle, self.idle),
                REQUEST | UPGRADED => self.armed = None,
                _ => {}
            }
        }
        if self.armed == Some(Deadline::Idle)
            && self.shared.reads.load(Ordering::Acquire)
                != self.shared.reads_at_idle.load(Ordering::Acquire)
        {
            // The next request has begun: its head gets the header timeout.
            self.arm(Deadline::Header, self.header_read);
        }
        match self.armed {
            Some(deadline) if self.sleep.as_mut().poll(cx).is_ready() => Poll::Ready(deadline),
            _ => Poll::Pending,
        }
    }
}

/// A connection's socket: counts the reads that bring bytes, and holds the connection's
/// permit until it is dropped (by hyper, or by the WebSocket it was upgraded to).
#[derive(Debug)]
struct Counted {
    tcp: TcpStream,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.shared.reads.fetch_add(1, Ordering::AcqRel);
        }
        read
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The router, as hyper calls it on one connection: moves the connection's phase and gives
/// each request body its deadline. `POST /rpc` goes to [`DirectRpc`] instead of the router.
#[derive(Clone)]
struct ConnService {
    inner: TowerToHyperService<Router>,
    /// `None` on a standby (`standby.rs`): everything goes to its router.
    direct: Option<Arc<DirectRpc>>,
    shared: Arc<Shared>,
    body_read: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = axum::http::Response<ConnBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.shared.enter(REQUEST);
        let deadline = Instant::now() + self.body_read;
        let shared = self.shared.clone();
        let request = request.map(|body| TimedBody {
            body,
            deadline,
            sleep: None,
            shared: shared.clone(),
            expired: false,
        });
        let answer = if let Some(direct) = &self.direct
            && DirectRpc::takes(&request)
        {
            Routed::Direct(direct.clone().serve(request))
        } else {
            // Boxed: the router's future is large, and inline it would make every request's
            // future (boxed below) as large.
            Routed::Router(Box::pin(self.inner.call(request)))
        };
        Box::pin(async move {
            let response = match answer {
                Routed::Direct(answer) => answer.await,
                Routed::Router(answer) => {
                    let Ok(response) = answer.await;
                    response.map(Either::Right)
                }
            };
            if shared.body_timed_out.swap(false, Ordering::AcqRel) {
                shared.enter(IDLE);
                return Ok(request_timeout().map(Either::Right));
            }
            let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            shared.enter(if upgraded { UPGRADED } else { IDLE });
            Ok(response)
        })
    }
}

/// Where a request went: the direct `POST /rpc`, or the router.
enum Routed<D, R> {
    Direct(D),
    Router(R),
}

/// HTTP 408 for a body that did not arrive in time; the connection closes after it.
fn request_timeout() -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        "request body not received within the body read timeout\n",
    )
        .into_response()
}

/// The error a [`TimedBody`] ends with when its deadline passes.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body not received within the body read timeout")
    }
}

impl std::error::Error for BodyTimedOut {}

/// A request body that fails once its deadline passes with data still to come.
struct TimedBody {
    body: Incoming,
    deadline: Instant,
    /// Made at the first wait only: most bodies arrive with their head.
    sleep: Option<Pin<Box<Sleep>>>,
    shared: Arc<Shared>,
    expired: bool,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.expired = true;
                    this.shared.body_timed_out.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
