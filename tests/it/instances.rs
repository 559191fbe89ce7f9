//! Several Jamf instances in one configuration: `sync` runs them in parallel from one process,
//! one instance that fails (wrong credentials) never stops the others and is named in the exit
//! status; `--instance` picks one; read-only commands report every instance.

use jamf_sync::domain::Kind;
use jamf_sync::simulator::{SimConfig, Simulator};
use jamf_sync::store::Store;

use crate::cli::{jamf_sync_async, text};
use crate::support;
use crate::support::metrics::sample;

async fn sim(computers: usize, mobile_devices: usize) -> Simulator {
    support::sim(SimConfig {
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
    let store = crate::support::db::open(&db).await;
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
    // An instance removed from the configuration keeps its rows until purged.
    let without_us: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(k, _)| !k.contains("US_EAST"))
        .collect();
    let o = jamf_sync_async(&["purge", "--instance", "eu"], &without_us, dir.path()).await;
    assert!(!o.status.success());
    assert!(text(&o).contains("still configured"), "{}", text(&o));
    let o = jamf_sync_async(&["purge", "--instance", "us_east"], &without_us, dir.path()).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("would remove") && text(&o).contains("computers 25"),
        "{}",
        text(&o)
    );
    assert_eq!(
        store
            .count_devices("us_east", Kind::Computers)
            .await
            .expect("count"),
        25
    );
    let o = jamf_sync_async(
        &["purge", "--instance", "us_east", "--yes"],
        &without_us,
        dir.path(),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("removed"), "{}", text(&o));
    assert_eq!(
        store
            .count_devices("us_east", Kind::Computers)
            .await
            .expect("count"),
        0
    );
    assert!(store
        .recent_runs("us_east", 10)
        .await
        .expect("runs")
        .is_empty());
    assert_eq!(
        store
            .count_devices("eu", Kind::Computers)
            .await
            .expect("count"),
        40
    );
    store.close().await;
    for s in [eu, us, lab] {
        s.stop().await;
    }
}

/// Rows a purge counted in one table.
fn count_of(rows: &[(&str, u64)], table: &str) -> Option<u64> {
    rows.iter().find(|r| r.0 == table).map(|r| r.1)
}

both_backends!(purging_an_instance_removes_all_it_stored);
async fn purging_an_instance_removes_all_it_stored(db: &support::TestDb) {
    use jamf_sync::domain::children::ALL;
    let (sim, engine) = support::fleet(db, 12, 4).await;
    assert!(support::run(&engine, true).await.succeeded());
    assert!(support::run_mobile(&engine, true).await.succeeded());
    assert!(sim.edit_computer(2, |c| c.username = "changed".into()));
    assert!(support::run(&engine, false).await.succeeded());
    // A lease and a waiting run request, as a PostgreSQL deployment leaves them.
    let rows = [
        "INSERT INTO instance_leases (instance, holder, epoch, acquired_at, renewed_at, expires_at) \
         VALUES ('test', 'gone:1:run:0', 3, $1, $1, $1)",
        "INSERT INTO run_requests (instance, kind, op, \"trigger\", requested_at, requested_by) \
         VALUES ('test', 'computers', 'sync', 'api', $1, 'gone:1:run:0')",
    ];
    let now = chrono::Utc::now();
    for sql in rows {
        db.execute(sql, Some(now)).await.expect("insert");
    }
    let dry = db.db.purge_instance("test", false).await.expect("dry run");
    assert_eq!(count_of(&dry, "instance_leases"), Some(1), "{dry:?}");
    assert_eq!(count_of(&dry, "run_requests"), Some(1), "{dry:?}");
    let count = count_of;
    assert_eq!(count(&dry, "computers"), Some(12));
    assert_eq!(count(&dry, "mobile_devices"), Some(4));
    assert!(count(&dry, "inventory_changes") >= Some(1), "{dry:?}");
    assert!(count(&dry, "sync_runs") >= Some(3), "{dry:?}");
    assert_eq!(
        db.db
            .count_devices("test", Kind::Computers)
            .await
            .expect("count"),
        12
    );
    let done = db.db.purge_instance("test", true).await.expect("purge");
    assert_eq!(done, dry, "the dry run counted what the purge removed");
    assert_eq!(
        db.db
            .count_devices("test", Kind::Computers)
            .await
            .expect("count"),
        0
    );
    for table in ALL {
        assert!(db
            .db
            .child_rows("test", table)
            .await
            .expect("rows")
            .is_empty());
    }
    let again = db.db.purge_instance("test", true).await.expect("purge");
    assert!(again.iter().all(|(_, n)| *n == 0), "{again:?}");
    sim.stop().await;
}

// Purge touches exactly one instance's objects: view names fold case, so purging `TEST`
// (nothing stored) once dropped the views of `test` (issue 27). On PostgreSQL an instance a
// live process holds is refused, whatever this configuration lists.
both_backends!(purge_touches_exactly_one_instance);
async fn purge_touches_exactly_one_instance(db: &support::TestDb) {
    let (sim, engine) = support::computers_fleet(db, 5).await;
    assert!(support::run(&engine, true).await.succeeded());
    sim.stop().await;
    let views = || async {
        let sql = match db.backend() {
            "sqlite" => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'view' AND name = 'computer_ea_test'",
            _ => "SELECT COUNT(*) FROM pg_views WHERE viewname = 'computer_ea_test'",
        };
        db.scalar(sql).await.expect("count views")
    };
    assert_eq!(views().await, 1, "the sync made the view");
    let removed = db.db.purge_instance("TEST", true).await.expect("purge");
    assert!(removed.iter().all(|(_, n)| *n == 0), "{removed:?}");
    assert_eq!(
        views().await,
        1,
        "the view of `test` is not `TEST`'s to drop"
    );
    assert_eq!(
        db.db
            .count_devices("test", Kind::Computers)
            .await
            .expect("count"),
        5
    );

    if let jamf_sync::store::Db::Postgres(p) = db.db.as_ref() {
        sqlx::query(
            "INSERT INTO instance_leases (instance, holder, epoch, acquired_at, renewed_at, \
             expires_at) VALUES ('test', 'host:42:run:7', 1, now(), now(), now() + interval '1 hour')",
        )
        .execute(p.pool())
        .await
        .expect("lease");
        let refused = db.db.purge_instance("test", true).await;
        let message = match refused {
            Err(e) => e.to_string(),
            Ok(r) => panic!("a held instance was purged: {r:?}"),
        };
        assert!(
            message.contains("held by a live process (host:42:run:7)"),
            "{message}"
        );
        assert_eq!(
            db.db
                .count_devices("test", Kind::Computers)
                .await
                .expect("count"),
            5
        );
        sqlx::query("UPDATE instance_leases SET expires_at = now() - interval '1 second'")
            .execute(p.pool())
            .await
            .expect("expire");
        let done = db
            .db
            .purge_instance("test", true)
            .await
            .expect("an expired lease is no hold");
        assert_eq!(count_of(&done, "computers"), Some(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_serves_three_instances_and_reports_the_bad_one() {
    use crate::support::daemon::Daemon;
    use crate::webhooks::{computer_event, PASSWORD, USER};
    use jamf_sync::simulator::webhooks::{envelope, WebhookFormat};
    let (eu, us, lab) = (sim(30, 5).await, sim(20, 0).await, sim(10, 0).await);
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let env: Vec<(String, String)> = [
        ("JAMF_SYNC__DATABASE__URL", db.as_str()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__JAMF__RETRY__INITIAL_BACKOFF_MS", "5"),
        ("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *"),
        ("JAMF_SYNC__WEBHOOKS__ENABLED", "true"),
        (
            "JAMF_SYNC__SERVER__ADMIN_TOKEN",
            crate::support::daemon::TOKEN,
        ),
        ("JAMF_SYNC__WEBHOOKS__USERNAME", USER),
        ("JAMF_SYNC__WEBHOOKS__PASSWORD", PASSWORD),
        ("JAMF_SYNC__INSTANCES__EU__URL", eu.url().as_str()),
        ("JAMF_SYNC__INSTANCES__EU__CLIENT_SECRET", "sim-secret"),
        ("JAMF_SYNC__INSTANCES__US__URL", us.url().as_str()),
        ("JAMF_SYNC__INSTANCES__US__CLIENT_SECRET", "sim-secret"),
        ("JAMF_SYNC__INSTANCES__US__MOBILE_DEVICES__ENABLED", "false"),
        ("JAMF_SYNC__INSTANCES__LAB__URL", lab.url().as_str()),
        ("JAMF_SYNC__INSTANCES__LAB__CLIENT_SECRET", "wrong"),
        (
            "JAMF_SYNC__INSTANCES__LAB__MOBILE_DEVICES__ENABLED",
            "false",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let d = Daemon::start_with(env);
    d.wait_ready(20).await;
    let status = || async {
        match d.get("/status").await {
            Some((200, body)) => {
                serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()
            }
            _ => serde_json::Value::Null,
        }
    };
    // The start-up catch-up syncs every instance; the bad one fails on its own.
    d.wait_for(60, "eu and us synced, lab failed", || async {
        let s = status().await;
        let inst = |i: usize| s["instances"][i].clone();
        // Instances are listed by name: eu, lab, us.
        inst(0)["kinds"][0]["last_success"]["status"] == "succeeded"
            && inst(0)["kinds"][1]["last_success"]["status"] == "succeeded"
            && inst(2)["kinds"][0]["last_success"]["status"] == "succeeded"
            && inst(1)["kinds"][0]["last_run"]["status"] == "failed"
    })
    .await;
    let s = status().await;
    assert_eq!(s["instances"][0]["instance"], "eu", "{s}");
    assert_eq!(
        s["instances"][1]["jamf"], "authentication has not succeeded yet",
        "{s}"
    );
    assert_eq!(s["instances"][0]["jamf"], "ok", "{s}");
    assert_eq!(
        s["instances"][2]["kinds"].as_array().map(Vec::len),
        Some(1),
        "{s}"
    );
    let (code, _) = d.get("/readyz").await.expect("readyz");
    assert_eq!(
        code, 200,
        "one bad instance does not take the process out of service"
    );

    // Metrics per instance.
    let (_, scrape) = d.get("/metrics").await.expect("metrics");
    let stored = |i: &str| {
        sample(
            &scrape,
            "jamf_sync_devices_stored",
            &[("jamf_instance", i), ("kind", "computers")],
        )
    };
    assert_eq!(stored("eu"), Some(30.0));
    assert_eq!(stored("us"), Some(20.0));
    assert_eq!(stored("lab"), Some(0.0));
    let failed = sample(
        &scrape,
        "jamf_sync_runs_total",
        &[
            ("jamf_instance", "lab"),
            ("kind", "computers"),
            ("result", "failed"),
        ],
    );
    assert!(failed >= Some(1.0), "{failed:?}");
    assert!(
        sample(
            &scrape,
            "jamf_sync_auth_failures_total",
            &[("jamf_instance", "lab")]
        ) >= Some(1.0)
    );
    // Each Jamf server saw at most five connections.
    for s in [&eu, &us] {
        assert!(s.stats().peak_connections <= 5, "{:?}", s.stats());
    }

    // Webhooks: each instance at its own path; the plain path names them.
    assert!(eu.edit_computer(4, |c| c.username = "moved".into()));
    let (body, ct) = envelope(
        &computer_event(&eu, "ComputerInventoryCompleted", 4),
        WebhookFormat::Json,
        7,
    );
    let post = |path: &'static str, body: String| {
        d.http
            .post(format!("{}{path}", d.base))
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let plain = post("/webhooks/jamf", body.clone()).await.expect("post");
    assert_eq!(plain.status().as_u16(), 404);
    let text = plain.text().await.unwrap_or_default();
    assert!(
        text.contains("/webhooks/jamf/eu") && text.contains("/webhooks/jamf/lab"),
        "{text}"
    );
    let own = post("/webhooks/jamf/eu", body).await.expect("post");
    assert_eq!(own.status().as_u16(), 202);
    let store = crate::support::db::open(&db).await;
    d.wait_for(20, "the webhook's device stored for eu", || async {
        store
            .devices("eu", Kind::Computers)
            .await
            .unwrap_or_default()
            .iter()
            .any(|dev| dev.jamf_id == 4 && dev.info.username.as_deref() == Some("moved"))
    })
    .await;
    // POST /sync by instance.
    let r = d
        .http
        .post(format!("{}/sync?instance=us&kind=computers", d.base))
        .bearer_auth(crate::support::daemon::TOKEN)
        .send()
        .await
        .expect("post /sync");
    assert_eq!(r.status().as_u16(), 202);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        body["accepted"],
        serde_json::json!(["us computers"]),
        "{body}"
    );
    store.close().await;
    for s in [eu, us, lab] {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_setup_points_each_instance_at_its_own_path() {
    let (eu, us) = (sim(5, 0).await, sim(5, 0).await);
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let urls = (eu.url(), us.url());
    let env: Vec<(&str, &str)> = vec![
        ("JAMF_SYNC__DATABASE__URL", db.as_str()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        (
            "JAMF_SYNC__WEBHOOKS__PUBLIC_URL",
            "https://hooks.example.com/webhooks/jamf",
        ),
        ("JAMF_SYNC__WEBHOOKS__USERNAME", "jamf-hooks"),
        ("JAMF_SYNC__WEBHOOKS__PASSWORD", "hook-password-long-enough"),
        ("JAMF_SYNC__INSTANCES__EU__URL", urls.0.as_str()),
        ("JAMF_SYNC__INSTANCES__EU__CLIENT_SECRET", "sim-secret"),
        ("JAMF_SYNC__INSTANCES__US__URL", urls.1.as_str()),
        ("JAMF_SYNC__INSTANCES__US__CLIENT_SECRET", "sim-secret"),
        (
            "JAMF_SYNC__INSTANCES__US__WEBHOOKS__PUBLIC_URL",
            "https://us-hooks.example.com/in",
        ),
    ];
    let o = jamf_sync_async(&["webhooks", "setup"], &env, dir.path()).await;
    assert!(o.status.success(), "{}", text(&o));
    let eu_hooks = eu.webhooks();
    assert!(!eu_hooks.is_empty());
    assert!(
        eu_hooks
            .iter()
            .all(|h| h.url == "https://hooks.example.com/webhooks/jamf/eu"),
        "{eu_hooks:?}"
    );
    // An instance's own public URL is used as given.
    assert!(us
        .webhooks()
        .iter()
        .all(|h| h.url == "https://us-hooks.example.com/in"));
    for s in [eu, us] {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_file_is_read_again_after_jamf_refuses_the_old_secret() {
    use jamf_sync::config::{Credentials, FetchStrategy};
    use secrecy::SecretString;
    let sim = sim(15, 0).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("client_secret");
    let with = |memory: &str| {
        let mut s = support::settings(&sim);
        s.credentials = Credentials::ApiClient {
            client_id: "jamf-sync-sim".into(),
            client_secret: SecretString::from(memory.to_string()),
        };
        s.secret_file = Some(file.clone());
        s
    };
    let db = support::sqlite().await;
    // Started with the old secret; the file was rotated since: the refusal reads it again.
    std::fs::write(&file, "sim-secret\n").expect("write");
    let engine = support::engine(
        &db,
        with("old-secret"),
        support::sync_cfg(100, FetchStrategy::Inline),
    );
    let run = support::run(&engine, true).await;
    assert!(run.succeeded(), "{run}");
    assert_eq!(
        db.db
            .count_devices("test", Kind::Computers)
            .await
            .expect("count"),
        15
    );
    assert!(
        sim.requests_to("/api/v1/oauth/token") >= 2,
        "the old secret was tried first"
    );
    // A file that holds a wrong secret too: one more try, then the refusal stands.
    std::fs::write(&file, "also-wrong\n").expect("write");
    let engine = support::engine(
        &db,
        with("old-secret"),
        support::sync_cfg(100, FetchStrategy::Inline),
    );
    let before = sim.requests_to("/api/v1/oauth/token");
    let run = support::run(&engine, true).await;
    assert!(!run.succeeded(), "{run}");
    assert_eq!(
        sim.requests_to("/api/v1/oauth/token") - before,
        2,
        "one retry, no loop"
    );
    db.cleanup().await;
    sim.stop().await;
}
