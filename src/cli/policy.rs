//! `ckpt policy validate` and `ckpt policy list`.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::Table;
use super::{CommandResult, EXIT_USAGE, Failure};
use crate::policy::{self, Policy, RestoreMode, format_duration};

/// Check policy files, or show the policies the daemon would apply.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    Validate(ValidateArgs),
    List(PolicyListArgs),
}

/// Check policy files; exits 0 when all are valid and 2 when any is not.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  ckpt policy validate /etc/ckpt/policies/*.yaml")]
pub struct ValidateArgs {
    /// Policy files (YAML).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Show the policies in a directory, as the daemon would apply them.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  ckpt policy list\n  ckpt policy list --policies ./policies --json"
)]
pub struct PolicyListArgs {
    /// Directory of policy files (*.yaml, *.yml).
    #[arg(long, env = "CKPT_POLICIES", default_value = policy::DEFAULT_POLICY_DIR, value_name = "DIR")]
    pub policies: PathBuf,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: PolicyCommand) -> CommandResult {
    match command {
        PolicyCommand::Validate(args) => validate(args),
        PolicyCommand::List(args) => list(args),
    }
}

fn validate(args: ValidateArgs) -> CommandResult {
    let mut out = io::stdout().lock();
    let mut invalid = 0;
    for file in &args.files {
        match policy::load_file(file) {
            Ok(policy) => {
                let _ = writeln!(
                    out,
                    "{}: ok (container {})",
                    file.display(),
                    policy.container
                );
            }
            Err(err) => {
                invalid += 1;
                eprintln!("ckpt: {}", crate::error::chain(&err));
            }
        }
    }
    if invalid > 0 {
        return Err(Failure::usage(anyhow::anyhow!(
            "{invalid} of {} policy files are invalid",
            args.files.len()
        )));
    }
    Ok(())
}

/// One policy as `ckpt policy list --json` prints it.
#[derive(Debug, Serialize)]
struct PolicyEntry {
    container: String,
    file: String,
    interval: String,
    jitter: String,
    keep: usize,
    restore: &'static str,
    health_probe: bool,
}

fn entry(path: &std::path::Path, policy: &Policy) -> PolicyEntry {
    PolicyEntry {
        container: policy.container.to_string(),
        file: path.display().to_string(),
        interval: format_duration(policy.interval.0),
        jitter: format_duration(policy.jitter()),
        keep: policy.retention.keep,
        restore: match policy.on_failure.restore {
            RestoreMode::Paused => "paused",
            RestoreMode::None => "none",
        },
        health_probe: policy.health.is_some(),
    }
}

fn list(args: PolicyListArgs) -> CommandResult {
    let set = policy::load_dir(&args.policies).map_err(|err| Failure::usage(err.into()))?;
    let entries: Vec<PolicyEntry> = set
        .policies
        .iter()
        .map(|loaded| entry(&loaded.path, &loaded.policy))
        .collect();
    let mut out = io::stdout().lock();
    if args.json {
        let text = serde_json::to_string_pretty(&entries)
            .context("failed to encode policies as JSON")
            .map_err(Failure::failed)?;
        let _ = writeln!(out, "{text}");
    } else if entries.is_empty() {
        let _ = writeln!(out, "no valid policies in {}", args.policies.display());
    } else {
        let mut table = Table::new(&[
            "CONTAINER",
            "INTERVAL",
            "JITTER",
            "KEEP",
            "RESTORE",
            "HEALTH",
            "FILE",
        ]);
        for entry in &entries {
            table.row(vec![
                entry.container.clone(),
                entry.interval.clone(),
                entry.jitter.clone(),
                entry.keep.to_string(),
                entry.restore.to_string(),
                if entry.health_probe { "probe" } else { "-" }.to_string(),
                entry.file.clone(),
            ]);
        }
        let _ = table.write(&mut out);
    }
    for err in &set.errors {
        eprintln!("ckpt: {}", crate::error::chain(err));
    }
    if set.errors.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: EXIT_USAGE,
            error: anyhow::anyhow!(
                "{} of {} policy files are invalid and would not be applied",
                set.errors.len(),
                set.errors.len() + set.policies.len()
            ),
        })
    }
}
