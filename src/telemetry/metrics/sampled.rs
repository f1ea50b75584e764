//! Gauges read from their owners at each scrape: states, not counts, so
//! nothing on a request path keeps them. The owners are held weakly: a
//! scrape after the gateway stopped reads nothing rather than keeping the
//! gateway alive.

use std::{
    fmt,
    sync::{Arc, Weak},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::{backends::redis::Shared, domain::Gauges};

/// The owners of the sampled gauges.
#[derive(Default)]
pub struct Sources {
    /// The domain's roles.
    pub jobs: Option<Gauges>,
    /// The Redis connection, when replicas share one.
    pub shared: Option<Weak<Shared>>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sources")
    }
}

fn alive<T: ?Sized>(source: Option<&Weak<T>>) -> Option<Arc<T>> {
    source.and_then(Weak::upgrade)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// One gauge family with a sample per operation; nothing when there are none.
fn by_operation(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl ExactSizeIterator<Item = (&'static str, f64)>,
) -> fmt::Result {
    if values.len() == 0 {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (operation, value) in values {
        ConstGauge::new(value).encode(family.encode_family(&[("operation", operation)])?)?;
    }
    Ok(())
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        let jobs = self.jobs.as_ref();
        let operations = jobs.map_or(&[][..], |j| &j.operations[..]);
        let limits: Vec<_> = operations
            .iter()
            .filter_map(|o| Some((o.operation, o.limit.upgrade()?)))
            .collect();
        by_operation(
            e,
            "iot_jobs_gateway_rate_limit_per_second",
            "The AWS call rate each operation is allowed now: its configured rate, lower while \
             AWS throttles it",
            limits.iter().map(|(op, limit)| (*op, limit.current_rate())),
        )?;
        by_operation(
            e,
            "iot_jobs_gateway_rate_limit_waiting",
            "Calls waiting for a token of their operation's AWS budget",
            limits
                .iter()
                .map(|(op, limit)| (*op, limit.waiting() as f64)),
        )?;
        let usage: Vec<_> = operations
            .iter()
            .filter_map(|o| Some((o.operation, o.cache.upgrade()?.usage())))
            .collect();
        by_operation(
            e,
            "iot_jobs_gateway_cache_entries",
            "Answers kept in this process, by operation",
            usage.iter().map(|(op, usage)| (*op, usage.entries as f64)),
        )?;
        by_operation(
            e,
            "iot_jobs_gateway_cache_weighted_size_bytes",
            "Estimated memory used by the answers kept in this process, by operation",
            usage.iter().map(|(op, usage)| (*op, usage.bytes as f64)),
        )?;
        if let Some(watches) = alive(jobs.map(|j| &j.watches)) {
            gauge(
                e,
                "iot_jobs_gateway_watch_streams",
                "Open watch streams",
                watches.open_streams() as f64,
            )?;
            gauge(
                e,
                "iot_jobs_gateway_watch_pollers",
                "Watched jobs with subscribers in this process (one poller each)",
                watches.pollers() as f64,
            )?;
            gauge(
                e,
                "iot_jobs_gateway_redis_leases_held",
                "Watched jobs this replica polls for the set (0 without Redis)",
                watches.leases_held() as f64,
            )?;
        }
        if let Some(shared) = alive(self.shared.as_ref()) {
            gauge(
                e,
                "iot_jobs_gateway_redis_fallback",
                "1 while Redis is unreachable and this replica works alone",
                if shared.is_shared() { 0.0 } else { 1.0 },
            )?;
            let errors = ConstCounter::new(shared.errors());
            errors.encode(e.encode_descriptor(
                "iot_jobs_gateway_redis_errors",
                "Redis operations that failed: errors, lost connections and timeouts",
                None,
                errors.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
