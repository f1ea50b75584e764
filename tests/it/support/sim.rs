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

/// Creates a SNAPSHOT job for the 10-thing group through the SDK's
/// CreateJob: one execution starts per simulated second and runs 5 s, so it
/// completes 14 s after creation.
pub async fn create_fleet_job(sim: &TestSim, job_id: &str) {
    super::iot_client(&sim.url)
        .create_job()
        .job_id(job_id)
        .targets(format!(
            "arn:aws:iot:{}:123456789012:thinggroup/fleet",
            super::REGION
        ))
        .document("{}")
        .send()
        .await
        .unwrap();
}

/// One exchange with the simulator's admin API: the status code and the body.
pub async fn admin(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    http::admin_request(addr, method, path, body).await.unwrap()
}
