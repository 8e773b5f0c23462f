//! # Vigil — an actor-based, in-process cluster coordinator
//!
//! Vigil keeps track of which workers ("instances") are alive through heartbeats, elects one
//! leader among them and tells every heartbeat whether it leads. Services embed it as a
//! library (this crate) or, later, run it as a JSON-RPC server.
//!
//! ```no_run
//! use std::time::Duration;
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
//! The layout follows the architecture of `docs/architecture.md`:
//!
//! * [`coordinator`] — the cheap, cloneable handle and its hot path;
//! * [`actors`] — the `ClusterSupervisor`, one `InstanceActor` per instance, the `LeaderActor`;
//! * [`registry`] — the shared instance slots the hot path touches and the actors own;
//! * [`clock`] — the coarse liveness clock that keeps the hot path off the system clock;
//! * [`events`] — the event bus (broadcast + bounded history);
//! * [`model`] — ids, requests, answers and validation.
#![warn(missing_docs)]

pub mod actors;
pub mod chaos;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod events;
pub mod load;
pub mod model;
pub mod registry;
pub mod rpc;
pub mod server;
pub mod settings;
pub mod store;
pub mod work;

pub use config::{Config, Limits};
pub use coordinator::{Coordinator, LeaseOutcome, LeaseOwner};
pub use error::{Error, ValidationError};
pub use events::{Event, EventKind};
pub use model::{
    ClusterState, Epoch, HealthReport, Heartbeat, InstanceId, InstanceStatus, InstanceView,
    LeaderView, RegisterRequest, Registration, StateQuery, Term, Unregistration,
};
