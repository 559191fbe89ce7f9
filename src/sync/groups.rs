//! Group membership refresh. Smart groups recalculate and static groups are edited in Jamf
//! without any new inventory, so a `reportDate` delta never sees those changes. A refresh
//! reads a kind's group list and every group's member list (Classic API: one request per
//! group, at most `max_concurrency` at once, through the same limiter and pacing as syncs)
//! and rewrites the stored rows of exactly the groups whose members, name or smart flag differ
//! from what is stored; a delta-sized change costs a handful of row writes.
//!
//! Invariants:
//! - each group is replaced in a transaction of its own, correct by itself: a run that fails
//!   half-way leaves every group either as it was or as Jamf listed it;
//! - rows of groups gone from Jamf are removed only after the group list and every member
//!   list were read whole (a group that answers 404 between the two was deleted meanwhile);
//! - a device whose rows a group rewrite touched loses its child hash, so its next record
//!   (with `GROUP_MEMBERSHIPS`, or any Classic mobile record) rewrites its own rows: the two
//!   sides never leave a stale row behind each other's back;
//! - a stored `smart` of NULL (the Classic mobile record does not say) matches either flag, so
//!   the two sides do not rewrite each other's rows back and forth.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use tracing::Instrument;

use super::error::RunError;
use super::scope::{Ending, Opening};
use super::Engine;
use crate::domain::{Kind, RunCounts, RunKind, RunStatus, Trigger};
use crate::jamf::classic::GroupRef;
use crate::store::{GroupMembers, Store, StoreError};
use crate::telemetry::metric;

/// What a group refresh found and did.
#[derive(Debug, Clone)]
pub struct GroupsSummary {
    pub kind: Kind,
    pub run_id: i64,
    pub status: RunStatus,
    /// Groups Jamf listed.
    pub groups: i64,
    /// Groups whose stored rows were rewritten.
    pub changed: i64,
    pub unchanged: i64,
    /// Groups deleted between listing and reading.
    pub gone: i64,
    /// Membership rows written.
    pub rows: i64,
    /// Membership rows removed with groups gone from Jamf.
    pub removed: i64,
    pub error: Option<String>,
    pub elapsed: Duration,
}

impl GroupsSummary {
    pub fn succeeded(&self) -> bool {
        self.status == RunStatus::Succeeded
    }
}

impl fmt::Display for GroupsSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} groups run {} {}: listed {}, changed {}, unchanged {}, gone {}, rows written {}, rows removed {} in {:.1}s",
            self.kind.as_str(),
            self.run_id,
            self.status.as_str(),
            self.groups,
            self.changed,
            self.unchanged,
            self.gone,
            self.rows,
            self.removed,
            self.elapsed.as_secs_f64()
        )?;
        if let Some(e) = &self.error {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

/// Whether a group's stored rows differ from what Jamf lists. Pure.
pub fn needs_rewrite(stored: &[(i64, Option<String>, Option<bool>)], group: &GroupMembers) -> bool {
    if stored.len() != group.members.len() {
        return true;
    }
    let mut ids: Vec<i64> = stored.iter().map(|r| r.0).collect();
    ids.sort_unstable();
    ids != group.members
        || stored.iter().any(|(_, name, smart)| {
            name.as_deref() != Some(group.name) || smart.is_some_and(|s| s != group.smart)
        })
}

impl<S: Store> Engine<S> {
    /// One group membership refresh of a kind; `Err` only when the database fails.
    pub async fn refresh_groups(
        &self,
        kind: Kind,
        trigger: Trigger,
    ) -> Result<GroupsSummary, StoreError> {
        let t0 = Instant::now();
        let instance = self.client.instance().to_string();
        let scope = self
            .open_run(Opening {
                kind: RunKind::Groups,
                trigger,
                mode: kind.as_str(),
                started_at: Utc::now(),
                cursor_before: None,
                record: true,
            })
            .await?;
        let run_id = scope.id.unwrap_or_default();
        let mut summary = GroupsSummary {
            kind,
            run_id,
            status: RunStatus::Running,
            groups: 0,
            changed: 0,
            unchanged: 0,
            gone: 0,
            rows: 0,
            removed: 0,
            error: None,
            elapsed: Duration::ZERO,
        };
        let span =
            tracing::info_span!("groups", run_id, instance = %instance, kind = kind.as_str());
        let result = self
            .refresh_groups_inner(kind, run_id, &mut summary)
            .instrument(span)
            .await;
        summary.status = RunError::status(&result);
        summary.error = result.as_ref().err().map(|e| e.to_string());
        summary.elapsed = t0.elapsed();
        // Recorded as failed even when the database failed it (if the database takes that
        // write): the run is not left `running` until the next start.
        let ending = Ending {
            status: summary.status,
            // sync_runs columns: listed = groups, fetched = member lists read,
            // upserted = groups rewritten, missing = groups gone.
            counts: RunCounts {
                listed: summary.groups,
                fetched: summary.changed + summary.unchanged + summary.gone,
                upserted: summary.changed,
                unchanged: summary.unchanged,
                missing: summary.gone,
                child_rows: summary.rows,
                ..RunCounts::default()
            },
            error: summary.error.clone(),
            cursor_after: None,
        };
        let finished = self.close_run(&scope, ending).await;
        if let Err(RunError::Store(e)) = result {
            return Err(e);
        }
        finished?;
        let result = summary.status.as_str();
        let instance = self.client.instance().to_string();
        metrics::counter!(metric::GROUP_REFRESHES, "jamf_instance" => instance.clone(), "kind" => kind.as_str(), "result" => result)
            .increment(1);
        for (outcome, n) in [
            ("changed", summary.changed),
            ("unchanged", summary.unchanged),
            ("gone", summary.gone),
        ] {
            metrics::counter!(metric::GROUPS, "jamf_instance" => instance.clone(), "kind" => kind.as_str(), "outcome" => outcome)
                .increment(n.max(0) as u64);
        }
        if summary.succeeded() {
            tracing::info!("{summary}");
        } else {
            tracing::error!("{summary}");
        }
        Ok(summary)
    }

    async fn refresh_groups_inner(
        &self,
        kind: Kind,
        run_id: i64,
        summary: &mut GroupsSummary,
    ) -> Result<(), RunError> {
        let run = self.new_run(Some(run_id), RunKind::Groups, Default::default());
        let instance = self.client.instance().to_string();
        let groups = self.client.groups(kind).await?;
        run.check()?;
        summary.groups = groups.len() as i64;
        let workers = self.client.max_concurrency().max(1) as usize;
        // Owned groups and client: a stream of futures borrowing them is not `Send` enough
        // for the executor's task.
        let reads = groups.into_iter().map(|g| {
            let client = self.client.clone();
            async move {
                let members = client.group_members(kind, &g.id).await;
                (g, members)
            }
        });
        let mut reads = futures_util::stream::iter(reads).buffer_unordered(workers);
        let mut kept: Vec<String> = Vec::with_capacity(summary.groups as usize);
        while let Some((group, members)) = reads.next().await {
            run.check()?;
            let Some(members) = members? else {
                summary.gone += 1;
                continue;
            };
            kept.push(group.id.clone());
            let GroupRef { id, name, smart } = &group;
            let listed = GroupMembers {
                id,
                name,
                smart: *smart,
                members: &members,
            };
            let stored = self.store.group_rows(&instance, kind, id).await?;
            if needs_rewrite(&stored, &listed) {
                summary.rows += self.store.replace_group(&instance, kind, &listed).await? as i64;
                summary.changed += 1;
            } else {
                summary.unchanged += 1;
            }
        }
        summary.removed = self
            .store
            .drop_groups_except(&instance, kind, &kept)
            .await? as i64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_rewritten_only_when_members_name_or_flag_differ() {
        let members = [3, 5];
        let group = GroupMembers {
            id: "1",
            name: "Pilot",
            smart: false,
            members: &members,
        };
        let row = |id: i64, name: &str, smart: Option<bool>| (id, Some(name.to_string()), smart);
        assert!(!needs_rewrite(
            &[row(5, "Pilot", Some(false)), row(3, "Pilot", None)],
            &group
        ));
        assert!(needs_rewrite(&[row(3, "Pilot", Some(false))], &group));
        assert!(needs_rewrite(
            &[row(3, "Pilot", Some(false)), row(4, "Pilot", Some(false))],
            &group
        ));
        assert!(needs_rewrite(
            &[row(3, "Pilot", Some(false)), row(5, "Pilot 2", Some(false))],
            &group
        ));
        assert!(needs_rewrite(
            &[row(3, "Pilot", Some(true)), row(5, "Pilot", Some(false))],
            &group
        ));
        // A device listed twice in the stored rows is a difference too.
        assert!(needs_rewrite(
            &[
                row(3, "Pilot", None),
                row(3, "Pilot", None),
                row(5, "Pilot", None)
            ],
            &group
        ));
        let nobody = GroupMembers {
            members: &[],
            ..group
        };
        assert!(!needs_rewrite(&[], &nobody));
    }
}
