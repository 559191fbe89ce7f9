//! Which process writes for which Jamf instance, when several share a PostgreSQL database.
//!
//! PostgreSQL is the coordinator: a row per instance in `instance_leases` names its holder, an
//! epoch that grows at every change of holder, and an expiry in the **database's** clock
//! (`now()`), so no process's clock matters. The holder renews it on a heartbeat over one
//! connection of its own ([`Coordinator`]); a lease not renewed within `ttl` is free, whatever
//! happened to its holder (kill -9, a network partition from the database, a paused VM).
//!
//! Invariants:
//! - **fencing**: every write transaction of a coordinated store begins by reading its
//!   instance's lease row `FOR SHARE` with this process's holder and epoch and an unexpired
//!   expiry ([`Fence::check`]); without it the transaction fails ([`super::StoreError::NotHolder`]).
//!   A takeover updates that row, so it waits for such a transaction to commit, and every later
//!   one of the old holder fails: the old holder cannot write once its lease has expired;
//! - a holder gives an instance up locally (stops its runs, refuses its writes) before the
//!   lease can expire in the database: `ttl / 6` before, measured from when its last successful
//!   renewal was *sent*;
//! - a new holder marks the old holder's `running` runs interrupted in the transaction that
//!   takes the lease; nobody else touches another holder's runs;
//! - daemons register in `ha_members` (their first heartbeat does only that); each takes at
//!   most `ceil(instances / live daemons)` instances and gives idle ones up when it holds
//!   more, so instances spread.
//!
//! Session advisory locks are not used: a pooled connection drops them silently, the server
//! notices a vanished client only by TCP keepalive, and PgBouncer in transaction mode breaks
//! them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Db, Result, StoreError};

/// How long a daemon holding nothing waits between rounds at most: the first round only
/// registers it, so this is its start-up delay before it takes instances.
const SETTLE: Duration = Duration::from_secs(2);

/// The instances this process holds, with their epochs: what [`Fence::check`] proves to the
/// database in every write transaction.
#[derive(Debug)]
pub struct Fence {
    holder: String,
    held: RwLock<HashMap<String, i64>>,
    /// The server ends a write transaction left idle this long (`ttl / 3`), so one whose
    /// client vanished mid-way (partition, paused VM) cannot hold a takeover off for the
    /// hours TCP keepalive would take to notice.
    idle_tx_ms: String,
}

impl Fence {
    pub fn new(holder: String, ttl: Duration) -> Self {
        Fence {
            holder,
            held: RwLock::new(HashMap::new()),
            idle_tx_ms: (ttl / 3).as_millis().max(1000).to_string(),
        }
    }

    /// This process's name in `instance_leases.holder`.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The instances this process holds.
    pub fn held_instances(&self) -> Vec<String> {
        self.held
            .read()
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn epoch(&self, instance: &str) -> Option<i64> {
        self.held.read().ok()?.get(instance).copied()
    }

    fn hold(&self, instance: &str, epoch: i64) {
        if let Ok(mut held) = self.held.write() {
            held.insert(instance.to_string(), epoch);
        }
    }

    fn drop_instance(&self, instance: &str) {
        if let Ok(mut held) = self.held.write() {
            held.remove(instance);
        }
    }

    /// Proves, inside `tx`, that this process still holds `instance` under the epoch it took
    /// it with, and keeps a takeover out until `tx` ends.
    pub(super) async fn check(&self, tx: &mut PgConnection, instance: &str) -> Result<()> {
        let not_holder = || StoreError::NotHolder {
            instance: instance.to_string(),
        };
        let epoch = self.epoch(instance).ok_or_else(not_holder)?;
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT epoch, set_config('idle_in_transaction_session_timeout', $4, true) \
             FROM instance_leases WHERE instance = $1 AND holder = $2 \
             AND epoch = $3 AND expires_at > now() FOR SHARE",
        )
        .bind(instance)
        .bind(&self.holder)
        .bind(epoch)
        .bind(&self.idle_tx_ms)
        .fetch_optional(&mut *tx)
        .await?;
        row.map(|_| ()).ok_or_else(not_holder)
    }
}

/// A process's holder name: host, pid and a random part (a restarted pod keeps its host name
/// and often its pid 1).
pub fn holder_name(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let salt = nanos ^ std::process::id().rotate_left(16);
    format!(
        "{host}:{}:{role}:{:06x}",
        std::process::id(),
        salt & 0xff_ffff
    )
}

/// An instance's lease as stored, for `/status` and messages.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct LeaseRow {
    pub instance: String,
    pub holder: String,
    pub epoch: i64,
    pub expires_at: DateTime<Utc>,
    /// Unexpired in the database's clock.
    pub live: bool,
}

/// Every instance's lease.
pub async fn leases(pool: &PgPool) -> Result<Vec<LeaseRow>> {
    Ok(sqlx::query_as(
        "SELECT instance, holder, epoch, expires_at, expires_at > now() AS live \
         FROM instance_leases ORDER BY instance",
    )
    .fetch_all(pool)
    .await?)
}

/// A lease just taken.
#[derive(Debug, Clone, Copy)]
struct Taken {
    epoch: i64,
    /// Another process held it last and let it expire instead of releasing it: it may be
    /// frozen, not dead, with requests to Jamf in flight and its sockets open.
    unclean: bool,
}

/// Takes `instance` if its lease is free (never taken, expired or released). In the same
/// transaction the previous holder's `running` runs become `interrupted`.
async fn try_acquire(
    conn: &mut PgConnection,
    instance: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Taken>> {
    let mut tx = conn.begin().await?;
    // `old` is the row as the statement found it: who held it last, and how it ended.
    let row: Option<(i64, Option<String>, Option<bool>)> = sqlx::query_as(
        "WITH old AS (SELECT holder, released FROM instance_leases WHERE instance = $1) \
         INSERT INTO instance_leases AS l (instance, holder, epoch, acquired_at, renewed_at, expires_at) \
         VALUES ($1, $2, 1, now(), now(), now() + make_interval(secs => $3)) \
         ON CONFLICT (instance) DO UPDATE SET holder = excluded.holder, epoch = l.epoch + 1, \
         acquired_at = now(), renewed_at = now(), expires_at = excluded.expires_at, \
         released = FALSE \
         WHERE l.expires_at <= now() \
         RETURNING epoch, (SELECT holder FROM old), (SELECT released FROM old)",
    )
    .bind(instance)
    .bind(holder)
    .bind(ttl.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((epoch, last_holder, released)) = row else {
        tx.rollback().await?;
        return Ok(None);
    };
    let unclean = last_holder.is_some_and(|h| h != holder) && released == Some(false);
    let stale = sqlx::query(
        "UPDATE sync_runs SET status = 'interrupted', finished_at = now(), \
         error = COALESCE(error, 'its process stopped or lost the instance while the run was in progress') \
         WHERE instance = $1 AND status = 'running'",
    )
    .bind(instance)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if stale > 0 {
        tracing::warn!(
            instance,
            stale,
            "runs the previous holder left 'running' were marked interrupted; their windows will be redone"
        );
    }
    Ok(Some(Taken { epoch, unclean }))
}

/// Extends a held lease; `false` when it is no longer this holder's (expired, taken over).
async fn renew(
    conn: &mut PgConnection,
    instance: &str,
    holder: &str,
    epoch: i64,
    ttl: Duration,
) -> Result<bool> {
    let row: Option<(i64,)> = sqlx::query_as(
        "UPDATE instance_leases SET renewed_at = now(), expires_at = now() + make_interval(secs => $4) \
         WHERE instance = $1 AND holder = $2 AND epoch = $3 AND expires_at > now() RETURNING epoch",
    )
    .bind(instance)
    .bind(holder)
    .bind(epoch)
    .bind(ttl.as_secs_f64())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}

/// Gives a held lease up at once, so the next holder need not wait for it to expire.
async fn release(conn: &mut PgConnection, instance: &str, holder: &str, epoch: i64) -> Result<()> {
    sqlx::query(
        "UPDATE instance_leases SET expires_at = now(), released = TRUE \
         WHERE instance = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()",
    )
    .bind(instance)
    .bind(holder)
    .bind(epoch)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Registers (or keeps registered) a daemon; how many daemons are live.
async fn beat_member(conn: &mut PgConnection, holder: &str, ttl: Duration) -> Result<i64> {
    sqlx::query(
        "INSERT INTO ha_members (holder, started_at, expires_at) \
         VALUES ($1, now(), now() + make_interval(secs => $2)) \
         ON CONFLICT (holder) DO UPDATE SET expires_at = excluded.expires_at",
    )
    .bind(holder)
    .bind(ttl.as_secs_f64())
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM ha_members WHERE expires_at < now() - interval '1 day'")
        .execute(&mut *conn)
        .await?;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ha_members WHERE expires_at > now()")
        .fetch_one(&mut *conn)
        .await?;
    Ok(n.max(1))
}

/// The live daemon holding `instance`, if a daemon holds it (not a one-shot command).
pub async fn daemon_holder(pool: &PgPool, instance: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT l.holder FROM instance_leases l JOIN ha_members m ON m.holder = l.holder \
         WHERE l.instance = $1 AND l.expires_at > now() AND m.expires_at > now()",
    )
    .bind(instance)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.0))
}

/// Whether this process may take more instances than its share, and give idle ones up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A daemon: registers in `ha_members`, takes its share, gives up what is over it.
    Daemon,
    /// A one-shot command: takes what it was asked for, whoever else is live.
    Command,
}

/// A held instance, as this process sees it.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    /// Past this (monotonic) instant without a renewal, the instance is given up locally.
    valid_until: Instant,
    /// When this process took it: an instance is not given up to spread instances within a
    /// heartbeat of being taken (its catch-up may be about to start).
    taken: Instant,
    /// Taken from a holder that let it expire: held in the database (renewed), but not yet
    /// published to this process's writers and watchers until this instant passes.
    quiet_until: Option<Instant>,
}

/// Takes, renews and gives up instance leases on a heartbeat, publishing each instance's
/// epoch (`Some` while held) on a watch channel and in the [`Fence`].
pub struct Coordinator {
    fence: Arc<Fence>,
    connect: PgConnectOptions,
    ttl: Duration,
    /// How long a lease taken from a holder that let it expire stays unpublished
    /// (`ha.takeover_quiet_secs`).
    quiet: Duration,
    role: Role,
    instances: BTreeMap<String, watch::Sender<Option<i64>>>,
    /// Per instance: whether it is idle (may be given up to spread instances).
    idle: HashMap<String, Box<dyn Fn() -> bool + Send + Sync>>,
    held: HashMap<String, Held>,
    conn: Option<PgConnection>,
    /// Set after the first round.
    joined: bool,
}

impl Coordinator {
    /// `url` is the database's URL; `ttl` is `ha.failover_secs`; `quiet` is
    /// `ha.takeover_quiet_secs` as [`crate::config::Config::takeover_quiet`] resolves it.
    pub fn new(
        fence: Arc<Fence>,
        url: &str,
        ttl: Duration,
        quiet: Duration,
        role: Role,
        instances: &[String],
    ) -> Result<Self> {
        let connect: PgConnectOptions = url.parse()?;
        Ok(Coordinator {
            fence,
            connect: connect.disable_statement_logging(),
            ttl,
            quiet,
            role,
            instances: instances
                .iter()
                .map(|i| (i.clone(), watch::channel(None).0))
                .collect(),
            idle: HashMap::new(),
            held: HashMap::new(),
            conn: None,
            joined: false,
        })
    }

    /// On PostgreSQL: fences every write of `db` from now on (with a holder name for this
    /// process) and returns the coordinator taking its leases; `None` on SQLite, which has
    /// one writing process (its file lock).
    pub fn start(
        db: &Db,
        url: &str,
        ttl: Duration,
        quiet: Duration,
        role: Role,
        instances: &[String],
    ) -> Result<Option<Self>> {
        if db.postgres().is_none() {
            return Ok(None);
        }
        let name = match role {
            Role::Daemon => "run",
            Role::Command => "cli",
        };
        let fence = Arc::new(Fence::new(holder_name(name), ttl));
        db.coordinate(fence.clone());
        Self::new(fence, url, ttl, quiet, role, instances).map(Some)
    }

    /// The fence this coordinator keeps (this process's holder name, the held epochs).
    pub fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }

    /// The instance's epoch while held, `None` otherwise.
    pub fn watch(&self, instance: &str) -> Option<watch::Receiver<Option<i64>>> {
        self.instances.get(instance).map(|tx| tx.subscribe())
    }

    /// How to tell that an instance is idle (nothing queued or running): only idle instances
    /// are given up to spread them. Without one, an instance is never given up.
    pub fn set_idle(&mut self, instance: &str, idle: impl Fn() -> bool + Send + Sync + 'static) {
        self.idle.insert(instance.to_string(), Box::new(idle));
    }

    fn heartbeat(&self) -> Duration {
        self.ttl / 3
    }

    /// One round: renew what is held, give up the excess, take the share. Errors leave the
    /// held instances to their local deadlines.
    pub async fn beat(&mut self) -> Result<()> {
        let sent = Instant::now();
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let mut c = self.connect.connect().await?;
                // A takeover waiting on a vanished holder's write gives up and tries again
                // on the next beat instead of hanging this connection.
                let ms = (self.heartbeat() / 2).as_millis().max(100);
                sqlx::query(sqlx::AssertSqlSafe(format!("SET lock_timeout = {ms}")))
                    .execute(&mut c)
                    .await?;
                c
            }
        };
        // A failed round drops the connection: the next one starts on a fresh one.
        self.beat_on(&mut conn, sent).await?;
        self.conn = Some(conn);
        Ok(())
    }

    async fn beat_on(&mut self, conn: &mut PgConnection, sent: Instant) -> Result<()> {
        let holder = self.fence.holder().to_string();
        let target = match self.role {
            Role::Daemon => {
                let live = beat_member(conn, &holder, self.ttl).await?;
                let n = self.instances.len() as i64;
                usize::try_from((n + live - 1) / live).unwrap_or(usize::MAX)
            }
            Role::Command => usize::MAX,
        };
        let valid_until = sent + self.ttl - self.ttl / 6;
        let held: Vec<(String, Held)> = self.held.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (instance, h) in held {
            if renew(conn, &instance, &holder, h.epoch, self.ttl).await? {
                if let Some(h) = self.held.get_mut(&instance) {
                    h.valid_until = valid_until;
                }
            } else {
                tracing::warn!(%instance, epoch = h.epoch, "lost the instance: its lease expired or was taken over");
                self.give_up(&instance);
            }
        }
        if self.held.len() > target {
            let spare: Vec<String> = self
                .held
                .iter()
                .filter(|(_, h)| sent.duration_since(h.taken) >= self.heartbeat())
                .filter(|(i, _)| self.idle.get(*i).is_some_and(|idle| idle()))
                .map(|(i, _)| i)
                .take(self.held.len() - target)
                .cloned()
                .collect();
            for instance in spare {
                if let Some(h) = self.held.get(&instance).copied() {
                    self.give_up(&instance);
                    release(conn, &instance, &holder, h.epoch).await?;
                    tracing::info!(%instance, "gave the instance up to spread instances over the live processes");
                }
            }
        }
        // A daemon's first round only registers it: daemons started together then all count
        // each other before any takes its share.
        if !std::mem::replace(&mut self.joined, true) && self.role == Role::Daemon {
            return Ok(());
        }
        let free: Vec<String> = self
            .instances
            .keys()
            .filter(|i| !self.held.contains_key(*i))
            .cloned()
            .collect();
        for instance in free {
            if self.held.len() >= target {
                break;
            }
            if let Some(Taken { epoch, unclean }) =
                try_acquire(conn, &instance, &holder, self.ttl).await?
            {
                let quiet_until = (unclean && !self.quiet.is_zero()).then(|| sent + self.quiet);
                if quiet_until.is_some() {
                    tracing::warn!(
                        %instance,
                        epoch,
                        quiet_secs = self.quiet.as_secs(),
                        "took the instance from a holder that let its lease expire (killed, cut off or frozen): no Jamf request before the quiet period ends (ha.takeover_quiet_secs), so a frozen holder's requests and connections are gone first"
                    );
                } else {
                    tracing::info!(%instance, epoch, "holding the instance");
                }
                self.held.insert(
                    instance.clone(),
                    Held {
                        epoch,
                        valid_until,
                        taken: sent,
                        quiet_until,
                    },
                );
            }
        }
        self.publish_quiet_ends(Instant::now());
        Ok(())
    }

    /// Publishes the instances taken whose quiet period is over (or that had none): the fence
    /// lets their writes through and the watchers start their work.
    fn publish_quiet_ends(&mut self, now: Instant) {
        for (instance, h) in self.held.iter_mut() {
            if h.quiet_until.is_some_and(|q| q > now) || self.fence.epoch(instance) == Some(h.epoch)
            {
                continue;
            }
            if h.quiet_until.take().is_some() {
                tracing::info!(%instance, epoch = h.epoch, "quiet period over: holding the instance");
            }
            self.fence.hold(instance, h.epoch);
            if let Some(tx) = self.instances.get(instance) {
                tx.send_replace(Some(h.epoch));
            }
        }
    }

    /// Stops treating `instance` as held: writes are refused from now on, watchers told.
    fn give_up(&mut self, instance: &str) {
        self.held.remove(instance);
        self.fence.drop_instance(instance);
        if let Some(tx) = self.instances.get(instance) {
            tx.send_replace(None);
        }
    }

    /// Gives up locally every instance whose renewal is overdue.
    fn expire(&mut self) {
        let now = Instant::now();
        let overdue: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.valid_until <= now)
            .map(|(i, _)| i.clone())
            .collect();
        for instance in overdue {
            tracing::error!(%instance, "cannot renew the instance's lease in time (database unreachable?): giving it up");
            self.give_up(&instance);
        }
    }

    /// Beats every `ttl / 3` until `stop` turns true; then releases what it holds.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let started = Instant::now();
            let timeout = self.heartbeat() / 2;
            match tokio::time::timeout(timeout, self.beat()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "lease heartbeat failed; reconnecting");
                    self.conn = None;
                }
                Err(_) => {
                    tracing::warn!(?timeout, "lease heartbeat timed out; reconnecting");
                    self.conn = None;
                }
            }
            self.expire();
            // After a daemon's first round (which only registers it) the next comes soon: the
            // daemons started about together have registered by then.
            let pause = match self.held.is_empty() && self.role == Role::Daemon {
                true => self.heartbeat().min(SETTLE),
                false => self.heartbeat(),
            };
            let next = started + pause;
            // Woken for the first local deadline and the first quiet period's end too.
            let deadline = self
                .held
                .values()
                .flat_map(|h| [Some(h.valid_until), h.quiet_until])
                .flatten()
                .min();
            let wake = deadline.map_or(next, |d| d.min(next));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { break },
            }
            self.expire();
        }
        self.release_all().await;
    }

    /// Gives every held instance up (shutdown), and leaves `ha_members`.
    pub async fn release_all(&mut self) {
        let holder = self.fence.holder().to_string();
        let held: Vec<(String, i64)> = self
            .held
            .iter()
            .map(|(i, h)| (i.clone(), h.epoch))
            .collect();
        for (instance, _) in &held {
            self.give_up(instance);
        }
        let (existing, connect) = (self.conn.take(), self.connect.clone());
        let timeout = self.heartbeat();
        let work = async {
            let mut conn = match existing {
                Some(c) => c,
                None => connect.connect().await?,
            };
            for (instance, epoch) in &held {
                release(&mut conn, instance, &holder, *epoch).await?;
            }
            sqlx::query("DELETE FROM ha_members WHERE holder = $1")
                .bind(&holder)
                .execute(&mut conn)
                .await?;
            conn.close().await?;
            Ok::<_, StoreError>(())
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(())) => tracing::info!(released = held.len(), "instance leases released"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot release the leases; they expire on their own")
            }
            Err(_) => tracing::warn!("releasing the leases timed out; they expire on their own"),
        }
    }
}
