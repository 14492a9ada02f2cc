//! Deterministic simulation of Kinesis Client Library workers (in the spirit of FoundationDB's
//! simulator and TigerBeetle's VOPR).
//!
//! One seed gives one exact run: a [`scenario::Scenario`] generated from the seed (shards,
//! workers, timings, fault rates, processor behaviour and a timeline of joins, graceful stops,
//! kills, pauses, splits, merges, retention trims and producer rate changes) is played by a
//! [`world::World`] over the library's real `Scheduler`, `LeaseCoordinator` and shard
//! consumers, with the in-memory stream and lease table, on a current-thread tokio runtime
//! with paused (auto-advancing) time. Every random choice, the library's included, comes from
//! the seed (`Config::rng_seed`, `kinesis_client::testing::seed_thread_jitter`), the library's selects
//! are biased and its maps ordered, so a failing seed replays exactly.
//!
//! ```text
//!  Scenario ──▶ World ─┬─ producers ──▶ InMemoryStream ◀── SimStream (gate) ◀──┐
//!   (seed)             ├─ timeline: join/stop/kill/pause/split/merge/trim      ├─ Scheduler (w0..w7)
//!                      └─ samples held leases ──▶ invariants                   │    └ SimProcessor ──▶ Ledger
//!                         InMemoryLeaseStore ◀── SimLeaseStore (gate, faults, audit) ◀──┘
//! ```
//!
//! The invariants are listed in [`invariants`]; a violation carries the seed and the trace
//! ([`trace`]) of scenario actions, audited store writes, processor calls and library events
//! that led to it. `SIM_SEED=<seed> cargo test -p kcl-sim -- --nocapture` replays one seed;
//! `cargo run --release -p kcl-sim --bin soak -- --seeds 10000` runs many.
//!
//! Every seed runs in two modes ([`Mode`]): polling (GetRecords), and enhanced fan-out
//! (SubscribeToShard), which plays the same world and timeline with subscriptions that
//! expire mid-shard and fail (ResourceInUse, LimitExceeded, resets, silence, early ends);
//! `SIM_RETRIEVAL=fanout` replays a seed in fan-out mode, `soak --fan-out` runs many.
//!
//! A third mode, multi-stream ([`Mode::MultiStream`]), runs the polling world as a
//! multi-stream application: several streams (the first with the scenario's shards) and a
//! timeline that also creates streams, takes them out of the set and back, and deletes and
//! re-creates them under their names; reshards, trims and records go to any stream.
//! `SIM_RETRIEVAL=multistream` replays a seed, `soak --multi-stream` runs many.
//!
//! A fourth, KCL 3.x fleets ([`Mode::Fleet`]), runs the polling world with a fleet plan
//! ([`scenario::FleetPlan`], from its own generator): workers configured `V3x` from the start
//! (a leader lock, assignments, graceful hand-offs, discovery, metrics rows), some of them
//! `Auto`, or `Auto` workers whose fleet the world switches to 3.x mid-run (a Java 3.x worker
//! joined); leader kills and pauses, fleet-store outages and faults ([`fleet`]), pauses long
//! enough for a metrics row to go stale, processors slow to hand over. `SIM_RETRIEVAL=fleet`
//! replays a seed, `soak --fleet-3x` runs many.

pub mod consistency;
pub mod faults;
pub mod fleet;
pub mod gate;
pub mod invariants;
pub mod ledger;
pub mod load;
pub mod processor;
pub mod run;
pub mod scenario;
pub mod store;
pub mod stream;
pub mod trace;
pub mod world;

pub use run::{
    run_seed, run_seed_bounded, run_seed_bounded_in, run_seed_in, wall_limit, RunOutcome,
};
pub use scenario::Mode;
