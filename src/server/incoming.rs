//! The listener's connections, plaintext or TLS, and what the gateway
//! knows of each peer ([`Peer`], in every request's extensions).
//!
//! TLS handshakes run in their own tasks, bounded by
//! [`HANDSHAKE_TIMEOUT`], so a slow or silent client never holds up the
//! next one. A client certificate (mTLS) is read once per connection,
//! here, not once per call.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream, wrappers::TcpListenerStream};
use tonic::transport::server::Connected;
use tracing::{info, warn};

use crate::{
    auth::identity::{self, IdentityError},
    tls::RotatingTls,
};

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// What the gateway knows of a connection's peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub addr: Option<SocketAddr>,
    /// The address as text, made once per connection: the caller's name
    /// while callers are not authenticated.
    pub name: Arc<str>,
    /// With mTLS: the caller its certificate names, or why it names none.
    pub certified: Option<Result<Arc<str>, IdentityError>>,
}

impl Peer {
    fn new(addr: Option<SocketAddr>, certified: Option<Result<Arc<str>, IdentityError>>) -> Self {
        let name = addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        Self {
            addr,
            name: name.into(),
            certified,
        }
    }
}

/// A client connection.
pub struct Conn {
    stream: Stream_,
    peer: Peer,
}

enum Stream_ {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream_::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream_::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream_::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream_::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream_::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream_::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream_::Plain(s) => s.is_write_vectored(),
            Stream_::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream_::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream_::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream_::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream_::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of `listener`, TLS-wrapped when `tls` is given.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<RotatingTls>>,
) -> Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>> {
    match tls {
        None => Box::pin(TcpListenerStream::new(listener).map(|accepted| {
            accepted.map(|stream| {
                // Small unary answers: don't let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                let peer = Peer::new(stream.peer_addr().ok(), None);
                Conn {
                    stream: Stream_::Plain(stream),
                    peer,
                }
            })
        })),
        Some(tls) => {
            let (tx, rx) = mpsc::channel(ACCEPTED_BACKLOG);
            tokio::spawn(accept_tls(listener, tls, tx));
            Box::pin(ReceiverStream::new(rx).map(Ok))
        }
    }
}

/// Accepts connections and handshakes each in its own task, until the
/// server stops taking them.
async fn accept_tls(listener: TcpListener, tls: Arc<RotatingTls>, tx: mpsc::Sender<Conn>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = tx.closed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: let it pass.
                warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, tx) = (tls.acceptor(), tx.clone());
        let mtls = tls.requires_client_certificates();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    info!(peer = %addr, reason = %err, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    info!(peer = %addr, timeout_s = HANDSHAKE_TIMEOUT.as_secs(), "TLS handshake timed out");
                    return;
                }
            };
            let certified = mtls.then(|| {
                let (_, session) = stream.get_ref();
                match session.peer_certificates().and_then(|c| c.first()) {
                    Some(leaf) => identity::of_certificate(leaf).map(Arc::from),
                    None => Err(IdentityError::Nameless),
                }
            });
            let conn = Conn {
                stream: Stream_::Tls(Box::new(stream)),
                peer: Peer::new(Some(addr), certified),
            };
            let _ = tx.send(conn).await;
        });
    }
}
