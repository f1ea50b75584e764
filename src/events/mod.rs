//! AWS IoT Jobs events over MQTT: they decide *when* a watched job is
//! polled, never what watchers see.
//!
//! With jobs events enabled in the account's event configuration, AWS IoT
//! publishes to reserved topics when a job or one of its executions
//! changes: `$aws/events/job/{jobId}/{completed|canceled|deleted|
//! cancellation_in_progress|deletion_in_progress}` and
//! `$aws/events/jobExecution/{jobId}/{succeeded|failed|rejected|canceled|
//! timed_out|removed|deleted}`. The gateway subscribes to both with
//! wildcards (two subscriptions, whatever the number of watched jobs:
//! AWS IoT allows 50 per connection, and an IoT policy grants
//! `iot:Subscribe` on the two topic filters once). An event about a
//! watched job makes its next poll due at once, ahead of the schedule but
//! still through the rate limit at poll priority; an event that the job
//! ended is polled first. The job's cached answers are set aside too, so
//! the next call asks AWS.
//!
//! Only the topic is read: the job id and what kind of change it was. The
//! state on a watch stream always comes from a DescribeJob answer, so a
//! forged, repeated, lost or reordered message can hasten or delay a poll
//! but never put a wrong state on a stream.
//!
//! Losing the broker falls back to polling on the schedule alone (one
//! warning); the client reconnects with backoff, subscribes again, and
//! polls every watched job once (events may have been missed meanwhile).

pub mod broker;

use std::{path::PathBuf, sync::Arc, time::Duration};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::{
    jobs::{Jobs, watch::observation::Trigger},
    tls::TlsError,
};

/// The topic filters subscribed to.
pub const TOPICS: [&str; 2] = ["$aws/events/job/+/+", "$aws/events/jobExecution/+/+"];

/// Where the events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsSettings {
    /// `mqtts://host:8883` (AWS IoT Core's data endpoint) or `mqtt://host:port`.
    pub url: String,
    /// The MQTT client id (unique per replica: a broker drops the older of
    /// two connections with one id).
    pub client_id: String,
    /// CA bundle (PEM) for `mqtts://`; the system's roots without it.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for AWS IoT Core's X.509 authentication.
    pub client_auth: Option<(PathBuf, PathBuf)>,
}

/// Why the events settings cannot work.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The URL.
    #[error("--events-mqtt-url: {0}")]
    Url(String),
    /// A certificate, key or CA file.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What an event topic says: the job, and why to poll it.
pub fn parse_topic(topic: &str) -> Option<(&str, Trigger)> {
    let rest = topic.strip_prefix("$aws/events/")?;
    let (kind, rest) = rest.split_once('/')?;
    let (job_id, event) = rest.split_once('/')?;
    let valid_id = !job_id.is_empty()
        && job_id.len() <= 64
        && job_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_id || event.contains('/') {
        return None;
    }
    match (kind, event) {
        ("job", "completed" | "canceled" | "deleted") => Some((job_id, Trigger::FinalEvent)),
        ("job", "cancellation_in_progress" | "deletion_in_progress") => {
            Some((job_id, Trigger::Event))
        }
        (
            "jobExecution",
            "succeeded" | "failed" | "rejected" | "canceled" | "timed_out" | "removed" | "deleted",
        ) => Some((job_id, Trigger::Event)),
        _ => None,
    }
}

/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A connection to the events broker, ready to start.
pub struct Subscriber {
    options: MqttOptions,
    url: String,
}

impl Subscriber {
    /// Reads the settings' files; fails if they cannot work.
    pub fn new(settings: &EventsSettings) -> Result<Self, EventsError> {
        Ok(Self {
            options: options(settings)?,
            url: settings.url.clone(),
        })
    }

    /// Connects and turns events into polls of `jobs` until the process
    /// ends (or the task is aborted).
    pub fn start(self, jobs: Jobs) -> JoinHandle<()> {
        tokio::spawn(listen(self.options, self.url, jobs))
    }
}

fn options(settings: &EventsSettings) -> Result<MqttOptions, EventsError> {
    let uri: http::Uri = settings.url.parse().map_err(|e| {
        EventsError::Url(format!("{e}; write mqtts://host:8883 or mqtt://host:1883"))
    })?;
    let host = uri
        .host()
        .ok_or_else(|| EventsError::Url("no host".into()))?;
    let tls = match uri.scheme_str() {
        Some("mqtts") => true,
        Some("mqtt") => false,
        _ => {
            return Err(EventsError::Url(
                "the scheme must be mqtts:// or mqtt://".into(),
            ));
        }
    };
    let port = uri.port_u16().unwrap_or(if tls { 8883 } else { 1883 });
    let mut options = MqttOptions::new(settings.client_id.clone(), host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true);
    if tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(client_config(settings)?),
        )));
    }
    Ok(options)
}

/// rustls on aws-lc-rs, the TLS stack of the rest of the gateway; the
/// files are read as the listener's own ([`crate::tls`]).
fn client_config(settings: &EventsSettings) -> Result<rustls::ClientConfig, EventsError> {
    use crate::tls::{certificates, file, private_key};
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca {
        Some(path) => {
            let what = "--events-mqtt-ca";
            for cert in certificates(what, path, &file(what, path)?)? {
                roots.add(cert).map_err(|e| TlsError::Content {
                    what,
                    path: path.clone(),
                    problem: e.to_string(),
                })?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EventsError::Url(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &settings.client_auth {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let (cert, key) = ("--events-mqtt-cert", "--events-mqtt-key");
            let chain = certificates(cert, cert_path, &file(cert, cert_path)?)?;
            let key = private_key(key, key_path, &file(key, key_path)?)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Pair {
                    cert: cert_path.clone(),
                    key: key_path.clone(),
                    problem: e.to_string(),
                })?
        }
    };
    Ok(config)
}

/// The client's loop: (re)connects, subscribes, and hands events over.
async fn listen(options: MqttOptions, url: String, jobs: Jobs) {
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut backoff = Duration::from_millis(500);
    let mut connected = false;
    let mut ever_connected = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                for topic in TOPICS {
                    if let Err(err) = client.try_subscribe(topic, QoS::AtLeastOnce) {
                        warn!(topic, error = %err, "cannot subscribe to AWS IoT Jobs events");
                    }
                }
                connected = true;
                backoff = Duration::from_millis(500);
                if ever_connected {
                    info!(%url, "AWS IoT Jobs events: connected again; polling every watched job once for the events missed meanwhile");
                } else {
                    info!(%url, topics = ?TOPICS, "AWS IoT Jobs events: connected; watched jobs are polled as soon as they change");
                }
                ever_connected = true;
                // On a first connection too: events from before it are lost.
                jobs.watches().hasten_all(Trigger::CatchUp);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => match parse_topic(&publish.topic) {
                Some((job_id, trigger)) => {
                    let watched = jobs.job_event(job_id, trigger).await;
                    debug!(topic = %publish.topic, watched, "AWS IoT Jobs event");
                }
                None => debug!(topic = %publish.topic, "not an AWS IoT Jobs event; ignored"),
            },
            Ok(_) => {}
            Err(err) => {
                if connected || (!ever_connected && backoff == Duration::from_millis(500)) {
                    warn!(%url, error = %err, "AWS IoT Jobs events: no connection to the broker; watched jobs are polled on the schedule alone until it is back");
                }
                connected = false;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_the_job_and_whether_it_ended() {
        assert_eq!(
            parse_topic("$aws/events/job/fw-1/completed"),
            Some(("fw-1", Trigger::FinalEvent))
        );
        assert_eq!(
            parse_topic("$aws/events/job/fw-1/deletion_in_progress"),
            Some(("fw-1", Trigger::Event))
        );
        assert_eq!(
            parse_topic("$aws/events/jobExecution/fw_2/succeeded"),
            Some(("fw_2", Trigger::Event))
        );
        for ignored in [
            "$aws/events/job/fw-1/completed/extra",
            "$aws/events/job/not a job/completed",
            "$aws/events/job/fw-1/exploded",
            "$aws/events/thing/fw-1/created",
            "$aws/things/t/jobs/notify",
            "",
        ] {
            assert_eq!(parse_topic(ignored), None, "{ignored}");
        }
    }
}
