//! Parallel keyset spans: nothing skipped or read twice while the fleet changes under the run,
//! and a listing whose devices sit in one corner of the id space still uses the connections.

use std::collections::HashSet;

use jamf_sync::config::FetchStrategy;
use jamf_sync::simulator::SimConfig;

use crate::support::{self, TestDb};

const INVENTORY: &str = "/api/v4/computers-inventory";

both_backends!(spans_stay_correct_while_devices_enrol_leave_and_report);
async fn spans_stay_correct_while_devices_enrol_leave_and_report(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 3000,
        latency_ms: 2,
        ..SimConfig::default()
    })
    .await;
    let initial: HashSet<i64> = sim.computer_ids().into_iter().collect();
    let top = initial.iter().copied().max().unwrap_or(0);
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(50, FetchStrategy::Inline),
    );
    // After every page served: two computers enrol (ids above the probed maximum), one is
    // deleted, three report.
    sim.set_fleet_churn(2, 1);
    sim.set_churn_per_page(3);
    let run = support::run(&engine, true).await;
    sim.set_fleet_churn(0, 0);
    sim.set_churn_per_page(0);
    assert!(run.succeeded(), "{run}");
    assert_eq!(
        run.counts.listed, run.counts.fetched,
        "no device listed twice: {run}"
    );
    assert_eq!(run.counts.fetched, run.counts.upserted, "{run}");

    let stored: HashSet<i64> = support::stored(db)
        .await
        .iter()
        .map(|r| r.jamf_id)
        .collect();
    let now: HashSet<i64> = sim.computer_ids().into_iter().collect();
    // Every device there from start to end was read, whichever span it fell in.
    for id in initial.intersection(&now) {
        assert!(
            stored.contains(id),
            "device {id} skipped ({})",
            db.backend()
        );
    }
    // The top span has no end: devices enrolled while it was read are in.
    assert!(
        stored.iter().any(|id| *id > top),
        "no device enrolled during the run was read ({})",
        db.backend()
    );
    let stats = sim.stats();
    assert!(stats.peak_in_flight >= 2, "spans read at once: {stats:?}");
    // Service time (the benches' bound) covers at least the latency of every request.
    assert!(stats.service_us >= stats.requests * 2_000, "{stats:?}");
    assert!(stats.peak_in_flight <= 5, "{stats:?}");
    assert!(stats.peak_connections <= 5, "{stats:?}");

    // The next delta catches what enrolled or reported after the spans passed.
    let delta = support::run(&engine, false).await;
    assert!(delta.succeeded(), "{delta}");
    let stored: HashSet<i64> = support::stored(db)
        .await
        .iter()
        .map(|r| r.jamf_id)
        .collect();
    assert!(now.is_subset(&stored), "({})", db.backend());
    sim.stop().await;
}

both_backends!(devices_in_one_corner_of_the_id_space_are_still_read_in_parallel);
async fn devices_in_one_corner_of_the_id_space_are_still_read_in_parallel(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 5000,
        latency_ms: 50,
        ..SimConfig::default()
    })
    .await;
    // Ten devices at the bottom, ninety at the top, the rest deleted: an even split of the
    // ids leaves four spans empty and all the work in the last one.
    for id in 11..=4910 {
        sim.delete_computer(id);
    }
    // A server known to be healthy: five connections from the start, so what is measured is
    // how the spans use them, not how fast pacing ramps up on a loaded machine.
    let mut settings = support::settings(&sim);
    settings.pacing.initial_limit = 5;
    let engine = support::engine(db, settings, support::sync_cfg(10, FetchStrategy::Inline));
    sim.reset_stats();
    let run = support::run(&engine, true).await;
    assert!(run.succeeded(), "{run}");
    assert_eq!(run.counts.upserted, 100, "{run}");
    support::assert_matches_sim(db, &sim).await;

    // Ten pages' worth, the probe, the empty spans: splitting costs a few requests...
    let requests = sim.requests_to(INVENTORY);
    assert!((11..=25).contains(&requests), "{requests} requests");
    // ...and buys concurrency where the devices are: after the first page and the probe, many
    // pages were served beside another (the busy span was split when others went idle; without
    // splitting it is about 4 of 14, the tail read one page at a time; with it, 10–11).
    let timeline = sim.timeline();
    let pages: Vec<u64> = timeline
        .iter()
        .filter(|(_, _, status)| *status == 200)
        .map(|(_, in_flight, _)| *in_flight)
        .skip(3)
        .collect();
    let beside = pages.iter().filter(|n| **n >= 2).count();
    assert!(
        beside * 2 >= pages.len(),
        "{beside} of {} pages were served beside another: {pages:?}",
        pages.len()
    );
    sim.stop().await;
}

both_backends!(a_stored_fleet_is_read_again_in_whole_pages_without_a_probe);
async fn a_stored_fleet_is_read_again_in_whole_pages_without_a_probe(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 2000,
        latency_ms: 2,
        ..SimConfig::default()
    })
    .await;
    // Holes where devices were deleted: a third of the lower ids.
    for id in (3..=1500).step_by(3) {
        sim.delete_computer(id);
    }
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Inline),
    );
    let first = support::run(&engine, true).await;
    assert!(first.succeeded(), "{first}");
    assert_eq!(first.counts.upserted, 1500, "{first}");
    // The first run knew nothing: its first page, the probe for the highest id, then spans
    // cut as if the ids were evenly spread (not whole pages here).
    let cold = sim.requests_to(INVENTORY);
    assert!(cold > 16, "{cold} requests");

    // The next full listing is cut where the stored devices sit: fifteen pages of 100 in five
    // spans of three whole pages, no probe.
    sim.reset_stats();
    let again = support::run(&engine, true).await;
    assert!(again.succeeded(), "{again}");
    assert_eq!(again.counts.listed, 1500, "{again}");
    assert_eq!(sim.requests_to(INVENTORY), 15, "({})", db.backend());
    support::assert_matches_sim(db, &sim).await;
    sim.stop().await;
}
