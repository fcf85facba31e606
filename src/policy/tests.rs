use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    parse_policy(Path::new("web.yaml"), text)
}

/// Parses `text`, expects an `Invalid` error, and returns (line, column, message).
fn invalid(text: &str) -> (usize, usize, String) {
    match parse(text) {
        Err(PolicyError::Invalid {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("expected an invalid-policy error, got {other:?}"),
    }
}

#[test]
fn smallest_policy_gets_defaults() {
    let policy = parse("container: web\ninterval: 30s\n").unwrap();
    assert_eq!(policy.container.as_str(), "web");
    assert_eq!(policy.interval.0, Duration::from_secs(30));
    assert_eq!(policy.jitter(), Duration::from_secs(3));
    assert_eq!(policy.runtime, "runc");
    assert_eq!(policy.retention.keep, 5);
    assert_eq!(policy.on_failure.restore, RestoreMode::Paused);
    assert_eq!(policy.on_failure.exit_codes, ExitCodes::NonZero);
    assert_eq!(policy.on_failure.signals.len(), DEFAULT_CRASH_SIGNALS.len());
    assert!(policy.good_checkpoint.verify);
    assert!(policy.health.is_none());
    assert!(!policy.requires_health());
}

#[test]
fn full_policy_parses_every_field() {
    let text = "\
container: db
runtime: runc
runtime_root: /run/runc-db
interval: 5m
jitter: 20s
retention:
  keep: 3
  max_age: 7d
  max_total_size: 10GiB
  pinned: [20260101T000000Z-abcdef]
checkpoint:
  tcp_established: true
  file_locks: true
  skip_in_flight: true
  ext_unix_sk: true
  ghost_limit: 1MiB
  compression_level: 9
good_checkpoint:
  verify: true
  health_passing: false
on_failure:
  exit_codes: [1, 139]
  signals: [SIGSEGV, abrt]
  oom: false
  health: false
  restore: none
  keep_debug_containers: 2
health:
  command: [/bin/sh, -c, 'test -e /tmp/ready']
  interval: 2s
  timeout: 1s
  failures: 4
";
    let policy = parse(text).unwrap();
    assert_eq!(
        policy.runtime_root.as_deref(),
        Some(Path::new("/run/runc-db"))
    );
    assert_eq!(policy.jitter(), Duration::from_secs(20));
    assert_eq!(
        policy.retention.max_age.unwrap().0,
        Duration::from_secs(7 * 86400)
    );
    assert_eq!(policy.retention.max_total_size.unwrap().0, 10 << 30);
    assert_eq!(
        policy.retention.pinned[0].as_str(),
        "20260101T000000Z-abcdef"
    );
    let options = policy.checkpoint_options();
    assert!(options.tcp_established);
    assert!(options.file_locks);
    assert!(options.skip_in_flight);
    assert!(options.ext_unix_sk);
    assert_eq!(options.ghost_limit, Some(1 << 20));
    assert_eq!(policy.checkpoint.compression_level, 9);
    assert_eq!(
        policy.on_failure.exit_codes,
        ExitCodes::List([1, 139].into())
    );
    assert_eq!(
        policy.on_failure.signals,
        vec![SignalName(Signal::SIGSEGV), SignalName(Signal::SIGABRT)]
    );
    assert_eq!(policy.on_failure.restore, RestoreMode::None);
    assert_eq!(policy.on_failure.keep_debug_containers, 2);
    let probe = policy.health.as_ref().unwrap();
    assert_eq!(probe.command.len(), 3);
    assert_eq!(probe.failures, 4);
    assert!(!policy.requires_health());
}

#[test]
fn misspelled_key_reports_position_and_suggestion() {
    let (line, column, message) = invalid("container: web\nintervl: 30s\n");
    assert_eq!((line, column), (2, 1));
    assert!(message.contains("unknown key `intervl`"), "{message}");
    assert!(message.contains("did you mean `interval`?"), "{message}");
    assert!(
        message.contains("valid keys: container, runtime,"),
        "{message}"
    );
}

#[test]
fn misspelled_nested_key_names_its_section() {
    let (line, column, message) =
        invalid("container: web\ninterval: 30s\nretention:\n  keep: 2\n  max_agee: 1d\n");
    assert_eq!((line, column), (5, 3));
    assert!(
        message.contains("unknown key `max_agee` in retention"),
        "{message}"
    );
    assert!(message.contains("did you mean `max_age`?"), "{message}");
    assert!(
        message.contains("valid keys: keep, max_age, max_total_size, pinned"),
        "{message}"
    );
}

#[test]
fn unrelated_unknown_key_gets_no_suggestion() {
    let (_, _, message) = invalid("container: web\ninterval: 30s\ncolour: blue\n");
    assert!(message.contains("unknown key `colour`"), "{message}");
    assert!(!message.contains("did you mean"), "{message}");
}

#[test]
fn bad_duration_reports_value_position() {
    let (line, column, message) = invalid("container: web\ninterval: 30 seconds\n");
    assert_eq!((line, column), (2, 11));
    assert!(
        message.starts_with("field interval: invalid duration"),
        "{message}"
    );
    assert!(message.contains("unknown unit \" seconds\""), "{message}");
}

#[test]
fn bad_size_in_section_reports_dotted_field() {
    let text = "container: web\ninterval: 30s\nretention:\n  max_total_size: 10 gigs\n";
    let (line, column, message) = invalid(text);
    assert_eq!((line, column), (4, 19));
    assert!(
        message.starts_with("field retention.max_total_size: invalid size"),
        "{message}"
    );
}

#[test]
fn wrong_type_reports_expected_type() {
    let text = "container: web\ninterval: 30s\nretention:\n  keep: many\n";
    let (line, column, message) = invalid(text);
    assert_eq!((line, column), (4, 9));
    assert!(
        message.starts_with("field retention.keep: invalid type"),
        "{message}"
    );
    assert!(message.contains("expected usize"), "{message}");
}

#[test]
fn missing_interval_is_named() {
    let (_, _, message) = invalid("container: web\n");
    assert_eq!(message, "field interval: missing, expected a value");
}

#[test]
fn invalid_container_name_is_rejected() {
    let (line, column, message) = invalid("container: ../etc\ninterval: 30s\n");
    assert_eq!((line, column), (1, 12));
    assert!(
        message.starts_with("field container: invalid container name"),
        "{message}"
    );
}

#[test]
fn unknown_signal_is_rejected() {
    let text = "container: web\ninterval: 30s\non_failure:\n  signals: [SIGSEGV, SIGNOPE]\n";
    let (line, column, message) = invalid(text);
    assert_eq!((line, column), (4, 22));
    assert!(message.contains("invalid signal \"SIGNOPE\""), "{message}");
}

#[test]
fn jitter_not_shorter_than_interval_is_rejected() {
    let (line, column, message) = invalid("container: web\ninterval: 10s\njitter: 10s\n");
    assert_eq!((line, column), (3, 9));
    assert_eq!(message, "field jitter: must be shorter than interval (10s)");
}

#[test]
fn zero_keep_is_rejected_at_its_line() {
    let text = "container: web\ninterval: 10s\nretention:\n  keep: 0\n";
    let (line, column, message) = invalid(text);
    assert_eq!((line, column), (4, 9));
    assert!(
        message.starts_with("field retention.keep: must be at least 1"),
        "{message}"
    );
}

#[test]
fn restore_mode_lists_variants() {
    let text = "container: web\ninterval: 10s\non_failure:\n  restore: running\n";
    let (line, column, message) = invalid(text);
    assert_eq!((line, column), (4, 12));
    assert!(message.contains("expected `paused` or `none`"), "{message}");
}

#[test]
fn exit_code_out_of_range_is_rejected() {
    let text = "container: web\ninterval: 10s\non_failure:\n  exit_codes: [1, 300]\n";
    let (_, _, message) = invalid(text);
    assert!(
        message.contains("expected `nonzero` or a list of exit codes"),
        "{message}"
    );
}

#[test]
fn syntax_error_has_position() {
    let (line, column, _) = invalid("container: web\ninterval: [30s\n");
    assert!(line >= 2, "line {line}");
    assert!(column >= 1, "column {column}");
}

#[test]
fn error_display_starts_with_file_line_column() {
    let err = parse("container: web\nintervl: 30s\n").unwrap_err();
    assert!(
        err.to_string().starts_with("web.yaml:2:1: unknown key"),
        "{err}"
    );
}

#[test]
fn load_dir_reports_duplicates_and_keeps_good_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "container: web\ninterval: 30s\n").unwrap();
    std::fs::write(dir.path().join("b.yml"), "container: web\ninterval: 10s\n").unwrap();
    std::fs::write(dir.path().join("c.yaml"), "container: db\nintervl: 10s\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
    let set = load_dir(dir.path()).unwrap();
    assert_eq!(set.policies.len(), 1);
    assert_eq!(set.policies[0].policy.interval.0, Duration::from_secs(30));
    assert_eq!(set.errors.len(), 2);
    assert!(matches!(set.errors[0], PolicyError::Duplicate { .. }));
    assert!(set.errors[1].path().ends_with("c.yaml"));
}

#[test]
fn paused_restore_needs_a_debug_container_slot() {
    let text = "container: web\ninterval: 10s\non_failure:\n  keep_debug_containers: 0\n";
    let (line, column, message) = invalid(text);
    assert_eq!((line, column), (4, 26));
    assert_eq!(
        message,
        "field on_failure.keep_debug_containers: must be at least 1 when restore is paused"
    );
    let text =
        "container: web\ninterval: 10s\non_failure:\n  restore: none\n  keep_debug_containers: 0\n";
    assert!(parse(text).is_ok());
}
