//! `ckpt restore`, `ckpt ps`, `ckpt resume` and `ckpt rm`.

use std::io::{self, Write};

use anyhow::{Context as _, anyhow};
use chrono::Utc;
use clap::Args;

use super::output::{self, Table};
use super::{CommandResult, Failure, classify};
use crate::model::ContainerId;
use crate::ops::restore::RestoreReport;
use crate::ops::{self, Context, DebugContainer, RestoreRequest};

/// Restore a checkpoint into an isolated debug container with every task stopped.
///
/// The debug container has its own PID and network namespaces, its own
/// cgroups, and a copy-on-write view of the original root file system.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  ckpt restore web --paused\n  ckpt restore web --paused --checkpoint 20261204T2003 --name web-crash --json"
)]
pub struct RestoreArgs {
    /// Container whose checkpoint to restore.
    pub container: ContainerId,
    /// Leave every restored task stopped, ready for gdb or strace (required).
    #[arg(long)]
    pub paused: bool,
    /// Checkpoint id or unique prefix [default: the newest good checkpoint].
    #[arg(long, value_name = "ID")]
    pub checkpoint: Option<String>,
    /// Name of the debug container [default: CONTAINER-debug-XXXXXX].
    #[arg(long)]
    pub name: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Returns the commands that attach a debugger or tracer to a debug container.
pub fn attach_commands(debug: &DebugContainer) -> Vec<String> {
    vec![
        format!(
            "gdb -p {pid} -ex 'set sysroot /proc/{pid}/root'",
            pid = debug.pid
        ),
        format!("strace -f -p {}", debug.pid),
    ]
}

pub fn restore(ctx: &Context, args: RestoreArgs) -> CommandResult {
    if !args.paused {
        return Err(Failure::usage(anyhow!(
            "restore needs --paused: ckpt only restores into a paused debug container"
        )));
    }
    let request = RestoreRequest {
        container: args.container.clone(),
        checkpoint: args.checkpoint.clone(),
        name: args.name.clone(),
    };
    let debug = ops::restore_paused(ctx, &request).map_err(|e| classify(e.into()))?;
    let mut out = io::stdout().lock();
    if args.json {
        let report = RestoreReport {
            debug: &debug,
            attach: attach_commands(&debug),
        };
        let text = serde_json::to_string_pretty(&report)
            .context("failed to encode the debug container as JSON")
            .map_err(Failure::failed)?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }
    let pids: Vec<String> = debug.pids.iter().map(i32::to_string).collect();
    let _ = writeln!(
        out,
        "restored checkpoint {} of {} into debug container {} ({})",
        debug.checkpoint,
        debug.container,
        debug.name,
        debug.state.as_str()
    );
    let _ = writeln!(out, "  root pid: {}", debug.pid);
    let _ = writeln!(out, "  pids:     {}", pids.join(" "));
    let _ = writeln!(out, "attach:");
    for command in attach_commands(&debug) {
        let _ = writeln!(out, "  {command}");
    }
    let _ = writeln!(out, "resume:   ckpt resume {}", debug.name);
    let _ = writeln!(out, "remove:   ckpt rm {}", debug.name);
    Ok(())
}

/// List debug containers.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  ckpt ps\n  ckpt ps --json")]
pub struct PsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn ps(ctx: &Context, args: PsArgs) -> CommandResult {
    let debugs = ops::list_debug(&ctx.store_root).map_err(|e| classify(e.into()))?;
    let mut out = io::stdout().lock();
    if args.json {
        let text = serde_json::to_string_pretty(&debugs)
            .context("failed to encode debug containers as JSON")
            .map_err(Failure::failed)?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }
    if debugs.is_empty() {
        let _ = writeln!(
            out,
            "no debug containers in store {}",
            ctx.store_root.display()
        );
        return Ok(());
    }
    let now = Utc::now();
    let mut table = Table::new(&["NAME", "CONTAINER", "CHECKPOINT", "PID", "STATE", "CREATED"]);
    for debug in &debugs {
        table.row(vec![
            debug.name.clone(),
            debug.container.to_string(),
            debug.checkpoint.to_string(),
            debug.pid.to_string(),
            debug.state.as_str().to_string(),
            output::age(debug.created, now),
        ]);
    }
    let _ = table.write(&mut out);
    Ok(())
}

/// Continue every task of a paused debug container.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  ckpt resume web-debug-3fa9c2")]
pub struct NameArgs {
    /// Debug container name, as `ckpt ps` shows it.
    pub name: String,
}

pub fn resume(ctx: &Context, args: NameArgs) -> CommandResult {
    let debug = ops::resume_debug(&ctx.store_root, &args.name).map_err(|e| classify(e.into()))?;
    let _ = writeln!(
        io::stdout().lock(),
        "resumed debug container {} (root pid {}, {})",
        debug.name,
        debug.pid,
        debug.state.as_str()
    );
    Ok(())
}

/// Kill debug containers and remove their cgroups and files.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  ckpt rm web-debug-3fa9c2")]
pub struct RmArgs {
    /// Debug container names, as `ckpt ps` shows them.
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn rm(ctx: &Context, args: RmArgs) -> CommandResult {
    let mut failure = None;
    let mut failed = 0;
    for name in &args.names {
        match ops::remove_debug(&ctx.store_root, name) {
            Ok(()) => {
                let _ = writeln!(io::stdout().lock(), "removed {name}");
            }
            Err(e) => {
                let f = classify(e.into());
                eprintln!("ckpt: {}", crate::error::chain(f.error.as_ref()));
                failure = Some(f.code);
                failed += 1;
            }
        }
    }
    match failure {
        None => Ok(()),
        Some(code) => Err(Failure {
            code,
            error: anyhow!(
                "failed to remove {} of {} debug containers",
                failed,
                args.names.len()
            ),
        }),
    }
}
