//! An etcd-style consensus engine for replicated services, on raft-rs (`RawNode` and its
//! Ready/advance loop), with our own write-ahead log (`wal`) and snapshot files (`snap`) and an
//! HTTP peer transport. An application implements one trait, [`StateMachine`], and talks to its
//! node through a cloneable async [`Handle`]. The engine never names an application type (it is
//! a crate of its own, so the compiler enforces it); the application never parses engine bytes.
//!
//! # Using it
//! ```text
//! let config = Arc::new(Config::from_args(&node_args)?);   // the shared node flags
//! let node = engine::start(config, MyMachine::default(), logger).await?;
//! let handle = node.handle();                               // clone it into HTTP handlers
//! handle.propose(&command_bytes, deadline).await            // -> Proposed { index, term, output }
//! handle.read_barrier(deadline).await                       // then read the local state
//! let mut events = handle.subscribe();                      // current state, then every change
//! handle.shutdown(); node.wait().await                      // or the node was removed
//! ```
//! The raftexample KV (the root package) and `examples/registry` are built exactly so.
//!
//! # The contract
//! - [`StateMachine`] (see its docs): apply committed commands in log order, deterministic, one
//!   typed output per command for the local proposer; an undecodable command is a no-op,
//!   answered [`Rejected`]; restore from an image and validate an image before raft sees it,
//!   both streamed from the snap file (no image is ever held whole in memory by the engine);
//!   produce snapshot images without pausing apply (serialise a small state on the apply
//!   thread, or merge the previous image with the commands since on the snapshot thread);
//!   optionally a cheap state digest, which the engine compares across members to find a
//!   diverged one ([`divergence`]).
//! - [`Handle`]: every call takes a deadline. `propose` answers with the index, term and output,
//!   or an error that is either *known not applied* ([`NotApplied`]: retry safely) or
//!   *outcome unknown*. A proposal, read or membership change that meets no leader waits for one
//!   until its deadline.
//! - [`Subscription`]: the current state first, then every change in order with its term and a
//!   strictly increasing [`Epoch`]; "lagged" with the current state instead of a silent gap.
//!   "Became leader" only once the leader committed an entry of its term.
//! - The engine owns the framing ([`framing`]): a format byte and a request ID on every entry,
//!   an envelope (magic, version, membership with peer URLs) around every image.
//! - **Apply never aborts on bytes from the log.** An entry the engine cannot decode (an unknown
//!   format, one cut short) is a no-op on every replica; a command the application cannot
//!   decode MUST be a deterministic `Err(Rejected)` (a no-op, answered to its proposer as
//!   rejected), never a panic. Apply aborts only on local failures (I/O).
//!
//! # The Ready loop (`raft_node.rs`, the raft thread, sole owner of `RawNode`, WAL, storage)
//! Each turn: wait for input or the next tick; drain the inbox (group commit); tick; one
//! `read_index` for all waiting reads; then for the Ready:
//! 1. snapshot -> snap file, WAL mark, raft storage, apply thread
//! 2. `messages()` -> transport (a leader sends appends before its own fsync)
//! 3. entries + hard state -> WAL, one fdatasync when `must_sync()`
//! 4. entries + hard state -> raft storage
//! 5. `persisted_messages()` -> transport (only after step 3)
//! 6. committed entries: conf changes applied here, then all to the apply thread
//! 7. read states -> the waiting reads
//! 8. advance: LightReady's commit index to the WAL before its committed entries go out
//! 9. maybe snapshot; compaction and WAL release follow the saved file.
//!
//! # The raft-rs traps, and where they are handled
//! 1. identical bootstrap on every initial member: `recovery.rs` (snapshot at index 1);
//! 2. a snapshot without the receiver is ignored: `storage.rs` asks for a fresh one;
//! 3. one pending conf change: `raft_node.rs` answers [`Conflict::ChangePending`];
//! 4. silently dropped proposals: only the request ID at apply time completes a proposal;
//! 5. dropped ReadIndex: re-issued after half an election timeout, and retried by the handle;
//! 6. a removed leader does not step down: leadership moves first (`defer_leader_removal`);
//! 7. commit index persisted before applying (`save_commit`), `Config.applied` on restart;
//! 8. a Ready with a snapshot has no committed entries: the snapshot is installed first;
//! 9. every MsgSnapshot is reported (`transport.rs`);
//! 10. pre-vote, check-quorum, `max_size_per_msg`, `max_inflight_msgs`: `raft_config`.
//!
//! # Layout
//! - [`state_machine`]: the application trait; [`handle`]: the application's handle;
//!   [`node`]: start and stop; [`events`]: typed events and subscriptions;
//!   [`config`]: the node flags every service shares; [`framing`]: the engine's bytes;
//!   [`limits`]: every limit and why they agree.
//! - `raft_node.rs` (the loop) and [`protocol`] (its inbox and report types); `storage.rs`
//!   (raft storage); `recovery.rs` (bootstrap and restart); `apply.rs` (the apply thread);
//!   `snapshot_builder.rs` (the snapshot thread); [`membership`]; `waiters.rs`;
//!   [`divergence`] (digest checks and verdicts).
//! - [`transport`] (outgoing) and [`peer_server`] (incoming): raft messages over HTTP;
//!   [`http`]: the HTTP plumbing applications reuse for their own API; [`outcome`]: how the
//!   engine's outcomes read over HTTP (the same codes and sentences in every application);
//!   [`app`]: what every application's `main` does (runtime, client port, signals, stop order).

pub mod app;
pub mod apply;
pub mod backup;
pub mod config;
pub mod disk;
pub mod divergence;
pub mod events;
pub mod framing;
pub mod handle;
pub mod http;
pub mod incarnation;
pub mod limits;
pub mod logging;
pub mod membership;
pub mod node;
pub mod outcome;
pub mod peer_server;
pub mod priority;
pub mod protocol;
mod raft_node;
pub mod recovery;
mod snapshot_builder;
pub mod state_machine;
mod storage;
pub mod tls;
pub mod transport;
pub mod waiters;

pub use config::{Config, ConfigError, NodeArgs};
pub use events::{Epoch, Event, EventKind, NodeState, Role, Subscription};
pub use handle::{ChangeError, Conflict, Handle, NotApplied, ProposeError, Proposed, ReadError};
pub use membership::{Member, Membership};
pub use node::{start, Node};
pub use protocol::{Diverged, Exit, MemberChange, PeerProgress, Status};
pub use recovery::StartError;
pub use state_machine::{
    read_small_image, Command, ImageError, MergedImage, Rejected, StateMachine,
};
pub use waiters::Applied;

pub use logging::{abort_on_panic, fatal, logger, raft_logger};
