//! raftexample-rs: a replicated key-value service built the way etcd's `contrib/raftexample`
//! is built, on our consensus engine (the `engine` crate), with honest outcomes: a write is
//! acknowledged only once it is committed and applied, reads are linearizable by default, and
//! a crash loses nothing that was acknowledged.
//!
//! This crate is the application only: the engine owns raft, the WAL, snapshots, membership and
//! the peer transport.
//!
//! # Layout
//! - [`kv`]: the map and [`kv::KvMachine`], its `engine::StateMachine` (apply, restore,
//!   validate, merged snapshots); [`command`]: the KV's command bytes.
//! - [`api`]: the client HTTP API (routing, and the mapping from engine outcomes to status
//!   codes); [`metrics`]: `GET /metrics`; [`events`]: `GET /events`.
//! - [`server`]: wiring, start and stop order.
//!
//! See ARCHITECTURE.md for the codemap.

pub mod api;
pub mod certs;
pub mod command;
pub mod ctl;
pub mod events;
pub mod kv;
pub mod metrics;
pub mod server;

pub use engine::{config, limits, transport};
