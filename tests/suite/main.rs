//! The integration suite, linked as one test binary (one link instead of one per file keeps
//! CI fast). `tests/hot_path.rs` stays separate: it installs its own global allocator.

mod common;

mod bad_input;
mod chaos;
mod cli;
mod events;
mod leader;
mod leases;
mod liveness;
mod load;
mod persistence;
mod redis_server;
mod server;
mod supervision;
mod tasks;
mod validation;
