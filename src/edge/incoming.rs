//! The listener's connections, plaintext or TLS, and what the gateway
//! knows of each peer ([`Peer`], in every request's extensions).
//!
//! Every connection passes the listener's [`Gate`]: its cap on open
//! connections, and one deadline from accept for the TLS handshake and the
//! HTTP/2 preface. TLS handshakes run in their own tasks, so a slow or
//! silent client never holds up the next one. A client certificate (mTLS)
//! is read once per connection, here, not once per call.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::transport::server::Connected;

use crate::security::{
    auth::identity::{self, IdentityError},
    connections::{Gate, Guarded},
    peer::Peer,
    tls::RotatingTls,
};

/// Connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// A client connection.
pub struct Conn {
    stream: Guarded<Stream_>,
    peer: Peer,
}

/// A connection's bytes, plaintext or TLS.
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
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl AsyncRead for Stream_ {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream_::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream_::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream_ {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream_::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream_::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream_::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream_::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream_::Plain(s) => s.is_write_vectored(),
            Stream_::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream_::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream_::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream_::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream_::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of `listener` through `gate`, TLS-wrapped when `tls`
/// is given.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<RotatingTls>>,
    gate: Gate,
) -> Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_BACKLOG);
    tokio::spawn(accept(listener, tls, gate, tx));
    Box::pin(ReceiverStream::new(rx).map(Ok))
}

/// Accepts connections (handshaking each TLS one in its own task) until
/// the server stops taking them.
async fn accept(
    listener: TcpListener,
    tls: Option<Arc<RotatingTls>>,
    gate: Gate,
    tx: mpsc::Sender<Conn>,
) {
    loop {
        let admitted = tokio::select! {
            admitted = gate.accept(&listener) => admitted,
            () = tx.closed() => return,
        };
        let (stream, parts) = admitted.split();
        let Some(tls) = &tls else {
            let peer = Peer::new(Some(parts.addr), None);
            let stream = gate.guard(Stream_::Plain(stream), parts);
            if tx.send(Conn { stream, peer }).await.is_err() {
                return;
            }
            continue;
        };
        let (acceptor, tx, gate) = (tls.acceptor(), tx.clone(), gate.clone());
        let mtls = tls.requires_client_certificates();
        tokio::spawn(async move {
            let addr = parts.addr;
            let stream =
                match tokio::time::timeout_at(parts.deadline, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => return gate.handshake_failed(addr, &err),
                    Err(_) => return gate.timed_out(addr, "TLS handshake"),
                };
            let certified = mtls.then(|| certified(&stream));
            let conn = Conn {
                stream: gate.guard(Stream_::Tls(Box::new(stream)), parts),
                peer: Peer::new(Some(addr), certified),
            };
            let _ = tx.send(conn).await;
        });
    }
}

/// The caller a TLS connection's client certificate names.
fn certified(stream: &TlsStream<TcpStream>) -> Result<Arc<str>, IdentityError> {
    let (_, session) = stream.get_ref();
    match session.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => identity::of_certificate(leaf).map(Arc::from),
        None => Err(IdentityError::Nameless),
    }
}
