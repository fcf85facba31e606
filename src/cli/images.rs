//! `ckpt inspect`, `ckpt diff` and `ckpt memgrep`: looking inside checkpoints
//! without restoring them.

use std::io::{self, Write};
use std::ops::ControlFlow;

use anyhow::{Context as _, anyhow};
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::output;
use super::{CommandResult, Failure};
use crate::images::{
    self, MemMatch, MemgrepOptions, OpenStoredError, Pattern, StoredCheckpoint, render,
};
use crate::model::CheckpointMeta;
use crate::ops::Context;
use crate::store::StoreError;

/// Largest `--context` accepted, in bytes.
const MAX_CONTEXT: usize = 4096;

/// Show what a checkpoint contains: processes, threads, memory, files, sockets, mounts.
///
/// The CRIU images are decoded natively from a temporary copy, and nothing is restored.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  ckpt inspect 20261204T2003\n  ckpt inspect 20261204T2003 --format json --env"
)]
pub struct InspectArgs {
    /// Checkpoint id or unique prefix, as `ckpt list` shows it.
    pub checkpoint: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = InspectFormat::Tree)]
    pub format: InspectFormat,
    /// Include each process's environment variables, which may contain secrets.
    #[arg(long)]
    pub env: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InspectFormat {
    Tree,
    Json,
}

/// Show what changed between two checkpoints of one container.
///
/// Processes are matched by PID, files by descriptor, and memory pages are
/// compared by content per mapping.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  ckpt diff 20261204T2003 20261204T2013\n  ckpt diff 20261204T2003 20261204T2013 --json"
)]
pub struct DiffArgs {
    /// Older checkpoint: id or unique prefix.
    pub a: String,
    /// Newer checkpoint: id or unique prefix.
    pub b: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Search a checkpoint's memory pages for a string or regex.
///
/// Prints the process, the mapping, the address and a hexdump of the bytes
/// around each match. Only pages that CRIU stored in the checkpoint are searched.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  ckpt memgrep 20261204T2003 'password='\n  ckpt memgrep 20261204T2003 --regex 'session=[0-9a-f]{32}' --context 64 --json"
)]
pub struct MemgrepArgs {
    /// Checkpoint id or unique prefix.
    pub checkpoint: String,
    /// Bytes to search for, or a regex (Rust `regex` syntax, matched on bytes) with --regex.
    pub pattern: String,
    /// Treat PATTERN as a regex.
    #[arg(long)]
    pub regex: bool,
    /// Bytes of context shown before and after each match (at most 4096).
    #[arg(long, short = 'C', value_name = "BYTES", default_value_t = 32)]
    pub context: usize,
    /// Search only this process (PID as recorded in the checkpoint).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Stop after this many matches.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = parse_max_count)]
    pub max_count: usize,
    /// Print a JSON array instead of hexdumps.
    #[arg(long)]
    pub json: bool,
}

fn parse_max_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Maps an open failure to its exit code: an unknown or ambiguous id is bad input (2).
fn open_failure(error: OpenStoredError) -> Failure {
    let is_input = matches!(
        &error,
        OpenStoredError::Store { source, .. }
            if matches!(**source, StoreError::NotFound { .. } | StoreError::Ambiguous { .. })
    );
    if is_input {
        Failure::usage(error.into())
    } else {
        Failure::failed(error.into())
    }
}

fn open(ctx: &Context, id_or_prefix: &str) -> Result<StoredCheckpoint, Failure> {
    let store = ctx
        .open_existing_store()
        .map_err(|e| super::classify(e.into()))?;
    StoredCheckpoint::open(&store, id_or_prefix, &std::env::temp_dir()).map_err(open_failure)
}

fn print_json(value: &impl Serialize, description: &str) -> CommandResult {
    let text = serde_json::to_string_pretty(value)
        .with_context(|| format!("failed to encode {description} as JSON"))
        .map_err(Failure::failed)?;
    let _ = writeln!(io::stdout().lock(), "{text}");
    Ok(())
}

/// `ckpt inspect --format json` output.
#[derive(Serialize)]
struct InspectJson<'a> {
    meta: &'a CheckpointMeta,
    logical_bytes: u64,
    images: serde_json::Value,
}

pub fn inspect(ctx: &Context, args: InspectArgs) -> CommandResult {
    let stored = open(ctx, &args.checkpoint)?;
    let meta = &stored.manifest.meta;

    if args.format == InspectFormat::Json {
        return print_json(
            &InspectJson {
                meta,
                logical_bytes: stored.manifest.logical_bytes,
                images: without_temporary_dir(render::inspect_json(&stored.images, args.env)),
            },
            "checkpoint",
        );
    }

    let mut out = io::stdout().lock();
    let _ = writeln!(out, "checkpoint:      {}", meta.id);
    let _ = writeln!(out, "container:       {}", meta.container);
    let _ = writeln!(
        out,
        "created:         {}",
        meta.created
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let _ = writeln!(
        out,
        "criu / kernel:   {} / {}",
        meta.criu_version, meta.kernel
    );
    let _ = writeln!(out, "options:         {}", describe_options(meta));
    let _ = writeln!(
        out,
        "size:            {}",
        output::size(stored.manifest.logical_bytes)
    );
    let _ = write!(out, "{}", render::inspect_tree(&stored.images, args.env));
    Ok(())
}

/// Drops the image directory, a temporary copy that is gone once the command exits.
fn without_temporary_dir(mut images: serde_json::Value) -> serde_json::Value {
    if let Some(object) = images.as_object_mut() {
        object.remove("dir");
    }
    images
}

fn describe_options(meta: &CheckpointMeta) -> String {
    let options = &meta.options;
    let mut set: Vec<String> = [
        (options.tcp_established, "tcp-established"),
        (options.file_locks, "file-locks"),
        (options.skip_in_flight, "skip-in-flight"),
        (options.ext_unix_sk, "ext-unix-sk"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| name.to_string())
    .collect();
    if let Some(limit) = options.ghost_limit {
        set.push(format!("ghost-limit {}", output::size(limit)));
    }
    if set.is_empty() {
        "none".to_string()
    } else {
        set.join(", ")
    }
}

pub fn diff(ctx: &Context, args: DiffArgs) -> CommandResult {
    let a = open(ctx, &args.a)?;
    let b = open(ctx, &args.b)?;
    if a.manifest.meta.container != b.manifest.meta.container {
        return Err(Failure::usage(anyhow!(
            "checkpoints {} and {} belong to different containers ({} and {}); diff compares checkpoints of one container",
            a.manifest.meta.id,
            b.manifest.meta.id,
            a.manifest.meta.container,
            b.manifest.meta.container
        )));
    }

    let changes = images::diff(&a.images, &b.images)
        .with_context(|| {
            format!(
                "failed to compare checkpoints {} and {}",
                a.manifest.meta.id, b.manifest.meta.id
            )
        })
        .map_err(Failure::failed)?;
    if args.json {
        return print_json(&changes, "diff");
    }
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "--- {}", a.manifest.meta.id);
    let _ = writeln!(out, "+++ {}", b.manifest.meta.id);
    let _ = write!(out, "{}", render::diff_text(&changes));
    Ok(())
}

pub fn memgrep(ctx: &Context, args: MemgrepArgs) -> CommandResult {
    if args.context > MAX_CONTEXT {
        return Err(Failure::usage(anyhow!(
            "invalid --context {}: at most {MAX_CONTEXT} bytes",
            args.context
        )));
    }
    let pattern = if args.regex {
        Pattern::regex(&args.pattern)
    } else {
        Pattern::literal(&args.pattern)
    }
    .map_err(|e| Failure::usage(e.into()))?;

    let stored = open(ctx, &args.checkpoint)?;
    let options = MemgrepOptions {
        context: args.context,
        pid: args.pid,
    };
    if let Some(pid) = args.pid
        && stored.images.process(pid).is_none()
    {
        return Err(Failure::usage(anyhow!(
            "process {pid} is not in checkpoint {}",
            stored.manifest.meta.id
        )));
    }

    let mut out = io::stdout().lock();
    let mut collected: Vec<MemMatch> = Vec::new();
    let mut seen = 0usize;
    let mut write_failed = false;
    let count = images::memgrep(&stored.images, &pattern, &options, |found| {
        seen += 1;
        if args.json {
            collected.push(found);
        } else if write!(out, "{}", render::memgrep_text(&found)).is_err() {
            // stdout is closed (for example piped into `head`), so stop searching.
            write_failed = true;
            return ControlFlow::Break(());
        }
        if seen >= args.max_count {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .with_context(|| format!("failed to search checkpoint {}", stored.manifest.meta.id))
    .map_err(Failure::failed)?;
    drop(out);

    if write_failed {
        return Ok(());
    }
    if args.json {
        return print_json(&collected, "matches");
    }
    if count == 0 {
        println!(
            "no matches for {:?} in checkpoint {}",
            args.pattern, stored.manifest.meta.id
        );
    } else if count >= args.max_count {
        eprintln!("ckpt: reached the --max-count limit of {count} matches, so more may exist");
    }
    Ok(())
}
