//! One writing process per SQLite database: an OS file lock (`flock`) on `<database>.lock`,
//! held for the life of the process that writes (`run`, `sync`, `reconcile`, `groups`, …).
//! Read-only commands (`status`, `history`, `config check`) take none.
//!
//! Invariants: the lock is the kernel's, so a process killed with `kill -9` releases it and
//! there is no stale lock to clean up. The holder writes its pid and role (`run` for the
//! daemon) into the file: they name it in messages, and a one-shot command behind the daemon
//! hands its runs to it instead of waiting ([`Wait::BlockUnlessDaemon`]); nothing else trusts
//! them. PostgreSQL databases take no file lock: several processes
//! coordinate there. In-memory SQLite databases are private to their process and take none.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::config::DatabaseUrl;

/// What to do when another process holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Wait until it is released (a one-shot command behind the daemon).
    Block,
    /// Fail at once with [`LockError::Held`].
    NoWait,
    /// [`LockError::Daemon`] when the holder is the daemon (the command hands its runs to it);
    /// wait for any other holder.
    BlockUnlessDaemon,
}

/// The role a daemon writes into the lock file.
pub const DAEMON_ROLE: &str = "run";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another jamf-sync process ({}) is writing to the SQLite database {}; one writing \
         process per SQLite file (PostgreSQL takes several)",
        holder(*.pid),
        .database.display()
    )]
    Held { pid: Option<u32>, database: PathBuf },
    #[error("the jamf-sync daemon ({}) is writing to the SQLite database", holder(*.pid))]
    Daemon { pid: Option<u32> },
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or_else(|| "pid unknown".into(), |p| format!("pid {p}"))
}

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
    pub path: PathBuf,
}

/// The SQLite file behind a database URL, when it has one, as one name whatever spelling
/// reached it: a symlink, `./x.db` beside `x.db`, a `file:` URI. The lock is keyed by it, so
/// two spellings of one file never take two locks.
fn database_file(url: &DatabaseUrl) -> Option<PathBuf> {
    let DatabaseUrl::Sqlite(_) = url else {
        return None;
    };
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url.expose()).ok()?;
    let name = opts.get_filename();
    let text = name.to_string_lossy();
    let path = match text.strip_prefix("file:") {
        // sqlx names its in-memory databases `file:sqlx-in-memory-…`.
        Some(uri) if uri.starts_with("sqlx-in-memory-") => return None,
        Some(uri) => {
            let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
            if path.is_empty() || path == ":memory:" || query.split('&').any(|q| q == "mode=memory")
            {
                return None;
            }
            PathBuf::from(path)
        }
        None if text.is_empty() || text == ":memory:" => return None,
        None => name.to_path_buf(),
    };
    Some(canonical(&path))
}

/// The file's canonical path; for a file not made yet, its directory's canonical path and its
/// name (the directory must exist for SQLite to create it).
fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => path.to_path_buf(),
    }
}

fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The holder's pid and role, as it wrote them.
fn read_holder(file: &mut File) -> (Option<u32>, String) {
    let mut text = String::new();
    if file.seek(SeekFrom::Start(0)).is_err() || file.take(64).read_to_string(&mut text).is_err() {
        return (None, String::new());
    }
    let mut words = text.split_whitespace();
    let pid = words.next().and_then(|p| p.parse().ok());
    (pid, words.next().unwrap_or_default().to_string())
}

/// The holder as its lock file names it, once that is the live holder: a process that has
/// just taken the lock writes its line right after, so a line naming no live process (the
/// last holder's, or none yet) is read again for a moment before it is believed.
async fn read_settled_holder(file: &mut File) -> (Option<u32>, String) {
    for _ in 0..20 {
        let (pid, role) = read_holder(file);
        if pid.is_some_and(process_alive) {
            return (pid, role);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    read_holder(file)
}

/// The daemon holding the configured SQLite database's lock, as its lock file names it:
/// `Some(pid)` while a process with that pid exists (`Some(None)` when the file names no pid).
/// Read without locking, so a daemon restarted meanwhile is seen under its new pid.
pub fn file_daemon(url: &DatabaseUrl) -> Option<Option<u32>> {
    let mut file = File::open(lock_path(&database_file(url)?)).ok()?;
    match read_holder(&mut file) {
        (Some(pid), role) if role == DAEMON_ROLE => process_alive(pid).then_some(Some(pid)),
        (None, role) if role == DAEMON_ROLE => Some(None),
        _ => None,
    }
}

/// Whether a process with this pid exists (Linux `/proc`; elsewhere assumed alive).
pub fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Takes the writer lock of the configured database (`None` for PostgreSQL and in-memory
/// SQLite) for a process in `role` ([`DAEMON_ROLE`] for the daemon). With [`Wait::Block`] it
/// waits, saying once whom for.
pub async fn acquire(
    url: &DatabaseUrl,
    wait: Wait,
    role: &str,
) -> Result<Option<WriterLock>, LockError> {
    let Some(database) = database_file(url) else {
        return Ok(None);
    };
    let path = lock_path(&database);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut open = OpenOptions::new();
    open.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut file = open.open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let (pid, holder_role) = read_settled_holder(&mut file).await;
            if wait == Wait::NoWait {
                return Err(LockError::Held { pid, database });
            }
            if wait == Wait::BlockUnlessDaemon && holder_role == DAEMON_ROLE {
                return Err(LockError::Daemon { pid });
            }
            tracing::info!(
                database = %database.display(),
                holder = %holder(pid),
                "waiting for the process writing to the SQLite database to finish (--no-wait exits 75 instead; a running daemon syncs on request: POST /sync)"
            );
            file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                .await
                .map_err(|e| io(std::io::Error::other(e)))?
                .map_err(io)?;
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    // One write of the whole line, then the length: a reader sees the last holder's line or
    // ours, never an empty or half-written file.
    let line = format!("{} {role}\n", std::process::id());
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)?;
    file.set_len(line.len() as u64).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(Some(WriterLock { _file: file, path }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn url(s: &str) -> DatabaseUrl {
        DatabaseUrl::parse(SecretString::from(s.to_string())).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn every_spelling_of_one_file_takes_the_same_lock() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let real = dir.path().join("x.db");
        std::fs::write(&real, b"").unwrap_or_else(|e| panic!("{e}"));
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link).unwrap_or_else(|e| panic!("{e}"));
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap_or_else(|e| panic!("{e}"));
        let first = acquire(
            &url(&format!("sqlite://{}", real.display())),
            Wait::NoWait,
            "cli",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(first.is_some());
        for other in [
            format!("sqlite://{}", link.display()),
            format!("sqlite://{}/../x.db", sub.display()),
            format!("sqlite:file:{}?mode=rwc", real.display()),
        ] {
            match acquire(&url(&other), Wait::NoWait, "cli").await {
                Err(LockError::Held { .. }) => {}
                got => panic!("{other} is the same file, yet: {got:?}"),
            }
        }
        assert!(database_file(&url("sqlite::memory:")).is_none());
    }

    #[tokio::test]
    async fn a_holder_not_written_yet_is_waited_for_not_taken_for_another() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("x.db.lock");
        // The last holder's line (a pid no process has), as a new holder finds the file.
        std::fs::write(&path, format!("{} cli\n", u32::MAX - 1)).unwrap_or_else(|e| panic!("{e}"));
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                std::fs::write(&path, format!("{} {DAEMON_ROLE}\n", std::process::id()))
            })
        };
        let mut file = File::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let (pid, role) = read_settled_holder(&mut file).await;
        assert_eq!(
            (pid, role.as_str()),
            (Some(std::process::id()), DAEMON_ROLE)
        );
        assert!(matches!(writer.await, Ok(Ok(()))));
    }

    #[tokio::test]
    async fn a_second_writer_is_refused_naming_the_first_and_gets_it_once_released() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = url(&format!("sqlite://{}", dir.path().join("x.db").display()));
        let first = acquire(&db, Wait::NoWait, "cli").await;
        let first = first.unwrap_or_else(|e| panic!("{e}"));
        assert!(first.is_some());
        // flock locks belong to the open file: a second open in this process conflicts too.
        match acquire(&db, Wait::NoWait, "cli").await {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        let waiter = tokio::spawn({
            let db = db.clone();
            async move { acquire(&db, Wait::Block, "cli").await.map(|l| l.is_some()) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !waiter.is_finished(),
            "the waiter waits while the lock is held"
        );
        drop(first);
        assert!(matches!(waiter.await, Ok(Ok(true))));
        // A daemon's lock: a command that hands its runs over is told so instead of waiting;
        // another command's lock is waited for.
        let daemon = acquire(&db, Wait::NoWait, DAEMON_ROLE).await;
        let daemon = daemon.unwrap_or_else(|e| panic!("{e}"));
        match acquire(&db, Wait::BlockUnlessDaemon, "cli").await {
            Err(LockError::Daemon { pid }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Daemon, got {other:?}"),
        }
        assert_eq!(file_daemon(&db), Some(Some(std::process::id())));
        drop(daemon);
        let cli = acquire(&db, Wait::NoWait, "cli").await;
        let cli = cli.unwrap_or_else(|e| panic!("{e}"));
        let waiter = tokio::spawn({
            let db = db.clone();
            async move {
                acquire(&db, Wait::BlockUnlessDaemon, "cli")
                    .await
                    .map(|l| l.is_some())
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !waiter.is_finished(),
            "another command's lock is waited for"
        );
        assert_eq!(file_daemon(&db), None, "a command is not the daemon");
        drop(cli);
        assert!(matches!(waiter.await, Ok(Ok(true))));
        assert!(process_alive(std::process::id()));
        for none in ["sqlite::memory:", "postgres://u@localhost/db"] {
            assert!(
                matches!(acquire(&url(none), Wait::NoWait, "cli").await, Ok(None)),
                "{none}"
            );
        }
    }
}
