//! The binary as users run it: configuration errors name the key, secrets never appear, the
//! exit status tells success from failure.

use std::process::{Command, Output};

use jamf_sync::simulator::SimConfig;

use crate::helpers;

const SECRET: &str = "s3cr3t-Value-that-must-never-print";

fn jamf_sync(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jamf-sync"));
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("JAMF_SYNC") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run jamf-sync")
}

/// Runs the binary off the async runtime, so an in-process simulator keeps serving.
async fn jamf_sync_async(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        jamf_sync(&args, &env, &dir)
    })
    .await
    .expect("join")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_fails_naming(o: &Output, key: &str) {
    let t = text(o);
    assert!(!o.status.success(), "should fail: {t}");
    assert!(
        t.contains(&format!("`{key}`")),
        "error should name {key}: {t}"
    );
    assert!(!t.contains(SECRET), "secret leaked: {t}");
}

#[test]
fn missing_url_names_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let o = jamf_sync(&["sync"], &[], dir.path());
    assert_fails_naming(&o, "jamf.url");
}

#[test]
fn both_or_neither_credential_kinds() {
    let dir = tempfile::tempdir().expect("dir");
    let url = ("JAMF_SYNC__JAMF__URL", "https://example.jamfcloud.com");
    let o = jamf_sync(
        &["sync"],
        &[
            url,
            ("JAMF_SYNC__JAMF__CLIENT_ID", "abc"),
            ("JAMF_SYNC__JAMF__CLIENT_SECRET", SECRET),
            ("JAMF_SYNC__JAMF__USERNAME", "admin"),
            ("JAMF_SYNC__JAMF__PASSWORD", SECRET),
        ],
        dir.path(),
    );
    assert_fails_naming(&o, "jamf.client_id");
    assert!(text(&o).contains("exactly one kind"));
    let o = jamf_sync(&["sync"], &[url], dir.path());
    assert_fails_naming(&o, "jamf.client_id");
    assert!(text(&o).contains("no credentials"));
    let o = jamf_sync(
        &["sync"],
        &[url, ("JAMF_SYNC__JAMF__CLIENT_ID", "abc")],
        dir.path(),
    );
    assert_fails_naming(&o, "jamf.client_secret");
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[jamf]\nurl = \"https://x.jamfcloud.com\"\nclient_idd = \"typo\"\n",
    )
    .expect("write");
    let o = jamf_sync(
        &["--config", file.to_str().expect("utf8"), "config", "check"],
        &[],
        dir.path(),
    );
    assert_fails_naming(&o, "jamf.client_idd");
    let o = jamf_sync(
        &["config", "check"],
        &[("JAMF_SYNC__SYNC__PAGESIZE", "10")],
        dir.path(),
    );
    assert_fails_naming(&o, "sync.pagesize");
}

#[test]
fn invalid_values_name_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("JAMF_SYNC__DATABASE__URL", "mysql://u:p@h/db")],
            "database.url",
        ),
        (&[("JAMF_SYNC__SYNC__PAGE_SIZE", "abc")], "sync.page_size"),
        (&[("JAMF_SYNC__SYNC__PAGE_SIZE", "5000")], "sync.page_size"),
        (
            &[("JAMF_SYNC__JAMF__MAX_CONCURRENCY", "10")],
            "jamf.max_concurrency",
        ),
        (
            &[("JAMF_SYNC__SYNC__SECTIONS", "GENERAL,NOPE")],
            "sync.sections",
        ),
        (&[("JAMF_SYNC__LOG__FORMAT", "xml")], "log.format"),
        (
            &[
                ("JAMF_SYNC__JAMF__URL", "http://jamf.example.com"),
                ("JAMF_SYNC__JAMF__CLIENT_ID", "a"),
                ("JAMF_SYNC__JAMF__CLIENT_SECRET", SECRET),
            ],
            "jamf.url",
        ),
        (
            &[("JAMF_SYNC__WEBHOOKS__ENABLED", "true")],
            "webhooks.username",
        ),
        (
            &[
                ("JAMF_SYNC__WEBHOOKS__ENABLED", "true"),
                ("JAMF_SYNC__WEBHOOKS__USERNAME", "jamf"),
            ],
            "webhooks.password",
        ),
        (
            &[("JAMF_SYNC__WEBHOOKS__HEADER_VALUE", SECRET)],
            "webhooks.header_name",
        ),
        (
            &[
                ("JAMF_SYNC__WEBHOOKS__HEADER_NAME", "bad header"),
                ("JAMF_SYNC__WEBHOOKS__HEADER_VALUE", SECRET),
            ],
            "webhooks.header_name",
        ),
        (
            &[("JAMF_SYNC__WEBHOOKS__LISTEN", "nowhere")],
            "webhooks.listen",
        ),
        (
            &[("JAMF_SYNC__WEBHOOKS__MAX_BODY_BYTES", "10")],
            "webhooks.max_body_bytes",
        ),
        (
            &[("JAMF_SYNC__WEBHOOKS__PUBLIC_URL", "ftp://x")],
            "webhooks.public_url",
        ),
    ];
    for (env, key) in cases {
        let o = jamf_sync(&["config", "check"], env, dir.path());
        assert_fails_naming(&o, key);
    }
}

#[test]
fn config_check_masks_secrets_and_reads_secret_files() {
    let dir = tempfile::tempdir().expect("dir");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write");
    let o = jamf_sync(
        &["config", "check"],
        &[
            ("JAMF_SYNC__JAMF__URL", "https://x.jamfcloud.com"),
            ("JAMF_SYNC__JAMF__CLIENT_ID", "abc"),
            (
                "JAMF_SYNC__JAMF__CLIENT_SECRET_FILE",
                secret_file.to_str().expect("utf8"),
            ),
            (
                "JAMF_SYNC__DATABASE__URL",
                &format!("postgres://jamf:{SECRET}@db.internal/jamf"),
            ),
        ],
        dir.path(),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(!t.contains(SECRET), "secret leaked: {t}");
    assert!(t.contains("postgres://jamf:***@db.internal/jamf"), "{t}");
    assert!(
        t.contains("configuration is valid (API client credentials)"),
        "{t}"
    );

    let o = jamf_sync(
        &["config", "check"],
        &[
            ("JAMF_SYNC__JAMF__URL", "https://x.jamfcloud.com"),
            ("JAMF_SYNC__JAMF__CLIENT_ID", "abc"),
            ("JAMF_SYNC__JAMF__CLIENT_SECRET", SECRET),
            (
                "JAMF_SYNC__JAMF__CLIENT_SECRET_FILE",
                secret_file.to_str().expect("utf8"),
            ),
        ],
        dir.path(),
    );
    assert_fails_naming(&o, "jamf.client_secret_file");
}

#[test]
fn config_check_prints_toml_that_reads_back_the_same() {
    let dir = tempfile::tempdir().expect("dir");
    let env = [
        ("JAMF_SYNC__JAMF__URL", "https://x.jamfcloud.com"),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "abc"),
        ("JAMF_SYNC__JAMF__CLIENT_SECRET", SECRET),
        ("JAMF_SYNC__JAMF__API_VERSION", "v3"),
        ("JAMF_SYNC__JAMF__PACING__INITIAL_LIMIT", "4"),
        ("JAMF_SYNC__SYNC__STRATEGY", "detail"),
        ("JAMF_SYNC__SYNC__SECTIONS", "GENERAL,HARDWARE"),
        ("JAMF_SYNC__SYNC__TIMEZONE", "Europe/Berlin"),
        ("JAMF_SYNC__MOBILE_DEVICES__SOURCE", "pro-api"),
        ("JAMF_SYNC__MOBILE_DEVICES__SEARCH_ID", "42"),
        ("JAMF_SYNC__RECONCILE__ON_MISSING", "delete"),
        ("JAMF_SYNC__SERVER__ADMIN_TOKEN", SECRET),
        ("JAMF_SYNC__WEBHOOKS__ENABLED", "true"),
        ("JAMF_SYNC__WEBHOOKS__USERNAME", "jamf"),
        ("JAMF_SYNC__WEBHOOKS__PASSWORD", SECRET),
        ("JAMF_SYNC__LOG__FORMAT", "json"),
    ];
    let first = jamf_sync(&["config", "check"], &env, dir.path());
    assert!(first.status.success(), "{}", text(&first));
    let shown = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(!shown.contains(SECRET), "secret leaked: {shown}");
    for line in [
        "api_version = \"v3\"",
        "initial_limit = 4",
        "strategy = \"detail\"",
        "sections = [\"GENERAL\", \"HARDWARE\"]",
        "source = \"pro-api\"",
        "search_id = 42",
        "on_missing = \"delete\"",
        "admin_token = \"***\"",
        "format = \"json\"",
    ] {
        assert!(shown.contains(line), "missing {line}: {shown}");
    }
    // Fed back as a file with no environment, it describes the same configuration (secrets
    // stay masked: only their presence survives).
    let file = dir.path().join("shown.toml");
    std::fs::write(&file, &shown).expect("write");
    let second = jamf_sync(
        &["--config", file.to_str().expect("utf8"), "config", "check"],
        &[],
        dir.path(),
    );
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(String::from_utf8_lossy(&second.stdout), shown);
}

#[test]
fn webhook_secrets_are_masked() {
    let dir = tempfile::tempdir().expect("dir");
    let o = jamf_sync(
        &["config", "check"],
        &[
            ("JAMF_SYNC__WEBHOOKS__ENABLED", "true"),
            ("JAMF_SYNC__WEBHOOKS__USERNAME", "jamf"),
            ("JAMF_SYNC__WEBHOOKS__PASSWORD", SECRET),
            ("JAMF_SYNC__WEBHOOKS__HEADER_NAME", "X-Key"),
            ("JAMF_SYNC__WEBHOOKS__HEADER_VALUE", SECRET),
        ],
        dir.path(),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(!t.contains(SECRET), "secret leaked: {t}");
    assert!(t.contains("header_name = \"X-Key\""), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_setup_creates_then_updates() {
    let sim = helpers::sim(SimConfig {
        computers: 5,
        mobile_devices: 5,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let url = sim.url();
    let env = [
        ("JAMF_SYNC__JAMF__URL", url.as_str()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret"),
        (
            "JAMF_SYNC__WEBHOOKS__PUBLIC_URL",
            "https://hooks.example.com/webhooks/jamf",
        ),
        ("JAMF_SYNC__WEBHOOKS__USERNAME", "jamf-hooks"),
        ("JAMF_SYNC__WEBHOOKS__PASSWORD", SECRET),
    ];
    // Without a public URL it names the key and changes nothing.
    let o = jamf_sync_async(&["webhooks", "setup"], &env[..3], dir.path()).await;
    assert_fails_naming(&o, "webhooks.public_url");
    assert!(sim.webhooks().is_empty());

    let o = jamf_sync_async(&["webhooks", "setup"], &env, dir.path()).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_eq!(t.matches("created webhook").count(), 6, "{t}");
    assert!(!t.contains(SECRET), "secret leaked: {t}");
    let o = jamf_sync_async(&["webhooks", "setup"], &env, dir.path()).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_eq!(
        t.matches("updated webhook").count(),
        6,
        "run again: updated, not duplicated: {t}"
    );
    let hooks = sim.webhooks();
    assert_eq!(hooks.len(), 6);
    let mut events: Vec<&str> = hooks.iter().map(|h| h.event.as_str()).collect();
    events.sort_unstable();
    assert_eq!(
        events,
        [
            "ComputerAdded",
            "ComputerCheckIn",
            "ComputerInventoryCompleted",
            "MobileDeviceEnrolled",
            "MobileDeviceInventoryCompleted",
            "MobileDeviceUnEnrolled"
        ]
    );
    for h in &hooks {
        assert_eq!(h.url, "https://hooks.example.com/webhooks/jamf");
        assert_eq!(h.authentication_type, "BASIC");
        assert_eq!(h.username, "jamf-hooks");
        assert!(h.enabled);
        assert_eq!(h.name, format!("jamf-sync {}", h.event));
    }
    let stats = sim.stats();
    assert_eq!((stats.webhooks_created, stats.webhooks_updated), (6, 6));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_command_exit_status_and_no_secret_in_output() {
    let sim = helpers::sim(SimConfig {
        computers: 120,
        mobile_devices: 30,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let url = sim.url();
    let base = [
        ("JAMF_SYNC__JAMF__URL", url.as_str()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__DATABASE__URL", db.as_str()),
        ("RUST_LOG", "debug"),
    ];
    let mut ok_env = base.to_vec();
    ok_env.push(("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret"));
    let o = jamf_sync_async(&["sync"], &ok_env, dir.path()).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("computers full sync succeeded"), "{t}");
    assert!(
        out.contains("mobile_devices full sync succeeded"),
        "both kinds by default: {t}"
    );
    assert!(!t.contains("sim-token-"), "a bearer token was logged: {t}");

    let mut bad_env = base.to_vec();
    bad_env.push(("JAMF_SYNC__JAMF__CLIENT_SECRET", SECRET));
    let o = jamf_sync_async(&["sync"], &bad_env, dir.path()).await;
    let t = text(&o);
    assert!(!o.status.success(), "wrong secret must fail: {t}");
    assert!(t.contains("refused the credentials"), "{t}");
    assert!(!t.contains(SECRET), "secret leaked: {t}");

    let o = jamf_sync_async(
        &["status"],
        &[("JAMF_SYNC__DATABASE__URL", db.as_str())],
        dir.path(),
    )
    .await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // The runs were stored under the default instance name.
    assert!(
        t.contains("instance default: 120 computers and 30 mobile devices stored"),
        "{t}"
    );
    assert!(t.contains("failed"), "the failed run is listed: {t}");
    assert_eq!(
        sim.requests_to("/api/v1/auth/invalidate-token"),
        1,
        "the token is invalidated when the successful sync ends"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_are_plain_text() {
    let sim = helpers::sim(SimConfig {
        computers: 10,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let url = sim.url();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jamf-sync"));
    cmd.args(["sync", "--only", "computers"])
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .env("JAMF_SYNC__JAMF__URL", &url)
        .env("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim")
        .env("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret")
        .env("JAMF_SYNC__DATABASE__URL", &db);
    let o = tokio::task::spawn_blocking(move || cmd.output().expect("run"))
        .await
        .expect("join");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("computers full sync succeeded"), "{err}");
    // journald, `docker logs` and files get no colour codes, NO_COLOR or not.
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escape codes in piped logs: {err:?}"
    );
    sim.stop().await;
}

#[test]
fn overwrite_needs_a_full_sync() {
    let dir = tempfile::tempdir().expect("dir");
    let o = jamf_sync(&["sync", "--overwrite"], &[], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--full"), "{}", text(&o));
}

#[test]
fn example_config_is_valid_and_documents_the_defaults() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let dir = tempfile::tempdir().expect("dir");
    let with_file = jamf_sync(
        &[
            "--config",
            example.to_str().expect("utf8"),
            "config",
            "check",
        ],
        &[],
        dir.path(),
    );
    assert!(with_file.status.success(), "{}", text(&with_file));
    let defaults = jamf_sync(&["config", "check"], &[], dir.path());
    assert_eq!(
        String::from_utf8_lossy(&with_file.stdout),
        String::from_utf8_lossy(&defaults.stdout),
        "config/example.toml must state exactly the built-in defaults"
    );
}

#[test]
fn migrate_creates_the_sqlite_database() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("new.db");
    let url = format!("sqlite://{}", path.display());
    let o = jamf_sync(
        &["migrate"],
        &[("JAMF_SYNC__DATABASE__URL", url.as_str())],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("migrations applied (sqlite)"));
    assert!(path.exists());
    // Idempotent.
    let o = jamf_sync(
        &["migrate"],
        &[("JAMF_SYNC__DATABASE__URL", url.as_str())],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn simulate_serves_a_jamf_pro_until_stopped() {
    use std::io::{BufRead, BufReader};
    // Port 0: the simulator picks a free port and prints it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_jamf-sync"))
        .args(["simulate", "--port", "0", "--computers", "25"])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut first = String::new();
    reader.read_line(&mut first).expect("read");
    // Keep draining: a closed pipe would kill the simulator at its next line of output.
    std::thread::spawn(move || {
        let mut rest = String::new();
        while reader.read_line(&mut rest).unwrap_or(0) > 0 {}
    });
    assert!(first.contains("25 computers"), "{first}");
    let port: u16 = first
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("port in the first line");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /_sim/stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("peak_connections"), "{answer}");
    child.kill().expect("kill");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_selects_one_kind() {
    let sim = helpers::sim(SimConfig {
        computers: 15,
        mobile_devices: 12,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let url = sim.url();
    let env = [
        ("JAMF_SYNC__JAMF__URL", url.as_str()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret"),
        ("JAMF_SYNC__DATABASE__URL", db.as_str()),
    ];
    let o = jamf_sync_async(&["sync", "--only", "mobile-devices"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.contains("mobile_devices full sync succeeded"), "{out}");
    assert!(!out.contains("computers full"), "{out}");
    assert_eq!(sim.requests_to("/api/v4/computers-inventory"), 0);
    let o = jamf_sync_async(&["sync", "--only", "computers"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("computers full sync succeeded"), "{out}");
    assert!(!out.contains("mobile_devices"), "{out}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_command_dry_run_and_real() {
    let sim = helpers::sim(SimConfig {
        computers: 50,
        mobile_devices: 10,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let url = sim.url();
    let env = [
        ("JAMF_SYNC__JAMF__URL", url.as_str()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret"),
        ("JAMF_SYNC__DATABASE__URL", db.as_str()),
    ];
    assert!(jamf_sync_async(&["sync"], &env, dir.path())
        .await
        .status
        .success());
    sim.delete_computer(3);
    let o = jamf_sync_async(&["reconcile", "--dry-run"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains("computers reconcile (dry run) succeeded"),
        "{out}"
    );
    assert!(out.contains("deleted 1,"), "{out}");
    assert!(
        out.contains("mobile_devices reconcile (dry run) succeeded"),
        "{out}"
    );
    let o = jamf_sync_async(&["reconcile", "--only", "computers"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains("computers reconcile succeeded") && out.contains("deleted 1,"),
        "{out}"
    );
    sim.stop().await;
}

#[test]
fn secret_files_are_found_in_the_systemd_credentials_directory() {
    let dir = tempfile::tempdir().expect("dir");
    // Run elsewhere, so the bare name cannot be found relative to the working directory.
    let cwd = tempfile::tempdir().expect("cwd");
    std::fs::write(dir.path().join("jamf_client_secret"), format!("{SECRET}\n")).expect("write");
    let o = jamf_sync(
        &["config", "check"],
        &[
            ("CREDENTIALS_DIRECTORY", dir.path().to_str().expect("utf8")),
            ("JAMF_SYNC__JAMF__URL", "https://x.jamfcloud.com"),
            ("JAMF_SYNC__JAMF__CLIENT_ID", "abc"),
            ("JAMF_SYNC__JAMF__CLIENT_SECRET_FILE", "jamf_client_secret"),
        ],
        cwd.path(),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("configuration is valid"), "{t}");
    assert!(!t.contains(SECRET));
}
