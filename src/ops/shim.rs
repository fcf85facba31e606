//! The reaper of a debug container (`ckpt __shim DIR`).
//!
//! The shim is a session leader and child subreaper. It unshares a mount and
//! a network namespace, mounts the overlay root there, and has CRIU
//! restore the checkpoint as its own child with every task stopped. It then
//! stays alive as the tree's parent: it reaps exited tasks, keeps the stopped
//! tree from being orphaned, and copies the tree's output to a log. When the
//! last task is gone the shim exits, and its mount namespace (with the
//! overlay) disappears with it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use protobuf::MessageField;
use rust_criu::rust_criu_protobuf::rpc::{
    Cgroup_root, Criu_cg_mode, Criu_network_lock_method, Criu_opts, Criu_req, Criu_req_type,
    Ext_mount_map, Inherit_fd,
};
use serde::{Deserialize, Serialize};

use crate::criu::Swrk;
use crate::fsutil;

/// File in the debug container's directory with the shim's instructions.
pub const REQUEST_FILE: &str = "shim-request.json";
/// File the shim writes once the restore finished or failed.
pub const RESULT_FILE: &str = "shim-result.json";
/// File the shim writes when the restored root task exits.
pub const EXIT_FILE: &str = "exit.json";
/// Output of the restored tasks (their stdout and stderr).
pub const OUTPUT_FILE: &str = "output.log";

/// Restore request for the shim, written by `ckpt restore`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShimRequest {
    pub criu_binary: PathBuf,
    /// Directory that contains the CRIU images.
    pub images: PathBuf,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub overlay_work: PathBuf,
    pub root: PathBuf,
    /// Directory for CRIU's work files and `restore.log`.
    pub criu_work: PathBuf,
    /// CRIU cgroup root, such as `/ckpt/NAME`.
    pub cgroup_root: String,
    /// Pairs of (key recorded in the images, host path to mount there).
    pub external_mounts: Vec<(String, String)>,
    /// CRIU ids of the original descriptors 0, 1 and 2.
    pub stdio: Vec<String>,
    /// Whether the checkpoint holds established TCP connections, which CRIU
    /// keeps behind its network lock until the restore completes.
    #[serde(default)]
    pub tcp_established: bool,
}

/// Outcome of the restore, read by `ckpt restore`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ShimResult {
    Restored { pid: i32 },
    Failed { message: String },
}

/// Exit status of the restored root task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExitRecord {
    pub code: Option<i32>,
    pub signal: Option<String>,
}

/// Runs the shim for the debug container in `dir`. Only returns on failure to start.
pub fn run(dir: &Path) -> io::Result<()> {
    // CRIU inherits this: its logs and statistics are for root alone. Restored
    // tasks get their own umask back from the checkpoint.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // `ckpt restore` blocks SIGINT, SIGTERM and SIGHUP while it waits for us;
    // the shim must still be killable by `ckpt rm` and the operator.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let request: ShimRequest = serde_json::from_slice(&fs::read(dir.join(REQUEST_FILE))?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;

    let outcome = restore(&request);
    let result = match &outcome {
        Ok((pid, _)) => ShimResult::Restored { pid: *pid },
        Err(message) => ShimResult::Failed {
            message: message.clone(),
        },
    };
    let encoded = serde_json::to_vec(&result).map_err(io::Error::other)?;
    fsutil::write_private_file(&dir.join(RESULT_FILE), &encoded)?;
    // `ckpt restore` reads stdout to the end, so closing it signals that the result is ready.
    detach_stdout();

    let Ok((root, output_pipes)) = outcome else {
        std::process::exit(1);
    };
    for pipe in output_pipes {
        copy_output(pipe, dir.join(OUTPUT_FILE));
    }
    reap(root, dir);
    std::process::exit(0);
}

fn detach_stdout() {
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: dup2 onto descriptor 1 replaces stdout with /dev/null; both descriptors are valid.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// Sets up namespaces and the overlay, and restores the tree. Returns the root
/// task's PID and the read ends of the tree's output pipes.
fn restore(request: &ShimRequest) -> Result<(i32, Vec<OwnedFd>), String> {
    // Become the tree's reaper, in namespaces of our own.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "failed to become a child subreaper: {}",
            io::Error::last_os_error()
        ));
    }
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("failed to create mount and network namespaces: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("failed to make mounts private: {e}"))?;
    // CRIU probes TCP repair over loopback before restoring anything.
    bring_up_loopback()
        .map_err(|e| format!("failed to bring up lo in the new network namespace: {e}"))?;

    // Mount the copy-on-write root.
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        request.lower.display(),
        request.upper.display(),
        request.overlay_work.display()
    );
    mount(
        Some("overlay"),
        &request.root,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| {
        format!(
            "failed to mount overlay on {} ({options}): {e}",
            request.root.display()
        )
    })?;

    // Give the tree new pipes in place of its original stdio.
    let mut stdio = StdioPipes::create(&request.stdio)?;

    // Restore, stopped.
    let images = File::open(&request.images)
        .map_err(|e| format!("failed to open {}: {e}", request.images.display()))?;
    let work = File::open(&request.criu_work)
        .map_err(|e| format!("failed to open {}: {e}", request.criu_work.display()))?;
    let mut opts = Criu_opts::new();
    opts.set_images_dir_fd(images.as_raw_fd());
    opts.set_work_dir_fd(work.as_raw_fd());
    opts.set_log_file("restore.log".to_string());
    opts.set_log_level(4);
    opts.set_root(request.root.display().to_string());
    opts.set_rst_sibling(true);
    // Without TCP state to protect, the lock's iptables runs only slow the restore.
    if !request.tcp_established {
        opts.set_network_lock(Criu_network_lock_method::SKIP);
    }
    opts.set_leave_stopped(true);
    opts.set_orphan_pts_master(true);
    opts.set_manage_cgroups(true);
    opts.set_manage_cgroups_mode(Criu_cg_mode::SOFT);
    let mut cgroup_root = Cgroup_root::new();
    cgroup_root.set_path(request.cgroup_root.clone());
    opts.cg_root.push(cgroup_root);
    for (key, value) in &request.external_mounts {
        let mut map = Ext_mount_map::new();
        map.set_key(key.clone());
        map.set_val(value.clone());
        opts.ext_mnt.push(map);
    }
    for (key, fd) in &stdio.inherited {
        let mut inherit = Inherit_fd::new();
        inherit.set_key(key.clone());
        inherit.set_fd(*fd);
        opts.inherit_fd.push(inherit);
    }
    let mut req = Criu_req::new();
    req.set_type(Criu_req_type::RESTORE);
    req.opts = MessageField::some(opts);

    let log = request.criu_work.join("restore.log");
    let mut swrk = Swrk::spawn_with_stdio(&request.criu_binary, stdio.take_criu_stdio())
        .map_err(|e| e.to_string())?;
    let response = swrk
        .call("restore", &req, &log, |_, _| Ok(()))
        .map_err(|e| crate::error::chain(&e))?;
    drop(swrk);
    let pid = response.restore.pid();
    // The tree's stdin stays open for as long as the shim lives.
    std::mem::forget(stdio.stdin_writer);
    Ok((pid, stdio.readers))
}

/// Sets the IFF_UP flag on `lo` in the current network namespace.
fn bring_up_loopback() -> io::Result<()> {
    // SAFETY: socket() takes no pointers; the descriptor is owned right away.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `socket` is a valid descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    // SAFETY: ifreq is plain data for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write `request`, a valid
    // ifreq that outlives both calls; the union member used is ifru_flags.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pipes that replace the restored tree's original stdio pipes.
struct StdioPipes {
    /// (CRIU id such as `pipe:[123]`, descriptor of `criu swrk`) pairs for `inherit_fd`.
    inherited: Vec<(String, RawFd)>,
    /// Descriptors 0, 1 and 2 of `criu swrk`: the ends the restored tree receives.
    criu_stdio: [Option<OwnedFd>; 3],
    /// Read ends of the tree's stdout and stderr.
    readers: Vec<OwnedFd>,
    /// Write end of the tree's stdin, kept open so that it never reads end-of-file.
    stdin_writer: Option<OwnedFd>,
}

impl StdioPipes {
    fn create(ids: &[String]) -> Result<Self, String> {
        let mut pipes = Self {
            inherited: Vec::new(),
            criu_stdio: [None, None, None],
            readers: Vec::new(),
            stdin_writer: None,
        };
        for (fd, id) in ids.iter().enumerate().take(3) {
            if !id.starts_with("pipe:") {
                continue;
            }
            // A pipe shared by stdout and stderr is created once and given to both.
            if let Some(&(_, first)) = pipes.inherited.iter().find(|(key, _)| key == id) {
                let shared = pipes.criu_stdio[first as usize]
                    .as_ref()
                    .and_then(|end| end.try_clone().ok());
                pipes.criu_stdio[fd] = shared;
                continue;
            }
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("failed to create a pipe for descriptor {fd}: {e}"))?;
            let (task_end, ours) = if fd == 0 {
                (read, write)
            } else {
                (write, read)
            };
            pipes.inherited.push((id.clone(), fd as RawFd));
            pipes.criu_stdio[fd] = Some(task_end);
            if fd == 0 {
                pipes.stdin_writer = Some(ours);
            } else {
                pipes.readers.push(ours);
            }
        }
        Ok(pipes)
    }

    /// Takes the descriptors to give `criu swrk` as its stdio, /dev/null where there is none.
    fn take_criu_stdio(&mut self) -> [Stdio; 3] {
        let mut take = |i: usize| {
            self.criu_stdio[i]
                .take()
                .map_or_else(Stdio::null, Stdio::from)
        };
        [take(0), take(1), take(2)]
    }
}

/// Copies everything read from `pipe` to the end of `path`, in a thread.
fn copy_output(pipe: OwnedFd, path: PathBuf) {
    std::thread::spawn(move || {
        // SAFETY: the descriptor is owned and moved into the File, which closes it.
        let mut reader = unsafe { File::from_raw_fd(pipe.into_raw_fd()) };
        let Ok(mut log) = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
        else {
            return;
        };
        let mut buffer = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buffer) {
            if n == 0 || log.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
    });
}

/// Reaps children until none is left, recording how the root task ended.
fn reap(root: i32, dir: &Path) {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == root => {
                record_exit(dir, Some(code), None);
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid.as_raw() == root => {
                record_exit(dir, None, Some(signal.as_str().to_string()));
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn record_exit(dir: &Path, code: Option<i32>, signal: Option<String>) {
    let record = ExitRecord { code, signal };
    if let Ok(bytes) = serde_json::to_vec(&record) {
        let _ = fsutil::write_private_file(&dir.join(EXIT_FILE), &bytes);
    }
}
