//! ckpt: a checkpoint/restore manager for Linux containers, built on CRIU.
//!
//! ckpt checkpoints running containers with CRIU, keeps the images in a
//! verified store, and restores the last good checkpoint into a paused
//! debug container that `gdb -p` and `strace -p` can attach to.
//!
//! # Layout
//!
//! - [`model`]: identifiers and records shared by every other module.
//! - [`criu`]: locating and checking CRIU, and the `criu swrk` RPC driver.
//! - [`fsutil`]: private (0700/0600) directories and atomic, durable file writes.
//! - [`runtime`]: runc state, OCI specs, and which mounts CRIU treats as external.
//! - [`policy`]: per-container YAML policies that `ckpt daemon` applies.
//! - [`daemon`]: the `ckpt daemon` service, its event log and its control API.

pub mod model;
pub mod criu;
pub mod fsutil;
pub mod runtime;
pub mod policy;
pub mod daemon;
