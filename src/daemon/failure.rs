//! Deciding whether the end of a container is a failure or a stop on purpose.

use std::fmt;

use nix::sys::signal::Signal;

use crate::policy::{ExitCodes, OnFailure};

/// End of the container's init process, decoded from its wait status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitExit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
    /// Gone, but its status was not seen (for example the daemon started after it ended).
    Unknown,
}

impl InitExit {
    /// Decodes a wait status as the kernel reports it (`exit_code` of the proc connector).
    pub fn from_wait_status(status: u32) -> Self {
        let signal = (status & 0x7f) as i32;
        if signal == 0 {
            Self::Code(((status >> 8) & 0xff) as i32)
        } else {
            Self::Signal(signal)
        }
    }
}

/// Cause of a container failure, as the daemon detected it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureCause {
    ExitCode(i32),
    Signal(i32),
    /// The kernel OOM killer killed a process in the container's cgroup.
    OomKill,
    /// The health probe failed this many times in a row.
    HealthProbe(u32),
}

impl FailureCause {
    /// Short name of the cause for events and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ExitCode(_) => "exit_code",
            Self::Signal(_) => "signal",
            Self::OomKill => "oom_kill",
            Self::HealthProbe(_) => "health",
        }
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ExitCode(code) => write!(f, "init exited with code {code}"),
            Self::Signal(number) => write!(f, "init killed by {}", signal_name(*number)),
            Self::OomKill => f.write_str("OOM kill in the container's cgroup"),
            Self::HealthProbe(count) => write!(f, "health probe failed {count} times in a row"),
        }
    }
}

/// Returns `SIGSEGV` for 11, or the number when it names no signal.
pub fn signal_name(number: i32) -> String {
    match Signal::try_from(number) {
        Ok(signal) => signal.as_str().to_string(),
        Err(_) => format!("signal {number}"),
    }
}

/// Classifies the end of a container's init process under the policy.
///
/// `oom_killed` is whether the cgroup's OOM kill counter rose while the container ran.
/// Returns `None` for a stop on purpose: SIGTERM or SIGKILL without an OOM kill (what
/// `runc kill` and `runc delete --force` send), an exit code the policy does not list, or
/// an end whose status is unknown.
pub fn classify_exit(exit: InitExit, oom_killed: bool, policy: &OnFailure) -> Option<FailureCause> {
    if oom_killed && policy.oom {
        return Some(FailureCause::OomKill);
    }
    match exit {
        InitExit::Code(code) => {
            let listed = match &policy.exit_codes {
                ExitCodes::NonZero => code != 0,
                ExitCodes::List(codes) => codes.contains(&code),
            };
            listed.then_some(FailureCause::ExitCode(code))
        }
        InitExit::Signal(number) => {
            let listed = policy.signals.iter().any(|name| name.0 as i32 == number);
            listed.then_some(FailureCause::Signal(number))
        }
        InitExit::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SignalName;

    #[test]
    fn wait_status_decodes_code_and_signal() {
        assert_eq!(InitExit::from_wait_status(139 << 8), InitExit::Code(139));
        assert_eq!(InitExit::from_wait_status(0), InitExit::Code(0));
        assert_eq!(InitExit::from_wait_status(11), InitExit::Signal(11));
        // 0x80 is the core-dump flag.
        assert_eq!(InitExit::from_wait_status(0x80 | 6), InitExit::Signal(6));
    }

    #[test]
    fn shell_reported_segfault_is_failure() {
        let cause = classify_exit(InitExit::Code(139), false, &OnFailure::default());
        assert_eq!(cause, Some(FailureCause::ExitCode(139)));
    }

    #[test]
    fn exit_zero_is_not_failure_by_default() {
        assert_eq!(
            classify_exit(InitExit::Code(0), false, &OnFailure::default()),
            None
        );
    }

    #[test]
    fn listed_exit_zero_is_failure() {
        let policy = OnFailure {
            exit_codes: ExitCodes::List([0, 3].into()),
            ..OnFailure::default()
        };
        assert_eq!(
            classify_exit(InitExit::Code(0), false, &policy),
            Some(FailureCause::ExitCode(0))
        );
        assert_eq!(classify_exit(InitExit::Code(1), false, &policy), None);
    }

    #[test]
    fn operator_signals_are_not_failures() {
        let policy = OnFailure::default();
        assert_eq!(
            classify_exit(InitExit::Signal(libc::SIGTERM), false, &policy),
            None
        );
        assert_eq!(
            classify_exit(InitExit::Signal(libc::SIGKILL), false, &policy),
            None
        );
    }

    #[test]
    fn sigkill_with_oom_kill_is_failure() {
        let cause = classify_exit(InitExit::Signal(libc::SIGKILL), true, &OnFailure::default());
        assert_eq!(cause, Some(FailureCause::OomKill));
    }

    #[test]
    fn oom_kill_ignored_when_policy_disables_it() {
        let policy = OnFailure {
            oom: false,
            ..OnFailure::default()
        };
        assert_eq!(
            classify_exit(InitExit::Signal(libc::SIGKILL), true, &policy),
            None
        );
    }

    #[test]
    fn crash_signals_are_failures() {
        let policy = OnFailure::default();
        for signal in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGABRT,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGSYS,
        ] {
            let cause = classify_exit(InitExit::Signal(signal), false, &policy);
            assert_eq!(cause, Some(FailureCause::Signal(signal)), "signal {signal}");
        }
    }

    #[test]
    fn configured_signal_list_replaces_defaults() {
        let policy = OnFailure {
            signals: vec![SignalName(Signal::SIGUSR1)],
            ..OnFailure::default()
        };
        assert_eq!(
            classify_exit(InitExit::Signal(libc::SIGSEGV), false, &policy),
            None
        );
        let cause = classify_exit(InitExit::Signal(libc::SIGUSR1), false, &policy);
        assert_eq!(cause, Some(FailureCause::Signal(libc::SIGUSR1)));
    }

    #[test]
    fn unknown_end_is_not_failure() {
        assert_eq!(
            classify_exit(InitExit::Unknown, false, &OnFailure::default()),
            None
        );
    }

    #[test]
    fn cause_messages_name_signal() {
        assert_eq!(
            FailureCause::Signal(11).to_string(),
            "init killed by SIGSEGV"
        );
        assert_eq!(
            FailureCause::ExitCode(139).to_string(),
            "init exited with code 139"
        );
    }
}
