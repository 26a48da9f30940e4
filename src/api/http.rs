//! The HTTP/1.1 server the HTTP doors (the AWS door, the console) share: a task per
//! connection, keep-alive, TLS when given, and a graceful drain when the daemon closes.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// How long a shutting-down door waits for the requests in flight to be answered.
pub const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// Most connections a door holds open at once; past it, new ones are closed at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a client may take to send a request's head (a connection that sends nothing,
/// or sends slowly, is closed after it).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A door that answers HTTP requests.
pub trait HttpDoor: Send + Sync + 'static {
    /// The door's name in the daemon's log.
    const NAME: &'static str;

    /// The answer to one request from `peer` (`secure`: it arrived over TLS).
    fn handle(
        self: Arc<Self>,
        request: http::Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
    ) -> impl Future<Output = http::Response<Full<Bytes>>> + Send;
}

/// Serves `listener` (HTTP/1.1, over TLS when `tls` is given, a task per connection) until
/// `closing` turns true; then drains: stops accepting, lets the requests in flight finish and
/// closes each connection after its answer, for at most [`DRAIN_DEADLINE`], after which the
/// connections left are dropped. The task ends when the door is drained.
pub fn serve<D: HttpDoor>(
    door: Arc<D>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            tokio::select! {
                _ = until_closing(&mut closing) => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let Ok(permit) = open.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, door = D::NAME, limit = MAX_CONNECTIONS, "too many connections open: closing a new one");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let door = door.clone();
                    let tls = tls.clone();
                    let closing = closing.clone();
                    connections.spawn(async move {
                        let _open = permit;
                        match tls {
                            Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => serve_connection(door, stream, peer, true, closing).await,
                                Ok(Err(error)) => {
                                    tracing::debug!(%peer, %error, door = D::NAME, "TLS handshake failed");
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, door = D::NAME, "TLS handshake not finished in time");
                                }
                            },
                            None => serve_connection(door, stream, peer, false, closing).await,
                        }
                    });
                }
            }
        }
        drop(listener);
        let in_flight = connections.len();
        let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = connections.len(),
                door = D::NAME,
                "connections still busy after the drain deadline; dropping them"
            );
            connections.shutdown().await;
        }
        tracing::info!(connections = in_flight, door = D::NAME, "door drained");
    })
}

/// One connection's requests, kept alive between them until the door closes: then the
/// request in flight, if any, is answered and the connection closed.
async fn serve_connection<D, Stream>(
    door: Arc<D>,
    stream: Stream,
    peer: SocketAddr,
    secure: bool,
    mut closing: tokio::sync::watch::Receiver<bool>,
) where
    D: HttpDoor,
    Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let service = service_fn(move |request: http::Request<Incoming>| {
        let door = door.clone();
        async move { Ok::<_, std::convert::Infallible>(door.handle(request, peer, secure).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = until_closing(&mut closing) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Resolves once the door is told to close (or its daemon is gone).
async fn until_closing(closing: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}
