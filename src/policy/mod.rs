//! Per-container policies: what `ckpt daemon` checkpoints, how often, how long it keeps
//! checkpoints, and what it does when the container fails.
//!
//! A policy is one YAML file. Unknown keys are errors, and every error names the file, the
//! line and column, the field, and what was expected. docs/policy.md documents each field.

mod units;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer, de};

use crate::model::{CheckpointId, CheckpointOptions, ContainerId};

pub use units::{ByteSize, HumanDuration, format_duration};

/// Default directory that `ckpt daemon` reads policies from.
pub const DEFAULT_POLICY_DIR: &str = "/etc/ckpt/policies";

/// Shortest interval accepted, so that a typo such as `1ms` cannot freeze a container nonstop.
const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Largest zstd level accepted by `compression_level`.
const MAX_COMPRESSION_LEVEL: i32 = 19;

/// One container's policy, as read from its YAML file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Container name, as `runc list` shows it.
    #[serde(deserialize_with = "deserialize_container")]
    pub container: ContainerId,
    /// OCI runtime binary that runs the container.
    #[serde(default = "default_runtime")]
    pub runtime: String,
    /// State directory of the runtime (`runc --root`); `None` uses the runtime's default.
    #[serde(default)]
    pub runtime_root: Option<PathBuf>,
    /// Time between two checkpoints.
    pub interval: HumanDuration,
    /// Largest random delay added to each interval; `None` means a tenth of the interval.
    #[serde(default)]
    pub jitter: Option<HumanDuration>,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub checkpoint: CheckpointSettings,
    #[serde(default)]
    pub good_checkpoint: GoodCheckpoint,
    #[serde(default)]
    pub on_failure: OnFailure,
    #[serde(default)]
    pub health: Option<HealthProbe>,
}

/// Which checkpoints retention keeps. The last good checkpoint, pinned checkpoints and
/// checkpoints used by a debug container are kept regardless of these limits.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Maximum number of checkpoints kept.
    pub keep: usize,
    /// Checkpoints older than this are deleted.
    pub max_age: Option<HumanDuration>,
    /// Maximum sum of the bytes each checkpoint added to the store.
    pub max_total_size: Option<ByteSize>,
    /// Checkpoints that retention never deletes.
    pub pinned: Vec<CheckpointId>,
}

/// CRIU options and compression for each checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSettings {
    pub tcp_established: bool,
    pub file_locks: bool,
    pub skip_in_flight: bool,
    pub ext_unix_sk: bool,
    /// Largest deleted-but-open file that CRIU copies into the images.
    pub ghost_limit: Option<ByteSize>,
    /// zstd level for the store, 1 to 19.
    pub compression_level: i32,
}

/// Conditions beyond a successful dump that a checkpoint must meet to count as good.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoodCheckpoint {
    /// Verify the stored checkpoint right after storing it.
    pub verify: bool,
    /// Require the health probe to be passing when the checkpoint is taken.
    pub health_passing: bool,
}

/// Failure conditions of the container, and the daemon's response to a failure.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnFailure {
    /// Exit codes of the container's init process that count as failures.
    pub exit_codes: ExitCodes,
    /// Signals that count as failures when they kill the init process.
    pub signals: Vec<SignalName>,
    /// Whether an OOM kill in the container's cgroup counts as a failure.
    pub oom: bool,
    /// Whether a health probe that keeps failing counts as a failure.
    pub health: bool,
    /// Restore the last good checkpoint into a paused debug container, or do nothing.
    pub restore: RestoreMode,
    /// Maximum number of debug containers kept for this container; older ones are removed.
    pub keep_debug_containers: usize,
}

/// Exit codes that count as failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitCodes {
    /// Every exit code except 0.
    NonZero,
    /// Exactly these codes; include 0 to treat a normal exit as a failure.
    List(BTreeSet<i32>),
}

/// A signal named as in `kill -l`, with or without the `SIG` prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalName(pub Signal);

/// Action taken when the container fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMode {
    Paused,
    None,
}

/// A command run inside the container's namespaces; it fails when it exits non-zero or
/// times out.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthProbe {
    /// Program and arguments, run as with `runc exec`.
    pub command: Vec<String>,
    #[serde(default = "default_probe_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_probe_timeout")]
    pub timeout: HumanDuration,
    /// Consecutive failures after which the container counts as failed.
    #[serde(default = "default_probe_failures")]
    pub failures: u32,
}

fn default_runtime() -> String {
    "runc".to_string()
}

fn default_probe_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_probe_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_probe_failures() -> u32 {
    3
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep: 5,
            max_age: None,
            max_total_size: None,
            pinned: Vec::new(),
        }
    }
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            tcp_established: false,
            file_locks: false,
            skip_in_flight: false,
            ext_unix_sk: false,
            ghost_limit: None,
            compression_level: 3,
        }
    }
}

impl Default for GoodCheckpoint {
    fn default() -> Self {
        Self {
            verify: true,
            health_passing: true,
        }
    }
}

impl Default for OnFailure {
    fn default() -> Self {
        Self {
            exit_codes: ExitCodes::NonZero,
            signals: DEFAULT_CRASH_SIGNALS
                .iter()
                .map(|s| SignalName(*s))
                .collect(),
            oom: true,
            health: true,
            restore: RestoreMode::Paused,
            keep_debug_containers: 1,
        }
    }
}

/// Signals that count as a crash unless the policy lists its own. SIGKILL is left out
/// because `runc kill -9` sends it too; an OOM kill is caught from the cgroup's memory events.
pub const DEFAULT_CRASH_SIGNALS: &[Signal] = &[
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGABRT,
    Signal::SIGILL,
    Signal::SIGFPE,
    Signal::SIGSYS,
];

impl<'de> Deserialize<'de> for ExitCodes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExitCodesVisitor;
        impl<'de> de::Visitor<'de> for ExitCodesVisitor {
            type Value = ExitCodes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`nonzero` or a list of exit codes from 0 to 255")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ExitCodes, E> {
                if text == "nonzero" {
                    Ok(ExitCodes::NonZero)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(text), &self))
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ExitCodes, A::Error> {
                let mut codes = BTreeSet::new();
                while let Some(code) = seq.next_element::<i64>()? {
                    if !(0..=255).contains(&code) {
                        return Err(de::Error::invalid_value(
                            de::Unexpected::Signed(code),
                            &self,
                        ));
                    }
                    codes.insert(code as i32);
                }
                Ok(ExitCodes::List(codes))
            }
        }
        deserializer.deserialize_any(ExitCodesVisitor)
    }
}

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor, unlike parsing after deserializing a String, makes serde_norway report
        // the position of the scalar itself.
        struct SignalVisitor;
        impl de::Visitor<'_> for SignalVisitor {
            type Value = SignalName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a signal name such as SIGSEGV or ABRT")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<SignalName, E> {
                let upper = name.to_ascii_uppercase();
                let full = if upper.starts_with("SIG") {
                    upper
                } else {
                    format!("SIG{upper}")
                };
                full.parse::<Signal>().map(SignalName).map_err(|_| {
                    E::custom(format!(
                        "invalid signal {name:?}: expected a signal name such as SIGSEGV or ABRT"
                    ))
                })
            }
        }
        deserializer.deserialize_str(SignalVisitor)
    }
}

fn deserialize_container<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ContainerId, D::Error> {
    struct ContainerVisitor;
    impl de::Visitor<'_> for ContainerVisitor {
        type Value = ContainerId;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a container name")
        }
        fn visit_str<E: de::Error>(self, name: &str) -> Result<ContainerId, E> {
            name.parse().map_err(E::custom)
        }
    }
    deserializer.deserialize_str(ContainerVisitor)
}

impl Policy {
    /// Random delay added to each interval at most.
    pub fn jitter(&self) -> Duration {
        match self.jitter {
            Some(jitter) => jitter.0,
            None => self.interval.0 / 10,
        }
    }

    /// CRIU options for `ops::checkpoint`.
    pub fn checkpoint_options(&self) -> CheckpointOptions {
        CheckpointOptions {
            tcp_established: self.checkpoint.tcp_established,
            file_locks: self.checkpoint.file_locks,
            skip_in_flight: self.checkpoint.skip_in_flight,
            ext_unix_sk: self.checkpoint.ext_unix_sk,
            ghost_limit: self.checkpoint.ghost_limit.map(|size| size.0),
        }
    }

    /// Returns whether the health probe's result decides if a checkpoint is good.
    pub fn requires_health(&self) -> bool {
        self.good_checkpoint.health_passing && self.health.is_some()
    }
}

/// A policy file that cannot be used, with the place in it that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("failed to read policy {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", location(path, *line, *column))]
    Invalid {
        path: PathBuf,
        /// 1-based line, 0 when the error has no position.
        line: usize,
        /// 1-based column, 0 when the error has no position.
        column: usize,
        message: String,
    },
    #[error("{path}: container {container} already has a policy in {first}")]
    Duplicate {
        path: PathBuf,
        container: ContainerId,
        first: PathBuf,
    },
}

fn location(path: &Path, line: usize, column: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}:{column}", path.display())
    }
}

impl PolicyError {
    /// Path of the policy file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. } | Self::Invalid { path, .. } | Self::Duplicate { path, .. } => {
                path
            }
        }
    }
}

/// Reads and parses one policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_policy(path, &text)
}

/// Parses the text of a policy file; `path` only labels errors.
pub fn parse_policy(path: &Path, text: &str) -> Result<Policy, PolicyError> {
    let policy: Policy = serde_norway::from_str(text).map_err(|err| yaml_error(path, err))?;
    check_values(&policy).map_err(|(field, message)| {
        let (line, column) = find_key(text, field);
        PolicyError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: format!("field {field}: {message}"),
        }
    })?;
    Ok(policy)
}

/// Checks the rules that involve more than one field or that YAML types cannot express.
/// Returns the dotted field name and the message of the first rule broken.
fn check_values(policy: &Policy) -> Result<(), (&'static str, String)> {
    let interval = policy.interval.0;
    if interval < MIN_INTERVAL {
        return Err((
            "interval",
            format!("must be at least {}", format_duration(MIN_INTERVAL)),
        ));
    }
    if policy.jitter() >= interval {
        return Err((
            "jitter",
            format!(
                "must be shorter than interval ({})",
                format_duration(interval)
            ),
        ));
    }
    if policy.retention.keep == 0 {
        return Err((
            "retention.keep",
            "must be at least 1 because the last good checkpoint is always kept".to_string(),
        ));
    }
    let level = policy.checkpoint.compression_level;
    if !(1..=MAX_COMPRESSION_LEVEL).contains(&level) {
        return Err((
            "checkpoint.compression_level",
            format!("expected a zstd level from 1 to {MAX_COMPRESSION_LEVEL}, found {level}"),
        ));
    }
    if policy.on_failure.restore == RestoreMode::Paused
        && policy.on_failure.keep_debug_containers == 0
    {
        return Err((
            "on_failure.keep_debug_containers",
            "must be at least 1 when restore is paused".to_string(),
        ));
    }
    if let Some(probe) = &policy.health {
        if probe.command.is_empty() {
            return Err((
                "health.command",
                "expected a program and its arguments, found an empty list".to_string(),
            ));
        }
        if probe.failures == 0 {
            return Err(("health.failures", "must be at least 1".to_string()));
        }
        if probe.timeout.0 > probe.interval.0 {
            return Err((
                "health.timeout",
                "must not be longer than health.interval".to_string(),
            ));
        }
    }
    Ok(())
}

/// Finds the line and column of a dotted key's value (`retention.keep`) in block-style YAML.
/// Points at the key when its value is on later lines, and at the nearest parent that is
/// present when the key is absent. Returns (0, 0) when no part is found.
fn find_key(text: &str, dotted: &str) -> (usize, usize) {
    let mut found = (0, 0);
    let mut parent_indent: Option<usize> = None;
    let mut start = 0;
    let lines: Vec<&str> = text.lines().collect();
    for part in dotted.split('.') {
        let mut hit = None;
        for (index, line) in lines.iter().enumerate().skip(start) {
            let indent = line.len() - line.trim_start().len();
            let content = line.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if let Some(parent) = parent_indent
                && indent <= parent
            {
                break;
            }
            let after_key = content
                .strip_prefix(part)
                .and_then(|rest| rest.trim_start().strip_prefix(':'));
            if let Some(value) = after_key {
                let value_text = value.trim_start();
                let column = if value_text.is_empty() || value_text.starts_with('#') {
                    indent + 1
                } else {
                    line.len() - value_text.len() + 1
                };
                hit = Some((index, indent, column));
                break;
            }
        }
        match hit {
            Some((index, indent, column)) => {
                found = (index + 1, column);
                parent_indent = Some(indent);
                start = index + 1;
            }
            None => break,
        }
    }
    found
}

/// Turns a serde_norway error into a [`PolicyError::Invalid`] that names the field and,
/// for an unknown key, the valid keys and the closest one.
fn yaml_error(path: &Path, err: serde_norway::Error) -> PolicyError {
    let (line, column) = err
        .location()
        .map(|at| (at.line(), at.column()))
        .unwrap_or((0, 0));
    let mut text = err.to_string();
    if let Some(at) = text.rfind(" at line ") {
        text.truncate(at);
    }

    // serde_norway prefixes the dotted path of the value, such as `retention.keep: `.
    let (field, detail) = match text.split_once(": ") {
        Some((prefix, rest)) if !prefix.contains(' ') && !prefix.is_empty() => {
            (Some(prefix.to_string()), rest.to_string())
        }
        _ => (None, text.clone()),
    };

    let message = if let Some((unknown, valid)) = parse_unknown_field(&detail) {
        let place = match &field {
            Some(parent) => format!("unknown key `{unknown}` in {parent}"),
            None => format!("unknown key `{unknown}`"),
        };
        let suggestion = closest(&unknown, &valid)
            .map(|near| format!(" (did you mean `{near}`?)"))
            .unwrap_or_default();
        format!("{place}{suggestion}; valid keys: {}", valid.join(", "))
    } else if let Some(missing) =
        backticked(&detail).filter(|_| detail.starts_with("missing field"))
    {
        match &field {
            Some(parent) => format!("field {parent}.{missing}: missing, expected a value"),
            None => format!("field {missing}: missing, expected a value"),
        }
    } else {
        match &field {
            Some(field) => format!("field {field}: {detail}"),
            None => detail,
        }
    };
    PolicyError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`") into
/// the unknown key and the valid ones.
fn parse_unknown_field(detail: &str) -> Option<(String, Vec<String>)> {
    let rest = detail.strip_prefix("unknown field ")?;
    let unknown = backticked(rest)?;
    let (_, expected) = rest.split_once("expected")?;
    let valid = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((unknown, valid))
}

fn backticked(text: &str) -> Option<String> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(text[start..start + len].to_string())
}

/// Returns the valid key closest to `unknown`, if one is close enough to be a typo.
fn closest<'a>(unknown: &str, valid: &'a [String]) -> Option<&'a str> {
    valid
        .iter()
        .map(|key| (strsim::damerau_levenshtein(unknown, key), key))
        .filter(|(distance, key)| *distance <= (key.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, key)| key.as_str())
}

/// A policy and the file it came from.
#[derive(Clone, Debug)]
pub struct LoadedPolicy {
    pub path: PathBuf,
    pub policy: Policy,
}

/// Policies read from a directory, and the files that failed.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Valid policies, sorted by file name.
    pub policies: Vec<LoadedPolicy>,
    pub errors: Vec<PolicyError>,
}

/// Error for a policy directory that cannot be listed.
#[derive(Debug, thiserror::Error)]
#[error("failed to list policy directory {path}")]
pub struct LoadDirError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Reads every `*.yaml` and `*.yml` file in `dir`. A second policy for the same container
/// is an error for the later file, in file name order.
pub fn load_dir(dir: &Path) -> Result<PolicySet, LoadDirError> {
    let list_error = |source| LoadDirError {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        let is_yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if is_yaml && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();

    let mut set = PolicySet::default();
    for path in paths {
        match load_file(&path) {
            Ok(policy) => {
                let first = set
                    .policies
                    .iter()
                    .find(|loaded| loaded.policy.container == policy.container);
                if let Some(first) = first {
                    set.errors.push(PolicyError::Duplicate {
                        container: policy.container.clone(),
                        first: first.path.clone(),
                        path,
                    });
                } else {
                    set.policies.push(LoadedPolicy { path, policy });
                }
            }
            Err(err) => set.errors.push(err),
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests;
