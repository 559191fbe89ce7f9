//! The simulator's TCP connections: counted (the number Jamf's guidance limits), and closed
//! after an idle time as a real server's keep-alive timeout closes them.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::state::{lock, SimState};

/// Counts open TCP connections (the number Jamf's guidance limits).
pub(super) struct CountingListener {
    pub(super) inner: TcpListener,
    pub(super) state: Arc<SimState>,
}

pub(super) struct CountedStream {
    inner: TcpStream,
    state: Arc<SimState>,
    /// A connection nothing crossed for this long is closed, as a server's keep-alive (and
    /// write) timeout does (zero: never).
    idle: Duration,
    /// Fires `idle` after the last bytes crossed. Reset, never replaced: the server may not
    /// poll the connection again while it waits, so the timer must keep the waker it has.
    idle_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl CountedStream {
    /// Bytes crossed: the idle clock starts again.
    fn active(&mut self) {
        let idle = self.idle;
        if let Some(t) = self.idle_timer.as_mut() {
            t.as_mut().reset(tokio::time::Instant::now() + idle);
        }
    }

    /// Whether the connection has been idle for its timeout (polled while nothing comes).
    fn idle_expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        match self.idle_timer.as_mut() {
            Some(t) => std::future::Future::poll(t.as_mut(), cx).is_ready(),
            None => false,
        }
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

impl axum::serve::Listener for CountingListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    // Without no-delay, keep-alive answers stall ~40 ms (Nagle + delayed ACK).
                    let _ = stream.set_nodelay(true);
                    let open = self.state.connections.fetch_add(1, Ordering::SeqCst) + 1;
                    {
                        let mut inner = lock(&self.state.inner);
                        inner.stats.connections_opened += 1;
                        inner.stats.peak_connections = inner.stats.peak_connections.max(open);
                    }
                    let idle = Duration::from_millis(lock(&self.state.cfg).idle_timeout_ms);
                    return (
                        CountedStream {
                            inner: stream,
                            state: self.state.clone(),
                            idle,
                            idle_timer: (!idle.is_zero())
                                .then(|| Box::pin(tokio::time::sleep(idle))),
                        },
                        addr,
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.active();
                }
                std::task::Poll::Ready(r)
            }
            // Idle past the keep-alive timeout: the end of the stream, so the server closes it.
            std::task::Poll::Pending if self.idle_expired(cx) => std::task::Poll::Ready(Ok(())),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.active();
                }
                std::task::Poll::Ready(Ok(n))
            }
            // A client that stopped reading (frozen) while an answer waits to be sent: the
            // server gives the connection up after the same timeout.
            std::task::Poll::Pending if self.idle_expired(cx) => std::task::Poll::Ready(Err(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "client stopped reading"),
            )),
            other => other,
        }
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
