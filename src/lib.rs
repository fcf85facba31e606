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

pub mod images;
pub mod model;
