//! The simulator's events side: once given a broker URL it publishes the AWS
//! IoT Jobs events of [`super::events`] with QoS 1 through `rumqttc` (or, in
//! the demo, hands them to the gateway in the same process),
//! reconnecting with backoff when the broker goes away, and lets tests and
//! benchmarks publish forged events (a `completed` for a job still running,
//! a burst of execution events) through the same connection.
//!
//! Three tasks: one scans the jobs every [`TICK`] (time passes on its own
//! with the system clock, and a manual clock moves without telling the
//! simulator); one hands queued messages to the MQTT client; one drives the
//! client's event loop and reconnects. Admin actions scan the job they
//! touch at once, so their events do not wait for a tick.
//!
//! Messages queued while the broker is unreachable are dropped when the
//! client reconnects with a clean session: like AWS's events, they reach
//! only subscribers that are connected at the time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{
    SimError, Simulator,
    events::{
        EXECUTION_OPERATIONS, JOB_OPERATIONS, Outgoing, Payloads, Tracker, execution_topic,
        job_topic,
    },
};

/// How often the jobs are compared with what was published.
pub const TICK: Duration = Duration::from_millis(100);
/// First and longest pause between two connection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// Messages the MQTT client holds before the hand-over task waits.
const CLIENT_QUEUE: usize = 1_000;

/// Why events could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("events MQTT URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("the simulator publishes no events: give it a broker URL (--events-mqtt-url)")]
    Off,
    #[error("the simulator already publishes events")]
    AlreadyOn,
    #[error("{operation:?} is not an AWS IoT Jobs {kind} event (one of {known})")]
    Operation {
        kind: &'static str,
        operation: String,
        known: String,
    },
}

impl From<PublishError> for SimError {
    fn from(err: PublishError) -> Self {
        SimError::invalid(err.to_string())
    }
}

/// What the publisher has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsStats {
    /// Whether the MQTT connection is up now.
    pub connected: bool,
    /// Connections made (the first and every reconnection).
    pub connections: u64,
    /// Messages handed to the MQTT client.
    pub queued: u64,
    /// Messages the broker acknowledged (PUBACK).
    pub acknowledged: u64,
}

#[derive(Default)]
struct Counters {
    connected: AtomicBool,
    connections: AtomicU64,
    queued: AtomicU64,
    acknowledged: AtomicU64,
}

/// The publisher's part of the simulator's state.
pub(super) struct Events {
    pub(super) tracker: Tracker,
    counters: Arc<Counters>,
}

impl Simulator {
    /// Publishes AWS IoT Jobs events to the MQTT broker at `url`
    /// (`mqtt://host:port`, optionally `?client_id=…`) from now on; what
    /// happened before is not announced. Needs a tokio runtime: it spawns
    /// the publisher's tasks, which live as long as the runtime.
    pub fn publish_events_to(&self, url: &str) -> Result<(), PublishError> {
        let options = mqtt_options(url)?;
        let (queued, counters) = self.start_events()?;
        let (client, eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
        tokio::spawn(hand_over(queued, client, counters.clone()));
        tokio::spawn(drive(eventloop, counters, url.to_owned()));
        Ok(())
    }

    /// Hands the AWS IoT Jobs events' topics to the returned stream from
    /// now on, in the order they are made, with no broker between: the
    /// demo's gateway reads them in the same process. Needs a tokio runtime.
    pub fn publish_events_in_process(
        &self,
    ) -> Result<impl futures_util::Stream<Item = String> + Send + 'static, PublishError> {
        let (queued, counters) = self.start_events()?;
        counters.connected.store(true, Ordering::SeqCst);
        counters.connections.store(1, Ordering::SeqCst);
        Ok(futures_util::stream::unfold(queued, move |mut queued| {
            let counters = counters.clone();
            async move {
                let message = queued.recv().await?;
                counters.queued.fetch_add(1, Ordering::SeqCst);
                counters.acknowledged.fetch_add(1, Ordering::SeqCst);
                Some((message.topic, queued))
            }
        }))
    }

    /// Starts tracking the jobs for events (once) and the tick that scans
    /// them; the events made go to the returned channel.
    fn start_events(
        &self,
    ) -> Result<(mpsc::UnboundedReceiver<Outgoing>, Arc<Counters>), PublishError> {
        let (out, queued) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        {
            let now = self.now();
            let mut guard = self.state();
            let state = &mut *guard;
            if state.events.is_some() {
                return Err(PublishError::AlreadyOn);
            }
            let payloads = Payloads {
                arn_prefix: format!(
                    "arn:aws:iot:{}:{}:",
                    self.config.region, self.config.account
                ),
            };
            let delay = super::millis(self.config.deletion_delay);
            let mut tracker = Tracker::new(payloads, delay, out);
            tracker.baseline(state.jobs.values(), now);
            state.events = Some(Events {
                tracker,
                counters: counters.clone(),
            });
        }
        tokio::spawn(tick(self.clone()));
        Ok((queued, counters))
    }

    /// Publishes `payload` on `topic` as it is (QoS 1), whatever it says.
    pub fn publish_raw(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), PublishError> {
        let state = self.state();
        let events = state.events.as_ref().ok_or(PublishError::Off)?;
        events.tracker.send(Outgoing {
            topic: topic.to_owned(),
            payload: payload.into(),
        });
        Ok(())
    }

    /// Publishes a job event (`completed`, `canceled`, …) for `job_id` in
    /// AWS's shape, whether or not it happened: a forged event.
    pub fn forge_job_event(&self, job_id: &str, operation: &str) -> Result<(), PublishError> {
        let operation = known(&JOB_OPERATIONS, "job", operation)?;
        let now = self.now();
        let state = self.state();
        let events = state.events.as_ref().ok_or(PublishError::Off)?;
        let payload = match state.jobs.get(job_id) {
            Some(job) => events.tracker.payloads().job(job, operation, now, now),
            None => json!({
                "eventType": "JOB", "eventId": super::events::event_id(),
                "timestamp": now.div_euclid(1000), "operation": operation,
                "jobId": job_id, "status": operation.to_uppercase(),
            }),
        };
        events.tracker.send(Outgoing {
            topic: job_topic(job_id, operation),
            payload: payload.to_string().into_bytes(),
        });
        Ok(())
    }

    /// Publishes `count` execution events (`succeeded`, `failed`, …) for
    /// `job_id`, one per thing (the job's things in turn, or made-up ones),
    /// whether or not they happened: a burst as a large rollout sends.
    pub fn forge_execution_events(
        &self,
        job_id: &str,
        operation: &str,
        count: usize,
    ) -> Result<(), PublishError> {
        let operation = known(&EXECUTION_OPERATIONS, "job execution", operation)?;
        let now = self.now();
        let state = self.state();
        let events = state.events.as_ref().ok_or(PublishError::Off)?;
        let things: Vec<String> = state
            .jobs
            .get(job_id)
            .map(|job| job.executions.iter().map(|e| e.thing.clone()).collect())
            .unwrap_or_default();
        let status = operation.to_uppercase();
        for i in 0..count {
            let thing = match things.get(i % things.len().max(1)) {
                Some(thing) => thing.clone(),
                None => format!("{job_id}-thing-{i}"),
            };
            let payload = events
                .tracker
                .payloads()
                .execution(job_id, &thing, operation, &status, now);
            events.tracker.send(Outgoing {
                topic: execution_topic(job_id, operation),
                payload: payload.to_string().into_bytes(),
            });
        }
        Ok(())
    }

    /// The publisher's counters, or `None` when events are off.
    pub fn events_stats(&self) -> Option<EventsStats> {
        let state = self.state();
        let c = &state.events.as_ref()?.counters;
        Some(EventsStats {
            connected: c.connected.load(Ordering::SeqCst),
            connections: c.connections.load(Ordering::SeqCst),
            queued: c.queued.load(Ordering::SeqCst),
            acknowledged: c.acknowledged.load(Ordering::SeqCst),
        })
    }

    /// Compares every job with what was published, if the clock moved.
    pub(super) fn scan_events(&self) {
        let now = self.now();
        let mut guard = self.state();
        let state = &mut *guard;
        if let Some(events) = state.events.as_mut() {
            events.tracker.scan(state.jobs.values(), now, false);
        }
    }
}

fn known(
    operations: &[&'static str],
    kind: &'static str,
    operation: &str,
) -> Result<&'static str, PublishError> {
    operations
        .iter()
        .find(|known| **known == operation)
        .copied()
        .ok_or_else(|| PublishError::Operation {
            kind,
            operation: operation.to_owned(),
            known: operations.join(", "),
        })
}

/// Client options for `mqtt://host:port`; a random client id unless the
/// URL names one.
fn mqtt_options(url: &str) -> Result<MqttOptions, PublishError> {
    let bad = |reason: String| PublishError::Url {
        url: url.to_owned(),
        reason,
    };
    // rumqttc builds mqtts:// with the process's default TLS provider,
    // which the simulator does not install: plain MQTT only.
    if !url.starts_with("mqtt://") && !url.starts_with("tcp://") {
        return Err(bad(
            "the simulator publishes over plain mqtt://host:port".into()
        ));
    }
    let with_id = if url.contains("client_id=") {
        url.to_owned()
    } else {
        let id = format!(
            "iot-jobs-simulator-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}client_id={id}")
    };
    MqttOptions::parse_url(with_id).map_err(|e| bad(e.to_string()))
}

/// Hands queued messages to the MQTT client, in order.
async fn hand_over(
    mut queued: mpsc::UnboundedReceiver<Outgoing>,
    client: AsyncClient,
    counters: Arc<Counters>,
) {
    while let Some(message) = queued.recv().await {
        let sent = client
            .publish(message.topic, QoS::AtLeastOnce, false, message.payload)
            .await;
        if sent.is_err() {
            return;
        }
        counters.queued.fetch_add(1, Ordering::SeqCst);
    }
}

/// Drives the MQTT connection: polling the event loop after an error
/// reconnects, after a pause that doubles up to two seconds.
async fn drive(mut eventloop: EventLoop, counters: Arc<Counters>, broker: String) {
    let mut pause = BACKOFF.0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                counters.connected.store(true, Ordering::SeqCst);
                let n = counters.connections.fetch_add(1, Ordering::SeqCst) + 1;
                pause = BACKOFF.0;
                tracing::info!(%broker, connections = n, "simulator publishing AWS IoT Jobs events");
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                counters.acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return,
            Err(err) => {
                if counters.connected.swap(false, Ordering::SeqCst) {
                    tracing::warn!(%broker, error = %err, "simulator lost the events broker; reconnecting");
                } else {
                    tracing::debug!(%broker, error = %err, "events broker unreachable");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Scans the jobs every [`TICK`].
async fn tick(sim: Simulator) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        sim.scan_events();
    }
}
