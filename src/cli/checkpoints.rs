//! `ckpt checkpoint` and `ckpt list`.

use std::io::{self, Write};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
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
    let flags_given = args.tcp_established
        || args.file_locks
        || args.skip_in_flight
        || args.ext_unix_sk
        || args.ghost_limit.is_some();
    if let Some(reply) =
        super::daemon::checkpoint_through_daemon(socket, &args.container, flags_given)?
    {
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
#[command(
    after_help = "Examples:\n  ckpt list\n  ckpt list web --since 1h\n  ckpt list 20261204T20 --json"
)]
pub struct ListArgs {
    /// Only checkpoints of this container, or whose id starts with this prefix.
    #[arg(value_name = "CONTAINER|ID-PREFIX")]
    pub filter: Option<String>,
    /// Only checkpoints taken since this long ago (e.g. 30m) or this RFC 3339 time.
    #[arg(long, value_name = "DURATION|TIME", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
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

/// Parses `--since`: a duration before now, or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let ago = crate::units::parse_duration(text)
        .map_err(|_| format!("invalid time {text:?}: expected a duration such as 30m or an RFC 3339 time such as 2026-12-04T20:00:00Z"))?;
    let ago = chrono::Duration::from_std(ago)
        .map_err(|_| format!("invalid time {text:?}: too far back"))?;
    Ok(Utc::now() - ago)
}

/// Keeps the checkpoints of container `filter`, or else those whose id starts with `filter`.
fn filter_manifests(
    manifests: Vec<Manifest>,
    filter: Option<&str>,
    since: Option<DateTime<Utc>>,
) -> Vec<Manifest> {
    let by_container =
        filter.is_some_and(|f| manifests.iter().any(|m| m.meta.container.as_str() == f));
    manifests
        .into_iter()
        .filter(|m| match filter {
            None => true,
            Some(f) if by_container => m.meta.container.as_str() == f,
            Some(f) => m.meta.id.as_str().starts_with(f),
        })
        .filter(|m| since.is_none_or(|t| m.meta.created >= t))
        .collect()
}

pub fn list(ctx: &Context, args: ListArgs) -> CommandResult {
    // A store is created by the first checkpoint; before that the listing is empty.
    let manifests = if ctx.store_root.exists() {
        let store = ctx.open_existing_store().map_err(|e| classify(e.into()))?;
        store.list(None).map_err(|e| classify(e.into()))?
    } else {
        Vec::new()
    };
    let manifests = filter_manifests(manifests, args.filter.as_deref(), args.since);
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
        let what = match &args.filter {
            Some(filter) => format!("no checkpoints match {filter:?}"),
            None => "no checkpoints".to_string(),
        };
        let since = args
            .since
            .map(|t| {
                format!(
                    " since {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default();
        let _ = writeln!(out, "{what}{since} in store {}", ctx.store_root.display());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CheckpointId, CheckpointMeta, CheckpointOptions, DumpStats, RuntimeInfo};

    fn manifest(container: &str, created: &str) -> Manifest {
        let created: DateTime<Utc> = created.parse().unwrap();
        let meta = CheckpointMeta {
            id: CheckpointId::generate(created),
            container: container.parse().unwrap(),
            created,
            criu_version: "4.2.1".into(),
            kernel: "6.18".into(),
            options: CheckpointOptions::default(),
            dump_stats: DumpStats::default(),
            runtime: RuntimeInfo::default(),
            health_passing: None,
        };
        Manifest {
            meta,
            files: Vec::new(),
            logical_bytes: 0,
            added_bytes: 0,
            chunk_count: 0,
        }
    }

    #[test]
    fn filter_matches_container_then_id_prefix() {
        let all = vec![
            manifest("web", "2026-12-04T20:00:00Z"),
            manifest("db", "2026-12-04T21:00:00Z"),
            manifest("web", "2026-12-05T08:00:00Z"),
        ];
        let web = filter_manifests(all.clone(), Some("web"), None);
        assert_eq!(web.len(), 2);
        let by_prefix = filter_manifests(all.clone(), Some("20261204T2"), None);
        assert_eq!(by_prefix.len(), 2);
        let since = filter_manifests(
            all.clone(),
            None,
            Some("2026-12-04T20:30:00Z".parse().unwrap()),
        );
        assert_eq!(since.len(), 2);
        assert!(filter_manifests(all, Some("nothing"), None).is_empty());
    }

    #[test]
    fn since_accepts_durations_and_times() {
        let time = parse_since("2026-12-04T20:00:00Z").unwrap();
        assert_eq!(time.to_rfc3339(), "2026-12-04T20:00:00+00:00");
        let ago = Utc::now() - parse_since("30m").unwrap();
        assert!((ago.num_seconds() - 1800).abs() <= 2);
        assert!(
            parse_since("yesterday")
                .unwrap_err()
                .contains("invalid time")
        );
    }
}
