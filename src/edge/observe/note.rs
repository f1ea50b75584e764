//! What a call's handler adds to its log line ([`CallNote`]), and when the
//! call reached the gateway ([`Received`]).

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;

use crate::domain::{Source, error::Failure, error::GatewayError};

/// Job ids in logs are cut to this many characters; invalid ids can be huge.
const LOGGED_ID_CHARS: usize = 80;

/// `id` as logs show it: its first `LOGGED_ID_CHARS` characters. An id
/// no longer in bytes is copied whole (no walk over its characters).
fn logged(id: &str) -> String {
    if id.len() <= LOGGED_ID_CHARS {
        return id.to_owned();
    }
    id.chars().take(LOGGED_ID_CHARS).collect()
}

/// When the call reached the gateway: the moment tonic starts its own
/// `grpc-timeout` timer (this layer is the first it calls). Deadlines run
/// from here, not from when the handler first runs, which can be much later
/// (a message that comes after its headers, a busy host): otherwise tonic's
/// timer fires first and the caller gets its CANCELLED, not the gateway's
/// DEADLINE_EXCEEDED.
#[derive(Debug, Clone, Copy)]
pub struct Received(pub Instant);

impl Received {
    /// When the call `request` belongs to reached the gateway (now, outside
    /// the layer, as in handler unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> Instant {
        request
            .extensions()
            .get::<Self>()
            .map_or_else(Instant::now, |received| received.0)
    }
}

/// What a handler knows of its call, for the call's log line.
#[derive(Debug, Default)]
pub struct CallNote(Mutex<Details>);

#[derive(Debug, Default)]
pub(super) struct Details {
    pub(super) caller: Option<Arc<str>>,
    pub(super) job_id: Option<String>,
    pub(super) thing: Option<String>,
    pub(super) cache: Option<Source>,
    /// The answer's age, with `cache`: unary answers carry both as headers.
    pub(super) age: Duration,
    pub(super) items: Option<usize>,
    pub(super) ok: usize,
    pub(super) failed: usize,
    pub(super) watched_jobs: Option<usize>,
    pub(super) events: u64,
    pub(super) heartbeats: u64,
    pub(super) cause: Option<String>,
    pub(super) failure: Option<Failure>,
}

impl CallNote {
    /// The note of the call `request` belongs to (a detached one outside
    /// the layer, as in handler unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> Arc<Self> {
        request
            .extensions()
            .get::<Arc<Self>>()
            .cloned()
            .unwrap_or_default()
    }

    pub(super) fn details(&self) -> MutexGuard<'_, Details> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who called.
    pub fn caller(&self, name: Arc<str>) {
        self.details().caller = Some(name);
    }

    /// The job asked about.
    pub fn job(&self, job_id: &str) {
        self.details().job_id = Some(logged(job_id));
    }

    /// The thing asked about.
    pub fn thing(&self, thing_name: &str) {
        self.details().thing = Some(logged(thing_name));
    }

    /// Where the answer came from, and how old it is: the layer sends
    /// both as the response's `x-cache` headers.
    pub fn answered(&self, source: Source, age: Duration) {
        let mut details = self.details();
        details.cache = Some(source);
        details.age = age;
    }

    /// Adds the answer's `x-cache` headers to `headers`, if the handler
    /// noted one. Written here, onto the response's own headers, rather
    /// than as the handler's metadata: tonic searches a non-empty metadata
    /// map for reserved names on every answer (~500 instructions a cache
    /// hit, loadgen instructions).
    pub(super) fn stamp(&self, headers: &mut http::HeaderMap) {
        const X_CACHE: http::HeaderName = http::HeaderName::from_static("x-cache");
        const X_CACHE_AGE_MS: http::HeaderName = http::HeaderName::from_static("x-cache-age-ms");
        let (source, age) = {
            let details = self.details();
            let Some(source) = details.cache else {
                return;
            };
            (source, details.age)
        };
        headers.insert(X_CACHE, http::HeaderValue::from_static(source.name()));
        // A new value on nearly every call: never indexed by HPACK. Indexed,
        // the ages filled the connection's header table, and every response
        // compared its age with each of them before adding one more (4,000
        // instructions a cache hit, loadgen instructions).
        let mut age = http::HeaderValue::from(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        age.set_sensitive(true);
        headers.insert(X_CACHE_AGE_MS, age);
    }

    /// Why the call failed, in full (the client sees a shorter message).
    pub fn failed(&self, err: &GatewayError) {
        let mut details = self.details();
        details.cause = Some(err.chain());
        details.failure = Some(err.failure());
    }

    /// Who called, as noted.
    pub fn caller_name(&self) -> Option<Arc<str>> {
        self.details().caller.clone()
    }

    /// A batch of `items`.
    pub fn batch(&self, items: usize) {
        self.details().items = Some(items);
    }

    /// One batch item's outcome.
    pub fn item(&self, ok: bool) {
        let mut details = self.details();
        if ok {
            details.ok += 1;
        } else {
            details.failed += 1;
        }
    }

    /// A watch of `jobs` jobs.
    pub fn watching(&self, jobs: usize) {
        self.details().watched_jobs = Some(jobs);
    }

    /// One watch event sent.
    pub fn event(&self, heartbeat: bool) {
        let mut details = self.details();
        if heartbeat {
            details.heartbeats += 1;
        } else {
            details.events += 1;
        }
    }
}
