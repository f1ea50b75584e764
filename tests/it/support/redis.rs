//! A real `redis-server` (Debian/Ubuntu package `redis-server`, 7.x) on a
//! free loopback port, persistence off, stopped when dropped. Where the
//! binary is missing, it is installed with apt-get (as root) or the test
//! fails naming the package; nothing is skipped. Take [`redis_binary`]
//! first in a test, before starting anything on the clock: the first
//! install takes a while.

use std::path::PathBuf;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::{Child, Command},
};

/// The `redis-server` binary, installed first if needed.
pub async fn redis_binary() -> PathBuf {
    super::debian::binary("redis-server", "redis-server").await
}

/// A redis-server this test started.
pub struct RedisServer {
    binary: PathBuf,
    pub port: u16,
    /// Extra arguments (TLS files, a password).
    extra: Vec<String>,
    /// The TLS port, when it serves TLS.
    tls_port: Option<u16>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free loopback port.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts one with extra arguments. With TLS files among them it also
    /// serves TLS, on [`RedisServer::tls_port`]; the plaintext port stays
    /// open for the readiness check (with `--requirepass` it answers PING
    /// only with an error, which still shows it is up).
    pub async fn start_with(extra: &[&str]) -> Self {
        let binary = redis_binary().await;
        let tls = extra.contains(&"--tls-cert-file");
        for _ in 0..5 {
            let mut server = Self {
                binary: binary.clone(),
                port: super::debian::free_port(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                tls_port: tls.then(super::debian::free_port),
                child: None,
            };
            if server.run().await {
                return server;
            }
        }
        panic!("redis-server did not start on a free port in five tries");
    }

    /// The TLS port, if it serves TLS.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the process on `self.port`; whether it answers PING.
    async fn run(&mut self) -> bool {
        let mut command = Command::new(&self.binary);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(&self.extra);
        if let Some(tls_port) = self.tls_port {
            command.args(["--tls-port", &tls_port.to_string()]);
        }
        self.child =
            super::debian::spawn_until_ready(command, "redis-server", async || self.pong().await)
                .await;
        self.child.is_some()
    }

    async fn pong(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        // "+PONG", or "-NOAUTH ..." behind a password: up either way.
        let mut reply = [0u8; 1];
        conn.write_all(b"PING\r\n").await.is_ok()
            && conn.read_exact(&mut reply).await.is_ok()
            && (reply == *b"+" || reply == *b"-")
    }

    /// Kills it (SIGKILL), as a crash or a network cut would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port (empty: persistence is off).
    pub async fn restart(&mut self) {
        assert!(
            self.run().await,
            "redis-server did not restart on {}",
            self.port
        );
    }

    /// A client connection, for looking at the keys.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("a connection to the test's redis-server")
    }
}
