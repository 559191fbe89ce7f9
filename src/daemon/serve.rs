//! The daemon's HTTP server loop: hyper connections under a header-read timeout and a cap on
//! open connections (`axum::serve` sets neither, so idle sockets could starve `/healthz`).
//!
//! Invariants: a connection whose request headers have not all arrived within
//! `server.header_timeout_secs` of it opening, or of its previous answer (idle keep-alive),
//! is closed; up to `server.max_connections` connections are served normally; beyond that
//! each new one is served a single request under a short header timeout, by the overflow
//! router (the probes: they answer in a moment, so those connections stay free for them
//! whatever holds the normal ones; an idle socket is gone within a second); beyond twice the
//! cap new connections are closed at once. On shutdown the loop stops accepting and connections
//! finish their request in flight.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Header timeout of a connection over the cap.
const OVER_CAP_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long shutdown waits for open connections to finish.
const DRAIN: Duration = Duration::from_secs(10);

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// What connections are served: `normal` within the cap, `overflow` beyond it.
#[derive(Clone)]
pub struct Routers {
    pub normal: Router,
    pub overflow: Router,
}

/// Serves `routers` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    routers: Routers,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let normal = Arc::new(Semaphore::new(limits.max_connections));
    let extra = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(shutdown.clone()) => break,
        };
        let (permit, header_timeout, keep_alive, router) = match normal.clone().try_acquire_owned()
        {
            Ok(p) => (p, limits.header_timeout, true, &routers.normal),
            Err(_) => match extra.clone().try_acquire_owned() {
                Ok(p) => (p, OVER_CAP_HEADER_TIMEOUT, false, &routers.overflow),
                Err(_) => {
                    tracing::debug!("connection cap reached twice over; closing a new connection");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(keep_alive)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopped(stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    // Let connections finish what they are answering.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN, async {
        let _ = normal.acquire_many(all).await;
        let _ = extra.acquire_many(all).await;
    })
    .await;
    Ok(())
}

/// Resolves once `shutdown` is true (or its sender is gone); holds no borrow across awaits.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
}
