//! A real Mosquitto broker (Debian/Ubuntu package `mosquitto`) on a free
//! loopback port, anonymous, persistence off, stopped when dropped;
//! optionally with a second, TLS listener that requires an X.509 client
//! certificate, as AWS IoT Core does. Where
//! the binary is missing, it is installed with apt-get (as root) or the test
//! fails naming the package; nothing is skipped. Take [`mosquitto_binary`]
//! first in a test, before starting anything on the clock: the first
//! install takes a while.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::process::{Child, Command};

/// The `mosquitto` binary, installed first if needed.
pub async fn mosquitto_binary() -> PathBuf {
    super::debian::binary("mosquitto", "mosquitto").await
}

/// A mosquitto this test started.
pub struct Mosquitto {
    binary: PathBuf,
    pub port: u16,
    /// The TLS listener's port and its settings (the CA clients' certificates
    /// must chain to, the server's certificate and key).
    tls: Option<(u16, String)>,
    /// Holds the generated configuration file.
    dir: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts one on a free loopback port.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts one that also listens for `mqtts://` on another free port,
    /// with `server`'s certificate, and admits only clients whose
    /// certificate chains to `client_ca`.
    pub async fn start_with_client_certs(client_ca: &Path, server: &super::certs::Pair) -> Self {
        let tls = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            client_ca.display(),
            server.cert.display(),
            server.key.display()
        );
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<String>) -> Self {
        let binary = mosquitto_binary().await;
        for _ in 0..5 {
            let port = super::debian::free_port();
            let dir = std::env::temp_dir().join(format!(
                "iot-jobs-gateway-mosquitto-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut broker = Self {
                binary: binary.clone(),
                port,
                tls: tls
                    .clone()
                    .map(|settings| (super::debian::free_port(), settings)),
                dir,
                child: None,
            };
            if broker.run().await {
                return broker;
            }
        }
        panic!("mosquitto did not start on a free port in five tries");
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://127.0.0.1:<TLS port>`.
    pub fn tls_url(&self) -> String {
        let (port, _) = self.tls.as_ref().expect("started with a TLS listener");
        format!("mqtts://127.0.0.1:{port}")
    }

    /// Starts the process on `self.port`; whether it answers an MQTT CONNECT.
    async fn run(&mut self) -> bool {
        let config = self.dir.join("mosquitto.conf");
        let mut text = format!(
            "allow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\n\
             listener {} 127.0.0.1\n",
            self.port
        );
        if let Some((port, settings)) = &self.tls {
            text.push_str(&format!("listener {port} 127.0.0.1\n{settings}"));
        }
        std::fs::write(&config, text).unwrap();
        let mut command = Command::new(&self.binary);
        command.arg("-c").arg(&config);
        self.child =
            super::debian::spawn_until_ready(command, "mosquitto", async || self.connack().await)
                .await;
        self.child.is_some()
    }

    /// Whether the broker accepts an MQTT connection.
    async fn connack(&self) -> bool {
        iot_jobs_gateway::events::mqtt::accepts_connect(self.port).await
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
            "mosquitto did not restart on {}",
            self.port
        );
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain MQTT client subscribed to a topic filter on a test broker, as a
/// monitoring application would be: it hands back every message it
/// receives, in order, with its payload parsed as JSON.
pub struct Subscriber {
    messages: tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>,
}

impl Subscriber {
    /// Connects to `broker` and subscribes to `filter` (QoS 1); returns
    /// once the broker acknowledged the subscription.
    pub async fn start(broker: &Mosquitto, filter: &str) -> Self {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let id = format!("test-subscriber-{:08x}", fastrand::u32(..));
        let (client, mut eventloop) =
            AsyncClient::new(MqttOptions::new(id, "127.0.0.1", broker.port), 10);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let subscribed = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => return,
                    Ok(_) => {}
                    Err(err) => panic!("the test subscriber cannot subscribe: {err}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), subscribed)
            .await
            .expect("the broker acknowledged the subscription within 5 s");
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            // Keeps the client alive as long as the event loop runs.
            let _client = client;
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(publish)) = event {
                    let payload = serde_json::from_slice(&publish.payload).unwrap_or_else(|_| {
                        String::from_utf8_lossy(&publish.payload)
                            .into_owned()
                            .into()
                    });
                    if tx.send((publish.topic, payload)).is_err() {
                        return;
                    }
                }
            }
        });
        Self { messages }
    }

    /// The next message, or a panic after `within`.
    pub async fn next(&mut self, within: Duration) -> (String, serde_json::Value) {
        tokio::time::timeout(within, self.messages.recv())
            .await
            .unwrap_or_else(|_| panic!("no MQTT message within {within:?}"))
            .expect("the subscriber's connection ended")
    }

    /// Every message up to and including the first on `topic`.
    pub async fn until(
        &mut self,
        topic: &str,
        within: Duration,
    ) -> Vec<(String, serde_json::Value)> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Ok(Some(message)) = tokio::time::timeout(left, self.messages.recv()).await else {
                let topics: Vec<&String> = seen.iter().map(|(t, _)| t).collect();
                panic!("no message on {topic} within {within:?}; got {topics:?}");
            };
            let last = message.0 == topic;
            seen.push(message);
            if last {
                return seen;
            }
        }
    }

    /// Every message that arrives within `window` (none is fine).
    pub async fn drain(&mut self, window: Duration) -> Vec<(String, serde_json::Value)> {
        let deadline = tokio::time::Instant::now() + window;
        let mut seen = Vec::new();
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, self.messages.recv()).await
        {
            seen.push(message);
        }
        seen
    }
}
