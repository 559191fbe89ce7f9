//! Several Jamf instances in one configuration: `sync` runs them in parallel from one process,
//! one instance that fails (wrong credentials) never stops the others and is named in the exit
//! status; `--instance` picks one; read-only commands report every instance.

use jamf_sync::domain::Kind;
use jamf_sync::simulator::{SimConfig, Simulator};
use jamf_sync::store::Store;

use crate::cli::{jamf_sync_async, text};
use crate::helpers;

async fn sim(computers: usize, mobile_devices: usize) -> Simulator {
    helpers::sim(SimConfig {
        computers,
        mobile_devices,
        ..SimConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_instances_sync_in_parallel_and_a_bad_one_is_named() {
    let (eu, us, lab) = (sim(40, 6).await, sim(25, 0).await, sim(10, 0).await);
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let urls = (eu.url(), us.url(), lab.url());
    let env: Vec<(&str, &str)> = vec![
        ("JAMF_SYNC__DATABASE__URL", db.as_str()),
        // Top-level keys are defaults for every instance.
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__SYNC__PAGE_SIZE", "10"),
        ("JAMF_SYNC__INSTANCES__EU__URL", urls.0.as_str()),
        ("JAMF_SYNC__INSTANCES__EU__CLIENT_SECRET", "sim-secret"),
        ("JAMF_SYNC__INSTANCES__US_EAST__URL", urls.1.as_str()),
        ("JAMF_SYNC__INSTANCES__US_EAST__CLIENT_SECRET", "sim-secret"),
        (
            "JAMF_SYNC__INSTANCES__US_EAST__MOBILE_DEVICES__ENABLED",
            "false",
        ),
        ("JAMF_SYNC__INSTANCES__LAB__URL", urls.2.as_str()),
        ("JAMF_SYNC__INSTANCES__LAB__CLIENT_SECRET", "wrong"),
        (
            "JAMF_SYNC__INSTANCES__LAB__MOBILE_DEVICES__ENABLED",
            "false",
        ),
    ];
    let o = jamf_sync_async(&["sync"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(err.contains("1 of 3 instances failed: lab"), "{}", text(&o));
    for line in [
        "[eu] computers",
        "[eu] mobile_devices",
        "[us_east] computers",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(
        out.lines().filter(|l| l.contains("succeeded")).count() >= 3,
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("[lab] computers") && l.contains("failed")),
        "{out}"
    );
    assert!(
        !out.contains("[us_east] mobile_devices"),
        "per-instance override: {out}"
    );
    // Each instance's rows carry its name; the bad one wrote nothing.
    let store = crate::daemon::open(&db).await;
    assert_eq!(
        store
            .count_devices("eu", Kind::Computers)
            .await
            .expect("count"),
        40
    );
    assert_eq!(
        store
            .count_devices("eu", Kind::MobileDevices)
            .await
            .expect("count"),
        6
    );
    assert_eq!(
        store
            .count_devices("us_east", Kind::Computers)
            .await
            .expect("count"),
        25
    );
    assert_eq!(
        store
            .count_devices("lab", Kind::Computers)
            .await
            .expect("count"),
        0
    );
    // The shared page size reached every instance: 40 computers took at least four pages.
    assert!(eu.requests_to("/api/v4/computers-inventory") >= 4);

    // One instance on its own: no prefix, exit 0.
    let o = jamf_sync_async(&["sync", "--instance", "us_east"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.starts_with("computers"), "{out}");
    // An unknown name lists the configured ones.
    let o = jamf_sync_async(&["sync", "--instance", "apac"], &env, dir.path()).await;
    assert!(!o.status.success());
    assert!(
        text(&o).contains("configured: eu, lab, us_east"),
        "{}",
        text(&o)
    );
    // Read-only commands report every instance.
    let o = jamf_sync_async(&["status"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    for line in [
        "instance eu: 40 computers and 6 mobile devices stored",
        "instance us_east: 25 computers",
        "instance lab: 0 computers",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    // The daemon does not serve several instances yet, and says so.
    let o = jamf_sync_async(&["run"], &env, dir.path()).await;
    assert!(!o.status.success());
    assert!(
        text(&o).contains("serves one Jamf instance"),
        "{}",
        text(&o)
    );
    store.close().await;
    for s in [eu, us, lab] {
        s.stop().await;
    }
}
