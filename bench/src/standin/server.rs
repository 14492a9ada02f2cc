//! The stand-in's HTTP server: one thread of its own running a current-thread tokio runtime,
//! so that the thread's CPU clock is the stand-in's whole cost (HTTP parsing, answers,
//! socket writes).

use super::wire::{Format, KError, Out, Req};
use super::{Stream, StreamSpec};
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

/// The `X-Amz-Target` prefix of Kinesis operations.
const TARGET_PREFIX: &str = "Kinesis_20131202.";

/// What the stand-in has done so far (subtract two to get one run's share).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StandinStats {
    /// CPU time of the server thread (user + system).
    pub cpu: Duration,
    /// Requests answered (errors included).
    pub requests: u64,
    /// `GetRecords` calls answered with records or an empty batch.
    pub get_records: u64,
    /// Records returned.
    pub records: u64,
    /// Response body bytes written.
    pub bytes: u64,
    /// Error answers.
    pub errors: u64,
    /// Requests in CBOR (the rest were JSON).
    pub cbor_requests: u64,
    /// Connections that spoke HTTP/2 (prior knowledge); the rest spoke HTTP/1.1.
    pub h2_connections: u64,
    /// Connections accepted.
    pub connections: u64,
}

impl std::ops::Sub for StandinStats {
    type Output = StandinStats;
    fn sub(self, o: StandinStats) -> StandinStats {
        StandinStats {
            cpu: self.cpu.saturating_sub(o.cpu),
            requests: self.requests - o.requests,
            get_records: self.get_records - o.get_records,
            records: self.records - o.records,
            bytes: self.bytes - o.bytes,
            errors: self.errors - o.errors,
            cbor_requests: self.cbor_requests - o.cbor_requests,
            h2_connections: self.h2_connections - o.h2_connections,
            connections: self.connections - o.connections,
        }
    }
}

impl StandinStats {
    /// CPU per 1,000 records returned.
    pub fn cpu_per_1000_records(&self) -> Duration {
        if self.records == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.cpu.as_nanos() * 1000 / self.records as u128) as u64)
    }

    /// CPU per request.
    pub fn cpu_per_request(&self) -> Duration {
        if self.requests == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.cpu.as_nanos() / self.requests as u128) as u64)
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    get_records: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    cbor_requests: AtomicU64,
    h2_connections: AtomicU64,
    connections: AtomicU64,
}

struct Shared {
    stream: Stream,
    counters: Counters,
    unknown: Mutex<HashSet<String>>,
}

/// A running stand-in; it stops when dropped.
pub struct Standin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cpu_clock: libc::clockid_t,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Standin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standin")
            .field("addr", &self.addr)
            .field("stream", &self.shared.stream.spec.name)
            .finish_non_exhaustive()
    }
}

fn clock_now(id: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

impl Standin {
    /// Builds the stream (not its encoded records: see [`Standin::prebuild`]) and starts
    /// serving it on `127.0.0.1` on a free port.
    pub fn start(spec: StreamSpec) -> Result<Standin> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("stand-in: cannot bind")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stream: Stream::new(spec),
            counters: Counters::default(),
            unknown: Mutex::default(),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (clock_tx, clock_rx) = std::sync::mpsc::channel();
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kinesis-standin".into())
            .spawn(move || {
                let mut id: libc::clockid_t = 0;
                // SAFETY: pthread_self is this thread; `id` is writable.
                let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
                let _ = clock_tx.send((rc == 0).then_some(id));
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("stand-in runtime");
                rt.block_on(serve(listener, state, stop_rx));
            })?;
        let cpu_clock = clock_rx
            .recv()
            .ok()
            .flatten()
            .context("stand-in: no CPU clock for its thread")?;
        Ok(Standin {
            addr,
            shared,
            cpu_clock,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.shared.stream.spec.name
    }

    /// The stream's ARN.
    pub fn stream_arn(&self) -> &str {
        &self.shared.stream.arn
    }

    /// The shard ids, in `ListShards` order.
    pub fn shard_ids(&self) -> Vec<String> {
        self.shared
            .stream
            .shards
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }

    /// Records a consumer reading every shard from the trim horizon gets.
    pub fn total_records(&self) -> u64 {
        self.shared.stream.shards.iter().map(|s| s.len as u64).sum()
    }

    /// The sequence number of record `pos` of shard number `shard`.
    pub fn sequence_number(&self, shard: usize, pos: usize) -> String {
        self.shared.stream.seq(shard, pos)
    }

    /// The arrival time (epoch ms) of record `pos` of shard number `shard`.
    pub fn arrival_ms(&self, shard: usize, pos: usize) -> i64 {
        self.shared.stream.arrival_ms(shard, pos)
    }

    /// Encodes every record in `format` now, on the calling thread, so that neither the
    /// server's CPU clock nor the first reads pay for it.
    pub fn prebuild(&self, format: Format) {
        for i in 0..self.shared.stream.shards.len() {
            self.shared.stream.fragments(i, format);
        }
    }

    /// The counters and the server thread's CPU time so far.
    pub fn stats(&self) -> StandinStats {
        let c = &self.shared.counters;
        StandinStats {
            cpu: clock_now(self.cpu_clock).unwrap_or_default(),
            requests: c.requests.load(Ordering::Relaxed),
            get_records: c.get_records.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            cbor_requests: c.cbor_requests.load(Ordering::Relaxed),
            h2_connections: c.h2_connections.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
        }
    }

    /// The operations asked for that the stand-in does not answer.
    pub fn unknown_operations(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .unknown
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// An AWS SDK for Rust Kinesis client for this stand-in (us-east-1, `test`/`test`,
    /// the HTTP client testkit builds: hyper 1 + rustls). Make one per tokio runtime.
    pub fn kinesis_client(&self) -> aws_sdk_kinesis::Client {
        super::kinesis_client(&self.endpoint())
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("stand-in listener");
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((conn, _)) = accepted else { continue };
                let _ = conn.set_nodelay(true);
                tokio::spawn(connection(conn, shared.clone()));
            }
        }
    }
}

/// Serves one connection: HTTP/2 when it opens with the h2 preface (prior knowledge), else
/// HTTP/1.1 (keep-alive).
async fn connection(conn: tokio::net::TcpStream, shared: Arc<Shared>) {
    let mut first = [0u8; 3];
    let h2 = loop {
        match conn.peek(&mut first).await {
            Ok(0) | Err(_) => return,
            Ok(3) => break &first == b"PRI",
            Ok(n) if first[..n] != b"PRI"[..n] => break false,
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    };
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    if h2 {
        shared
            .counters
            .h2_connections
            .fetch_add(1, Ordering::Relaxed);
    }
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    let io = TokioIo::new(conn);
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, svc)
            .await;
    }
}

/// A response body of a few pieces written one after another (no copy into one buffer).
pub struct Pieces {
    pieces: VecDeque<Bytes>,
    len: u64,
}

impl Pieces {
    fn new(pieces: Vec<Bytes>) -> Pieces {
        let len = pieces.iter().map(|p| p.len() as u64).sum();
        Pieces {
            pieces: pieces.into(),
            len,
        }
    }
}

impl Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let me = self.get_mut();
        Poll::Ready(me.pieces.pop_front().map(|p| {
            me.len -= p.len() as u64;
            Ok(Frame::data(p))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

fn response(status: StatusCode, format: Format, pieces: Vec<Bytes>, id: u64) -> Response<Pieces> {
    Response::builder()
        .status(status)
        .header("content-type", format.content_type())
        .header("x-amzn-requestid", format!("standin-{id:016x}"))
        .body(Pieces::new(pieces))
        .expect("valid response")
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Pieces> {
    let c = &shared.counters;
    let id = c.requests.fetch_add(1, Ordering::Relaxed);
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let format = Format::from_content_type(&header("content-type"));
    let target = header("x-amz-target");
    if format == Format::Cbor {
        c.cbor_requests.fetch_add(1, Ordering::Relaxed);
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let answer = answer(shared, &target, format, &body);
    let (status, pieces) = match answer {
        Ok(pieces) => (StatusCode::OK, pieces),
        Err(e) => {
            c.errors.fetch_add(1, Ordering::Relaxed);
            let mut w = Vec::new();
            e.to_out().encode(format, &mut w);
            let status = if e.kind == "InternalFailure" {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, vec![Bytes::from(w)])
        }
    };
    let len: u64 = pieces.iter().map(|p| p.len() as u64).sum();
    c.bytes.fetch_add(len, Ordering::Relaxed);
    response(status, format, pieces, id)
}

fn answer(
    shared: &Shared,
    target: &str,
    format: Format,
    body: &[u8],
) -> Result<Vec<Bytes>, KError> {
    let op = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    let req = Req::decode(format, body).map_err(|e| KError::new("SerializationException", e))?;
    let s = &shared.stream;
    let tree = |r: Result<Out, KError>| -> Result<Vec<Bytes>, KError> {
        let mut w = Vec::new();
        r?.encode(format, &mut w);
        Ok(vec![Bytes::from(w)])
    };
    match op {
        "GetRecords" => {
            let (pieces, n) = s.get_records(&req, format)?;
            shared.counters.get_records.fetch_add(1, Ordering::Relaxed);
            shared
                .counters
                .records
                .fetch_add(n as u64, Ordering::Relaxed);
            Ok(pieces)
        }
        "GetShardIterator" => tree(s.get_shard_iterator(&req)),
        "ListShards" => tree(s.list_shards(&req)),
        "DescribeStreamSummary" => tree(s.describe_stream_summary(&req)),
        "DescribeStream" => tree(s.describe_stream(&req)),
        _ => {
            if shared.unknown.lock().unwrap().insert(target.to_string()) {
                eprintln!(
                    "kinesis stand-in: unanswered operation {target:?} (UnknownOperationException)"
                );
            }
            Err(KError::new(
                "UnknownOperationException",
                format!("The stand-in does not answer {target:?}"),
            ))
        }
    }
}
