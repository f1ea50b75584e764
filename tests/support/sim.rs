//! The embedded simulator in-process on 127.0.0.1:0, on a manual clock.

use std::{sync::Arc, time::Duration};

use iot_jobs_gateway::simulator::{SimConfig, Simulator, clock::ManualClock, http};
use tokio::net::TcpListener;

/// 2030-01-01T00:00:00Z: a fixed start so schedules are reproducible.
pub const START: i64 = 1_893_456_000_000;

pub struct TestSim {
    pub sim: Simulator,
    pub clock: Arc<ManualClock>,
    pub url: String,
}

impl TestSim {
    /// A simulator with `config`, its clock stopped at [`START`].
    pub async fn start(config: SimConfig) -> Self {
        let clock = Arc::new(ManualClock::new(START));
        let sim = Simulator::new(config, clock.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(http::serve(listener, sim.clone(), std::future::pending()));
        Self { sim, clock, url }
    }

    /// The default simulator without a rate limit (tests that count calls
    /// should not trip over it unless they mean to).
    pub async fn unlimited() -> Self {
        Self::start(SimConfig {
            describe_rate_limit: None,
            ..SimConfig::default()
        })
        .await
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// A minimal HTTP/1.1 exchange with the simulator's admin API:
/// returns the status code and the body.
pub async fn admin(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
