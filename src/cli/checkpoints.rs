//! `ckpt checkpoint` and `ckpt list`.

use std::io::{self, Write};
use std::path::Path;

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
    /// zstd level (1 to 19) for the data this checkpoint adds to the store [default: 3].
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: Option<i32>,
    /// Largest deleted-but-open file to copy into the checkpoint (e.g. 16MiB) [CRIU's default: 1MiB].
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub ghost_limit: Option<u64>,
}

pub fn checkpoint(ctx: &Context, socket: &std::path::Path, args: CheckpointArgs) -> CommandResult {
    // The daemon's errors would differ from ckpt's own, so check the container
    // here first; without a daemon, `ops::checkpoint` makes the same check.
    if socket.exists() {
        ops::checkpoint::ensure_running(ctx, &args.container).map_err(|e| classify(e.into()))?;
    }

    // A running daemon with a policy for the container takes the checkpoint itself, so that
    // it never overlaps a scheduled checkpoint or a health probe.
    let flags_given = args.tcp_established
        || args.file_locks
        || args.skip_in_flight
        || args.ext_unix_sk
        || args.ghost_limit.is_some()
        || args.compression_level.is_some();
    if let Some(reply) = super::daemon::checkpoint_through_daemon(
        socket,
        &ctx.store_root,
        &args.container,
        flags_given,
    )? {
        print_checkpointed(
            &format!("{} through the daemon", args.container),
            &reply.checkpoint,
            reply.logical_bytes,
            reply.added_bytes,
            reply.frozen_time_us,
        );
        return Ok(());
    }

    // Otherwise take it here.
    let options = CheckpointOptions {
        tcp_established: args.tcp_established,
        file_locks: args.file_locks,
        skip_in_flight: args.skip_in_flight,
        ext_unix_sk: args.ext_unix_sk,
        ghost_limit: args.ghost_limit,
    };
    // A checkpoint cut short would leave CRIU's work half done; finish it first.
    let deferred = super::signals::Deferred::block();
    let ctx = Context {
        compression_level: args.compression_level,
        ..ctx.clone()
    };
    let manifest =
        ops::checkpoint(&ctx, &args.container, &options, None).map_err(|e| classify(e.into()))?;

    if let Some(signal) = deferred.take_pending() {
        eprintln!(
            "ckpt: interrupted by {signal} after checkpoint {} was stored",
            manifest.meta.id
        );
    }
    print_checkpointed(
        args.container.as_str(),
        manifest.meta.id.as_str(),
        manifest.logical_bytes,
        manifest.added_bytes,
        manifest.meta.dump_stats.frozen_time_us,
    );
    Ok(())
}

/// Prints the summary line and, as the last line, the checkpoint id.
fn print_checkpointed(
    what: &str,
    id: &str,
    logical_bytes: u64,
    added_bytes: u64,
    frozen_time_us: u64,
) {
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "checkpointed {what} ({} of images, {} added to the store, frozen {:.1} ms)",
        output::size(logical_bytes),
        output::size(added_bytes),
        frozen_time_us as f64 / 1000.0
    );
    let _ = writeln!(out, "{id}");
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

/// One checkpoint as `ckpt list` shows it; `--json` prints these fields.
#[derive(Clone, Debug, Serialize)]
pub struct ListEntry {
    pub id: String,
    pub container: String,
    #[serde(serialize_with = "rfc3339_seconds")]
    pub created: DateTime<Utc>,
    /// `good`, or `unhealthy` for a checkpoint taken while the health probe failed.
    pub status: &'static str,
    pub logical_bytes: u64,
    pub added_bytes: u64,
    pub frozen_ms: f64,
    pub criu_version: String,
}

fn rfc3339_seconds<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn status(health_passing: Option<bool>) -> &'static str {
    if health_passing == Some(false) {
        "unhealthy"
    } else {
        "good"
    }
}

impl From<&Manifest> for ListEntry {
    fn from(m: &Manifest) -> Self {
        Self {
            id: m.meta.id.to_string(),
            container: m.meta.container.to_string(),
            created: m.meta.created,
            status: status(m.meta.health_passing),
            logical_bytes: m.logical_bytes,
            added_bytes: m.added_bytes,
            frozen_ms: m.meta.dump_stats.frozen_time_us as f64 / 1000.0,
            criu_version: m.meta.criu_version.clone(),
        }
    }
}

impl ListEntry {
    /// Converts an entry of the daemon's List reply; `None` for an unparsable time.
    fn from_daemon(entry: crate::daemon::control::proto::CheckpointEntry) -> Option<Self> {
        let created = DateTime::parse_from_rfc3339(&entry.created)
            .ok()?
            .with_timezone(&Utc);
        Some(Self {
            id: entry.id,
            container: entry.container,
            created,
            status: status(entry.health_passing),
            logical_bytes: entry.logical_bytes,
            added_bytes: entry.added_bytes,
            frozen_ms: entry.frozen_time_us as f64 / 1000.0,
            criu_version: entry.criu_version,
        })
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
fn filter_entries(
    entries: Vec<ListEntry>,
    filter: Option<&str>,
    since: Option<DateTime<Utc>>,
) -> Vec<ListEntry> {
    let by_container = filter.is_some_and(|f| entries.iter().any(|e| e.container == f));
    entries
        .into_iter()
        .filter(|e| match filter {
            None => true,
            Some(f) if by_container => e.container == f,
            Some(f) => e.id.starts_with(f),
        })
        .filter(|e| since.is_none_or(|t| e.created >= t))
        .collect()
}

/// Reads every checkpoint, from the daemon when it runs on this store, else from the store itself.
fn read_entries(ctx: &Context, socket: &Path) -> Result<Vec<ListEntry>, Failure> {
    if let Some(entries) = super::daemon::list_through_daemon(socket, &ctx.store_root)? {
        return Ok(entries
            .into_iter()
            .filter_map(ListEntry::from_daemon)
            .collect());
    }
    // A store is created by the first checkpoint; before that the listing is empty.
    if !ctx.store_root.exists() {
        return Ok(Vec::new());
    }
    let store = ctx.open_existing_store().map_err(|e| classify(e.into()))?;
    let manifests = store.list(None).map_err(|e| classify(e.into()))?;
    Ok(manifests.iter().map(ListEntry::from).collect())
}

pub fn list(ctx: &Context, socket: &Path, args: ListArgs) -> CommandResult {
    let entries = filter_entries(
        read_entries(ctx, socket)?,
        args.filter.as_deref(),
        args.since,
    );
    let mut out = io::stdout().lock();

    if args.json {
        let text = serde_json::to_string_pretty(&entries)
            .context("failed to encode checkpoints as JSON")
            .map_err(Failure::failed)?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }

    if entries.is_empty() {
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
    for entry in &entries {
        table.row(vec![
            entry.id.clone(),
            entry.container.clone(),
            output::age(entry.created, now),
            entry.status.to_string(),
            output::size(entry.logical_bytes),
            output::size(entry.added_bytes),
            format!("{:.1} ms", entry.frozen_ms),
        ]);
    }
    let _ = table.write(&mut out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CheckpointId, CheckpointMeta, CheckpointOptions, DumpStats, RuntimeInfo};

    fn entry(container: &str, created: &str) -> ListEntry {
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
        let manifest = Manifest {
            meta,
            files: Vec::new(),
            logical_bytes: 0,
            added_bytes: 0,
            chunk_count: 0,
        };
        ListEntry::from(&manifest)
    }

    #[test]
    fn filter_matches_container_then_id_prefix() {
        let all = vec![
            entry("web", "2026-12-04T20:00:00Z"),
            entry("db", "2026-12-04T21:00:00Z"),
            entry("web", "2026-12-05T08:00:00Z"),
        ];
        let web = filter_entries(all.clone(), Some("web"), None);
        assert_eq!(web.len(), 2);
        let by_prefix = filter_entries(all.clone(), Some("20261204T2"), None);
        assert_eq!(by_prefix.len(), 2);
        let since = filter_entries(
            all.clone(),
            None,
            Some("2026-12-04T20:30:00Z".parse().unwrap()),
        );
        assert_eq!(since.len(), 2);
        assert!(filter_entries(all, Some("nothing"), None).is_empty());
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
