//! The caller's gRPC deadline (`grpc-timeout`), turned into an instant the
//! upstream work must finish by.
//!
//! tonic itself also enforces `grpc-timeout`, but answers CANCELLED when it
//! fires. The gateway's clock starts where tonic's does (when the call
//! reaches the observation layer, [`crate::edge::observe::Received`]) and it stops
//! its own work a little earlier, so the caller gets DEADLINE_EXCEEDED,
//! which is what an expired deadline means.

use std::{sync::LazyLock, time::Duration};

use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataKey, MetadataMap};

/// Parsed once, not on every call.
static GRPC_TIMEOUT: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static("grpc-timeout"));

/// The most headroom kept back from a deadline to send the answer. The
/// answer must get back before the caller's own timer fires; on a busy
/// host, being scheduled alone can take tens of milliseconds.
const MAX_HEADROOM: Duration = Duration::from_millis(50);

/// The instant by which the gateway must have its answer, if the caller set
/// a deadline. `received` is when the call reached the gateway.
pub fn from_metadata(metadata: &MetadataMap, received: Instant) -> Option<Instant> {
    let timeout = parse_grpc_timeout(metadata.get(&*GRPC_TIMEOUT)?.as_encoded_bytes())?;
    let headroom = (timeout / 10).min(MAX_HEADROOM);
    Some(received + timeout.saturating_sub(headroom))
}

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit (H, M, S, m,
/// u, n), in one pass over its bytes.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let mut amount = 0u64;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        amount = amount * 10 + u64::from(b - b'0');
    }
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        let parse = |value: &str| parse_grpc_timeout(value.as_bytes());
        assert_eq!(parse("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(
            parse("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in [
            "",
            "m",
            "12",
            "1x",
            "-1m",
            "123456789m",
            "1.5S",
            "1\u{e9}m",
            "٣m",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn keeps_a_little_headroom_before_the_callers_deadline() {
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", "200m".parse().unwrap());
        let now = Instant::now();
        let deadline = from_metadata(&md, now).unwrap();
        assert_eq!(deadline - now, Duration::from_millis(180), "a tenth");
        md.insert("grpc-timeout", "2S".parse().unwrap());
        let deadline = from_metadata(&md, now).unwrap();
        assert_eq!(deadline - now, Duration::from_millis(1950), "at most 50 ms");
        assert_eq!(from_metadata(&MetadataMap::new(), now), None);
    }
}
