//! The binary as users run it: configuration errors name the key, secrets never appear, the
//! exit status tells success from failure.

use std::process::{Command, Output};

pub(crate) const SECRET: &str = "s3cr3t-Value-that-must-never-print";

pub(crate) fn jamf_sync(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
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
pub(crate) async fn jamf_sync_async(
    args: &[&str],
    env: &[(&str, &str)],
    dir: &std::path::Path,
) -> Output {
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

/// `jamf-sync ARGS` in the background, with this environment.
pub(crate) fn spawn_cli(
    env: &[(String, String)],
    dir: &std::path::Path,
    args: &'static [&'static str],
) -> tokio::task::JoinHandle<Output> {
    let env = env.to_vec();
    let dir = dir.to_path_buf();
    tokio::spawn(async move {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        jamf_sync_async(args, &env, &dir).await
    })
}

/// A command started with [`spawn_cli`], once it exited within `secs` (`what`: the failure
/// message when it did not).
pub(crate) async fn exited(task: tokio::task::JoinHandle<Output>, secs: u64, what: &str) -> Output {
    tokio::time::timeout(std::time::Duration::from_secs(secs), task)
        .await
        .expect(what)
        .expect("join")
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub(crate) fn assert_fails_naming(o: &Output, key: &str) {
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
            &[("JAMF_SYNC__HISTORY__EXCLUDE_FIELDS", "username,nickname")],
            "history.exclude_fields",
        ),
        (
            &[("JAMF_SYNC__HISTORY__RETENTION_DAYS", "-1")],
            "history.retention_days",
        ),
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
