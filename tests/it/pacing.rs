//! Adaptive pacing against a simulator that slows down under load, browns out, and times out
//! on heavy pages. Every test also checks the five-connection ceiling.

use std::time::Duration;

use jamf_sync::config::FetchStrategy;
use jamf_sync::simulator::{SimConfig, Simulator};

use crate::support::{self, TestDb};

fn assert_within_five(sim: &Simulator) {
    let s = sim.stats();
    assert!(s.peak_in_flight <= 5 && s.peak_connections <= 5, "{s:?}");
}

/// Requests that arrived after `from` and before `to`, with the in-flight count they saw.
fn window(sim: &Simulator, from: Duration, to: Duration) -> Vec<u64> {
    sim.timeline()
        .into_iter()
        .filter(|(t, _, _)| *t >= from && *t < to)
        .map(|(_, n, _)| n)
        .collect()
}

both_backends!(settles_below_a_struggling_servers_capacity_and_recovers);
async fn settles_below_a_struggling_servers_capacity_and_recovers(db: &TestDb) {
    // Fine at 2 concurrent requests; each one more adds the base latency again.
    let sim = support::sim(SimConfig {
        computers: 300,
        mobile_devices: 0,
        latency_ms: 40,
        capacity: 2,
        overload_factor: 1.0,
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Detail),
    );
    let start = sim.elapsed();
    let first = support::run(&engine, false).await;
    assert!(first.succeeded(), "{first}");
    let end = sim.elapsed();
    // After the first fifth of the run, the controller keeps the server at ≤ 3 in flight.
    let settle = start + (end - start) / 5;
    let seen = window(&sim, settle, end);
    let over = seen.iter().filter(|n| **n > 3).count();
    assert!(
        over * 10 <= seen.len(),
        "{over} of {} requests arrived with more than 3 in flight",
        seen.len()
    );
    support::assert_matches_sim(db, &sim).await;
    assert_within_five(&sim);

    // Capacity recovers: the same client climbs back to five. One stall of this (shared, busy)
    // machine reads as a slow answer and costs a cut, so the climb gets a few full runs; a
    // controller that never grows again fails all of them.
    sim.set_capacity(0);
    let mut peaks = Vec::new();
    for _ in 0..4 {
        let start = sim.elapsed();
        let again = support::run(&engine, true).await;
        assert!(again.succeeded(), "{again}");
        let end = sim.elapsed();
        let late = window(&sim, start + (end - start) / 2, end);
        peaks.push((
            late.iter().max().copied(),
            engine.client().concurrency_limit(),
        ));
        if peaks.last() == Some(&(Some(5), 5)) {
            break;
        }
    }
    assert_eq!(
        peaks.last(),
        Some(&(Some(5), 5)),
        "back at full speed (peak in flight, limit per run): {peaks:?}"
    );
    assert_within_five(&sim);
    sim.stop().await;
}

both_backends!(a_brown_out_drops_the_limit_to_one_and_the_run_completes);
async fn a_brown_out_drops_the_limit_to_one_and_the_run_completes(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 1500,
        mobile_devices: 0,
        latency_ms: 10,
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Detail),
    );
    let sim = std::sync::Arc::new(sim);
    let brown = {
        let sim = sim.clone();
        tokio::spawn(async move {
            // Mid-run: once the sync is well under way.
            while sim.stats().requests < 400 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let at = sim.elapsed();
            sim.brownout(Duration::from_secs(20));
            at
        })
    };
    let run = support::run(&engine, false).await;
    assert!(run.succeeded(), "{run}");
    let at = brown.await.expect("join");
    support::assert_matches_sim(db, &sim).await;
    // Once the cut took effect, one request at a time for the rest of the brown-out.
    let during = window(
        &sim,
        at + Duration::from_secs(2),
        at + Duration::from_secs(20),
    );
    assert!(!during.is_empty());
    assert_eq!(
        during.iter().max(),
        Some(&1),
        "limit 1 during the brown-out"
    );
    // One at a time at ≥ 100 ms each: no retry storm.
    assert!(
        during.len() <= 200,
        "{} requests in 18 s of brown-out",
        during.len()
    );
    assert_within_five(&sim);
}

both_backends!(pages_that_time_out_are_retried_smaller_without_gaps);
async fn pages_that_time_out_are_retried_smaller_without_gaps(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 3000,
        mobile_devices: 0,
        page_timeout_above: 1000,
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(2000, FetchStrategy::Inline),
    );
    let run = support::run(&engine, false).await;
    assert!(run.succeeded(), "{run}");
    assert_eq!(run.counts.listed, 3000, "nothing read twice: {run}");
    support::assert_matches_sim(db, &sim).await;
    let timeouts = sim.timeline().iter().filter(|(_, _, s)| *s == 504).count();
    assert!(timeouts >= 1, "the 2000-record page timed out");
    assert_within_five(&sim);
    sim.stop().await;
}

both_backends!(a_run_past_its_deadline_fails_and_the_next_starts_over);
async fn a_run_past_its_deadline_fails_and_the_next_starts_over(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 400,
        mobile_devices: 0,
        latency_ms: 40,
        ..SimConfig::default()
    })
    .await;
    let mut cfg = support::sync_cfg(100, FetchStrategy::Detail);
    cfg.run_deadline_secs = 1;
    let engine = support::engine(db, support::settings(&sim), cfg);
    let run = support::run(&engine, false).await;
    assert!(!run.succeeded(), "{run}");
    assert!(
        run.error.as_deref().unwrap_or("").contains("deadline"),
        "{run}"
    );
    assert!(support::cursor(db).await.is_none());
    assert_within_five(&sim);
    // A fresh process would come with a fresh client: let the old connections close first.
    drop(engine);
    tokio::time::sleep(Duration::from_millis(200)).await;
    sim.reset_stats();
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Detail),
    );
    let again = support::run(&engine, false).await;
    assert!(again.succeeded(), "{again}");
    support::assert_matches_sim(db, &sim).await;
    assert_within_five(&sim);
    sim.stop().await;
}

/// The in-flight counts the first `n` answers of a run starting now saw.
async fn first_answers(
    sim: &Simulator,
    engine: &jamf_sync::sync::Engine<jamf_sync::store::Db>,
    n: usize,
) -> Vec<u64> {
    let from = sim.elapsed();
    let run = support::run(engine, true).await;
    assert!(run.succeeded(), "{run}");
    let mut seen = window(sim, from, Duration::MAX);
    seen.truncate(n);
    seen
}

/// A start at the initial limit of 2: the probe, two pages, and the page the first answer
/// frees see at most two in flight (a warm start has three by its fourth request).
fn cold_start(first: &[u64]) -> bool {
    first.iter().take(4).all(|n| *n <= 2)
}

both_backends!(a_new_process_starts_at_the_pace_the_last_run_reached);
async fn a_new_process_starts_at_the_pace_the_last_run_reached(db: &TestDb) {
    use jamf_sync::store::Store;

    // The simulator builds a page when the request arrives and answers at the latency; on the
    // test's one thread the pages of one round are built one after another, so the latency
    // must outlast five of them for a round to be seen at once.
    let sim = support::sim(SimConfig {
        computers: 1500,
        mobile_devices: 0,
        latency_ms: 40,
        ..SimConfig::default()
    })
    .await;
    let cfg = || support::sync_cfg(50, FetchStrategy::Inline);
    // A first process against an unknown server starts at the initial limit of 2 (the probe,
    // then two pages) and doubles per round trip (slow start): past four within a dozen.
    let cold = first_answers(
        &sim,
        &support::engine(db, support::settings(&sim), cfg()),
        12,
    )
    .await;
    assert!(cold_start(&cold), "a cold start begins at 2: {cold:?}");
    assert!(
        cold.iter().any(|n| *n >= 4),
        "a cold start doubles per round trip: {cold:?}"
    );
    let server = sim.url().trim_end_matches('/').to_string();
    let (mut memory, saved_at) = db
        .db
        .pacing_memory("test", &server)
        .await
        .expect("read")
        .expect("the run kept what pacing learned");
    assert!(
        memory.classes.iter().any(|c| c.class == "list"),
        "{memory:?}"
    );
    assert!((1..=5).contains(&memory.limit), "{memory:?}");
    assert!(chrono::Utc::now() - saved_at < chrono::Duration::minutes(1));

    // Where the limit ended depends on how this machine's load met the latency baseline; from
    // a memory of five, the next process (a new client) goes five wide as soon as the spans
    // start.
    memory.limit = 5;
    db.db
        .save_pacing_memory("test", &server, &memory, chrono::Utc::now())
        .await
        .expect("save");
    let warm = first_answers(
        &sim,
        &support::engine(db, support::settings(&sim), cfg()),
        10,
    )
    .await;
    assert!(
        warm.iter().take(4).any(|n| *n >= 3),
        "a warm start goes wide at once: {warm:?}"
    );
    assert_within_five(&sim);

    // Memory older than `remember_hours` is not used...
    let old = chrono::Utc::now() - chrono::Duration::hours(200);
    db.db
        .save_pacing_memory("test", &server, &memory, old)
        .await
        .expect("save");
    let stale = first_answers(
        &sim,
        &support::engine(db, support::settings(&sim), cfg()),
        10,
    )
    .await;
    assert!(cold_start(&stale), "memory too old: {stale:?}");
    // ...nor memory of another server, nor any with `remember_hours = 0`.
    db.db
        .save_pacing_memory(
            "test",
            "https://other.example.com",
            &memory,
            chrono::Utc::now(),
        )
        .await
        .expect("save");
    let other = first_answers(
        &sim,
        &support::engine(db, support::settings(&sim), cfg()),
        10,
    )
    .await;
    assert!(cold_start(&other), "another server's memory: {other:?}");
    let mut settings = support::settings(&sim);
    settings.pacing.remember_hours = 0;
    let off = first_answers(&sim, &support::engine(db, settings, cfg()), 10).await;
    assert!(cold_start(&off), "remember_hours = 0: {off:?}");
    sim.stop().await;
}
