//! `ckpt checkpoint` and `ckpt list`.

use std::io::{self, Write};

use anyhow::Context as _;
use chrono::Utc;
use clap::Args;
use serde::Serialize;

use super::output::{self, Table};
use super::{CommandResult, Failure, classify};
use crate::model::{CheckpointOptions, ContainerId};
use crate::ops::{self, Context};
use crate::store::Manifest;

/// Checkpoint a running container and leave it running.
///
/// On success the last line of stdout is the new checkpoint's id.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  ckpt checkpoint web\n  ckpt checkpoint --tcp-established --ghost-limit 16MiB web"
)]
pub struct CheckpointArgs {
    /// Container name, as `runc list` shows it.
    pub container: ContainerId,
    /// Checkpoint established TCP connections.
    #[arg(long)]
    pub tcp_established: bool,
    /// Checkpoint file locks held by the container.
    #[arg(long)]
    pub file_locks: bool,
    /// Skip TCP connections that are still being established instead of failing.
    #[arg(long)]
    pub skip_in_flight: bool,
    /// Allow connections to Unix sockets outside the container.
    #[arg(long)]
    pub ext_unix_sk: bool,
    /// Largest deleted-but-open file to copy into the checkpoint (e.g. 16MiB) [CRIU's default: 1MiB].
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub ghost_limit: Option<u64>,
}

pub fn checkpoint(ctx: &Context, socket: &std::path::Path, args: CheckpointArgs) -> CommandResult {
    // A running daemon with a policy for the container takes the checkpoint itself, so that
    // it never overlaps a scheduled checkpoint or a health probe.
    if let Some(reply) = super::daemon::checkpoint_through_daemon(socket, &args.container)? {
        let flags_given = args.tcp_established
            || args.file_locks
            || args.skip_in_flight
            || args.ext_unix_sk
            || args.ghost_limit.is_some();
        if flags_given {
            eprintln!("ckpt: warning: the daemon took this checkpoint with the CRIU options of the container's policy; the option flags were not applied");
        }
        let mut out = io::stdout().lock();
        let _ = writeln!(
            out,
            "checkpointed {} through the daemon ({} of images, {} added to the store, frozen {:.1} ms)",
            args.container,
            output::size(reply.logical_bytes),
            output::size(reply.added_bytes),
            reply.frozen_time_us as f64 / 1000.0
        );
        let _ = writeln!(out, "{}", reply.checkpoint);
        return Ok(());
    }
    let options = CheckpointOptions {
        tcp_established: args.tcp_established,
        file_locks: args.file_locks,
        skip_in_flight: args.skip_in_flight,
        ext_unix_sk: args.ext_unix_sk,
        ghost_limit: args.ghost_limit,
    };
    let manifest =
        ops::checkpoint(ctx, &args.container, &options, None).map_err(|e| classify(e.into()))?;
    let stats = &manifest.meta.dump_stats;
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "checkpointed {} ({} of images, {} added to the store, frozen {:.1} ms)",
        args.container,
        output::size(manifest.logical_bytes),
        output::size(manifest.added_bytes),
        stats.frozen_time_us as f64 / 1000.0
    );
    let _ = writeln!(out, "{}", manifest.meta.id);
    Ok(())
}

/// List checkpoints, newest first.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  ckpt list\n  ckpt list web --json")]
pub struct ListArgs {
    /// Only this container's checkpoints.
    pub container: Option<ContainerId>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One checkpoint as `ckpt list --json` prints it.
#[derive(Debug, Serialize)]
pub struct ListEntry<'a> {
    pub id: &'a str,
    pub container: &'a str,
    pub created: String,
    pub status: &'static str,
    pub logical_bytes: u64,
    pub added_bytes: u64,
    pub frozen_ms: f64,
    pub criu_version: &'a str,
}

/// Returns `good`, or `unhealthy` for a checkpoint taken while the health probe failed.
pub fn status(manifest: &Manifest) -> &'static str {
    if manifest.meta.health_passing == Some(false) {
        "unhealthy"
    } else {
        "good"
    }
}

pub fn list(ctx: &Context, args: ListArgs) -> CommandResult {
    // A store is created by the first checkpoint; before that the listing is empty.
    let manifests = if ctx.store_root.exists() {
        let store = ctx.open_existing_store().map_err(|e| classify(e.into()))?;
        store
            .list(args.container.as_ref())
            .map_err(|e| classify(e.into()))?
    } else {
        Vec::new()
    };
    let mut out = io::stdout().lock();

    if args.json {
        let entries: Vec<ListEntry> = manifests
            .iter()
            .map(|m| ListEntry {
                id: m.meta.id.as_str(),
                container: m.meta.container.as_str(),
                created: m
                    .meta
                    .created
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                status: status(m),
                logical_bytes: m.logical_bytes,
                added_bytes: m.added_bytes,
                frozen_ms: m.meta.dump_stats.frozen_time_us as f64 / 1000.0,
                criu_version: &m.meta.criu_version,
            })
            .collect();
        let text = serde_json::to_string_pretty(&entries)
            .context("failed to encode checkpoints as JSON")
            .map_err(Failure::failed)?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }

    if manifests.is_empty() {
        let whose = args
            .container
            .map_or_else(|| "any container".to_string(), |c| format!("container {c}"));
        let _ = writeln!(
            out,
            "no checkpoints of {whose} in store {}",
            ctx.store_root.display()
        );
        return Ok(());
    }
    let now = Utc::now();
    let mut table = Table::new(&[
        "ID",
        "CONTAINER",
        "CREATED",
        "STATUS",
        "SIZE",
        "ADDED",
        "FROZEN",
    ]);
    for m in &manifests {
        table.row(vec![
            m.meta.id.to_string(),
            m.meta.container.to_string(),
            output::age(m.meta.created, now),
            status(m).to_string(),
            output::size(m.logical_bytes),
            output::size(m.added_bytes),
            format!("{:.1} ms", m.meta.dump_stats.frozen_time_us as f64 / 1000.0),
        ]);
    }
    let _ = table.write(&mut out);
    Ok(())
}
