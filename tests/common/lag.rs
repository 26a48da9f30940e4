//! A TCP proxy that holds back everything its upstream sends by a fixed lag: a slow network
//! between a daemon and its etcd. What such a daemon hears of another daemon's change comes
//! `lag` after the change was made, so a call made to it at once always finds its view
//! behind (unless it catches up with the store first), however quick the machine is.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Stops relaying (every connection) when dropped.
pub struct LaggingProxy {
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LaggingProxy {
    /// Relays connections made to [`Self::address`] to `upstream`; what `upstream` sends
    /// back is written on `lag` after it came. What clients send goes on at once. The proxy
    /// runs on a thread of its own: a daemon in the test's process may block the test
    /// runtime's threads while it waits for etcd.
    pub fn start(upstream: SocketAddr, lag: Duration) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the lagging proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address = listener.local_addr().expect("the proxy's address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("the proxy's listener");
                let accept = async {
                    let mut connections = tokio::task::JoinSet::new();
                    while let Ok((client, _)) = listener.accept().await {
                        connections.spawn(relay(client, upstream, lag));
                    }
                };
                tokio::select! {
                    _ = stopped => {}
                    _ = accept => {}
                }
            });
        });
        LaggingProxy {
            address,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for LaggingProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, lag: Duration) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (held, mut due) = tokio::sync::mpsc::unbounded_channel();
    let forward = tokio::io::copy(&mut client_read, &mut server_write);
    let hold = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(read @ 1..) = server_read.read(&mut buffer).await {
            let when = tokio::time::Instant::now() + lag;
            if held.send((when, buffer[..read].to_vec())).is_err() {
                break;
            }
        }
    };
    let back = async move {
        while let Some((when, bytes)) = due.recv().await {
            tokio::time::sleep_until(when).await;
            if client_write.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = forward => {}
        _ = async { tokio::join!(hold, back) } => {}
    }
}
