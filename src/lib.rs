//! ckpt: a checkpoint/restore manager for Linux containers, built on CRIU.
//!
//! ckpt checkpoints running containers with CRIU, keeps the images in a
//! verified store, and restores the last good checkpoint into a paused
//! debug container that `gdb -p` and `strace -p` can attach to.
//!
//! # Layout
//!
//! - [`images`]: native decoding of CRIU image directories for inspect, diff and memgrep.
//! - [`model`]: identifiers and records shared by every other module.
//! - [`criu`]: locating and checking CRIU, and the `criu swrk` RPC driver.
//! - [`fsutil`]: private (0700/0600) directories and atomic, durable file writes.
//! - [`runtime`]: runc state, OCI specs, and which mounts CRIU treats as external.
//! - [`store`]: the deduplicating, verified, crash-safe checkpoint store.
//! - [`ops`]: the operations: checkpoint, paused restore, resume and removal of debug containers.
//! - [`policy`]: per-container YAML policies that `ckpt daemon` applies.
//! - [`daemon`]: the `ckpt daemon` service, its event log and its control API.
//! - [`cli`]: the `ckpt` command line.
//! - [`error`], [`units`]: error chains; human sizes and durations.

pub mod cli;
pub mod criu;
pub mod daemon;
pub mod error;
pub mod fsutil;
pub mod images;
pub mod model;
pub mod ops;
pub mod policy;
pub mod runtime;
pub mod store;
pub mod units;
