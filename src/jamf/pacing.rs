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
//! - **Start low, grow additively.** The limit starts at `initial_limit` and grows by one after
//!   `increase_after × limit` healthy answers in a row at the current limit; until the first
//!   back-pressure it grows after every `increase_after` answers (slow start), so a healthy
//!   server is at full speed within a few dozen requests.
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
const CLASSES: [&str; 6] = [
    "auth",
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
    /// No back-pressure seen yet: grow after `increase_after` answers, not × limit (slow
    /// start), so a healthy server is at full speed after a few dozen requests.
    slow_start: bool,
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

    /// Feeds one attempt's outcome; returns the new limit when it changed.
    pub fn observe(&self, endpoint: &str, latency: Duration, signal: Signal) -> Option<u32> {
        if !self.cfg.adaptive {
            return None;
        }
        let class = class_of(endpoint);
        let now = Instant::now();
        let mut st = self.lock();
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
                if b.n >= self.cfg.warmup && secs > threshold {
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
                    if b.n < self.cfg.warmup {
                        return None;
                    }
                    st.healthy += 1;
                    let per = if st.slow_start { 1 } else { st.limit };
                    if st.healthy >= self.cfg.increase_after.max(1) * per {
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
        st.slow_start = false;
        let cut = (f64::from(st.limit) * self.cfg.decrease_factor).floor() as u32;
        st.limit = cut.max(1);
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
            learned.observe("/api/v4/computers-inventory", ms(20), Signal::Ok);
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
        next.observe("/api/v4/computers-inventory", ms(400), Signal::Ok);
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
                c.observe("/api/v4/computers-inventory-detail/{id}", ms(20), signal);
            }
        };
        assert_eq!(c.limit(), 1);
        answers(2, Signal::Ok);
        assert_eq!(c.limit(), 2);
        // Slow start: no back-pressure yet, so two more answers grow it again.
        answers(2, Signal::Ok);
        assert_eq!(c.limit(), 3);
        answers(1, Signal::BackPressure);
        assert_eq!(c.limit(), 1);
        assert!(c.delay() >= ms(50), "the gap opens on back-pressure");
        // A second signal within the quiet period does not cut again (nor below 1).
        answers(1, Signal::BackPressure);
        assert_eq!(c.limit(), 1);
        // Growth halves the gap again.
        answers(2, Signal::Ok);
        assert_eq!(c.limit(), 2);
        assert!(c.delay() < ms(50));
    }

    #[test]
    fn slow_answers_are_back_pressure_after_warmup() {
        let c = Controller::new(
            PacingConfig {
                initial_limit: 4,
                increase_after: 100,
                ..PacingConfig::default()
            },
            5,
        );
        for _ in 0..5 {
            c.observe("/JSSResource/mobiledevices/id/{id}", ms(20), Signal::Ok);
        }
        // 40 ms is within the floors (mean + 25 ms); 60 ms is not.
        c.observe("/JSSResource/mobiledevices/id/{id}", ms(40), Signal::Ok);
        assert_eq!(c.limit(), 4);
        c.observe("/JSSResource/mobiledevices/id/{id}", ms(60), Signal::Ok);
        assert_eq!(c.limit(), 2);
        // Another class has its own baseline: a slow list page is not judged by detail times.
        c.observe("/api/v4/computers-inventory", ms(900), Signal::Ok);
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
        c.observe("/api/v4/computers-inventory", ms(1), Signal::BackPressure);
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
