//! What an operator reads in the logs when AWS throttles the gateway even
//! though it kept to its rate: a warning when the gateway lowers its own
//! rate, and a line when it is back at the configured rate. (The test's
//! runtime is one thread, so the capture is that thread's subscriber.)

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use iot_jobs_gateway::{
    backends::local::limit::LocalRateLimit,
    domain::limit::{LimiterSettings, RateLimit, Share},
};
use tokio::time::Instant;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn lowering_and_restoring_the_rate_is_logged() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let _capture = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let limiter = LocalRateLimit::new(LimiterSettings {
        rate: 10.0,
        burst: 1,
        max_waiters: 10,
        ..LimiterSettings::default()
    });
    let far = Instant::now() + Duration::from_secs(3600);

    let permit = limiter.acquire(far, &Share::of("test")).await.unwrap();
    limiter.throttled(permit);
    for _ in 0..20 {
        tokio::time::advance(Duration::from_secs(1)).await;
        let permit = limiter.acquire(far, &Share::of("test")).await.unwrap();
        limiter.answered(permit);
    }

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lowered = logs
        .lines()
        .find(|l| l.contains("Lowering the gateway's rate"))
        .unwrap_or_else(|| panic!("no warning:\n{logs}"));
    assert!(lowered.contains("WARN"), "{lowered}");
    assert!(lowered.contains("from_per_sec=10"), "{lowered}");
    assert!(lowered.contains("to_per_sec=7"), "{lowered}");
    assert!(logs.contains("back at its configured rate"), "{logs}");
    assert_eq!(limiter.current_rate(), 10.0);
}
