//! The trace of one run: scenario actions, audited lease-store writes, processor calls and the
//! library's own `tracing` events, each stamped with simulated time.
//!
//! The library logs through `tracing`; [`TraceLayer`] is a `tracing_subscriber` layer that turns
//! every event (with the `worker_id` / `shard_id` of its spans) into a [`Line`]. A run installs it
//! as the thread's default subscriber, and a current-thread runtime runs every task on that
//! thread, so each run gets exactly its own events, even when runs execute on parallel threads.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Where a trace line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The simulated world: scenario actions, drain, invariant checks.
    World,
    /// A lease-store write seen by the auditing store wrapper.
    Store,
    /// A simulated record processor.
    Processor,
    /// A `tracing` event of the library, at this level.
    Library(Level),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::World => f.write_str("world"),
            Source::Store => f.write_str("store"),
            Source::Processor => f.write_str("proc "),
            Source::Library(l) => write!(f, "{:<5}", l.as_str()),
        }
    }
}

/// One event of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Simulated time since the world started.
    pub at: Duration,
    /// Who emitted it.
    pub source: Source,
    /// The worker concerned, if any.
    pub worker: Option<String>,
    /// The shard (lease key) concerned, if any.
    pub shard: Option<String>,
    /// What happened.
    pub text: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>9.3}s] {} {:<4} {:<21} {}",
            self.at.as_secs_f64(),
            self.source,
            self.worker.as_deref().unwrap_or("-"),
            self.shard.as_deref().unwrap_or("-"),
            self.text
        )
    }
}

/// Counts of notable library events (for the soak summary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Leases taken because their owner stopped renewing them.
    pub failovers: u64,
    /// Leases stolen to balance the load (hand-offs started by a leaderless worker, or takes
    /// when hand-offs are off).
    pub steals: u64,
    /// Leases a worker noticed it lost.
    pub leases_lost: u64,
    /// Library events at WARN or ERROR.
    pub warnings: u64,
    /// KCL 3.x: workers that became the fleet's leader (elections and takeovers).
    pub leaders_elected: u64,
    /// KCL 3.x: of which takeovers of a lock its holder stopped heartbeating.
    pub leader_takeovers: u64,
    /// KCL 3.x: leases the leader assigned (a lease without a live owner, or a move without
    /// hand-off).
    pub assignments: u64,
    /// KCL 3.x: graceful hand-offs the leader started.
    pub handoffs_started: u64,
    /// KCL 3.x: hand-offs the outgoing owner completed.
    pub handoffs_completed: u64,
    /// KCL 3.x: hand-offs whose processor did not finish within the hand-off timeout.
    pub handoffs_timed_out: u64,
    /// KCL 3.x: assigned leases a worker adopted.
    pub adoptions: u64,
    /// KCL 3.x: leases a stopping worker passed on to a live worker.
    pub passed_on: u64,
    /// KCL 3.x: workers switching to the 3.x protocol (at start, or when the item appears).
    pub protocol_switches: u64,
}

#[derive(Default)]
struct Inner {
    start: Option<Instant>,
    lines: Vec<Line>,
    counters: Counters,
    /// KCL 3.x: since when each worker (by id, its current process) runs the 3.x protocol.
    assigned_since: std::collections::BTreeMap<String, Duration>,
    /// Workers (their current process) whose graceful shutdown began (asked for, or on their
    /// own: a fan-out consumer gone for good).
    shutting_down: std::collections::BTreeSet<String>,
    /// Echo every line to stderr as it is added (`SIM_LIVE_TRACE=1`: to see where a run hangs).
    live: bool,
}

/// The shared, append-only trace of one run. Cheap to clone.
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<Inner>>);

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace").field("lines", &self.len()).finish()
    }
}

impl Trace {
    /// An empty trace; its clock starts with [`Trace::start_clock`].
    pub fn new() -> Self {
        let trace = Self::default();
        trace.0.lock().unwrap().live = std::env::var_os("SIM_LIVE_TRACE").is_some();
        trace
    }

    /// Start the simulated clock (call inside the runtime, when the world is created).
    pub fn start_clock(&self) {
        self.0.lock().unwrap().start = Some(Instant::now());
    }

    /// Simulated time since [`Trace::start_clock`] (zero before it).
    pub fn now(&self) -> Duration {
        let start = self.0.lock().unwrap().start;
        start.map_or(Duration::ZERO, |s| Instant::now() - s)
    }

    /// Append a line stamped with the current simulated time.
    pub fn push(
        &self,
        source: Source,
        worker: Option<&str>,
        shard: Option<&str>,
        text: impl Into<String>,
    ) {
        let line = Line {
            at: self.now(),
            source,
            worker: worker.map(str::to_string),
            shard: shard.map(str::to_string),
            text: text.into(),
        };
        let mut inner = self.0.lock().unwrap();
        if inner.live {
            eprintln!("{line}");
        }
        inner.lines.push(line);
    }

    /// A world line without worker or shard.
    pub fn world(&self, text: impl Into<String>) {
        self.push(Source::World, None, None, text);
    }

    /// The number of lines so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().lines.len()
    }

    /// True when nothing was traced yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every line.
    pub fn lines(&self) -> Vec<Line> {
        self.0.lock().unwrap().lines.clone()
    }

    /// The event counters.
    pub fn counters(&self) -> Counters {
        self.0.lock().unwrap().counters
    }

    /// A process of `worker` starts: it runs the leaderless protocol until it says otherwise.
    pub fn worker_starts(&self, worker: &str) {
        let mut inner = self.0.lock().unwrap();
        inner.assigned_since.remove(worker);
        inner.shutting_down.remove(worker);
    }

    /// Whether `worker`'s current process has begun its graceful shutdown.
    pub fn is_shutting_down(&self, worker: &str) -> bool {
        self.0.lock().unwrap().shutting_down.contains(worker)
    }

    /// Since when `worker` runs the KCL 3.x protocol (`lease protocol changed` to `Assigned`),
    /// if it does.
    pub fn runs_3x_since(&self, worker: &str) -> Option<Duration> {
        self.0.lock().unwrap().assigned_since.get(worker).copied()
    }

    fn library_event(&self, line: Line, message: &str, fields: &[(String, String)]) {
        let mut inner = self.0.lock().unwrap();
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        match message {
            "lease taken" => match field("reason") {
                Some("Expired") => inner.counters.failovers += 1,
                Some("Steal") => inner.counters.steals += 1,
                _ => {}
            },
            "lease lost" => inner.counters.leases_lost += 1,
            "this worker is now the fleet's leader" => inner.counters.leaders_elected += 1,
            "leader lock not heartbeaten for its lease duration: taking it" => {
                inner.counters.leader_takeovers += 1
            }
            "lease assigned" => match field("how") {
                Some("HandOff") => inner.counters.handoffs_started += 1,
                _ => inner.counters.assignments += 1,
            },
            "balancing: asked the lease's owner to hand it over (its processor checkpoints, then it passes the lease on)" => {
                inner.counters.steals += 1;
                inner.counters.handoffs_started += 1;
            }
            "leaving: this lease goes to another worker once its processor has checkpointed" => {
                inner.counters.handoffs_started += 1
            }
            "lease handed off" => inner.counters.handoffs_completed += 1,
            "the processor did not finish within the hand-off timeout: handing the lease over now" => {
                inner.counters.handoffs_timed_out += 1
            }
            "assigned lease adopted" => inner.counters.adoptions += 1,
            "graceful shutdown: asking processors to checkpoint" => {
                if let Some(worker) = line.worker.clone() {
                    inner.shutting_down.insert(worker);
                }
            }
            "lease passed on" => inner.counters.passed_on += 1,
            "lease protocol changed" => {
                if let Some(worker) = line.worker.clone() {
                    if field("protocol") == Some("Assigned") {
                        inner.counters.protocol_switches += 1;
                        inner.assigned_since.insert(worker, line.at);
                    } else {
                        inner.assigned_since.remove(&worker);
                    }
                }
            }
            _ => {}
        }
        if matches!(line.source, Source::Library(l) if l <= Level::WARN) {
            inner.counters.warnings += 1;
        }
        if inner.live {
            eprintln!("{line}");
        }
        inner.lines.push(line);
    }

    /// The lines up to `upto` (exclusive) that concern one of `focus` (worker ids or shard ids)
    /// or come from the world, at most the last `max` of them, one per line.
    pub fn render_focus(&self, upto: usize, focus: &[String], max: usize) -> String {
        let inner = self.0.lock().unwrap();
        let end = upto.min(inner.lines.len());
        let relevant = |l: &Line| {
            l.source == Source::World
                || focus.is_empty()
                || focus
                    .iter()
                    .any(|f| l.worker.as_ref() == Some(f) || l.shard.as_ref() == Some(f))
        };
        let picked: Vec<&Line> = inner.lines[..end].iter().filter(|l| relevant(l)).collect();
        let skip = picked.len().saturating_sub(max);
        let mut out = String::new();
        if skip > 0 {
            let _ = writeln!(out, "  ... {skip} earlier lines omitted ...");
        }
        for l in &picked[skip..] {
            let _ = writeln!(out, "  {l}");
        }
        out
    }

    /// Every line, one per line.
    pub fn render_all(&self) -> String {
        let inner = self.0.lock().unwrap();
        let mut out = String::new();
        for l in &inner.lines {
            let _ = writeln!(out, "{l}");
        }
        out
    }
}

/// Collects an event's or span's fields as text, pulling out the ids the trace indexes by.
#[derive(Default)]
struct Fields {
    message: String,
    worker: Option<String>,
    shard: Option<String>,
    rest: Vec<(String, String)>,
}

impl Fields {
    fn add(&mut self, name: &str, value: String) {
        match name {
            "message" => self.message = value,
            "worker_id" => self.worker = Some(value),
            "shard_id" | "lease_key" => {
                if self.shard.is_none() {
                    self.shard = Some(value);
                } else {
                    self.rest.push((name.to_string(), value));
                }
            }
            _ => self.rest.push((name.to_string(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.add(field.name(), format!("{value:?}"));
    }
}

/// The `worker_id` and `shard_id` of a span, kept in its extensions.
struct SpanIds {
    worker: Option<String>,
    shard: Option<String>,
}

/// A `tracing` layer appending every library event to a [`Trace`].
pub struct TraceLayer {
    trace: Trace,
}

impl TraceLayer {
    /// A layer writing into `trace`.
    pub fn new(trace: Trace) -> Self {
        TraceLayer { trace }
    }
}

impl<S> Layer<S> for TraceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanIds {
                worker: f.worker,
                shard: f.shard,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(ids) = span.extensions().get::<SpanIds>() {
                    if f.worker.is_none() {
                        f.worker.clone_from(&ids.worker);
                    }
                    if f.shard.is_none() {
                        f.shard.clone_from(&ids.shard);
                    }
                }
            }
        }
        let mut text = f.message.clone();
        for (name, value) in &f.rest {
            let _ = write!(text, " {name}={value}");
        }
        let line = Line {
            at: self.trace.now(),
            source: Source::Library(*event.metadata().level()),
            worker: f.worker.clone(),
            shard: f.shard.clone(),
            text,
        };
        self.trace.library_event(line, &f.message, &f.rest);
    }
}
