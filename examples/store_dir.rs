//! Commits an image directory into a store and prints what it cost, for measuring the
//! store's throughput and memory (for example under `/usr/bin/time -v`).
//!
//! Usage: `cargo run --release --example store_dir -- STORE IMAGE_DIR [RESTORE_DIR]`
//! With RESTORE_DIR it also materializes the checkpoint there and times that.

use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use ckpt::model::{CheckpointId, CheckpointMeta};
use ckpt::store::Store;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(root), Some(images)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: store_dir STORE IMAGE_DIR [RESTORE_DIR]");
    };
    let store = Store::open(&PathBuf::from(root))?;
    let created = Utc::now();
    let meta = CheckpointMeta {
        id: CheckpointId::generate(created),
        container: "measure".parse()?,
        created,
        criu_version: String::new(),
        kernel: String::new(),
        options: Default::default(),
        dump_stats: Default::default(),
        runtime: Default::default(),
        health_passing: None,
    };

    // Copying into the staging directory is not part of what is measured.
    let staging = store.stage(&meta.id)?;
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", PathBuf::from(&images).display()))
        .arg(staging.dir())
        .status()?;
    anyhow::ensure!(status.success(), "cp failed with {status}");

    let started = Instant::now();
    let manifest = store.commit(staging, meta)?;
    println!(
        "committed {}: {} logical bytes, {} added, {} chunks, {:.2} s",
        manifest.meta.id,
        manifest.logical_bytes,
        manifest.added_bytes,
        manifest.chunk_count,
        started.elapsed().as_secs_f64()
    );

    if let Some(dest) = args.next() {
        let started = Instant::now();
        store.materialize(&manifest.meta.id, &PathBuf::from(dest))?;
        println!("materialized in {:.2} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}
