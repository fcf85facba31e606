//! Types generated from `proto/criu-images.proto` by build.rs.
#![allow(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/criu_images.rs"));
