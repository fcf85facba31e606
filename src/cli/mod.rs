//! The `ckpt` command line.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage or input
//! (an unknown container, checkpoint or debug container, an invalid value).
//! Errors print on stderr as one line: `ckpt: ` followed by the cause chain.

mod checkpoints;
mod daemon;
mod debug;
mod docs;
mod images;
pub mod output;
mod policy;
mod progress;
mod signals;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::ops::{self, Context};

/// Exit code for a failed operation.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage or input.
pub const EXIT_USAGE: u8 = 2;

/// Checkpoint running containers with CRIU and restore them paused for debugging.
#[derive(Debug, Parser)]
#[command(name = "ckpt", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Directory of the checkpoint store.
    #[arg(long, global = true, env = "CKPT_STORE", hide_env_values = true, default_value = ops::DEFAULT_STORE, value_name = "DIR")]
    pub store: PathBuf,

    /// State root of the container runtime [default: runc's, /run/runc].
    #[arg(
        long,
        global = true,
        env = "CKPT_RUNTIME_ROOT",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub runtime_root: Option<PathBuf>,

    /// Control socket of `ckpt daemon`.
    #[arg(long, global = true, env = "CKPT_SOCKET", hide_env_values = true, default_value = crate::daemon::control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,

    /// Log more: -v for info, -vv for debug (CKPT_LOG overrides, e.g. CKPT_LOG=ckpt=trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 the operation failed, 2 bad usage or input.";

#[derive(Debug, Subcommand)]
pub enum Command {
    Checkpoint(checkpoints::CheckpointArgs),
    List(checkpoints::ListArgs),
    Restore(debug::RestoreArgs),
    Ps(debug::PsArgs),
    Resume(debug::NameArgs),
    Rm(debug::RmArgs),
    Debug(debug::DebugArgs),
    Inspect(images::InspectArgs),
    Diff(images::DiffArgs),
    Memgrep(images::MemgrepArgs),
    Daemon(daemon::DaemonArgs),
    Status(daemon::StatusArgs),
    Events(daemon::EventsArgs),
    #[command(
        subcommand,
        after_help = "Examples:\n  ckpt policy validate /etc/ckpt/policies/web.yaml\n  ckpt policy list --json"
    )]
    Policy(policy::PolicyCommand),
    Verify(store::VerifyArgs),
    Fsck(store::FsckArgs),
    Gc(store::GcArgs),
    Delete(store::DeleteArgs),
    Export(store::ExportArgs),
    Import(store::ImportArgs),
    #[command(subcommand, after_help = "Example:\n  ckpt store stats --json")]
    Store(store::StoreCommand),
    Completions(docs::CompletionsArgs),
    Man(docs::ManArgs),
    /// Internal: the reaper of a debug container.
    #[command(name = "__shim", hide = true)]
    Shim {
        dir: PathBuf,
    },
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    // Files ckpt and CRIU create hold checkpoint data and logs: root's alone.
    // Man pages and completions are for every user.
    if !matches!(cli.command, Command::Man(_) | Command::Completions(_)) {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    }
    // The daemon sets up its own logging, with a format option and info as the default level.
    if !matches!(cli.command, Command::Daemon(_)) {
        init_logging(cli.verbose);
    }
    let ctx = Context {
        store_root: cli.store.clone(),
        runtime_root: cli.runtime_root.clone(),
        runtime_binary: None,
        compression_level: None,
        // The daemon and the shim have no one watching their stderr.
        progress: match cli.command {
            Command::Daemon(_) | Command::Shim { .. } => None,
            _ => progress::for_terminal(),
        },
    };
    let result = match cli.command {
        Command::Checkpoint(args) => checkpoints::checkpoint(&ctx, &cli.socket, args),
        Command::List(args) => checkpoints::list(&ctx, &cli.socket, args),
        Command::Restore(args) => debug::restore(&ctx, args),
        Command::Ps(args) => debug::ps(&ctx, args),
        Command::Resume(args) => debug::resume(&ctx, args),
        Command::Rm(args) => debug::rm(&ctx, args),
        Command::Debug(args) => debug::debug(&ctx, args),
        Command::Inspect(args) => images::inspect(&ctx, args),
        Command::Diff(args) => images::diff(&ctx, args),
        Command::Memgrep(args) => images::memgrep(&ctx, args),
        Command::Daemon(args) => daemon::daemon(&ctx, &cli.socket, args),
        Command::Status(args) => daemon::status(&cli.socket, args),
        Command::Events(args) => daemon::events(&ctx, args),
        Command::Policy(command) => policy::run(command),
        Command::Verify(args) => store::verify(&ctx, args),
        Command::Fsck(args) => store::fsck(&ctx, args),
        Command::Gc(args) => store::gc(&ctx, args),
        Command::Delete(args) => store::delete(&ctx, args),
        Command::Export(args) => store::export(&ctx, args),
        Command::Import(args) => store::import(&ctx, args),
        Command::Store(command) => store::run(&ctx, command),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
        Command::Shim { dir } => ops::shim::run(&dir).map_err(|e| Failure::failed(e.into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("ckpt: {}", failure.message());
            ExitCode::from(failure.code)
        }
    }
}

/// Prints a command-line parse error as one `ckpt: ` line with a pointer to the
/// help, or prints help and version text as clap renders it.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if !error.use_stderr() {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = error.print();
        return ExitCode::from(EXIT_USAGE);
    }
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid usage");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // The subcommand's name, for the help pointer.
    let command = std::env::args()
        .skip(1)
        .find(|arg| Cli::command().find_subcommand(arg).is_some());
    let help = match command {
        Some(command) => format!("ckpt {command} --help"),
        None => "ckpt --help".to_string(),
    };
    eprintln!("ckpt: {first}; see `{help}`");
    ExitCode::from(EXIT_USAGE)
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "ckpt=info",
        _ => "ckpt=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CKPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A command's error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    /// Creates a failure of the operation (exit code 1).
    pub fn failed(error: anyhow::Error) -> Self {
        Self {
            code: EXIT_FAILED,
            error,
        }
    }

    /// Creates a usage failure: a name that does not exist or an invalid value (exit code 2).
    pub fn usage(error: anyhow::Error) -> Self {
        Self {
            code: EXIT_USAGE,
            error,
        }
    }

    /// Returns the error and its causes on one line. Causes that span lines,
    /// such as a regex parser's diagram, are folded onto it.
    fn message(&self) -> String {
        let text = crate::error::chain(self.error.as_ref());
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub type CommandResult = Result<(), Failure>;

/// Classifies a library error: unknown names and invalid input exit with 2, the rest with 1.
pub fn classify(error: anyhow::Error) -> Failure {
    use crate::ops::{CheckpointError, DebugError, RestoreError};
    use crate::runtime::RuntimeError;
    use crate::store::StoreError;

    let is_input = error.chain().any(|cause| {
        cause
            .downcast_ref::<CheckpointError>()
            .is_some_and(CheckpointError::is_input_error)
            || cause
                .downcast_ref::<RestoreError>()
                .is_some_and(RestoreError::is_input_error)
            || cause
                .downcast_ref::<RuntimeError>()
                .is_some_and(RuntimeError::is_input_error)
            || matches!(
                cause.downcast_ref::<DebugError>(),
                Some(DebugError::NotFound { .. })
            )
            || cause
                .downcast_ref::<StoreError>()
                .is_some_and(StoreError::is_input_error)
    });
    if is_input {
        Failure::usage(error)
    } else {
        Failure::failed(error)
    }
}
