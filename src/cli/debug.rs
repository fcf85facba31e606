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
    let debug = restore_uninterrupted(ctx, &request)?;

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

/// Restores paused with SIGINT, SIGTERM and SIGHUP deferred. If one arrived
/// meanwhile, removes the new debug container and reports the interruption.
fn restore_uninterrupted(
    ctx: &Context,
    request: &RestoreRequest,
) -> Result<DebugContainer, Failure> {
    let deferred = super::signals::Deferred::block();
    let restored = ops::restore_paused(ctx, request).map_err(|e| classify(e.into()))?;
    if let Some(signal) = deferred.take_pending() {
        let removed = match ops::remove_debug(&ctx.store_root, &restored.name) {
            Ok(()) => format!("removed debug container {}", restored.name),
            Err(e) => format!(
                "failed to remove debug container {}: {}",
                restored.name,
                crate::error::chain(&e)
            ),
        };
        return Err(Failure::failed(anyhow!(
            "interrupted by {signal}; {removed}"
        )));
    }
    Ok(restored)
}

/// List debug containers.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  ckpt ps\n  ckpt ps web --since 10m --json")]
pub struct PsArgs {
    /// Only debug containers of this container, or whose name starts with this prefix.
    #[arg(value_name = "CONTAINER|NAME-PREFIX")]
    pub filter: Option<String>,
    /// Only debug containers created since this long ago (e.g. 30m) or this RFC 3339 time.
    #[arg(long, value_name = "DURATION|TIME", value_parser = super::checkpoints::parse_since)]
    pub since: Option<chrono::DateTime<Utc>>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn ps(ctx: &Context, args: PsArgs) -> CommandResult {
    // A path that exists but is not a store is named as such, not as a missing record.
    if ctx.store_root.exists() {
        ctx.open_existing_store().map_err(|e| classify(e.into()))?;
    }
    let debugs: Vec<DebugContainer> = ops::list_debug(&ctx.store_root)
        .map_err(|e| classify(e.into()))?
        .into_iter()
        .filter(|d| {
            args.filter
                .as_deref()
                .is_none_or(|f| d.container.as_str() == f || d.name.starts_with(f))
        })
        .filter(|d| args.since.is_none_or(|t| d.created >= t))
        .collect();
    let mut out = io::stdout().lock();
    if args.json {
        let text = serde_json::to_string_pretty(&debugs)
            .context("failed to encode debug containers as JSON")
            .map_err(Failure::failed)?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }
    if debugs.is_empty() {
        let what = match &args.filter {
            Some(filter) => format!("no debug containers match {filter:?}"),
            None => "no debug containers".to_string(),
        };
        let _ = writeln!(out, "{what} in store {}", ctx.store_root.display());
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
    // One name: its error is the command's error. Several: report each, then a summary.
    if let [name] = args.names.as_slice() {
        ops::remove_debug(&ctx.store_root, name).map_err(|e| classify(e.into()))?;
        let _ = writeln!(io::stdout().lock(), "removed {name}");
        return Ok(());
    }
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
                "failed to remove {failed} of {} debug containers",
                args.names.len()
            ),
        }),
    }
}

/// Restore a checkpoint paused and attach a debugger to its root task.
///
/// gdb opens with its sysroot at the debug container's root, so the
/// executable's shared libraries and symbols resolve as inside the container.
/// With strace, every task resumes once strace is attached, so the system
/// calls that follow the checkpoint are traced. When the debugger exits, the
/// debug container is removed unless --keep is given.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  ckpt debug web\n  ckpt debug web --batch --ex bt --ex 'info threads'\n  ckpt debug web --debugger strace --duration 5s -- -e trace=network\n  ckpt debug web --debugger 'ltrace -f' --keep"
)]
pub struct DebugArgs {
    /// Container whose checkpoint to debug.
    pub container: ContainerId,
    /// Checkpoint id or unique prefix [default: the newest good checkpoint].
    #[arg(long, value_name = "ID")]
    pub checkpoint: Option<String>,
    /// gdb, strace, or another command line; `{pid}` in it is replaced by the
    /// root task's PID, and without `{pid}` the arguments `-p PID` are appended.
    #[arg(long, default_value = "gdb", value_name = "gdb|strace|CMD")]
    pub debugger: String,
    /// Keep the debug container after the debugger exits.
    #[arg(long)]
    pub keep: bool,
    /// Run without a terminal: gdb runs the --ex commands, then detaches and exits.
    #[arg(long)]
    pub batch: bool,
    /// A gdb command to run after attaching (repeatable).
    #[arg(long = "ex", value_name = "COMMAND")]
    pub commands: Vec<String>,
    /// Stop the debugger after this long, e.g. 5s (useful for strace in scripts).
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Name of the debug container [default: CONTAINER-debug-XXXXXX].
    #[arg(long)]
    pub name: Option<String>,
    /// Extra arguments for the debugger, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// The debugger ckpt runs, by kind.
#[derive(Debug, PartialEq, Eq)]
enum Debugger {
    Gdb,
    Strace,
    Other(Vec<String>),
}

impl Debugger {
    fn parse(text: &str) -> Result<Self, Failure> {
        match text {
            "gdb" => Ok(Self::Gdb),
            "strace" => Ok(Self::Strace),
            other => {
                let words: Vec<String> = other.split_whitespace().map(str::to_string).collect();
                if words.is_empty() {
                    return Err(Failure::usage(anyhow!(
                        "invalid --debugger {other:?}: expected gdb, strace or a command"
                    )));
                }
                Ok(Self::Other(words))
            }
        }
    }

    /// Builds the debugger's command line for the root task `pid`.
    fn command_line(&self, args: &DebugArgs, pid: i32) -> Vec<String> {
        let pid_text = pid.to_string();
        let mut line: Vec<String> = match self {
            Self::Gdb => {
                let mut line = vec![
                    "gdb".to_string(),
                    "-p".to_string(),
                    pid_text.clone(),
                    "-ex".to_string(),
                    format!("set sysroot /proc/{pid}/root"),
                ];
                if args.batch {
                    line.insert(1, "-batch".to_string());
                }
                for command in &args.commands {
                    line.push("-ex".to_string());
                    line.push(command.clone());
                }
                line
            }
            Self::Strace => vec![
                "strace".to_string(),
                "-f".to_string(),
                "-p".to_string(),
                pid_text.clone(),
            ],
            Self::Other(words) => {
                let mut line: Vec<String> = words
                    .iter()
                    .map(|w| w.replace("{pid}", &pid_text))
                    .collect();
                if !words.iter().any(|w| w.contains("{pid}")) {
                    line.push("-p".to_string());
                    line.push(pid_text.clone());
                }
                line
            }
        };
        line.extend(args.args.iter().map(|a| a.replace("{pid}", &pid_text)));
        line
    }
}

pub fn debug(ctx: &Context, args: DebugArgs) -> CommandResult {
    let debugger = Debugger::parse(&args.debugger)?;
    if !args.commands.is_empty() && debugger != Debugger::Gdb {
        return Err(Failure::usage(anyhow!(
            "--ex takes gdb commands, but --debugger is {}",
            args.debugger
        )));
    }

    // Restore paused, exactly as `ckpt restore --paused` does.
    let request = RestoreRequest {
        container: args.container.clone(),
        checkpoint: args.checkpoint.clone(),
        name: args.name.clone(),
    };
    let restored = restore_uninterrupted(ctx, &request)?;
    let pid = restored.pid;
    let line = debugger.command_line(&args, pid);
    eprintln!(
        "ckpt: debugging pid {pid} of debug container {} (checkpoint {} of {}); every task is stopped",
        restored.name, restored.checkpoint, restored.container
    );
    match debugger {
        Debugger::Gdb if !args.batch => eprintln!(
            "ckpt: in gdb: `bt` and `info threads` to look, `stepi`/`next` to step, `continue` to run, \
             `detach` then `quit` to leave; other tasks stay stopped until `ckpt resume {}`",
            restored.name
        ),
        Debugger::Strace => eprintln!("ckpt: every task resumes once strace is attached"),
        _ => {}
    }

    // Run the debugger, then remove the debug container unless asked to keep it.
    // Ctrl-C belongs to the debugger, and a hang-up or SIGTERM waits until
    // the debugger has exited, so that ckpt always gets to clean up.
    let outcome = {
        let _deferred = super::signals::Deferred::block();
        let _ignore_interrupt = super::signals::IgnoreInterrupt::new();
        run_debugger(&line, &debugger, &restored, args.duration)
    };
    if args.keep {
        eprintln!(
            "ckpt: kept debug container {}; resume it with `ckpt resume {0}` or remove it with `ckpt rm {0}`",
            restored.name
        );
    } else if let Err(e) = ops::remove_debug(&ctx.store_root, &restored.name) {
        eprintln!(
            "ckpt: failed to remove debug container {}: {}",
            restored.name,
            crate::error::chain(&e)
        );
    } else {
        eprintln!("ckpt: removed debug container {}", restored.name);
    }
    let status = outcome?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::failed(anyhow!("{} exited with {status}", line[0])))
    }
}

fn run_debugger(
    line: &[String],
    debugger: &Debugger,
    restored: &DebugContainer,
    duration: Option<std::time::Duration>,
) -> Result<std::process::ExitStatus, Failure> {
    let mut command = std::process::Command::new(&line[0]);
    command.args(&line[1..]);
    super::signals::restore_default_in_child(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("failed to start {}; is it installed?", line[0]))
        .map_err(Failure::failed)?;

    if *debugger == Debugger::Strace {
        wait_until_traced(restored.pid, std::time::Duration::from_secs(10));
        for &task in &restored.pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(task),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
    if let Some(limit) = duration {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if child.try_wait().ok().flatten().is_none() {
            // SIGINT makes gdb and strace detach cleanly.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("failed to wait for {}", line[0]))
        .map_err(Failure::failed)?;
    // A tracer stopped by --duration exits by SIGINT or with its own code; that is expected.
    if duration.is_some() && *debugger == Debugger::Strace {
        return Ok(std::process::ExitStatus::default());
    }
    Ok(status)
}

/// Waits until some process traces `pid` (its `TracerPid` is set), or `timeout` passes.
fn wait_until_traced(pid: i32, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let traced = status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .is_some_and(|t| t.trim() != "0");
        if traced {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> DebugArgs {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            debug: DebugArgs,
        }
        let mut argv = vec!["ckpt"];
        argv.extend_from_slice(args);
        Wrapper::parse_from(argv).debug
    }

    #[test]
    fn gdb_command_line_sets_sysroot_and_commands() {
        let args = parse(&["web", "--batch", "--ex", "bt"]);
        let line = Debugger::parse(&args.debugger)
            .unwrap()
            .command_line(&args, 42);
        assert_eq!(
            line,
            [
                "gdb",
                "-batch",
                "-p",
                "42",
                "-ex",
                "set sysroot /proc/42/root",
                "-ex",
                "bt"
            ]
        );
    }

    #[test]
    fn custom_debugger_gets_pid() {
        let args = parse(&["web", "--debugger", "ltrace -f", "--", "-o", "/tmp/t"]);
        let line = Debugger::parse(&args.debugger)
            .unwrap()
            .command_line(&args, 7);
        assert_eq!(line, ["ltrace", "-f", "-p", "7", "-o", "/tmp/t"]);

        let args = parse(&["web", "--debugger", "perf record -p {pid}"]);
        let line = Debugger::parse(&args.debugger)
            .unwrap()
            .command_line(&args, 7);
        assert_eq!(line, ["perf", "record", "-p", "7"]);
    }

    #[test]
    fn strace_traces_children() {
        let args = parse(&["web", "--debugger", "strace"]);
        let line = Debugger::parse(&args.debugger)
            .unwrap()
            .command_line(&args, 9);
        assert_eq!(line, ["strace", "-f", "-p", "9"]);
    }
}
