//! Runs as the database records them: what a run was about, what asked for it, how it ended,
//! and what it counted. The string forms are stored in `sync_runs` and never change.

use super::Kind;

/// What a run is about (`sync_runs.kind`); a successful sync moves the cursor of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Sync(Kind),
    Reconcile,
    /// A group membership refresh (of the kind in `sync_runs.mode`).
    Groups,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Sync(kind) => kind.as_str(),
            RunKind::Reconcile => "reconcile",
            RunKind::Groups => "groups",
        }
    }
}

/// How a run ended (`sync_runs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub const ALL: [RunStatus; 4] = [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Interrupted,
    ];

    /// The inverse of [`RunStatus::as_str`].
    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What asked for a run (`sync_runs.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Cli,
    Demo,
    Schedule,
    /// Start-up catch-up of the daemon.
    Startup,
    /// `POST /sync`.
    Api,
    /// The daemon retrying a failed run.
    Retry,
    /// A run recorded in `run_requests` (on a shared database) and taken by the instance's
    /// holder: `sync_runs.request_id` names the request, so whoever asked finds its result.
    /// `cli` for a one-shot command that handed its run to the holder, else `POST /sync`.
    Request {
        id: i64,
        cli: bool,
    },
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Demo => "demo",
            Trigger::Schedule => "schedule",
            Trigger::Startup => "startup",
            Trigger::Api => "api",
            Trigger::Retry => "retry",
            Trigger::Request { cli: true, .. } => "cli",
            Trigger::Request { cli: false, .. } => "api",
        }
    }

    /// The `run_requests` id this run answers.
    pub fn request_id(self) -> Option<i64> {
        match self {
            Trigger::Request { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// Counters of one run, persisted in `sync_runs` as the run progresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    /// Devices the listing returned.
    pub listed: i64,
    /// Records fetched and decoded.
    pub fetched: i64,
    /// New or changed records written.
    pub upserted: i64,
    /// Records identical to the stored copy.
    pub unchanged: i64,
    /// Records not written because the stored copy is newer (a webhook refresh got there
    /// first).
    pub stale: i64,
    /// Records that could not be decoded (logged and skipped).
    pub failed: i64,
    /// Devices listed but gone (404) by the time their record was fetched.
    pub missing: i64,
    /// Child table rows written (applications, group memberships, …): only devices whose
    /// section changed write any.
    pub child_rows: i64,
}

impl RunCounts {
    /// Adds another batch's counts.
    pub fn add(&mut self, other: &RunCounts) {
        self.listed += other.listed;
        self.fetched += other.fetched;
        self.upserted += other.upserted;
        self.unchanged += other.unchanged;
        self.stale += other.stale;
        self.failed += other.failed;
        self.missing += other.missing;
        self.child_rows += other.child_rows;
    }
}
