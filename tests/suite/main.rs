//! The integration suite, linked as one test binary (one link instead of one per file keeps
//! CI fast). `tests/hot_path.rs` stays separate: it installs its own global allocator.
//!
//! Each file runs with the features it needs: `cargo nextest run --all-features` runs them all
//! (README's test command), `cargo nextest run --no-default-features` the core's own (events,
//! leases, liveness, tasks, validation, most of leader).

mod common;

#[cfg(feature = "server")]
mod bad_input;
#[cfg(all(feature = "cli", feature = "chaos"))]
mod chaos;
#[cfg(feature = "cli")]
mod cli;
#[cfg(all(feature = "client", feature = "server"))]
mod client;
#[cfg(all(feature = "redis", feature = "server", feature = "chaos"))]
mod compat_events;
#[cfg(all(feature = "client", feature = "server"))]
mod compat_system;
#[cfg(feature = "server")]
mod compat_tasks;
#[cfg(feature = "server")]
mod compat_ws;
#[cfg(feature = "server")]
mod connections;
mod events;
#[cfg(all(feature = "redis", feature = "chaos"))]
mod fencing;
#[cfg(all(feature = "redis", feature = "chaos", feature = "cli"))]
mod ha;
#[cfg(feature = "cli")]
mod ha_client;
mod leader;
mod leases;
#[cfg(feature = "server")]
mod limits;
mod liveness;
#[cfg(feature = "cli")]
mod load;
#[cfg(all(
    feature = "cli",
    feature = "redis",
    feature = "server",
    feature = "chaos"
))]
mod load_safety;
#[cfg(feature = "mcp")]
mod mcp;
#[cfg(all(feature = "mcp", feature = "cli"))]
mod mcp_python;
#[cfg(all(feature = "redis", feature = "server", feature = "chaos"))]
mod persistence;
#[cfg(all(feature = "redis", feature = "chaos"))]
mod redis_server;
#[cfg(all(feature = "redis", feature = "chaos"))]
mod replication;
#[cfg(all(feature = "redis", feature = "chaos"))]
mod sentinel;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "chaos")]
mod supervision;
mod tasks;
#[cfg(feature = "server")]
mod trust;
#[cfg(feature = "server")]
mod ui;
mod validation;
