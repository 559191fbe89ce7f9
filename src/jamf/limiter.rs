//! The connection limiter: the one gate every request to Jamf passes, token calls included.
//!
//! Invariants:
//! - at most `max_concurrency` (never more than five) requests are in flight at once;
//! - a permit is held for one *attempt* only (never across a backoff sleep), so a request that
//!   is waiting to retry does not block others and latency is measured per attempt;
//! - open connections stay within the limit too, which the HTTP pool alone does not ensure.
//!
//! # Why a connection gate
//! hyper's pool (under reqwest) has no cap on connections per host. When a request starts just
//! before the previous request's connection is back in the idle pool, the pool both waits for
//! an idle connection *and* starts a new connect; if the idle one wins, the new connection is
//! still completed in the background and parked as a spare: a sixth socket. [`ConnectionGate`]
//! is a connector layer that lets a connect through only while the estimated number of live
//! connections is below the number of requests holding permits. A connect beyond that is a
//! race the idle pool is about to win: it waits briefly (the pool hands the request the
//! returning connection and abandons the connect) and then gives up. The estimate goes down
//! when an attempt sees its connection die (transport error, timeout) and resets after the
//! pool's idle timeout; if it is ever too high, a refused connect surfaces as a transport
//! error, lowers the estimate, and the retry connects.
//!
//! # Adaptive pacing
//! The number of permits is not fixed: [`Controller`] moves it between 1 and
//! `max_concurrency` from measured latency and back-pressure, and may impose a gap between
//! request starts. Every attempt reports its outcome through [`Limiter::observe`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::pacing::{Controller, PacingConfig, Signal};
use crate::telemetry::metric;

#[derive(Debug)]
pub struct Limiter {
    max: u32,
    /// The `jamf_instance` label of the metrics.
    instance: String,
    in_flight: Arc<AtomicI64>,
    conns: Arc<ConnState>,
    pacing: Controller,
    /// Woken when a permit is released or the limit grows.
    wake: Arc<Notify>,
    /// Earliest start of the next request when pacing imposes a gap.
    next_start: Mutex<Instant>,
    /// Requests in flight per pacing class, for the cap on classes pacing has not timed yet
    /// ([`Controller::cap_for`]).
    by_class: ClassCounts,
}

/// Shared between the limiter and the connection gate.
#[derive(Debug)]
struct ConnState {
    /// Requests holding a permit.
    in_flight: Arc<AtomicI64>,
    /// Estimated live connections (connects made minus connections seen to die).
    live: AtomicI64,
    /// When the last permit was released, to expire the estimate with the pool's idle timeout.
    last_release: Mutex<Instant>,
    idle_timeout: Duration,
}

impl ConnState {
    /// Reserves a connection if fewer are live than requests need.
    fn try_reserve(&self) -> bool {
        let need = self.in_flight.load(Ordering::SeqCst);
        self.live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |live| {
                (live < need).then_some(live + 1)
            })
            .is_ok()
    }

    fn lost(&self) {
        let _ = self
            .live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| Some((l - 1).max(0)));
    }
}

/// Requests in flight per pacing class, shared by the limiter and its permits.
type ClassCounts = Arc<Mutex<HashMap<&'static str, i64>>>;

/// Held while one request attempt is on the wire.
#[derive(Debug)]
pub struct Permit {
    conns: Arc<ConnState>,
    wake: Arc<Notify>,
    instance: String,
    /// The pacing class counted in [`Limiter::by_class`], if any.
    class: Option<(&'static str, ClassCounts)>,
}

impl Limiter {
    /// `max` is clamped to 1..=5: Jamf's limit is not ours to raise.
    /// `idle_timeout` must match the HTTP pool's idle timeout.
    /// `instance` labels the metrics (`jamf_instance`).
    pub fn new(max: u32, idle_timeout: Duration, pacing: PacingConfig, instance: &str) -> Self {
        let max = max.clamp(1, crate::domain::facts::JAMF_MAX_CONCURRENCY);
        let in_flight = Arc::new(AtomicI64::new(0));
        Self {
            max,
            instance: instance.to_string(),
            pacing: Controller::new(pacing, max).named(instance),
            wake: Arc::new(Notify::new()),
            next_start: Mutex::new(Instant::now()),
            by_class: Arc::new(Mutex::new(HashMap::new())),
            conns: Arc::new(ConnState {
                in_flight: in_flight.clone(),
                live: AtomicI64::new(0),
                last_release: Mutex::new(Instant::now()),
                idle_timeout,
            }),
            in_flight,
        }
    }

    /// The connector layer that keeps open connections within the limit.
    pub fn connection_gate(&self) -> ConnectionGate {
        ConnectionGate {
            state: self.conns.clone(),
        }
    }

    /// The current (adaptive) limit on requests in flight.
    pub fn limit(&self) -> u32 {
        self.pacing.limit()
    }

    pub fn pacing(&self) -> &Controller {
        &self.pacing
    }

    /// Lets waiters re-check the limit (it was raised from outside, by a warm start).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Feeds one attempt's outcome (for its pacing class, sent at pacing `epoch`) to the
    /// pacing controller.
    pub fn observe(&self, class: &'static str, latency: Duration, signal: Signal, epoch: u64) {
        // A higher limit, or a class's first sample (which lifts its cap), may let waiters
        // through.
        self.pacing.observe_sent(class, latency, signal, epoch);
        self.wake.notify_waiters();
    }

    /// An attempt's connection died (reset, timeout): it no longer counts.
    pub fn connection_lost(&self) {
        self.conns.lost();
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// Waits for a free slot under the current limit (and the pacing gap, if any).
    pub async fn acquire(&self) -> Permit {
        self.acquire_for(None).await
    }

    /// [`Limiter::acquire`] for a request of a pacing class: a class pacing has not timed yet
    /// also waits for its own cap ([`Controller::cap_for`]).
    pub async fn acquire_for(&self, class: Option<&'static str>) -> Permit {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release between check and wait is not lost.
            notified.as_mut().enable();
            if self.try_take(class) {
                break;
            }
            notified.await;
        }
        {
            let last = *self
                .conns
                .last_release
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if self.in_flight.load(Ordering::SeqCst) == 1
                && last.elapsed() > self.conns.idle_timeout
            {
                // The pool has closed its idle connections by now.
                self.conns.live.store(0, Ordering::SeqCst);
            }
        }
        metrics::gauge!(metric::IN_FLIGHT, "jamf_instance" => self.instance.clone())
            .set(self.in_flight.load(Ordering::SeqCst) as f64);
        let permit = Permit {
            conns: self.conns.clone(),
            wake: self.wake.clone(),
            instance: self.instance.clone(),
            class: class.map(|c| (c, self.by_class.clone())),
        };
        let gap = self.pacing.delay();
        if !gap.is_zero() {
            let wait = {
                let mut next = self.next_start.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let start = (*next).max(now);
                *next = start + gap;
                start - now
            };
            tokio::time::sleep(wait).await;
        }
        permit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((class, counts)) = &self.class {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = counts.get_mut(class) {
                *n = (*n - 1).max(0);
            }
        }
        *self
            .conns
            .last_release
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let now = self.conns.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!(metric::IN_FLIGHT, "jamf_instance" => self.instance.clone())
            .set(now as f64);
        self.wake.notify_waiters();
    }
}

impl Limiter {
    /// Takes a slot under the limit and, for a class, under its cap; counts the class.
    fn try_take(&self, class: Option<&'static str>) -> bool {
        let limit = i64::from(self.pacing.limit());
        let global = |this: &Self| {
            this.in_flight
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok()
        };
        let Some(class) = class else {
            return global(self);
        };
        let mut counts = self.by_class.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.get(class).copied().unwrap_or(0);
        if self
            .pacing
            .cap_for(class)
            .is_some_and(|cap| n >= i64::from(cap))
        {
            return false;
        }
        if !global(self) {
            return false;
        }
        counts.insert(class, n + 1);
        true
    }
}

/// How long a connect beyond the estimate waits for the idle pool to win the race.
const RACE_GRACE: Duration = Duration::from_millis(50);

/// Connector layer for reqwest: see the module docs.
#[derive(Debug, Clone)]
pub struct ConnectionGate {
    state: Arc<ConnState>,
}

impl<S> tower_layer::Layer<S> for ConnectionGate {
    type Service = GatedConnector<S>;
    fn layer(&self, inner: S) -> GatedConnector<S> {
        GatedConnector {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GatedConnector<S> {
    inner: S,
    state: Arc<ConnState>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, R> tower_service::Service<R> for GatedConnector<S>
where
    S: tower_service::Service<R, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        // The clone is not necessarily ready; use the one `poll_ready` was called on.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            let started = Instant::now();
            while !state.try_reserve() {
                if started.elapsed() >= RACE_GRACE {
                    return Err("jamf-sync connection limit reached".into());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            match inner.call(req).await {
                Ok(conn) => Ok(conn),
                Err(e) => {
                    state.lost();
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_more_than_five() {
        let l = Limiter::new(
            9,
            Duration::from_secs(30),
            PacingConfig {
                adaptive: false,
                ..PacingConfig::default()
            },
            "test",
        );
        assert_eq!(l.max(), 5);
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(l.acquire().await);
        }
        let sixth = tokio::time::timeout(std::time::Duration::from_millis(50), l.acquire()).await;
        assert!(sixth.is_err(), "a sixth permit must wait");
        held.pop();
        let sixth = tokio::time::timeout(std::time::Duration::from_millis(50), l.acquire()).await;
        assert!(sixth.is_ok());
    }
}
