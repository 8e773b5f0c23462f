//! # Vigil — an actor-based cluster coordinator
//!
//! Vigil keeps track of which workers ("instances") are alive through heartbeats answered from
//! memory in well under a microsecond, elects one leader among them, hands out tasks with
//! fencing claim tokens and resource leases, and takes work back from workers that die.
//! Services embed it as a library (this crate) or run `vigil serve`, whose workers call it over
//! JSON-RPC 2.0 (HTTP or WebSocket).
//!
//! ```no_run
//! use vigil::{Config, Coordinator, RegisterRequest};
//!
//! # async fn demo() -> Result<(), vigil::Error> {
//! let coordinator = Coordinator::start(Config::default()).await?;
//! let reg = coordinator
//!     .register(RegisterRequest::new("worker-1").roles(["worker"]))
//!     .await?;
//! println!("epoch {} leader? {}", reg.epoch, reg.is_leader);
//! let beat = coordinator.heartbeat("worker-1").await;
//! assert!(beat.alive);
//! coordinator.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## What is public
//!
//! * [`Coordinator`] — the cheap, cloneable handle: the heartbeat hot path, registration, state,
//!   events, and work distribution ([`work`]: tasks, claims, leases);
//! * [`Config`] and its parts ([`config`]), the request and answer types ([`model`]),
//!   [`Event`], [`Error`];
//! * [`store`] — the [`Store`](store::Store) trait, [`MemoryStore`](store::MemoryStore) and,
//!   with the `redis` feature, [`RedisStore`](store::RedisStore);
//! * with `server`: [`server`] — the JSON-RPC server, and [`server::router`] to mount its routes
//!   into an application's own axum router; [`rpc`] — the dispatcher and error codes;
//! * with `mcp`: [`mcp`] — the MCP tools (Sortie's and Vigil's) for LLM agents, served at
//!   `POST /mcp` and by `vigil mcp` over stdio;
//! * with `client`: [`client`] — the worker client (sessions, elections, claims, leases);
//! * with `chaos`: [`faults`] — kill and inspect actors, for chaos tests.
//!
//! ## Features
//!
//! | feature | adds | default |
//! |---|---|---|
//! | (none) | the core: coordinator, actors, registry, work, events, in-memory store | — |
//! | `redis` | the Redis store and recovery from it | yes |
//! | `metrics` | counters through the `metrics` facade | via `server` |
//! | `server` | JSON-RPC over HTTP and WebSocket, `GET /metrics` | yes |
//! | `mcp` | MCP tools: `POST /mcp` on the server, `vigil mcp` over stdio (implies `server`) | yes |
//! | `client` | the worker client | yes |
//! | `chaos` | fault injection in the API ([`faults`]), for chaos tests | no |
//! | `cli` | the `vigil` binary: `serve`, `mcp`, `load`, `chaos`, `status` | yes |
//!
//! An embedder that wants only the core writes
//! `vigil = { version = "0.1", default-features = false }`. The architecture — which module
//! owns what, and the one-way arrows between them — is in `docs/architecture.md`.
#![warn(missing_docs)]

// The core. rustfmt keeps these in alphabetical order; the layers — which module may use which —
// are listed in docs/architecture.md and checked by tests/architecture.rs.
mod actors;
mod clock;
pub mod config;
mod coordinator;
pub mod error;
mod events;
pub mod model;
mod registry;
pub mod store;
pub mod telemetry;
pub mod work;

#[cfg(feature = "server")]
pub mod rpc;
#[cfg(feature = "server")]
pub mod server;

#[cfg(feature = "mcp")]
pub mod mcp;

#[cfg(feature = "client")]
pub mod client;

// The `vigil` binary's tools: public so that tests and scripts can drive them.
#[cfg(feature = "cli")]
pub mod chaos;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
#[cfg(feature = "cli")]
pub mod load;

pub use clock::ActiveGate;
pub use config::{Config, Limits};
#[cfg(feature = "chaos")]
pub use coordinator::faults;
pub use coordinator::{
    ClusterState, Coordinator, EPOCH_SHIFT, LeaseOutcome, LeaseOwner, RecoveryReport, StoreCheck,
    StoreStatus, TERM_GAP_AFTER_RECOVERY,
};
pub use error::{Error, ValidationError};
pub use events::{Event, EventKind};
pub use model::{
    DEFAULT_LIST_LIMIT, Epoch, HealthReport, Heartbeat, InstanceId, InstanceStatus, InstanceView,
    LeaderView, MAX_LIST_LIMIT, Page, RegisterRequest, Registration, StateQuery, Term,
    Unregistration,
};
