//! Store maintenance commands: `verify`, `fsck`, `gc`, `delete`, `export`, `import`
//! and `store stats`.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{self, Table};
use super::{CommandResult, Failure, classify};
use crate::ops::Context;
use crate::store::{FsckReport, Store};

/// Recheck every chunk and file hash of one checkpoint, or of the whole store.
///
/// Exits with 1 when any checkpoint fails.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  ckpt verify\n  ckpt verify 20261204T2015")]
pub struct VerifyArgs {
    /// Checkpoint id or unique id prefix [default: every checkpoint].
    pub checkpoint: Option<String>,
    /// Print a JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Find leftovers of interrupted operations and damage in the store.
///
/// Without --repair nothing changes and the exit code is 1 when problems are found.
/// With --repair, stale staging directories, temporary files, orphan and unreferenced
/// packs are removed. Damaged pack indexes are rebuilt from their packs, and corrupt
/// manifests are renamed to *.manifest.corrupt. The exit code is then 1 only when
/// checkpoints remain that cannot be restored.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  ckpt fsck\n  ckpt fsck --repair")]
pub struct FsckArgs {
    /// Fix what can be fixed without losing a committed checkpoint.
    #[arg(long)]
    pub repair: bool,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Remove chunks that no checkpoint refers to.
///
/// Waits for checkpoints being committed, so it is safe while checkpoints are taken.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  ckpt gc\n  ckpt gc --json")]
pub struct GcArgs {
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Delete checkpoints. Their space is freed by the next `ckpt gc`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  ckpt delete 20261204T2015 20261204T2030")]
pub struct DeleteArgs {
    /// Checkpoint ids or unique id prefixes.
    #[arg(required = true, value_name = "ID")]
    pub checkpoints: Vec<String>,
}

/// Write a checkpoint as a tar+zstd archive in Podman's checkpoint-archive layout.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  ckpt export 20261204T2015 -o web.tar.zst")]
pub struct ExportArgs {
    /// Checkpoint id or unique id prefix.
    pub checkpoint: String,
    /// Archive file to write; it appears only once complete.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

/// Import a checkpoint archive (tar or tar+zstd) exported by ckpt or Podman.
///
/// On success the last line of stdout is the imported checkpoint's id.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  ckpt import web.tar.zst")]
pub struct ImportArgs {
    /// Archive file to read.
    pub archive: PathBuf,
}

/// Commands about the store as a whole.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Show totals: checkpoints, logical and stored bytes, and the deduplication ratio.
    #[command(after_help = "Examples:\n  ckpt store stats\n  ckpt store stats --json")]
    Stats {
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn open_existing(ctx: &Context) -> Result<Store, Failure> {
    ctx.open_existing_store().map_err(|e| classify(e.into()))
}

fn print_json(value: &impl Serialize) -> CommandResult {
    let text = serde_json::to_string_pretty(value)
        .context("failed to encode the result as JSON")
        .map_err(Failure::failed)?;
    let _ = writeln!(io::stdout().lock(), "{text}");
    Ok(())
}

pub fn verify(ctx: &Context, args: VerifyArgs) -> CommandResult {
    let store = open_existing(ctx)?;
    let id = match &args.checkpoint {
        Some(input) => Some(
            store
                .resolve(input)
                .map_err(|e| classify(e.into()))?
                .meta
                .id,
        ),
        None => None,
    };
    let report = store.verify(id.as_ref()).map_err(|e| classify(e.into()))?;

    if args.json {
        print_json(&report)?;
    } else if report.checkpoints.is_empty() {
        let _ = writeln!(
            io::stdout().lock(),
            "no checkpoints to verify in store {}",
            ctx.store_root.display()
        );
    } else {
        let mut table = Table::new(&["ID", "RESULT", "SIZE", "ERROR"]);
        for check in &report.checkpoints {
            let result = if check.error.is_some() {
                "corrupt"
            } else {
                "ok"
            };
            table.row(vec![
                check.id.clone(),
                result.to_string(),
                output::size(check.bytes),
                check.error.clone().unwrap_or_default(),
            ]);
        }
        let _ = table.write(&mut io::stdout().lock());
    }

    let failed = report
        .checkpoints
        .iter()
        .filter(|c| c.error.is_some())
        .count();
    if failed > 0 {
        return Err(Failure::failed(anyhow::anyhow!(
            "{failed} of {} checkpoints failed verification",
            report.checkpoints.len()
        )));
    }
    Ok(())
}

pub fn fsck(ctx: &Context, args: FsckArgs) -> CommandResult {
    let store = open_existing(ctx)?;
    let report = store.fsck(args.repair).map_err(|e| classify(e.into()))?;
    if args.json {
        print_json(&report)?;
    } else {
        print_fsck(&mut io::stdout().lock(), &report, &ctx.store_root);
    }

    let unrepairable = report.corrupt_manifests.len() + report.missing_chunks.len();
    if args.repair && unrepairable > 0 {
        return Err(Failure::failed(anyhow::anyhow!(
            "{unrepairable} checkpoints cannot be restored and were not repaired"
        )));
    }
    if !args.repair && !report.is_clean() {
        return Err(Failure::failed(anyhow::anyhow!(
            "store {} has problems; run `ckpt fsck --repair` to fix what can be fixed",
            ctx.store_root.display()
        )));
    }
    Ok(())
}

fn print_fsck(out: &mut impl Write, report: &FsckReport, root: &std::path::Path) {
    if report.is_clean() {
        let _ = writeln!(out, "no problems found in store {}", root.display());
        return;
    }
    let fixed = if report.repaired { " (removed)" } else { "" };
    for path in &report.stale_staging {
        let _ = writeln!(out, "stale staging entry{fixed}: {}", path.display());
    }
    for path in &report.temp_files {
        let _ = writeln!(out, "temporary file{fixed}: {}", path.display());
    }
    for name in &report.orphan_packs {
        let _ = writeln!(out, "pack without index{fixed}: {name}");
    }
    for name in &report.unreferenced_packs {
        let _ = writeln!(out, "unreferenced pack{fixed}: {name}");
    }
    let rebuilt = if report.repaired { " (rebuilt)" } else { "" };
    for (name, reason) in &report.damaged_indexes {
        let _ = writeln!(out, "damaged pack index{rebuilt}: {name}: {reason}");
    }
    let aside = if report.repaired {
        " (renamed to *.manifest.corrupt)"
    } else {
        ""
    };
    for (path, reason) in &report.corrupt_manifests {
        let _ = writeln!(out, "corrupt manifest{aside}: {}: {reason}", path.display());
    }
    for (id, count) in &report.missing_chunks {
        let _ = writeln!(out, "checkpoint {id} refers to {count} missing chunks");
    }
}

pub fn gc(ctx: &Context, args: GcArgs) -> CommandResult {
    let store = open_existing(ctx)?;
    let report = store.gc().map_err(|e| classify(e.into()))?;
    if args.json {
        return print_json(&report);
    }
    let _ = writeln!(
        io::stdout().lock(),
        "freed {} in {} ms: {} packs deleted, {} packs rewritten, {} temporary files removed",
        output::size(report.bytes_freed),
        report.duration_ms,
        report.packs_deleted,
        report.packs_rewritten,
        report.temp_files_removed
    );
    Ok(())
}

pub fn delete(ctx: &Context, args: DeleteArgs) -> CommandResult {
    let store = open_existing(ctx)?;
    // Resolve every name first, so that one typo deletes nothing.
    let mut ids = Vec::new();
    for input in &args.checkpoints {
        ids.push(
            store
                .resolve(input)
                .map_err(|e| classify(e.into()))?
                .meta
                .id,
        );
    }
    let mut out = io::stdout().lock();
    for id in ids {
        store.delete(&id).map_err(|e| classify(e.into()))?;
        let _ = writeln!(out, "deleted {id}");
    }
    Ok(())
}

pub fn export(ctx: &Context, args: ExportArgs) -> CommandResult {
    let store = open_existing(ctx)?;
    let manifest = store
        .resolve(&args.checkpoint)
        .map_err(|e| classify(e.into()))?;
    store
        .export(&manifest.meta.id, &args.output)
        .map_err(|e| classify(e.into()))?;
    let _ = writeln!(
        io::stdout().lock(),
        "exported {} ({} of images) to {}",
        manifest.meta.id,
        output::size(manifest.logical_bytes),
        args.output.display()
    );
    Ok(())
}

pub fn import(ctx: &Context, args: ImportArgs) -> CommandResult {
    if !args.archive.is_file() {
        return Err(Failure::usage(anyhow::anyhow!(
            "archive {} not found or not a file; pass the path of a checkpoint archive",
            args.archive.display()
        )));
    }
    let store = ctx.open_store().map_err(|e| classify(e.into()))?;
    let manifest = store
        .import(&args.archive)
        .map_err(|e| classify(e.into()))?;
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "imported checkpoint of {} ({} of images, {} added to the store)",
        manifest.meta.container,
        output::size(manifest.logical_bytes),
        output::size(manifest.added_bytes)
    );
    let _ = writeln!(out, "{}", manifest.meta.id);
    Ok(())
}

pub fn run(ctx: &Context, command: StoreCommand) -> CommandResult {
    match command {
        StoreCommand::Stats { json } => stats(ctx, json),
    }
}

fn stats(ctx: &Context, json: bool) -> CommandResult {
    let store = open_existing(ctx)?;
    let stats = store.stats().map_err(|e| classify(e.into()))?;
    if json {
        return print_json(&stats);
    }
    let mut table = Table::new(&["FIELD", "VALUE"]);
    table.row(vec!["store".into(), ctx.store_root.display().to_string()]);
    table.row(vec!["checkpoints".into(), stats.checkpoints.to_string()]);
    table.row(vec!["containers".into(), stats.containers.to_string()]);
    table.row(vec![
        "logical size".into(),
        output::size(stats.logical_bytes),
    ]);
    table.row(vec!["stored size".into(), output::size(stats.stored_bytes)]);
    table.row(vec!["packs".into(), stats.packs.to_string()]);
    table.row(vec![
        "unique chunks".into(),
        stats.unique_chunks.to_string(),
    ]);
    table.row(vec![
        "deduplication ratio".into(),
        format!("{:.2}", stats.dedup_ratio),
    ]);
    let _ = table.write(&mut io::stdout().lock());
    Ok(())
}
