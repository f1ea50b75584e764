//! Reading a gateway's `/metrics` as Prometheus does: a plain HTTP GET,
//! then the Prometheus project's own parser (Python's `prometheus_client`).

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::python::Tools;

/// The body of `GET /metrics` at `addr` (`host:port`); panics unless the
/// answer is 200 in the OpenMetrics text format.
pub async fn scrape_text(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the metrics listener {addr}: {e}"));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).expect("/metrics is UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "expected a plain body: {head}"
    );
    body.to_owned()
}

/// One parsed scrape.
pub struct Scrape {
    /// The families as `prometheus_client` parsed them.
    pub families: Vec<Value>,
}

impl Scrape {
    /// Scrapes `addr` and parses the text with `tools`' Prometheus parser.
    pub async fn of(tools: &Tools, addr: &str) -> Self {
        let text = scrape_text(addr).await;
        let families = tools.parse_metrics(&text);
        Self {
            families: families.as_array().expect("a list of families").clone(),
        }
    }

    /// Every sample, as (name, labels, value).
    pub fn samples(&self) -> impl Iterator<Item = (&str, &Value, f64)> {
        self.families.iter().flat_map(|family| {
            family["samples"].as_array().unwrap().iter().map(|s| {
                (
                    s["name"].as_str().unwrap(),
                    &s["labels"],
                    s["value"].as_f64().unwrap(),
                )
            })
        })
    }

    /// The sum of the samples named `name` whose labels include `labels`
    /// (0 when there are none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples()
            .filter(|(n, l, _)| {
                *n == name && labels.iter().all(|(k, v)| l[*k].as_str() == Some(*v))
            })
            .map(|(_, _, value)| value)
            .sum()
    }

    /// The type of the family `name` (as the parser names families:
    /// counters without `_total`).
    pub fn family_type(&self, name: &str) -> Option<&str> {
        self.families
            .iter()
            .find(|f| f["name"] == name)
            .and_then(|f| f["type"].as_str())
    }
}
