//! `ckpt daemon`, `ckpt status` and `ckpt events`, and reaching the daemon from other commands.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;
use clap::{Args, ValueEnum};

use super::output::{self, Table};
use super::{CommandResult, Failure};
use crate::daemon::control::{self, ConnectError, proto};
use crate::daemon::events::read_events;
use crate::daemon::ops_backend::OpsBackend;
use crate::daemon::{DaemonConfig, metrics};
use crate::model::ContainerId;
use crate::ops::Context;
use crate::policy::{self, format_duration};

/// Run the service: checkpoint containers by policy and restore a paused debug container
/// when one fails.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  ckpt daemon --policies /etc/ckpt/policies --metrics 127.0.0.1:9184\n\nSIGHUP reloads the policies; SIGTERM finishes in-flight checkpoints and exits 0."
)]
pub struct DaemonArgs {
    /// Directory of policy files (*.yaml, *.yml), one per container.
    #[arg(long, env = "CKPT_POLICIES", default_value = policy::DEFAULT_POLICY_DIR, value_name = "DIR")]
    pub policies: PathBuf,
    /// Serve Prometheus metrics on this loopback address, such as 127.0.0.1:9184.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_address)]
    pub metrics: Option<SocketAddr>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Maximum number of CRIU operations running at once over all containers.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_parallel: u16,
}

/// Log line format of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_metrics_address(text: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = text.parse().map_err(|_| {
        format!("invalid address {text:?}: expected IP:PORT such as 127.0.0.1:9184")
    })?;
    metrics::check_address(address).map_err(|err| err.to_string())
}

/// Sets up logging for the daemon: info level unless `CKPT_LOG` sets a filter.
fn init_daemon_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CKPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("ckpt=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")
        .map_err(Failure::failed)
}

pub fn daemon(ctx: &Context, socket: &Path, args: DaemonArgs) -> CommandResult {
    // A mistyped directory would leave a daemon running with nothing to do.
    if !args.policies.is_dir() {
        return Err(Failure::usage(anyhow::anyhow!(
            "policy directory {} does not exist or is not a directory; create it, or pass --policies DIR",
            args.policies.display()
        )));
    }
    init_daemon_logging(args.log_format);
    let config = DaemonConfig {
        policy_dir: args.policies,
        store_root: ctx.store_root.clone(),
        socket: socket.to_path_buf(),
        metrics: args.metrics,
        max_parallel: usize::from(args.max_parallel),
    };
    let backend = Arc::new(OpsBackend {
        store_root: ctx.store_root.clone(),
        runtime_root: ctx.runtime_root.clone(),
    });
    runtime()?
        .block_on(crate::daemon::run(config, backend))
        .map_err(Failure::failed)
}

/// Show what the running daemon supervises: policies, schedule, last results and failures.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  ckpt status\n  ckpt status --json")]
pub struct StatusArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct StatusJson<'a> {
    containers: Vec<ContainerJson<'a>>,
    policy_errors: &'a [String],
}

#[derive(serde::Serialize)]
struct ContainerJson<'a> {
    container: &'a str,
    state: &'a str,
    policy: &'a str,
    interval_ms: u64,
    next_checkpoint: Option<&'a str>,
    last_result: Option<&'a str>,
    last_good_checkpoint: Option<&'a str>,
    last_good_time: Option<&'a str>,
    checkpoints_taken: u64,
    checkpoints_failed: u64,
    failures_detected: u64,
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

pub fn status(socket: &Path, args: StatusArgs) -> CommandResult {
    let reply = runtime()?.block_on(async {
        let mut client = control::connect(socket).await?;
        let reply = client
            .status(proto::StatusRequest {})
            .await
            .map_err(|status| rpc_error("report its status", &status))?;
        anyhow::Ok(reply.into_inner())
    });
    let reply = reply.map_err(Failure::failed)?;
    let mut out = io::stdout().lock();

    if args.json {
        let containers = reply
            .containers
            .iter()
            .map(|c| ContainerJson {
                container: &c.container,
                state: &c.state,
                policy: &c.policy,
                interval_ms: c.interval_ms,
                next_checkpoint: non_empty(&c.next_checkpoint),
                last_result: non_empty(&c.last_result),
                last_good_checkpoint: non_empty(&c.last_good_checkpoint),
                last_good_time: non_empty(&c.last_good_time),
                checkpoints_taken: c.checkpoints_taken,
                checkpoints_failed: c.checkpoints_failed,
                failures_detected: c.failures_detected,
            })
            .collect();
        let json = StatusJson {
            containers,
            policy_errors: &reply.policy_errors,
        };
        let text = serde_json::to_string_pretty(&json)
            .context("failed to encode the status as JSON")
            .map_err(Failure::failed)?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }

    if reply.containers.is_empty() {
        let _ = writeln!(out, "no policies in force");
    } else {
        let now = Utc::now();
        let mut table = Table::new(&[
            "CONTAINER",
            "STATE",
            "INTERVAL",
            "NEXT",
            "TAKEN",
            "FAILED",
            "FAILURES",
            "LAST GOOD",
            "LAST RESULT",
        ]);
        for c in &reply.containers {
            let next = chrono::DateTime::parse_from_rfc3339(&c.next_checkpoint)
                .map(|at| {
                    format!(
                        "in {} s",
                        (at.with_timezone(&Utc) - now).num_seconds().max(0)
                    )
                })
                .unwrap_or_else(|_| "-".to_string());
            let last_good = match chrono::DateTime::parse_from_rfc3339(&c.last_good_time) {
                Ok(at) => format!(
                    "{} ({})",
                    c.last_good_checkpoint,
                    output::age(at.with_timezone(&Utc), now)
                ),
                Err(_) => "-".to_string(),
            };
            table.row(vec![
                c.container.clone(),
                c.state.clone(),
                format_duration(std::time::Duration::from_millis(c.interval_ms)),
                next,
                c.checkpoints_taken.to_string(),
                c.checkpoints_failed.to_string(),
                c.failures_detected.to_string(),
                last_good,
                non_empty(&c.last_result).unwrap_or("-").to_string(),
            ]);
        }
        let _ = table.write(&mut out);
    }
    if !reply.policy_errors.is_empty() {
        let _ = writeln!(
            out,
            "\ninvalid policy files (a previous version stays in force where there was one):"
        );
        for error in &reply.policy_errors {
            let _ = writeln!(out, "  {error}");
        }
    }
    Ok(())
}

/// List recent events: checkpoints, failures, restores and retention. Reads the store's
/// event log, so it works without the daemon.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  ckpt events\n  ckpt events web --limit 100 --json")]
pub struct EventsArgs {
    /// Only this container's events.
    pub container: Option<ContainerId>,
    /// Maximum number of events, newest last.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: usize,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn events(ctx: &Context, args: EventsArgs) -> CommandResult {
    // Read everything kept, then filter, so that --limit applies to the container's events.
    let mut events =
        read_events(&ctx.store_root, usize::MAX).map_err(|err| Failure::failed(err.into()))?;
    if let Some(container) = &args.container {
        events.retain(|event| &event.container == container);
    }
    let skip = events.len().saturating_sub(args.limit);
    let events = &events[skip..];
    let mut out = io::stdout().lock();

    if args.json {
        let text = serde_json::to_string_pretty(events)
            .context("failed to encode events as JSON")
            .map_err(Failure::failed)?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }
    if events.is_empty() {
        let _ = writeln!(out, "no events in store {}", ctx.store_root.display());
        return Ok(());
    }
    let mut table = Table::new(&["TIME", "KIND", "CONTAINER", "CHECKPOINT", "MESSAGE"]);
    for event in events {
        table.row(vec![
            event
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            event.kind.as_str().to_string(),
            event.container.to_string(),
            event
                .checkpoint
                .as_ref()
                .map_or_else(|| "-".to_string(), ToString::to_string),
            event.message.clone(),
        ]);
    }
    let _ = table.write(&mut out);
    Ok(())
}

/// Describes a failed call to the daemon. The daemon closes connections from peers other
/// than root, which the client sees as a cancelled, unavailable or unknown-error call.
fn rpc_error(action: &str, status: &tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown => {
            anyhow::anyhow!(
                "the daemon closed the connection before it could {action} ({}); note that the daemon serves only root",
                status.message()
            )
        }
        _ => anyhow::anyhow!("the daemon failed to {action}: {}", status.message()),
    }
}

/// Asks the running daemon to checkpoint `container`, so that the checkpoint holds the
/// container's lock like a scheduled one. Returns `None` when no daemon listens on `socket`
/// or the daemon has no policy for the container; the caller then checkpoints directly.
///
/// CRIU option flags (`options_given`) cannot be passed to the daemon, because
/// it uses the policy's options. For a container the daemon manages they are
/// rejected rather than ignored.
pub fn checkpoint_through_daemon(
    socket: &Path,
    store: &Path,
    container: &ContainerId,
    options_given: bool,
) -> Result<Option<proto::CheckpointReply>, Failure> {
    let result = runtime()?.block_on(async {
        let mut client = match control::connect(socket).await {
            Ok(client) => client,
            Err(ConnectError::NotRunning { .. }) => return Ok(None),
            Err(err) => return Err(anyhow::Error::new(err)),
        };
        // A daemon working on another store has nothing to do with this one.
        let probe = client
            .list(proto::ListRequest {
                container: container.to_string(),
                store: store.display().to_string(),
            })
            .await;
        match probe {
            Err(status) if status.code() == tonic::Code::FailedPrecondition => return Ok(None),
            Err(status) => return Err(rpc_error("list checkpoints", &status)),
            Ok(_) => {}
        }
        if options_given {
            let status = client
                .status(proto::StatusRequest {})
                .await
                .map_err(|status| rpc_error("report its status", &status))?
                .into_inner();
            if status
                .containers
                .iter()
                .any(|c| c.container == container.as_str())
            {
                return Err(anyhow::Error::new(OptionsManagedByPolicy {
                    container: container.clone(),
                }));
            }
            return Ok(None);
        }
        let request = proto::CheckpointRequest {
            container: container.to_string(),
            store: store.display().to_string(),
        };
        match client.checkpoint(request).await {
            Ok(reply) => Ok(Some(reply.into_inner())),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) =>
            {
                Ok(None)
            }
            Err(status) => Err(rpc_error(&format!("checkpoint {container}"), &status)),
        }
    });
    result.map_err(|error| {
        if error.is::<OptionsManagedByPolicy>() {
            Failure::usage(error)
        } else {
            Failure::failed(error)
        }
    })
}

/// Lists every checkpoint through the daemon. Returns `None` when no daemon listens on `socket` or it uses another store.
pub fn list_through_daemon(
    socket: &Path,
    store: &Path,
) -> Result<Option<Vec<proto::CheckpointEntry>>, Failure> {
    let result = runtime()?.block_on(async {
        let mut client = match control::connect(socket).await {
            Ok(client) => client,
            Err(ConnectError::NotRunning { .. }) => return Ok(None),
            Err(err) => return Err(anyhow::Error::new(err)),
        };
        let reply = client
            .list(proto::ListRequest {
                container: String::new(),
                store: store.display().to_string(),
            })
            .await;
        // A daemon working on another store declines; the caller reads this one directly.
        if matches!(&reply, Err(status) if status.code() == tonic::Code::FailedPrecondition) {
            return Ok(None);
        }
        tracing::debug!(socket = %socket.display(), "listing checkpoints through the daemon");
        let reply = reply.map_err(|status| {
            anyhow::anyhow!(
                "the daemon failed to list checkpoints: {}",
                status.message()
            )
        })?;
        Ok(Some(reply.into_inner().checkpoints))
    });
    result.map_err(Failure::failed)
}

/// CRIU option flags given for a container whose checkpoints the daemon takes.
#[derive(Debug, thiserror::Error)]
#[error(
    "container {container} is checkpointed by the running daemon with its policy's CRIU options; \
     set the options in the policy (tcp_established, file_locks, skip_in_flight, ext_unix_sk, \
     ghost_limit) instead of passing them here"
)]
struct OptionsManagedByPolicy {
    container: ContainerId,
}
