//! The fake's two axum servers and their listener, whose connections all die when
//! the fake stops.

use super::*;

pub(super) fn spawn_servers(state: &Arc<FakeState>, reg: TcpListener, cdn: TcpListener) -> Running {
    let (kill, rx) = watch::channel(false);
    let registry = Router::new().fallback(registry_handler).with_state(state.clone());
    let cdn_router = Router::new().fallback(cdn_handler).with_state(state.clone());
    let reg = KillableListener {
        inner: reg,
        kill: rx.clone(),
    };
    let cdn = KillableListener { inner: cdn, kill: rx };
    let tasks = vec![
        tokio::spawn(async move {
            let _ = axum::serve(reg, registry).await;
        }),
        tokio::spawn(async move {
            let _ = axum::serve(cdn, cdn_router).await;
        }),
    ];
    Running { tasks, kill }
}

/// Listener whose connections all die when the kill switch flips, so that
/// `stop()` also cuts keep-alive connections pooled by the client (axum runs
/// each connection in its own task, which aborting the serve task leaves
/// alive).
struct KillableListener {
    inner: TcpListener,
    kill: watch::Receiver<bool>,
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let mut rx = self.kill.clone();
                    let kill: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
                        let _ = rx.wait_for(|k| *k).await;
                    });
                    let io = KillableIo {
                        inner: stream,
                        kill,
                        dead: false,
                    };
                    return (io, addr);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

struct KillableIo {
    inner: TcpStream,
    kill: Pin<Box<dyn Future<Output = ()> + Send>>,
    dead: bool,
}

impl KillableIo {
    fn is_dead(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.dead && self.kill.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        self.dead
    }
}

fn killed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "fake upstream stopped")
}

impl AsyncRead for KillableIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.is_dead(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.is_dead(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_dead(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_dead(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
