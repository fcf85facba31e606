//! Noticing that a container's init process ended, and how.
//!
//! runc, not the daemon, is the parent of a container's init process, so the daemon cannot
//! wait for it. A pidfd becomes readable when the process ends, which wakes the daemon at
//! once. The exit status comes from the kernel's process events connector
//! (`NETLINK_CONNECTOR`, `PROC_EVENT_EXIT`), which reports every process exit on the host.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{MsgFlags, NetlinkAddr, bind, recv, send, setsockopt, sockopt};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use crate::daemon::failure::InitExit;

/// Connector index and value of the process events connector (`CN_IDX_PROC`, `CN_VAL_PROC`
/// in linux/connector.h).
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
/// `PROC_CN_MCAST_LISTEN` in linux/cn_proc.h.
const PROC_CN_MCAST_LISTEN: u32 = 1;
/// `PROC_EVENT_EXIT` in linux/cn_proc.h.
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// Sizes of `struct nlmsghdr` and of `struct cn_msg` without its data.
const NLMSG_HEADER_LEN: usize = 16;
const CN_MSG_HEADER_LEN: usize = 20;
/// Offset of `event_data` in `struct proc_event`: `what`, `cpu`, then the 8-byte timestamp.
const PROC_EVENT_DATA_OFFSET: usize = 16;

/// How long to wait for the exit status after the pidfd fired. The connector reports the
/// exit in the same kernel path that wakes the pidfd, so the status normally arrives first.
const STATUS_WAIT: Duration = Duration::from_millis(500);

/// One `PROC_EVENT_EXIT` of a thread group leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcExit {
    pub pid: i32,
    /// Wait status, as `waitpid` would return it.
    pub wait_status: u32,
}

/// Extracts the exits of thread group leaders from one datagram of the connector.
pub fn parse_proc_events(datagram: &[u8]) -> Vec<ProcExit> {
    let read_u32 = |bytes: &[u8], at: usize| -> Option<u32> {
        let field = bytes.get(at..at + 4)?;
        Some(u32::from_ne_bytes(field.try_into().ok()?))
    };
    let mut exits = Vec::new();
    let mut rest = datagram;
    while rest.len() >= NLMSG_HEADER_LEN {
        let Some(message_len) = read_u32(rest, 0).map(|len| len as usize) else {
            break;
        };
        if message_len < NLMSG_HEADER_LEN || message_len > rest.len() {
            break;
        }
        let message = &rest[..message_len];
        let event = NLMSG_HEADER_LEN + CN_MSG_HEADER_LEN;
        let data = event + PROC_EVENT_DATA_OFFSET;
        let event_kind = read_u32(message, event);
        let pid = read_u32(message, data);
        let tgid = read_u32(message, data + 4);
        let status = read_u32(message, data + 8);
        if let (Some(PROC_EVENT_EXIT), Some(pid), Some(tgid), Some(status)) =
            (event_kind, pid, tgid, status)
            && pid == tgid
        {
            exits.push(ProcExit {
                pid: pid as i32,
                wait_status: status,
            });
        }
        // Netlink messages are padded to 4 bytes.
        let advance = (message_len + 3) & !3;
        rest = rest.get(advance..).unwrap_or(&[]);
    }
    exits
}

/// Opens a netlink socket subscribed to the process events connector. Needs CAP_NET_ADMIN.
fn open_proc_connector() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_CONNECTOR,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };

    bind(socket.as_raw_fd(), &NetlinkAddr::new(0, CN_IDX_PROC))?;
    // A large buffer makes it less likely to drop events when many processes exit at once.
    let _ = setsockopt(&socket, sockopt::RcvBuf, &(4 << 20));

    let total_len = NLMSG_HEADER_LEN + CN_MSG_HEADER_LEN + 4;
    let mut request = Vec::with_capacity(total_len);
    request.extend_from_slice(&(total_len as u32).to_ne_bytes());
    request.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    request.extend_from_slice(&0u16.to_ne_bytes()); // flags
    request.extend_from_slice(&0u32.to_ne_bytes()); // sequence number
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id
    request.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    request.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes()); // seq
    request.extend_from_slice(&0u32.to_ne_bytes()); // ack
    request.extend_from_slice(&4u16.to_ne_bytes()); // data length
    request.extend_from_slice(&0u16.to_ne_bytes()); // flags
    request.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    send(socket.as_raw_fd(), &request, MsgFlags::empty())?;
    Ok(socket)
}

type Waiters = Arc<Mutex<HashMap<i32, oneshot::Sender<u32>>>>;

/// Delivers the exit statuses of the processes that supervisors watch.
#[derive(Clone, Debug)]
pub struct ExitMonitor {
    waiters: Waiters,
    /// False when the connector could not be opened, so that statuses are never known.
    available: bool,
}

impl ExitMonitor {
    /// Subscribes to process events and starts a thread that reads them. Without the
    /// connector the monitor still works, but every exit is reported as unknown.
    pub fn start() -> Self {
        let waiters: Waiters = Arc::default();
        let socket = match open_proc_connector() {
            Ok(socket) => socket,
            Err(err) => {
                tracing::warn!(error = %err, "failed to open the process events connector; exit codes will be unknown and no exit counts as a failure");
                return Self {
                    waiters,
                    available: false,
                };
            }
        };
        let thread_waiters = Arc::clone(&waiters);
        let spawned = std::thread::Builder::new()
            .name("ckpt-proc-events".to_string())
            .spawn(move || read_proc_events(socket, thread_waiters));
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "failed to start the process events reader; exit codes will be unknown");
            return Self {
                waiters,
                available: false,
            };
        }
        Self {
            waiters,
            available: true,
        }
    }

    /// Starts watching `pid`. Call before checking that the process is alive, so that an
    /// exit right after the check is not missed.
    pub fn watch(&self, pid: i32) -> ExitWatch {
        let (sender, receiver) = oneshot::channel();
        if self.available {
            lock(&self.waiters).insert(pid, sender);
        }
        ExitWatch {
            pid,
            receiver,
            waiters: Arc::clone(&self.waiters),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read_proc_events(socket: OwnedFd, waiters: Waiters) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut overruns: u64 = 0;
    loop {
        let len = match recv(socket.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
            Ok(len) => len,
            Err(nix::errno::Errno::ENOBUFS) => {
                overruns += 1;
                if overruns.is_power_of_two() {
                    tracing::warn!(
                        overruns,
                        "process events were dropped by the kernel; an exit status may be unknown"
                    );
                }
                continue;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => {
                tracing::error!(error = %err, "failed to read process events; exit codes will be unknown from now on");
                lock(&waiters).clear();
                return;
            }
        };
        for exit in parse_proc_events(&buffer[..len]) {
            if let Some(sender) = lock(&waiters).remove(&exit.pid) {
                let _ = sender.send(exit.wait_status);
            }
        }
    }
}

/// A watched process. Dropping it stops the watch.
#[derive(Debug)]
pub struct ExitWatch {
    pid: i32,
    receiver: oneshot::Receiver<u32>,
    waiters: Waiters,
}

impl ExitWatch {
    /// Waits until the process ends and returns how it ended. Returns `Unknown` at once when
    /// it is already gone and its status was missed.
    pub async fn wait(&mut self) -> InitExit {
        match pidfd_readable(self.pid) {
            Ok(wait) => {
                if let Err(err) = wait.await {
                    tracing::warn!(pid = self.pid, error = %err, "failed to wait on pidfd");
                }
            }
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {}
            Err(err) => {
                tracing::warn!(pid = self.pid, error = %err, "failed to open pidfd");
                return InitExit::Unknown;
            }
        }
        match tokio::time::timeout(STATUS_WAIT, &mut self.receiver).await {
            Ok(Ok(status)) => InitExit::from_wait_status(status),
            _ => InitExit::Unknown,
        }
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        lock(&self.waiters).remove(&self.pid);
    }
}

/// Opens a pidfd for `pid` and returns a future that completes when the process ends.
fn pidfd_readable(pid: i32) -> io::Result<impl Future<Output = io::Result<()>>> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
    // SAFETY: the AsyncFd owns `pidfd`, an OwnedFd that stays open and returns the same
    // descriptor from as_raw_fd until the AsyncFd is dropped.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|err| err.into_parts().1)?;
    Ok(async move {
        let _guard = pidfd.readable().await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds one netlink message carrying a `proc_event` of kind `what`.
    fn message(what: u32, pid: u32, tgid: u32, status: u32) -> Vec<u8> {
        let len = NLMSG_HEADER_LEN + CN_MSG_HEADER_LEN + PROC_EVENT_DATA_OFFSET + 24;
        let mut bytes = vec![0u8; len];
        bytes[..4].copy_from_slice(&(len as u32).to_ne_bytes());
        let event = NLMSG_HEADER_LEN + CN_MSG_HEADER_LEN;
        bytes[event..event + 4].copy_from_slice(&what.to_ne_bytes());
        let data = event + PROC_EVENT_DATA_OFFSET;
        bytes[data..data + 4].copy_from_slice(&pid.to_ne_bytes());
        bytes[data + 4..data + 8].copy_from_slice(&tgid.to_ne_bytes());
        bytes[data + 8..data + 12].copy_from_slice(&status.to_ne_bytes());
        bytes
    }

    #[test]
    fn parser_keeps_leader_exits_only() {
        let mut datagram = message(PROC_EVENT_EXIT, 42, 42, 139 << 8);
        datagram.extend(message(PROC_EVENT_EXIT, 43, 42, 0));
        datagram.extend(message(0x1, 44, 44, 0)); // PROC_EVENT_FORK
        assert_eq!(
            parse_proc_events(&datagram),
            vec![ProcExit {
                pid: 42,
                wait_status: 139 << 8
            }]
        );
    }

    #[test]
    fn parser_stops_at_truncated_message() {
        let mut datagram = message(PROC_EVENT_EXIT, 42, 42, 11);
        datagram.truncate(30);
        assert!(parse_proc_events(&datagram).is_empty());
    }

    #[tokio::test]
    async fn exit_status_of_non_child_is_reported() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: the process events connector needs root");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root"
            );
            return;
        }
        let monitor = ExitMonitor::start();
        // The shell forks a child that sleeps and exits with 7; the test waits on the child
        // like the daemon waits on a container's init, which is not its child either.
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "(sleep 0.3; exit 7) & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(shell.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let pid: i32 = line.trim().parse().unwrap();
        let mut watch = monitor.watch(pid);
        let exit = tokio::time::timeout(Duration::from_secs(5), watch.wait())
            .await
            .unwrap();
        shell.wait().unwrap();
        assert_eq!(exit, InitExit::Code(7));
    }
}
