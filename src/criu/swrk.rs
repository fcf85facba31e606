//! A driver for CRIU's RPC service (`criu swrk FD`).
//!
//! rust-criu provides the generated protobuf types; this module owns the
//! transport: a `SOCK_SEQPACKET` socketpair whose parent end is close-on-exec
//! (so no other child inherits it), notification round trips, and errors that
//! carry CRIU's own message together with the tail of its log.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use protobuf::Message;
use rust_criu::rust_criu_protobuf::rpc::{Criu_req, Criu_req_type, Criu_resp};

use super::log::{is_harmless, log_tail};

/// Largest RPC message CRIU sends; responses are small, this leaves ample room.
const MAX_MESSAGE: usize = 1 << 20;

/// Number of log lines quoted in an error.
const LOG_TAIL_LINES: usize = 8;

/// Error from one CRIU RPC call.
#[derive(Debug, thiserror::Error)]
pub enum CriuError {
    #[error("failed to start {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to talk to criu swrk while {step}")]
    Transport {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("invalid message from criu swrk")]
    Decode(#[source] protobuf::Error),
    #[error("criu {operation} failed: {message} (log {log}){tail}", tail = format_tail(.log_tail))]
    Failed {
        operation: &'static str,
        /// CRIU's own error text, or the errno it reported.
        message: String,
        log: PathBuf,
        log_tail: Vec<String>,
    },
    #[error("notification handler for {script:?} failed: {reason}")]
    Notify { script: String, reason: String },
}

fn format_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    format!(": last log lines: {}", lines.join(" | "))
}

/// Result of a notification handler, sent back to CRIU.
pub type NotifyResult = Result<(), String>;

/// One running `criu swrk` process.
pub struct Swrk {
    child: Child,
    socket: OwnedFd,
}

impl Swrk {
    /// Starts `criu swrk` with one end of a fresh socketpair as its descriptor 3.
    pub fn spawn(binary: &Path) -> Result<Self, CriuError> {
        Self::spawn_with_stdio(binary, [Stdio::null(), Stdio::null(), Stdio::null()])
    }

    /// Like [`Swrk::spawn`], with the given descriptors 0, 1 and 2. A restore's
    /// `inherit_fd` entries name descriptors of the `criu swrk` process, so this
    /// is how a restored task receives new stdio.
    pub fn spawn_with_stdio(binary: &Path, stdio: [Stdio; 3]) -> Result<Self, CriuError> {
        let transport = |step| move |source| CriuError::Transport { step, source };
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| transport("creating the socketpair")(io::Error::from(e)))?;

        let theirs_raw = theirs.as_raw_fd();
        let mut command = Command::new(binary);
        let [stdin, stdout, stderr] = stdio;
        command
            .arg("swrk")
            .arg("3")
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // dup2, setsid and sigprocmask, which are async-signal-safe. dup2 clears
        // FD_CLOEXEC on the copy, so CRIU inherits exactly this one end of the
        // socketpair as descriptor 3.
        //
        // CRIU runs in a session of its own, so a Ctrl-C at the terminal cannot
        // kill it while its code is injected into the container's tasks. It
        // starts with no signals blocked, whatever its caller blocks.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(theirs_raw, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| CriuError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
        drop(theirs);
        Ok(Self {
            child,
            socket: ours,
        })
    }

    /// PID of the `criu swrk` process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `request` and replies to notifications with `notify` until the final response.
    ///
    /// `log` is CRIU's log file, quoted when the call fails.
    pub fn call(
        &mut self,
        operation: &'static str,
        request: &Criu_req,
        log: &Path,
        mut notify: impl FnMut(&str, i32) -> NotifyResult,
    ) -> Result<Criu_resp, CriuError> {
        self.send(request, "sending the request")?;
        loop {
            let response = self.receive(log, operation)?;
            if response.type_() != Criu_req_type::NOTIFY {
                return check_response(operation, response, log);
            }
            let script = response.notify.script().to_string();
            let pid = response.notify.pid();
            let outcome = notify(&script, pid);

            let mut ack = Criu_req::new();
            ack.set_type(Criu_req_type::NOTIFY);
            ack.set_notify_success(outcome.is_ok());
            self.send(&ack, "acknowledging a notification")?;
            if let Err(reason) = outcome {
                return Err(CriuError::Notify { script, reason });
            }
        }
    }

    fn send(&self, request: &Criu_req, step: &'static str) -> Result<(), CriuError> {
        let bytes = request.write_to_bytes().map_err(CriuError::Decode)?;
        socket::send(self.socket.as_raw_fd(), &bytes, MsgFlags::empty()).map_err(|e| {
            CriuError::Transport {
                step,
                source: e.into(),
            }
        })?;
        Ok(())
    }

    fn receive(&self, log: &Path, operation: &'static str) -> Result<Criu_resp, CriuError> {
        let mut buffer = vec![0u8; MAX_MESSAGE];
        let received = socket::recv(self.socket.as_raw_fd(), &mut buffer, MsgFlags::empty())
            .map_err(|e| CriuError::Transport {
                step: "reading the response",
                source: e.into(),
            })?;
        if received == 0 {
            // CRIU closed the socket without a response, so it crashed or was killed.
            return Err(CriuError::Failed {
                operation,
                message: "criu swrk exited without a response".to_string(),
                log: log.to_path_buf(),
                log_tail: log_tail(log, LOG_TAIL_LINES),
            });
        }
        Criu_resp::parse_from_bytes(&buffer[..received]).map_err(CriuError::Decode)
    }
}

impl Drop for Swrk {
    fn drop(&mut self) {
        // Closing our end makes `criu swrk` exit; reap it so no zombie is left.
        // The socket closes when `self.socket` drops, which happens after this
        // body, so shut it down explicitly first.
        let _ = socket::shutdown(self.socket.as_raw_fd(), socket::Shutdown::Both);
        let _ = self.child.wait();
    }
}

fn check_response(
    operation: &'static str,
    response: Criu_resp,
    log: &Path,
) -> Result<Criu_resp, CriuError> {
    if response.success() {
        return Ok(response);
    }
    let tail = log_tail(log, LOG_TAIL_LINES);
    // CRIU reports its first error, which can be a harmless one; the log's
    // last error line is then the real cause.
    let message = if !response.cr_errmsg().is_empty() && !is_harmless(response.cr_errmsg()) {
        response.cr_errmsg().trim().to_string()
    } else if let Some(last) = tail.last().filter(|l| l.contains("Error (")) {
        strip_log_prefix(last).to_string()
    } else if !response.cr_errmsg().is_empty() {
        response.cr_errmsg().trim().to_string()
    } else if response.cr_errno() != 0 {
        io::Error::from_raw_os_error(response.cr_errno()).to_string()
    } else {
        "no error message".to_string()
    };
    Err(CriuError::Failed {
        operation,
        message,
        log: log.to_path_buf(),
        log_tail: tail,
    })
}

/// Drops the `(00.123456)      1: ` time and PID prefix of a CRIU log line.
fn strip_log_prefix(line: &str) -> &str {
    line.find("Error (").map_or(line, |start| &line[start..])
}
