//! Log setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`),
//! as text or one JSON object per line.
//!
//! The HTTP/2 and HTTP libraries (`h2`, `hyper`) warn once per misbehaving
//! connection (a rapid-reset client, say), so any client could write lines
//! without end: their warnings are bounded, [`PROTOCOL_LINES`] per interval
//! of the refusal log, and the rest summarised ([`summarise_protocol`]).

pub mod metrics;
pub mod refusals;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tracing::{Level, Metadata, info, subscriber::Interest};
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::dynamic_filter_fn, layer::SubscriberExt as _,
    util::SubscriberInitExt as _,
};

use clap::ValueEnum;

/// Protocol-library lines written per interval; more are only counted.
pub const PROTOCOL_LINES: u32 = 10;

static PROTOCOL_LOGGED: AtomicU32 = AtomicU32::new(0);
static PROTOCOL_SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Decided per event only for the protocol libraries' warnings (the
    // answer changes with the count); every other call site keeps the
    // interest the level filter gives it, so disabled lines (h2's and
    // hyper's trace and debug on every frame) cost nothing.
    let bounded = dynamic_filter_fn(|metadata, _| admit_protocol(metadata)).with_callsite_filter(
        |metadata| {
            if is_bounded(metadata) {
                Interest::sometimes()
            } else {
                Interest::always()
            }
        },
    );
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // The level filter is global, as a plain `fmt().with_env_filter()` is:
    // a span or event it turns away is never made. As a filter of the fmt
    // layer only, it let the registry record every span h2 and hyper open
    // per frame, which doubled the CPU of a cache hit.
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt.with_filter(bounded)).init(),
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_filter(bounded))
            .init(),
    }
}

/// Whether a call site is one of the protocol libraries' warnings (or
/// errors), whose lines are bounded.
fn is_bounded(metadata: &Metadata<'_>) -> bool {
    metadata.is_event() && *metadata.level() <= Level::WARN && is_protocol(metadata.target())
}

/// Whether a line may be written: every line but the protocol libraries'
/// warnings past [`PROTOCOL_LINES`] this interval.
fn admit_protocol(metadata: &Metadata<'_>) -> bool {
    if !is_bounded(metadata) {
        return true;
    }
    if PROTOCOL_LOGGED.fetch_add(1, Ordering::Relaxed) < PROTOCOL_LINES {
        return true;
    }
    PROTOCOL_SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    false
}

fn is_protocol(target: &str) -> bool {
    ["h2", "hyper"].iter().any(|lib| {
        target
            .strip_prefix(lib)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Ends the interval: a summary of the protocol warnings not written, and
/// room for new ones. Called by the refusal log's summaries.
pub fn summarise_protocol() {
    let suppressed = PROTOCOL_SUPPRESSED.swap(0, Ordering::Relaxed);
    PROTOCOL_LOGGED.store(0, Ordering::Relaxed);
    if suppressed > 0 {
        info!(
            not_logged = suppressed,
            logged = PROTOCOL_LINES,
            "more HTTP/2 protocol warnings (h2, hyper) than are logged one by one: clients that \
             break the protocol, such as rapid resets"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_protocol_libraries_are_bounded() {
        assert!(is_protocol("h2") && is_protocol("h2::proto::streams::recv"));
        assert!(is_protocol("hyper::proto::h2::server"));
        assert!(!is_protocol("hyper_util::server") && !is_protocol("iot_jobs_gateway::edge"));
    }
}
