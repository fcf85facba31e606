//! `ckpt daemon`: periodic checkpoints per policy, failure detection, and a paused restore
//! of the last good checkpoint when a container fails.

pub mod backend;
pub mod events;
pub mod exits;
pub mod failure;
pub mod retention;
