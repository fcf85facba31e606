//! The checkpoint operation: dump a running container with CRIU, leave it
//! running, and commit the images to the store.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use oci_spec::runtime::LinuxNamespaceType;
use protobuf::MessageField;
use rust_criu::rust_criu_protobuf::rpc::{
    Criu_cg_mode, Criu_network_lock_method, Criu_opts, Criu_req, Criu_req_type, Ext_mount_map,
};

use super::Context;
use crate::criu::{self, Criu, CriuError, SetupError};
use crate::fsutil;
use crate::model::{
    CheckpointId, CheckpointMeta, CheckpointOptions, ContainerId, DumpStats, RuntimeInfo,
};
use crate::runtime::{Container, RuntimeError};
use crate::store::{Manifest, StoreError};

/// File name of the container's OCI spec inside a checkpoint (Podman's name for it).
pub const SPEC_FILE: &str = "spec.dump";
/// Directory of CRIU images inside a checkpoint.
pub const IMAGES_DIR: &str = "checkpoint";
/// CRIU's dump log, kept with the checkpoint.
pub const DUMP_LOG_FILE: &str = "criu-dump.log";

/// File CRIU writes its dump statistics to, in its work directory.
const STATS_DUMP_FILE: &str = "stats-dump";

/// CRIU log verbosity: 4 is debug, which is what a failed dump needs to be diagnosed.
const CRIU_LOG_LEVEL: i32 = 4;

/// Error from `ckpt checkpoint`.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("container {container}: cannot checkpoint: {reason}")]
    Unsupported {
        container: ContainerId,
        reason: String,
    },
    #[error(
        "container {container}: cannot checkpoint: pid {pid} is traced by pid {tracer} ({tracer_comm}); detach it first"
    )]
    Traced {
        container: ContainerId,
        pid: i32,
        tracer: i32,
        tracer_comm: String,
    },
    #[error(
        "container {container} exited while it was being checkpointed; nothing was stored (CRIU's log: {log})"
    )]
    ExitedDuringDump {
        container: ContainerId,
        log: PathBuf,
    },
    #[error("container {container}: cannot checkpoint")]
    Criu {
        container: ContainerId,
        #[source]
        source: CriuError,
    },
    #[error("container {container}: failed to {step} {path}")]
    Io {
        container: ContainerId,
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("container {container}: failed to store checkpoint")]
    Store {
        container: ContainerId,
        #[source]
        source: Box<StoreError>,
    },
}

impl CheckpointError {
    /// Returns whether the error is about the user's input (an unknown or unsuitable
    /// container) rather than a failed operation.
    pub fn is_input_error(&self) -> bool {
        match self {
            Self::Runtime(e) => e.is_input_error(),
            Self::Unsupported { .. } => true,
            _ => false,
        }
    }
}

/// Result of a CRIU dump into an image directory.
#[derive(Debug)]
pub struct DumpOutcome {
    pub stats: DumpStats,
    /// Wall time of the whole CRIU call, in milliseconds.
    pub duration_ms: u64,
}

/// Checkpoints `container` and leaves it running.
///
/// The container is frozen only while CRIU dumps it; compression and storing
/// happen afterwards. On any failure nothing is committed, and CRIU's log is
/// kept under `<store>/logs/` for inspection.
#[tracing::instrument(skip_all, fields(container = %container))]
pub fn checkpoint(
    ctx: &Context,
    container: &ContainerId,
    options: &CheckpointOptions,
    health_passing: Option<bool>,
) -> Result<Manifest, CheckpointError> {
    let started = Instant::now();

    // Check CRIU and read the container.
    let criu = Criu::locate()?;
    let target = ctx.runtime().container(container)?;
    guard_checkpointable(&target)?;
    let external_mounts = target.external_mounts()?;
    let stdio = target.stdio_ids()?;

    // Stage: CRIU writes images into the store's staging area, its log elsewhere.
    let store = ctx.open_store().map_err(|source| CheckpointError::Store {
        container: container.clone(),
        source: Box::new(source),
    })?;
    let created = Utc::now();
    let id = CheckpointId::generate(created);
    // CRIU writes the images into memory when they fit, so that disk writeback
    // does not lengthen the freeze; the store then compresses them to disk.
    let estimate = super::scratch::resident_bytes(&crate::runtime::descendants(target.pid));
    let mut staging = match super::scratch::memory_dir_for(estimate) {
        Some(dir) => store.stage_in(&id, &dir),
        None => store.stage(&id),
    }
    .map_err(|source| CheckpointError::Store {
        container: container.clone(),
        source: Box::new(source),
    })?;
    tracing::debug!(path = %staging.dir().display(), bytes = estimate, "staging directory");
    if let Some(level) = ctx.compression_level {
        staging.set_compression_level(level);
    }
    let images = staging.dir().join(IMAGES_DIR);
    let work = ctx
        .store_root
        .join("logs")
        .join(container.as_str())
        .join(id.as_str());
    for dir in [&images, &work] {
        fsutil::create_private_dir_all(dir).map_err(|source| CheckpointError::Io {
            container: container.clone(),
            step: "create",
            path: dir.clone(),
            source,
        })?;
    }

    // Dump. A container that died meanwhile makes CRIU fail with a confusing
    // message about the task it lost, so the error states what happened instead.
    ctx.start_step("dumping with CRIU (the container is frozen)");
    let dumped = dump(&criu, &target, options, &external_mounts, &images, &work);
    ctx.finish_step();
    let outcome = match dumped {
        Ok(outcome) => outcome,
        Err(error @ CheckpointError::Criu { .. }) if !process_alive(target.pid) => {
            tracing::debug!(error = %crate::error::chain(&error), "criu failed after the container exited");
            return Err(CheckpointError::ExitedDuringDump {
                container: container.clone(),
                log: work.join("dump.log"),
            });
        }
        Err(error) => return Err(error),
    };

    // Keep the spec and CRIU's log with the images, then let the store take them.
    let io_error = |step, path: &Path| {
        let container = container.clone();
        let path = path.to_path_buf();
        move |source| CheckpointError::Io {
            container,
            step,
            path,
            source,
        }
    };
    let spec_copy = staging.dir().join(SPEC_FILE);
    fs::copy(&target.config_path, &spec_copy).map_err(io_error("copy", &target.config_path))?;
    let log = work.join("dump.log");
    fs::copy(&log, staging.dir().join(DUMP_LOG_FILE)).map_err(io_error("copy", &log))?;
    let meta = CheckpointMeta {
        id: id.clone(),
        container: container.clone(),
        created,
        criu_version: criu.version.clone(),
        kernel: criu::kernel_release(),
        options: options.clone(),
        dump_stats: outcome.stats,
        runtime: RuntimeInfo {
            runtime: ctx.runtime().binary.clone(),
            bundle: target.bundle.display().to_string(),
            rootfs: target.rootfs.display().to_string(),
            init_pid: target.pid,
            external_mounts,
            stdio,
        },
        health_passing,
    };
    let manifest = store
        .commit(staging, meta)
        .map_err(|source| CheckpointError::Store {
            container: container.clone(),
            source: Box::new(source),
        })?;
    let _ = fs::remove_dir_all(&work);

    tracing::info!(
        checkpoint = %id,
        frozen_ms = manifest.meta.dump_stats.frozen_time_us / 1000,
        dump_ms = outcome.duration_ms,
        duration_ms = started.elapsed().as_millis() as u64,
        bytes = manifest.logical_bytes,
        "checkpoint stored"
    );
    Ok(manifest)
}

/// Checks that `container` exists and runs, with the errors `checkpoint` gives,
/// for callers that hand the checkpoint to the daemon.
pub fn ensure_running(ctx: &Context, container: &ContainerId) -> Result<(), CheckpointError> {
    check_running(&ctx.runtime().container(container)?)
}

fn check_running(target: &Container) -> Result<(), CheckpointError> {
    if target.status == "running" {
        return Ok(());
    }
    Err(CheckpointError::Unsupported {
        container: target.id.clone(),
        reason: format!("it is {}, not running; start it first", target.status),
    })
}

/// Returns whether `pid` still exists and has not exited (a zombie counts as exited).
fn process_alive(pid: i32) -> bool {
    !matches!(
        super::debug::process_state(pid),
        None | Some('Z') | Some('X')
    )
}

/// Refuses containers that CRIU cannot dump or that ckpt cannot restore safely.
fn guard_checkpointable(target: &Container) -> Result<(), CheckpointError> {
    let unsupported = |reason: String| CheckpointError::Unsupported {
        container: target.id.clone(),
        reason,
    };
    check_running(target)?;
    if !target.has_own_namespace(LinuxNamespaceType::Pid) {
        return Err(unsupported(
            "it shares a PID namespace with the host or another container; ckpt restores \
             only containers with a PID namespace of their own"
                .to_string(),
        ));
    }
    if target.has_terminal() {
        return Err(unsupported(
            "its process has a terminal (process.terminal is true in the OCI spec); run it \
             with stdio on pipes instead"
                .to_string(),
        ));
    }
    if let Some((fd, file)) = target.external_stdio()?.into_iter().next() {
        let name = ["stdin", "stdout", "stderr"][fd as usize];
        return Err(unsupported(format!(
            "its {name} (descriptor {fd}) is {file}, a file outside the container that CRIU \
             cannot checkpoint; run the container with stdio on pipes, as containerd's shims \
             and conmon do"
        )));
    }
    if let Some(traced) = crate::runtime::find_traced_task(target.pid) {
        return Err(CheckpointError::Traced {
            container: target.id.clone(),
            pid: traced.pid,
            tracer: traced.tracer,
            tracer_comm: traced.tracer_comm,
        });
    }
    Ok(())
}

/// Runs one CRIU dump of `target` into `images`, with CRIU's log in `work`.
pub fn dump(
    criu: &Criu,
    target: &Container,
    options: &CheckpointOptions,
    external_mounts: &[crate::model::ExternalMount],
    images: &Path,
    work: &Path,
) -> Result<DumpOutcome, CheckpointError> {
    let open_dir = |path: &Path| {
        File::open(path).map_err(|source| CheckpointError::Io {
            container: target.id.clone(),
            step: "open",
            path: path.to_path_buf(),
            source,
        })
    };
    let images_fd = open_dir(images)?;
    let work_fd = open_dir(work)?;

    let mut opts = Criu_opts::new();
    opts.set_images_dir_fd(images_fd.as_raw_fd());
    opts.set_work_dir_fd(work_fd.as_raw_fd());
    opts.set_log_file("dump.log".to_string());
    opts.set_log_level(CRIU_LOG_LEVEL);
    opts.set_pid(target.pid);
    opts.set_root(target.rootfs.display().to_string());
    opts.set_leave_running(true);
    opts.set_manage_cgroups(true);
    opts.set_manage_cgroups_mode(Criu_cg_mode::SOFT);
    opts.set_orphan_pts_master(true);
    opts.set_tcp_established(options.tcp_established);
    // CRIU locks the network so that TCP state cannot change while it is read.
    // Without --tcp-established no TCP state is dumped, and the lock (iptables
    // rules added and removed while the tree is frozen) would only lengthen the freeze.
    if !options.tcp_established {
        opts.set_network_lock(Criu_network_lock_method::SKIP);
    }
    opts.set_file_locks(options.file_locks);
    opts.set_tcp_skip_in_flight(options.skip_in_flight);
    opts.set_ext_unix_sk(options.ext_unix_sk);
    if let Some(limit) = options.ghost_limit {
        let limit = u32::try_from(limit).map_err(|_| CheckpointError::Unsupported {
            container: target.id.clone(),
            reason: format!("ghost limit {limit} bytes is larger than CRIU's maximum of 4 GiB"),
        })?;
        opts.set_ghost_limit(limit);
    }
    for mount in external_mounts {
        let mut map = Ext_mount_map::new();
        map.set_key(mount.key.clone());
        map.set_val(mount.key.clone());
        opts.ext_mnt.push(map);
    }
    tracing::debug!(?opts, "criu dump options");

    let mut request = Criu_req::new();
    request.set_type(Criu_req_type::DUMP);
    request.opts = MessageField::some(opts);

    let started = Instant::now();
    let log = work.join("dump.log");
    let criu_error = |source| CheckpointError::Criu {
        container: target.id.clone(),
        source,
    };
    let mut swrk = criu.swrk().map_err(criu_error)?;
    swrk.call("dump", &request, &log, |_, _| Ok(()))
        .map_err(criu_error)?;
    drop(swrk);
    let duration_ms = started.elapsed().as_millis() as u64;

    // Statistics are informative: a missing file must not fail a good dump.
    // CRIU writes its statistics to the work directory, not among the images.
    // They are informative: a missing or unreadable file must not fail a good dump.
    let stats_path = work.join(STATS_DUMP_FILE);
    let stats = match crate::images::read_dump_stats(&stats_path) {
        Ok(Some(stats)) => stats,
        Ok(None) => DumpStats::default(),
        Err(e) => {
            tracing::warn!(error = %e, path = %stats_path.display(), "failed to read CRIU dump statistics");
            DumpStats::default()
        }
    };
    Ok(DumpOutcome { stats, duration_ms })
}
