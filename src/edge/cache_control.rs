//! The `cache-control` request header: what a caller accepts from the
//! cache. `no-cache` (or `max-age=0`) asks for an answer AWS gave after the
//! request arrived; `max-stale=N` accepts answers at most N seconds past
//! their lifetime (`max-stale=0`: none, `max-stale` alone: any the
//! gateway's stale windows allow), as in HTTP (RFC 9111).

use std::{sync::LazyLock, time::Duration};

use tonic::metadata::{Ascii, MetadataKey, MetadataMap};

/// Parsed once, not on every call.
static CACHE_CONTROL: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static("cache-control"));

/// What a call's `cache-control` headers ask of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheControl {
    /// Only an answer AWS gives after the request arrived will do.
    pub fresh: bool,
    /// The most an answer may be past its lifetime; `None`: no bound of
    /// the caller's.
    pub max_stale: Option<Duration>,
}

impl CacheControl {
    /// The directives of every `cache-control` header, comma-separated, in
    /// any case. A `max-stale` value that is not a number of seconds
    /// refuses stale answers: the caller meant some bound.
    pub fn of(metadata: &MetadataMap) -> Self {
        let mut control = Self::default();
        let directives = metadata
            .get_all(&*CACHE_CONTROL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim);
        for directive in directives {
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-cache")
                || (name.eq_ignore_ascii_case("max-age") && value == Some("0"))
            {
                control.fresh = true;
            } else if name.eq_ignore_ascii_case("max-stale")
                && let Some(value) = value
            {
                let seconds = value
                    .parse::<u64>()
                    .map_or(Duration::ZERO, Duration::from_secs);
                control.max_stale = Some(control.max_stale.map_or(seconds, |m| m.min(seconds)));
            }
        }
        control
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: &[&str]) -> CacheControl {
        let mut metadata = MetadataMap::new();
        for value in values {
            metadata.append("cache-control", value.parse().unwrap());
        }
        CacheControl::of(&metadata)
    }

    #[test]
    fn directives_in_any_header_case_and_order() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(of(&[]), CacheControl::default());
        assert!(of(&["no-cache"]).fresh);
        assert!(of(&["No-Cache"]).fresh);
        assert!(of(&["max-age=0"]).fresh);
        assert!(!of(&["max-age=10"]).fresh);
        assert_eq!(of(&["max-stale=0"]).max_stale, secs(0));
        assert_eq!(of(&["max-stale=30"]).max_stale, secs(30));
        assert_eq!(of(&["max-stale = \"30\""]).max_stale, secs(30));
        assert_eq!(of(&["max-stale"]).max_stale, None);
        assert_eq!(of(&["max-stale=soon"]).max_stale, secs(0));
        assert_eq!(of(&["max-stale=60", "max-stale=5"]).max_stale, secs(5));
        let both = of(&["no-cache, max-stale=60"]);
        assert!(both.fresh);
        assert_eq!(both.max_stale, secs(60));
    }
}
