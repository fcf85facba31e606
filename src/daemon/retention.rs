//! Retention planning: the checkpoints to delete after each new checkpoint.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::daemon::backend::CheckpointRecord;
use crate::model::CheckpointId;
use crate::policy::Retention;

/// Returns whether a checkpoint counts as good: it is in the store (which the daemon only allows
/// after it verified), and when the policy requires it, the health probe passed at the time.
pub fn is_good(record: &CheckpointRecord, requires_health: bool) -> bool {
    match record.health_passing {
        Some(passing) => passing,
        None => !requires_health,
    }
}

/// Returns the newest good checkpoint in a newest-first list.
pub fn last_good(
    checkpoints: &[CheckpointRecord],
    requires_health: bool,
) -> Option<&CheckpointRecord> {
    checkpoints
        .iter()
        .find(|record| is_good(record, requires_health))
}

/// Chooses the checkpoints to delete from a newest-first list.
///
/// A checkpoint goes when it is beyond the newest `keep`, older than `max_age`, or among the
/// oldest while the sum of `added_bytes` exceeds `max_total_size`. The last good checkpoint,
/// pinned checkpoints and those in `in_use` (debug containers) are never chosen, but they
/// still count towards `keep` and the size. Returns ids oldest first.
pub fn plan_deletions(
    checkpoints: &[CheckpointRecord],
    rules: &Retention,
    requires_health: bool,
    in_use: &HashSet<CheckpointId>,
    now: DateTime<Utc>,
) -> Vec<CheckpointId> {
    let last_good_id = last_good(checkpoints, requires_health).map(|record| &record.id);
    let protected = |record: &CheckpointRecord| {
        Some(&record.id) == last_good_id
            || rules.pinned.contains(&record.id)
            || in_use.contains(&record.id)
    };

    let mut delete: Vec<bool> = checkpoints
        .iter()
        .enumerate()
        .map(|(index, record)| {
            let too_many = index >= rules.keep;
            let too_old = rules.max_age.is_some_and(|max_age| {
                let age = now.signed_duration_since(record.created);
                age.to_std().is_ok_and(|age| age > max_age.0)
            });
            (too_many || too_old) && !protected(record)
        })
        .collect();

    // NOTE: `added_bytes` is what each checkpoint added when it was stored. Deleting an old
    // checkpoint can free less than that when newer ones share its chunks, so the size limit
    // is an estimate of store usage.
    if let Some(max_total) = rules.max_total_size {
        let mut total: u64 = checkpoints
            .iter()
            .zip(&delete)
            .filter(|(_, deleted)| !**deleted)
            .map(|(record, _)| record.added_bytes)
            .sum();
        for (index, record) in checkpoints.iter().enumerate().rev() {
            if total <= max_total.0 {
                break;
            }
            if !delete[index] && !protected(record) {
                delete[index] = true;
                total -= record.added_bytes;
            }
        }
    }

    checkpoints
        .iter()
        .zip(delete)
        .rev()
        .filter(|(_, deleted)| *deleted)
        .map(|(record, _)| record.id.clone())
        .collect()
}

/// Chooses the debug containers of one container to remove so that at most `keep` remain,
/// given their names oldest first. Returns the names to remove.
pub fn plan_debug_removals(names_oldest_first: &[String], keep: usize) -> Vec<String> {
    let excess = names_oldest_first.len().saturating_sub(keep);
    names_oldest_first[..excess].to_vec()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::ContainerId;
    use crate::policy::{ByteSize, HumanDuration};

    /// Builds newest-first records: `ages_secs[i]` seconds before `now`, `added[i]` bytes.
    fn records(now: DateTime<Utc>, specs: &[(i64, u64, Option<bool>)]) -> Vec<CheckpointRecord> {
        specs
            .iter()
            .enumerate()
            .map(|(index, (age_secs, added, health))| {
                let created = now - chrono::Duration::seconds(*age_secs);
                CheckpointRecord {
                    id: format!("{}-{index:06x}", created.format("%Y%m%dT%H%M%SZ"))
                        .parse()
                        .unwrap(),
                    container: "web".parse::<ContainerId>().unwrap(),
                    created,
                    logical_bytes: *added,
                    added_bytes: *added,
                    health_passing: *health,
                    frozen_time_us: 0,
                    criu_version: "4.2.1".to_string(),
                }
            })
            .collect()
    }

    fn rules(keep: usize) -> Retention {
        Retention {
            keep,
            ..Retention::default()
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn keep_deletes_oldest_beyond_count() {
        let list = records(
            now(),
            &[(10, 1, None), (20, 1, None), (30, 1, None), (40, 1, None)],
        );
        let deleted = plan_deletions(&list, &rules(2), false, &HashSet::new(), now());
        assert_eq!(deleted, vec![list[3].id.clone(), list[2].id.clone()]);
    }

    #[test]
    fn keep_spares_last_good_checkpoint() {
        // Only the oldest checkpoint was taken while the probe passed.
        let list = records(
            now(),
            &[
                (10, 1, Some(false)),
                (20, 1, Some(false)),
                (30, 1, Some(true)),
            ],
        );
        let deleted = plan_deletions(&list, &rules(1), true, &HashSet::new(), now());
        assert_eq!(deleted, vec![list[1].id.clone()]);
    }

    #[test]
    fn max_age_spares_last_good_checkpoint() {
        let mut retention = rules(10);
        retention.max_age = Some(HumanDuration(Duration::from_secs(60)));
        let list = records(now(), &[(100, 1, None), (200, 1, None)]);
        let deleted = plan_deletions(&list, &retention, false, &HashSet::new(), now());
        assert_eq!(deleted, vec![list[1].id.clone()]);
    }

    #[test]
    fn max_age_deletes_only_old_checkpoints() {
        let mut retention = rules(10);
        retention.max_age = Some(HumanDuration(Duration::from_secs(60)));
        let list = records(
            now(),
            &[(10, 1, None), (59, 1, None), (61, 1, None), (500, 1, None)],
        );
        let deleted = plan_deletions(&list, &retention, false, &HashSet::new(), now());
        assert_eq!(deleted, vec![list[3].id.clone(), list[2].id.clone()]);
    }

    #[test]
    fn pinned_and_in_use_checkpoints_survive() {
        let list = records(
            now(),
            &[(10, 1, None), (20, 1, None), (30, 1, None), (40, 1, None)],
        );
        let mut retention = rules(1);
        retention.pinned = vec![list[3].id.clone()];
        let in_use = HashSet::from([list[2].id.clone()]);
        let deleted = plan_deletions(&list, &retention, false, &in_use, now());
        assert_eq!(deleted, vec![list[1].id.clone()]);
    }

    #[test]
    fn max_total_size_deletes_oldest_until_under_limit() {
        let mut retention = rules(10);
        retention.max_total_size = Some(ByteSize(250));
        let list = records(
            now(),
            &[
                (10, 100, None),
                (20, 100, None),
                (30, 100, None),
                (40, 100, None),
            ],
        );
        let deleted = plan_deletions(&list, &retention, false, &HashSet::new(), now());
        assert_eq!(deleted, vec![list[3].id.clone(), list[2].id.clone()]);
    }

    #[test]
    fn max_total_size_never_deletes_last_good() {
        let mut retention = rules(10);
        retention.max_total_size = Some(ByteSize(10));
        let list = records(now(), &[(10, 100, Some(false)), (20, 100, Some(true))]);
        let deleted = plan_deletions(&list, &retention, true, &HashSet::new(), now());
        assert_eq!(deleted, vec![list[0].id.clone()]);
    }

    #[test]
    fn health_unknown_is_good_only_without_requirement() {
        let list = records(now(), &[(10, 1, None)]);
        assert!(is_good(&list[0], false));
        assert!(!is_good(&list[0], true));
    }

    #[test]
    fn empty_store_deletes_nothing() {
        let deleted = plan_deletions(&[], &rules(1), false, &HashSet::new(), now());
        assert!(deleted.is_empty());
    }

    #[test]
    fn debug_removals_keep_newest() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            plan_debug_removals(&names, 1),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(plan_debug_removals(&names, 5).is_empty());
    }
}
