//! One run's state: its row id, deadline, adaptive page size and expected record count, and
//! the engine's stop signal. A new [`Run`] is made for every sync and reconcile, so nothing of
//! one run (a deadline, a shrunken page size) leaks into the next.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::error::RunError;
use crate::domain::RunKind;
use crate::store::StoredIds;
use crate::telemetry::metric;

/// Asks running work to stop taking new work (graceful shutdown).
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    flag: AtomicBool,
    notify: Notify,
}

impl StopSignal {
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn stopping(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    pub async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            if self.stopping() {
                return;
            }
            notified.await;
        }
    }
}

/// How list pages of a run are sized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageSizes {
    /// Configured size (`sync.page_size`); a shrunken size grows back towards it.
    pub max: u32,
    /// Floor of shrinking (`sync.min_page_size`).
    pub min: u32,
}

/// What earlier runs tell a listing before it starts (`Engine::hint_listing`).
#[derive(Debug, Clone, Default)]
pub(crate) struct ListingHint {
    /// How many matches the listing will likely have (the stored fleet, the last delta's
    /// count; 0 = no idea): above a page, the listing probes first and reads in spans at once.
    pub likely: i64,
    /// Where the stored devices sit in the id space, when more than two pages are likely: the
    /// listing's spans are cut there without a probe.
    pub stored: Option<StoredIds>,
    /// Nothing tells how long the listing is (a first full sync into an empty table): it
    /// probes first, so a large fleet is read in spans from its first page; a fleet of one
    /// page costs one cheap request more, once.
    pub unknown: bool,
}

/// The state of one run.
#[derive(Debug)]
pub(crate) struct Run {
    /// The `sync_runs` row; `None` for a dry run.
    pub id: Option<i64>,
    pub kind: RunKind,
    /// The instance the run is for (the `jamf_instance` metrics label).
    pub instance: String,
    /// Write what Jamf says even over a newer stored copy (`sync --full --overwrite`).
    pub overwrite: bool,
    /// What earlier runs tell this run's listing, known when the run starts.
    hint: ListingHint,
    deadline: Instant,
    deadline_secs: u64,
    stop: Arc<StopSignal>,
    sizes: PageSizes,
    page_size: AtomicU32,
    expected: AtomicI64,
}

impl Run {
    pub fn new(
        id: Option<i64>,
        kind: RunKind,
        instance: &str,
        deadline_secs: u64,
        sizes: PageSizes,
        stop: Arc<StopSignal>,
        hint: ListingHint,
    ) -> Run {
        let run = Run {
            id,
            kind,
            instance: instance.to_string(),
            overwrite: false,
            hint,
            deadline: Instant::now() + Duration::from_secs(deadline_secs),
            deadline_secs,
            stop,
            sizes,
            page_size: AtomicU32::new(sizes.max),
            expected: AtomicI64::new(0),
        };
        run.publish_page_size(sizes.max);
        run
    }

    /// How many matches the listing will likely have (0: no idea).
    pub fn likely(&self) -> i64 {
        self.hint.likely
    }

    /// Whether nothing tells how long the listing is ([`ListingHint::unknown`]).
    pub fn unknown(&self) -> bool {
        self.hint.unknown
    }

    /// Where the stored devices sit in the id space, when the hint knows.
    pub fn stored(&self) -> Option<&StoredIds> {
        self.hint.stored.as_ref()
    }

    /// Fails once the engine is stopping or the run is past its deadline.
    pub fn check(&self) -> Result<(), RunError> {
        if self.stop.stopping() {
            return Err(RunError::Interrupted);
        }
        if Instant::now() >= self.deadline {
            return Err(RunError::Other(format!(
                "run deadline of {} s exceeded (sync.run_deadline_secs); the next run starts over",
                self.deadline_secs
            )));
        }
        Ok(())
    }

    /// Resolves when the engine stops or the deadline passes: streams of work end there.
    pub async fn ended(&self) {
        tokio::select! {
            _ = self.stop.stopped() => {}
            _ = tokio::time::sleep_until(self.deadline.into()) => {}
        }
    }

    /// Announces how many records the run expects in all (progress ETA).
    pub fn expect(&self, n: i64) {
        self.expected.store(n, Ordering::Relaxed);
    }

    pub fn expected(&self) -> i64 {
        self.expected.load(Ordering::Relaxed)
    }

    pub fn page_size(&self) -> u32 {
        self.page_size.load(Ordering::Relaxed)
    }

    pub fn min_page_size(&self) -> u32 {
        self.sizes.min
    }

    /// After a page timed out: half the size, not below the floor. Returns the new size.
    pub fn shrink(&self) -> u32 {
        let smaller = (self.page_size() / 2).max(self.sizes.min);
        self.set_page_size(smaller);
        smaller
    }

    /// After a good page: grow back by a quarter towards the configured size.
    pub fn grow(&self) {
        let size = self.page_size();
        if size < self.sizes.max {
            self.set_page_size((size + (size / 4).max(1)).min(self.sizes.max));
        }
    }

    fn set_page_size(&self, size: u32) {
        self.page_size.store(size, Ordering::Relaxed);
        self.publish_page_size(size);
    }

    fn publish_page_size(&self, size: u32) {
        if let RunKind::Sync(kind) = self.kind {
            metrics::gauge!(metric::PAGE_SIZE, "jamf_instance" => self.instance.clone(), "kind" => kind.as_str())
                .set(f64::from(size));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Kind;

    fn run(deadline_secs: u64) -> Run {
        Run::new(
            Some(1),
            RunKind::Sync(Kind::Computers),
            "test",
            deadline_secs,
            PageSizes { max: 100, min: 10 },
            Arc::new(StopSignal::default()),
            ListingHint::default(),
        )
    }

    #[test]
    fn page_size_shrinks_to_the_floor_and_grows_back() {
        let r = run(60);
        assert_eq!(r.shrink(), 50);
        assert_eq!(r.shrink(), 25);
        assert_eq!(r.shrink(), 12);
        assert_eq!(r.shrink(), 10);
        assert_eq!(r.shrink(), 10);
        r.grow();
        assert_eq!(r.page_size(), 12);
        for _ in 0..20 {
            r.grow();
        }
        assert_eq!(r.page_size(), 100);
    }

    #[test]
    fn stop_and_deadline_end_a_run() {
        let r = run(60);
        assert!(r.check().is_ok());
        r.stop.stop();
        assert!(matches!(r.check(), Err(RunError::Interrupted)));
        let late = run(0);
        assert!(matches!(late.check(), Err(RunError::Other(m)) if m.contains("deadline")));
    }
}
