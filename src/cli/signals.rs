//! Deferring SIGINT, SIGTERM and SIGHUP while an operation must not be cut short.
//!
//! A restore interrupted half way would leave a shim, stopped tasks and
//! cgroups behind. The CLI blocks these signals around such operations, then
//! cleans up and exits if one arrived. Children unblock them again: the shim
//! and `criu swrk` do so themselves, and [`restore_default_in_child`] does it
//! for debuggers.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};

const DEFERRED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

fn deferred_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in DEFERRED {
        set.add(signal);
    }
    set
}

/// Blocks the deferred signals until dropped.
pub struct Deferred {
    previous: SigSet,
}

impl Deferred {
    pub fn block() -> Self {
        let mut previous = SigSet::empty();
        let _ = sigprocmask(
            SigmaskHow::SIG_BLOCK,
            Some(&deferred_set()),
            Some(&mut previous),
        );
        Self { previous }
    }

    /// Consumes and returns a deferred signal that arrived meanwhile, if any.
    pub fn take_pending(&self) -> Option<Signal> {
        // SAFETY: sigpending writes a sigset_t into the zeroed value we own.
        let pending = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            if libc::sigpending(&mut set) != 0 {
                return None;
            }
            SigSet::from_sigset_t_unchecked(set)
        };
        let signal = DEFERRED.into_iter().find(|s| pending.contains(*s))?;
        let mut only = SigSet::empty();
        only.add(signal);
        // The signal is pending and blocked, so this returns at once.
        only.wait().ok()
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}

/// Makes a command's child start with no signals blocked and default SIGINT
/// handling, whatever this process has blocked or ignored.
pub fn restore_default_in_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: sigemptyset, sigprocmask and signal are async-signal-safe and only
    // touch the child's own signal state between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
}

/// Ignores SIGINT in this process until dropped; a debugger in the foreground
/// takes Ctrl-C for itself, and ckpt must outlive it to clean up.
pub struct IgnoreInterrupt {
    previous: libc::sighandler_t,
}

impl IgnoreInterrupt {
    pub fn new() -> Self {
        // SAFETY: installing SIG_IGN for SIGINT has no memory-safety preconditions.
        let previous = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
        Self { previous }
    }
}

impl Drop for IgnoreInterrupt {
    fn drop(&mut self) {
        // SAFETY: restores the disposition returned by the earlier signal() call.
        unsafe {
            libc::signal(libc::SIGINT, self.previous);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::raise;

    #[test]
    fn deferred_signal_is_reported_not_delivered() {
        let deferred = Deferred::block();
        raise(Signal::SIGHUP).unwrap();
        assert_eq!(deferred.take_pending(), Some(Signal::SIGHUP));
        assert_eq!(deferred.take_pending(), None);
    }
}
