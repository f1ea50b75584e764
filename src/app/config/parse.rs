//! The value parsers of the flags: each says what is wrong with a value and
//! how to write it.

use std::time::Duration;

pub(super) fn parse_duration(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value)
        .map_err(|e| format!("{e}; write a duration such as 5s, 750ms or 1m"))?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

/// A watch or keepalive period: longer than zero, at most a day.
pub(super) fn parse_watch_duration(value: &str) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d > Duration::from_secs(24 * 3600) {
        return Err("must be at most a day (24h)".to_owned());
    }
    Ok(d)
}

/// A window or interval that zero turns off: up to a day.
pub(super) fn parse_window(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value)
        .map_err(|e| format!("{e}; write a duration such as 5m or 30s, or 0s for off"))?;
    if d > Duration::from_secs(24 * 3600) {
        return Err("must be at most a day (24h)".to_owned());
    }
    Ok(d)
}

pub(super) fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && (0.01..=100_000.0).contains(&rate) => Ok(rate),
        _ => Err("calls per second, a number from 0.01 to 100000 (e.g. 10 or 2.5)".to_owned()),
    }
}

pub(super) fn parse_share(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err("a fraction from 0 to 1 (e.g. 0.2)".to_owned()),
    }
}

pub(super) fn parse_redis_url(value: &str) -> Result<String, String> {
    use redis::IntoConnectionInfo as _;
    if !(value.starts_with("redis://") || value.starts_with("rediss://")) {
        return Err(
            "a redis:// or rediss:// (TLS) URL, e.g. redis://redis.internal:6379 or rediss://user:password@host:6380/0".to_owned(),
        );
    }
    value
        .into_connection_info()
        .map(|_| value.to_owned())
        .map_err(|e| format!("not a usable Redis URL: {e}"))
}

pub(super) fn parse_key_prefix(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("1 to 100 characters: letters, digits and - _ . : /".to_owned())
    }
}

pub(super) fn parse_region(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(value.to_owned())
    } else {
        Err("an AWS region looks like us-east-1 (lowercase letters, digits and '-')".to_owned())
    }
}

pub(super) fn parse_endpoint_url(value: &str) -> Result<String, String> {
    let uri: http::Uri = value
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected e.g. http://127.0.0.1:5000"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(value.to_owned()),
        _ => Err(
            "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:5000".to_owned(),
        ),
    }
}
