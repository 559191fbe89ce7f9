//! Adaptive pacing: an AIMD concurrency limit (and an optional gap between requests) driven by
//! measured latency and back-pressure, inside Jamf's five connections.
//!
//! # Design
//! Jamf asks clients to "measure response times, establish a normal, and adjust when outside of
//! normal". The controller keeps a latency baseline per endpoint class (list pages, detail
//! records, Classic records, advanced search, auth): an EWMA of the mean and of the absolute
//! deviation, fed with latencies measured per *attempt* (backoff sleeps never count) and only
//! with answers that were not themselves slow, so an overloaded server cannot teach the
//! controller that slow is normal.
//!
//! - **Start low, double, then grow additively.** The limit starts at `initial_limit`. Until
//!   the first back-pressure (slow start, as TCP's) it grows by one per healthy answer, i.e. it
//!   doubles per round trip, and answers are judged against their class's baseline from its
//!   second sample on (the floors below keep a one-sample baseline from reading noise as
//!   load); so a healthy server is at five connections after two round trips, even when a
//!   round trip is a half-second list page. After back-pressure it grows by one after
//!   `increase_after × limit` healthy answers in a row, once the class has `warmup` samples.
//!   Doubling overshoots by up to a round trip: at the first back-pressure, the samples of
//!   classes still in their warm-up (taken during the overshoot) are dropped and learned
//!   again at the cut limit. During slow start, a class with no sample yet sends at most
//!   `initial_limit` requests at once.
//! - **Probes are their own class.** A list page of a few records (the one-record probe that
//!   asks for `totalCount`) costs a fraction of a full page; judging full pages against it
//!   would read every page as slow.
//! - **Cut multiplicatively** (× `decrease_factor`, never below 1) on back-pressure: 429,
//!   QuotaViolation, 502/503/504, timeouts, and answers slower than
//!   `mean + max(slow_deviations × deviation, slow_floor × mean, slow_min_ms)` once the class
//!   has `warmup` samples. After a cut, further signals are ignored for one baseline round trip
//!   (at least 100 ms): the requests already in flight started under the old limit and report
//!   the same congestion.
//! - **Gap between requests.** With `max_delay_ms > 0`, each cut doubles a minimum gap between
//!   request starts (from `min_delay_ms`, or 50 ms) up to `max_delay_ms`; each growth halves it.
//! - `adaptive = false` pins the limit at `max_concurrency`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::config::PacingConfig;
use crate::domain::{ClassBaseline, PacingMemory};
use crate::telemetry::metric;

/// Every endpoint class [`class_of`] names.
const CLASSES: [&str; 7] = [
    "auth",
    "probe",
    "advanced_search",
    "classic_record",
    "detail",
    "list",
    "other",
];

/// How an attempt ended, as far as pacing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A normal answer (2xx, or a 4xx that says nothing about load).
    Ok,
    /// 429, QuotaViolation, 502/503/504, timeout.
    BackPressure,
    /// Transport errors and the like: no latency information.
    Neutral,
}

#[derive(Debug, Default, Clone, Copy)]
struct Baseline {
    mean: f64,
    dev: f64,
    n: u32,
}

#[derive(Debug)]
struct State {
    limit: u32,
    healthy: u32,
    classes: HashMap<&'static str, Baseline>,
    quiet_until: Option<Instant>,
    delay: Duration,
    /// No back-pressure seen yet: grow by one per healthy answer (slow start).
    slow_start: bool,
    /// Counts the cuts: an answer to a request sent before the latest cut says nothing about
    /// the new limit.
    epoch: u64,
}

/// The controller; the limiter asks it for the current limit and gap.
#[derive(Debug)]
pub struct Controller {
    cfg: PacingConfig,
    max: u32,
    state: Mutex<State>,
    /// The `jamf_instance` label of the metrics.
    instance: String,
}

/// List pages of at most this many records are probes, timed apart from full pages.
const PROBE_RECORDS: u32 = 10;

/// The pacing class of a request: its endpoint's, except that a list page of at most
/// [`PROBE_RECORDS`] records is a `probe`.
pub fn class_of_request(endpoint: &str, page_size: Option<u32>) -> &'static str {
    match class_of(endpoint) {
        "list" if page_size.is_some_and(|n| n <= PROBE_RECORDS) => "probe",
        class => class,
    }
}

/// Endpoint classes with their own latency baseline.
pub fn class_of(endpoint: &str) -> &'static str {
    if endpoint.contains("oauth") || endpoint.contains("/auth/") {
        "auth"
    } else if endpoint.contains("advancedmobiledevicesearches") {
        "advanced_search"
    } else if endpoint.starts_with("/JSSResource/") {
        "classic_record"
    } else if endpoint.contains("-detail/") {
        "detail"
    } else if endpoint.contains("computers-inventory") || endpoint.contains("mobile-devices") {
        "list"
    } else {
        "other"
    }
}

impl Controller {
    pub fn new(cfg: PacingConfig, max: u32) -> Self {
        let limit = if cfg.adaptive {
            cfg.initial_limit.clamp(1, max)
        } else {
            max
        };
        Controller {
            instance: String::new(),
            cfg,
            max,
            state: Mutex::new(State {
                limit,
                healthy: 0,
                classes: HashMap::new(),
                quiet_until: None,
                delay: Duration::ZERO,
                slow_start: true,
                epoch: 0,
            }),
        }
    }

    /// Names the instance whose server this paces (the `jamf_instance` metrics label) and
    /// publishes the starting limit.
    pub fn named(mut self, instance: &str) -> Self {
        self.instance = instance.to_string();
        let limit = self.state.lock().unwrap_or_else(|p| p.into_inner()).limit;
        self.publish_limit(limit);
        self
    }

    fn publish_limit(&self, limit: u32) {
        metrics::gauge!(metric::CONCURRENCY_LIMIT, "jamf_instance" => self.instance.clone())
            .set(f64::from(limit));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn limit(&self) -> u32 {
        self.lock().limit
    }

    /// How many requests of `class` may be in flight at once, when that is capped: during
    /// slow start, a class with no sample yet (nor one of its family: list pages and probes
    /// are one listing) sends at most `initial_limit` at once, so its first samples are taken
    /// below any overload whatever limit the other classes reached; its baseline then judges
    /// the rest.
    pub fn cap_for(&self, class: &str) -> Option<u32> {
        if !self.cfg.adaptive {
            return None;
        }
        let st = self.lock();
        let timed = |c: &str| st.classes.get(c).is_some_and(|b| b.n > 0);
        let family = match class {
            "list" => "probe",
            "probe" => "list",
            other => other,
        };
        (st.slow_start && !timed(class) && !timed(family))
            .then(|| self.cfg.initial_limit.clamp(1, self.max))
    }

    /// Still finding the server's pace: adaptive, no back-pressure seen yet, below the
    /// maximum. Listings ask for one-record pages meanwhile.
    pub fn ramping(&self) -> bool {
        let st = self.lock();
        self.cfg.adaptive && st.slow_start && st.limit < self.max
    }

    /// Minimum gap between request starts right now.
    pub fn delay(&self) -> Duration {
        self.lock().delay
    }

    /// What this controller learned, once some class has an established baseline (`None`
    /// before, and when pacing is off).
    pub fn memory(&self) -> Option<PacingMemory> {
        if !self.cfg.adaptive {
            return None;
        }
        let st = self.lock();
        let mut classes: Vec<ClassBaseline> = st
            .classes
            .iter()
            .filter(|(_, b)| b.n >= self.cfg.warmup)
            .map(|(class, b)| ClassBaseline {
                class: (*class).to_string(),
                mean: b.mean,
                dev: b.dev,
                samples: b.n,
            })
            .collect();
        classes.sort_by(|a, b| a.class.cmp(&b.class));
        (!classes.is_empty()).then(|| PacingMemory {
            limit: st.limit,
            slow_start: st.slow_start,
            classes,
            server_version: None,
        })
    }

    /// Starts from what an earlier run learned about this server, if this controller has
    /// learned nothing yet itself; returns whether it did. Back-pressure still cuts at once, so
    /// a server that got slower since is met the way a cold start would meet it, only after
    /// fewer requests.
    pub fn warm(&self, memory: &PacingMemory) -> bool {
        if !self.cfg.adaptive {
            return false;
        }
        let mut st = self.lock();
        if !st.classes.is_empty() {
            return false;
        }
        for c in &memory.classes {
            let Some(class) = CLASSES.iter().find(|k| **k == c.class) else {
                continue;
            };
            // Stored values come from a file anyone with database access can edit.
            if !(c.mean.is_finite() && c.dev.is_finite() && c.mean >= 0.0 && c.dev >= 0.0) {
                continue;
            }
            let b = Baseline {
                mean: c.mean.min(3600.0),
                dev: c.dev.min(3600.0),
                n: c.samples,
            };
            st.classes.insert(class, b);
            metrics::gauge!(metric::LATENCY_BASELINE, "jamf_instance" => self.instance.clone(), "class" => *class)
                .set(b.mean);
        }
        if st.classes.is_empty() {
            return false;
        }
        st.limit = memory.limit.clamp(1, self.max);
        st.slow_start = memory.slow_start;
        st.healthy = 0;
        self.publish_limit(st.limit);
        true
    }

    /// The number of cuts so far; [`Controller::observe_sent`] takes it as of a request's send.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Feeds one attempt's outcome for a class (see [`class_of_request`]), sent now; returns
    /// the new limit when it changed.
    pub fn observe(&self, class: &'static str, latency: Duration, signal: Signal) -> Option<u32> {
        let epoch = self.epoch();
        self.observe_sent(class, latency, signal, epoch)
    }

    /// [`Controller::observe`] for a request sent at `epoch`: a healthy answer to a request
    /// sent before the latest cut is neither learned nor counted (it went out under the old
    /// limit, into the overload the cut answered; learning it would teach the baseline that
    /// slow is normal).
    pub fn observe_sent(
        &self,
        class: &'static str,
        latency: Duration,
        signal: Signal,
        epoch: u64,
    ) -> Option<u32> {
        if !self.cfg.adaptive {
            return None;
        }
        let now = Instant::now();
        let mut st = self.lock();
        if signal == Signal::Ok && epoch != st.epoch {
            return None;
        }
        let before = st.limit;
        let secs = latency.as_secs_f64();
        match signal {
            Signal::Neutral => return None,
            Signal::BackPressure => self.cut(&mut st, class, now),
            Signal::Ok => {
                let b = st.classes.get(class).copied().unwrap_or_default();
                let threshold = b.mean
                    + (self.cfg.slow_deviations * b.dev)
                        .max(self.cfg.slow_floor * b.mean)
                        .max(self.cfg.slow_min_ms as f64 / 1000.0);
                // In slow start one sample is a baseline: growing by one per answer on an
                // unjudged warm-up would reach five on an overloaded server and learn its
                // latency as normal.
                let warmup = if st.slow_start {
                    self.cfg.warmup.min(1)
                } else {
                    self.cfg.warmup
                };
                if b.n >= warmup && secs > threshold {
                    self.cut(&mut st, class, now);
                } else {
                    let a = self.cfg.ewma_alpha;
                    let nb = if b.n == 0 {
                        Baseline {
                            mean: secs,
                            dev: 0.0,
                            n: 1,
                        }
                    } else {
                        Baseline {
                            mean: (1.0 - a) * b.mean + a * secs,
                            dev: (1.0 - a) * b.dev + a * (secs - b.mean).abs(),
                            n: b.n.saturating_add(1),
                        }
                    };
                    st.classes.insert(class, nb);
                    metrics::gauge!(metric::LATENCY_BASELINE, "jamf_instance" => self.instance.clone(), "class" => class)
                        .set(nb.mean);
                    // Only answers judged against an established baseline count as healthy:
                    // growing while the baseline is still being learned would let it learn
                    // an overloaded server's latency as normal.
                    if b.n < warmup {
                        return None;
                    }
                    st.healthy += 1;
                    let needed = if st.slow_start {
                        1
                    } else {
                        self.cfg.increase_after.max(1) * st.limit
                    };
                    if st.healthy >= needed {
                        st.healthy = 0;
                        if st.limit < self.max {
                            st.limit += 1;
                        }
                        st.delay /= 2;
                        if st.delay < Duration::from_millis(self.cfg.min_delay_ms.max(1)) {
                            st.delay = Duration::ZERO;
                        }
                    }
                }
            }
        }
        (st.limit != before).then(|| {
            self.publish_limit(st.limit);
            st.limit
        })
    }

    fn cut(&self, st: &mut State, class: &'static str, now: Instant) {
        if st.quiet_until.is_some_and(|t| now < t) {
            return;
        }
        let rtt = st.classes.get(class).map(|b| b.mean).unwrap_or(0.0);
        st.quiet_until = Some(now + Duration::from_secs_f64(rtt.max(0.1)));
        st.healthy = 0;
        if st.slow_start {
            // Slow start overshoots by up to a round trip's doubling: the few samples of a
            // class still warming up were likely taken under the overload just detected.
            // They are learned again at the cut limit.
            let warmup = self.cfg.warmup;
            st.classes.retain(|_, b| b.n >= warmup);
        }
        st.slow_start = false;
        let cut = (f64::from(st.limit) * self.cfg.decrease_factor).floor() as u32;
        st.limit = cut.max(1);
        st.epoch += 1;
        if self.cfg.max_delay_ms > 0 {
            let floor = Duration::from_millis(self.cfg.min_delay_ms.max(50));
            st.delay = (st.delay * 2)
                .max(floor)
                .min(Duration::from_millis(self.cfg.max_delay_ms));
        }
        tracing::debug!(limit = st.limit, delay = ?st.delay, class, "pacing: back-pressure, cutting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_warm_start_takes_the_remembered_limit_and_baselines_once() {
        let cfg = PacingConfig::default();
        let learned = Controller::new(cfg.clone(), 5);
        assert_eq!(learned.memory(), None, "nothing learned yet");
        for _ in 0..40 {
            learned.observe("list", ms(20), Signal::Ok);
        }
        let Some(memory) = learned.memory() else {
            panic!("nothing learned from 40 answers")
        };
        assert_eq!(memory.limit, 5);
        assert_eq!(memory.classes.len(), 1);
        assert_eq!(memory.classes[0].class, "list");

        let next = Controller::new(cfg.clone(), 5);
        assert_eq!(next.limit(), 2);
        assert!(next.warm(&memory));
        assert_eq!(next.limit(), 5);
        // The baseline came along: a slow answer cuts at once, without a new warm-up.
        next.observe("list", ms(400), Signal::Ok);
        assert_eq!(next.limit(), 2);
        // Only a controller that learned nothing itself is warmed.
        assert!(!next.warm(&memory));
        // A remembered limit above this process's maximum is clamped.
        let small = Controller::new(cfg.clone(), 3);
        assert!(small.warm(&memory));
        assert_eq!(small.limit(), 3);
        // Garbage is ignored.
        let mut bad = memory.clone();
        bad.classes[0].mean = f64::NAN;
        assert!(!Controller::new(cfg, 5).warm(&bad));
    }

    #[test]
    fn grows_additively_and_cuts_multiplicatively() {
        let c = Controller::new(
            PacingConfig {
                initial_limit: 1,
                increase_after: 2,
                max_delay_ms: 1000,
                warmup: 0,
                ..PacingConfig::default()
            },
            5,
        );
        // `n` answers of 20 ms from a detail endpoint with this signal.
        let answers = |n: usize, signal: Signal| {
            for _ in 0..n {
                c.observe("detail", ms(20), signal);
            }
        };
        assert_eq!(c.limit(), 1);
        // Slow start: one more per healthy answer.
        answers(1, Signal::Ok);
        assert_eq!(c.limit(), 2);
        answers(1, Signal::Ok);
        assert_eq!(c.limit(), 3);
        answers(1, Signal::BackPressure);
        assert_eq!(c.limit(), 1);
        assert!(c.delay() >= ms(50), "the gap opens on back-pressure");
        // A second signal within the quiet period does not cut again (nor below 1).
        answers(1, Signal::BackPressure);
        assert_eq!(c.limit(), 1);
        // After back-pressure, additively: `increase_after × limit` answers per step, and
        // growth halves the gap again.
        answers(1, Signal::Ok);
        assert_eq!(c.limit(), 1);
        answers(1, Signal::Ok);
        assert_eq!(c.limit(), 2);
        assert!(c.delay() < ms(50));
        answers(3, Signal::Ok);
        assert_eq!(c.limit(), 2);
        answers(1, Signal::Ok);
        assert_eq!(c.limit(), 3);
    }

    #[test]
    fn slow_start_doubles_per_round_trip_and_stops_at_the_first_slow_answer() {
        let c = Controller::new(PacingConfig::default(), 5);
        // A round of two half-second pages: the first sets the baseline, the second is judged
        // against it and grows the limit; the next round's three answers take it to five.
        let mut limits = Vec::new();
        for _ in 0..5 {
            c.observe("list", ms(520), Signal::Ok);
            limits.push(c.limit());
        }
        assert_eq!(limits, [2, 3, 4, 5, 5]);

        // An overloaded server's answers are slow against the first sample: the first one cuts
        // and ends slow start, so the overload is never learned as normal.
        let c = Controller::new(PacingConfig::default(), 5);
        c.observe("detail", ms(40), Signal::Ok);
        c.observe("detail", ms(40), Signal::Ok);
        assert_eq!(c.limit(), 3);
        c.observe("detail", ms(80), Signal::Ok);
        assert_eq!(c.limit(), 1);
        // After the cut, growth waits for the class's warm-up again: these are samples.
        for _ in 0..3 {
            c.observe("detail", ms(40), Signal::Ok);
        }
        assert_eq!(c.limit(), 1);
    }

    #[test]
    fn answers_sent_before_a_cut_are_not_learned() {
        let c = Controller::new(
            PacingConfig {
                warmup: 2,
                ..PacingConfig::default()
            },
            5,
        );
        let before = c.epoch();
        c.observe("detail", ms(40), Signal::Ok);
        c.observe("detail", ms(40), Signal::BackPressure);
        assert_eq!(c.limit(), 1);
        // Requests that went out before the cut come back slow: not a baseline.
        for _ in 0..5 {
            c.observe_sent("detail", ms(160), Signal::Ok, before);
        }
        assert_eq!(c.memory(), None, "nothing learned from them");
        // Answers sent after it are learned.
        for _ in 0..2 {
            c.observe("detail", ms(40), Signal::Ok);
        }
        let Some(memory) = c.memory() else {
            panic!("answers sent after the cut were not learned")
        };
        assert!(memory.classes[0].mean < 0.05, "{memory:?}");
    }

    #[test]
    fn probes_are_timed_apart_from_full_pages() {
        assert_eq!(
            class_of_request("/api/v4/computers-inventory", Some(1)),
            "probe"
        );
        assert_eq!(
            class_of_request("/api/v4/computers-inventory", Some(100)),
            "list"
        );
        assert_eq!(
            class_of_request("/api/v4/computers-inventory-detail/{id}", None),
            "detail"
        );
        let c = Controller::new(PacingConfig::default(), 5);
        c.observe("probe", ms(25), Signal::Ok);
        // A full page twenty times the probe's time is not slow: it has its own baseline.
        c.observe("list", ms(520), Signal::Ok);
        c.observe("list", ms(520), Signal::Ok);
        assert_eq!(c.limit(), 3);
    }

    #[test]
    fn slow_answers_are_back_pressure_after_warmup() {
        let c = Controller::new(
            PacingConfig {
                initial_limit: 5,
                ..PacingConfig::default()
            },
            5,
        );
        for _ in 0..5 {
            c.observe("classic_record", ms(20), Signal::Ok);
        }
        // 40 ms is within the floors (mean + 25 ms); 60 ms is not.
        c.observe("classic_record", ms(40), Signal::Ok);
        assert_eq!(c.limit(), 5);
        c.observe("classic_record", ms(60), Signal::Ok);
        assert_eq!(c.limit(), 2);
        // Another class has its own baseline: a slow list page is not judged by detail times.
        c.observe("list", ms(900), Signal::Ok);
        assert_eq!(c.limit(), 2);
    }

    #[test]
    fn fixed_limit_when_not_adaptive() {
        let c = Controller::new(
            PacingConfig {
                adaptive: false,
                ..PacingConfig::default()
            },
            5,
        );
        assert_eq!(c.limit(), 5);
        c.observe("list", ms(1), Signal::BackPressure);
        assert_eq!(c.limit(), 5);
    }

    #[test]
    fn classes() {
        assert_eq!(class_of("/api/v1/oauth/token"), "auth");
        assert_eq!(class_of("/api/v4/computers-inventory"), "list");
        assert_eq!(
            class_of("/api/v4/computers-inventory-detail/{id}"),
            "detail"
        );
        assert_eq!(
            class_of("/JSSResource/mobiledevices/id/{id}"),
            "classic_record"
        );
        assert_eq!(
            class_of("/JSSResource/advancedmobiledevicesearches/id/{id}"),
            "advanced_search"
        );
        assert_eq!(class_of("/api/v2/mobile-devices/detail"), "list");
    }
}
