//! The demo's embedded MQTT broker: the simulator publishes AWS IoT Jobs
//! events to it and the gateway's [`super::mqtt::Subscriber`] reads them, so
//! `demo` shows watch events with no broker to install.
//!
//! A small MQTT 3.1.1 broker on loopback, built on the packet codec of
//! `rumqttc` (the client already in the build): CONNECT, SUBSCRIBE and
//! UNSUBSCRIBE with `+`/`#` filters, PUBLISH at QoS 0 and 1 (QoS 2 is
//! acknowledged as the protocol asks), PINGREQ and DISCONNECT. No sessions
//! kept across connections, no retained messages, no redelivery: like AWS
//! IoT's events, a message reaches the subscribers connected at the time.
//!
//! Why not a broker crate: AWS's topics begin with `$aws/`, and `rumqttd`
//! refuses every subscription to a filter beginning with `$` (it drops the
//! connection: rumqtt issue #650), while `rmqtt` brings QUIC and a second
//! rustls crypto provider into the build. Topic filters here follow MQTT
//! 3.1.1 §4.7.2: a filter that begins with a wildcard does not match a
//! topic beginning with `$`, a literal `$aws/…` filter does.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use bytes::BytesMut;
use rumqttc::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, QoS, SubAck,
    SubscribeReasonCode, UnsubAck, mqttbytes,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf},
    sync::mpsc,
};
use tracing::debug;

/// The largest packet accepted or sent (AWS IoT Core's limit: 128 KiB).
const MAX_PACKET: usize = 128 * 1024;
/// Packets waiting for one slow subscriber before more are dropped.
const QUEUE: usize = 4_096;

/// A running broker; it serves until the process ends.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    address: SocketAddr,
}

impl EmbeddedBroker {
    /// Binds `listen` (`127.0.0.1:0`: a port the OS picks) and serves
    /// MQTT there in the background.
    pub async fn start(listen: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        tokio::spawn(accept(listener, Arc::default()));
        Ok(Self { address })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its `mqtt://host:port` URL, for the simulator and the gateway.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.address)
    }
}

/// Every connection's subscriptions and outgoing queue.
#[derive(Default)]
struct Hub {
    connections: Mutex<HashMap<u64, Connection>>,
}

struct Connection {
    filters: Vec<(String, QoS)>,
    out: mpsc::Sender<Packet>,
}

impl Hub {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<u64, Connection>) -> T) -> T {
        f(&mut self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Hands `publish` to every connection with a matching filter, at the
    /// lower of its QoS and the subscription's.
    fn route(&self, publish: &Publish) {
        self.with(|connections| {
            for connection in connections.values() {
                let granted = connection
                    .filters
                    .iter()
                    .filter(|(filter, _)| matches(filter, &publish.topic))
                    .map(|(_, qos)| *qos)
                    .reduce(|a, b| if a == QoS::AtMostOnce { b } else { a });
                if let Some(granted) = granted {
                    let mut copy = Publish::from_bytes(
                        publish.topic.clone(),
                        at_most_once_if_either(publish.qos, granted),
                        publish.payload.clone(),
                    );
                    copy.retain = false;
                    if connection.out.try_send(Packet::Publish(copy)).is_err() {
                        debug!(topic = %publish.topic, "MQTT subscriber too slow; message dropped");
                    }
                }
            }
        });
    }
}

async fn accept(listener: TcpListener, hub: Arc<Hub>) {
    let mut next_id = 0_u64;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                next_id += 1;
                let hub = hub.clone();
                let id = next_id;
                tokio::spawn(async move {
                    let Err(closed) = serve(stream, id, &hub).await;
                    hub.with(|connections| connections.remove(&id));
                    debug!(%peer, %closed, "MQTT connection closed");
                });
            }
            Err(err) => debug!(error = %err, "MQTT accept failed"),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("the client went away")]
    Eof,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not MQTT 3.1.1: {0}")]
    Protocol(mqttbytes::Error),
    #[error("the client disconnected")]
    Disconnect,
}

/// One client's connection: it must open with CONNECT.
async fn serve(stream: TcpStream, id: u64, hub: &Hub) -> Result<std::convert::Infallible, Closed> {
    let (mut reader, writer) = stream.into_split();
    let mut buffer = BytesMut::with_capacity(4_096);
    let Packet::Connect(_) = next_packet(&mut reader, &mut buffer).await? else {
        return Err(Closed::Protocol(mqttbytes::Error::IncorrectPacketFormat));
    };
    let (out, queue) = mpsc::channel(QUEUE);
    let _writer = AbortOnDrop(tokio::spawn(write(writer, queue)));
    let send = |packet| out.try_send(packet).map_err(|_| Closed::Eof);
    send(Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        false,
    )))?;
    hub.with(|connections| {
        let filters = Vec::new();
        let out = out.clone();
        connections.insert(id, Connection { filters, out });
    });
    loop {
        match next_packet(&mut reader, &mut buffer).await? {
            Packet::Publish(publish) => {
                match publish.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => send(Packet::PubAck(PubAck::new(publish.pkid)))?,
                    QoS::ExactlyOnce => send(Packet::PubRec(PubRec::new(publish.pkid)))?,
                }
                hub.route(&publish);
            }
            Packet::PubRel(rel) => send(Packet::PubComp(PubComp::new(rel.pkid)))?,
            Packet::Subscribe(subscribe) => {
                let mut codes = Vec::new();
                hub.with(|connections| {
                    let Some(connection) = connections.get_mut(&id) else {
                        return;
                    };
                    for filter in subscribe.filters {
                        if !mqttbytes::valid_filter(&filter.path) {
                            codes.push(SubscribeReasonCode::Failure);
                            continue;
                        }
                        let qos = at_most_once_if_either(filter.qos, QoS::AtLeastOnce);
                        connection
                            .filters
                            .retain(|(known, _)| *known != filter.path);
                        connection.filters.push((filter.path, qos));
                        codes.push(SubscribeReasonCode::Success(qos));
                    }
                });
                send(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))?;
            }
            Packet::Unsubscribe(unsubscribe) => {
                hub.with(|connections| {
                    if let Some(connection) = connections.get_mut(&id) {
                        connection
                            .filters
                            .retain(|(filter, _)| !unsubscribe.topics.contains(filter));
                    }
                });
                send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))?;
            }
            Packet::PingReq => send(Packet::PingResp)?,
            Packet::Disconnect => return Err(Closed::Disconnect),
            // Acknowledgements of what this broker sent: nothing is redelivered.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {}
            other => {
                debug!(?other, "unexpected MQTT packet from a client");
                return Err(Closed::Protocol(mqttbytes::Error::IncorrectPacketFormat));
            }
        }
    }
}

/// Reads until `buffer` holds a whole packet.
async fn next_packet(reader: &mut OwnedReadHalf, buffer: &mut BytesMut) -> Result<Packet, Closed> {
    loop {
        match Packet::read(buffer, MAX_PACKET) {
            Ok(packet) => return Ok(packet),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {
                if reader.read_buf(buffer).await? == 0 {
                    return Err(Closed::Eof);
                }
            }
            Err(err) => return Err(Closed::Protocol(err)),
        }
    }
}

/// Writes queued packets, numbering outgoing QoS 1 messages.
async fn write(mut writer: tokio::net::tcp::OwnedWriteHalf, mut queue: mpsc::Receiver<Packet>) {
    let mut next_pkid = 0_u16;
    let mut bytes = BytesMut::new();
    while let Some(mut packet) = queue.recv().await {
        if let Packet::Publish(publish) = &mut packet
            && publish.qos != QoS::AtMostOnce
        {
            next_pkid = next_pkid.checked_add(1).unwrap_or(1);
            publish.pkid = next_pkid;
        }
        bytes.clear();
        if packet.write(&mut bytes, MAX_PACKET).is_err() {
            continue;
        }
        if writer.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// The lower of two QoS levels when `b` is at most 1 (QoS 2 is served as 1).
fn at_most_once_if_either(a: QoS, b: QoS) -> QoS {
    if a == QoS::AtMostOnce || b == QoS::AtMostOnce {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// Stops a connection's writer with the connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether an MQTT broker on 127.0.0.1:`port` accepts a connection: an
/// MQTT 3.1.1 CONNECT answered by a successful CONNACK. The readiness check
/// of the brokers the load generator and the tests start.
pub async fn accepts_connect(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)).await else {
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

/// Whether `topic` matches `filter` (MQTT 3.1.1 §4.7): `+` is one level,
/// a final `#` is any number (none included), and a topic beginning with
/// `$` is matched only by a filter that names its first level.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut levels = topic.split('/');
    for wanted in filter.split('/') {
        match (wanted, levels.next()) {
            ("#", _) => return true,
            (_, None) => return false,
            ("+", Some(_)) => {}
            (wanted, Some(level)) if wanted != level => return false,
            _ => {}
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rumqttc::{AsyncClient, Event, MqttOptions};

    use super::*;

    #[test]
    fn filters_match_as_mqtt_says_and_keep_dollar_topics_apart() {
        let topic = "$aws/events/job/fw-1/completed";
        assert!(matches("$aws/events/job/+/+", topic));
        assert!(matches("$aws/events/#", topic));
        assert!(matches(topic, topic));
        assert!(!matches("#", topic));
        assert!(!matches("+/events/job/+/+", topic));
        assert!(!matches("$aws/events/jobExecution/+/+", topic));
        assert!(!matches("$aws/events/job/+", topic));
        assert!(matches("#", "a/b"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/c/d"));
        assert!(!matches("a/b", "a"));
    }

    /// A client connected to `broker`, and its event loop's publishes.
    async fn client(
        broker: &EmbeddedBroker,
        id: &str,
        subscribe: Option<&str>,
    ) -> (AsyncClient, mpsc::UnboundedReceiver<Publish>) {
        let address = broker.address();
        let options = MqttOptions::new(id, address.ip().to_string(), address.port());
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        if let Some(filter) = subscribe {
            client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let ready_on_connack = subscribe.is_none();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                match event {
                    Event::Incoming(Packet::Publish(p)) => {
                        let _ = tx.send(p);
                    }
                    Event::Incoming(Packet::SubAck(_)) | Event::Incoming(Packet::ConnAck(_))
                        if ready_on_connack
                            || matches!(event, Event::Incoming(Packet::SubAck(_))) =>
                    {
                        if let Some(ready) = subscribed_tx.take() {
                            let _ = ready.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .unwrap()
            .unwrap();
        (client, rx)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Publish>) -> Publish {
        let next = tokio::time::timeout(Duration::from_secs(10), rx.recv());
        next.await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn an_aws_event_reaches_a_subscriber_of_its_topic_filter_only() {
        let broker = EmbeddedBroker::start(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        assert_ne!(broker.address().port(), 0);
        let (_sub, mut events) = client(&broker, "sub", Some("$aws/events/job/+/+")).await;
        let (_all, mut everything) = client(&broker, "all", Some("#")).await;
        let (publisher, _) = client(&broker, "pub", None).await;

        for (topic, payload) in [
            ("demo/first", "not an event"),
            ("$aws/events/job/fw-1/completed", "{}"),
            ("demo/last", "not an event"),
        ] {
            publisher
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }

        // Each subscriber gets its messages in the order they were sent.
        let got = next(&mut events).await;
        assert_eq!(
            got.topic, "$aws/events/job/fw-1/completed",
            "demo/first skipped"
        );
        assert_eq!(got.qos, QoS::AtLeastOnce);
        assert_eq!(&got.payload[..], b"{}");
        assert_eq!(next(&mut everything).await.topic, "demo/first");
        assert_eq!(
            next(&mut everything).await.topic,
            "demo/last",
            "`#` skips $ topics"
        );
    }
}
