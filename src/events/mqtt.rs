//! AWS IoT Jobs events over MQTT: from AWS IoT Core (`mqtts://`, X.509
//! client certificate) or any broker. The client subscribes to
//! [`TOPICS`] on every connection; losing the broker falls back to polling
//! on the schedule alone (one warning), and the client reconnects with
//! backoff.

use std::{path::PathBuf, sync::Arc, time::Duration};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::{
    events::{EventSource, Listener, TOPICS},
    security::tls::TlsError,
};

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
}

impl EventSource for Subscriber {
    /// Connects, subscribes and hands events over until aborted.
    fn start(self: Box<Self>, listener: Listener) -> JoinHandle<()> {
        tokio::spawn(listen(self.options, self.url, listener))
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
/// files are read as the listener's own ([`crate::security::tls`]).
fn client_config(settings: &EventsSettings) -> Result<rustls::ClientConfig, EventsError> {
    use crate::security::tls::{certificates, file, private_key};
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
async fn listen(options: MqttOptions, url: String, listener: Listener) {
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
                listener.connected();
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                listener.event(&publish.topic).await;
            }
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

/// Whether an MQTT broker listens on the loopback `port` and accepts a
/// connection (CONNECT answered by CONNACK 0): the readiness probe of the
/// tests' and benchmarks' Mosquitto.
pub async fn accepts_connect(port: u16) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    // CONNECT: protocol "MQTT" level 4, clean session, keep-alive 10 s,
    // client id "probe".
    const CONNECT: &[u8] = &[
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 5, b'p', b'r', b'o', b'b', b'e',
    ];
    let mut reply = [0u8; 4];
    let ok = conn.write_all(CONNECT).await.is_ok()
        && conn.read_exact(&mut reply).await.is_ok()
        && reply == [0x20, 2, 0, 0];
    let _ = conn.write_all(&[0xe0, 0]).await; // DISCONNECT
    ok
}
