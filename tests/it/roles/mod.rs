//! The contract of each role the domain is built from (the answer cache,
//! the rate limit, poll ownership), written once and run against every
//! implementation: in this process (`backends::local`) and shared through
//! a real Redis (`backends::redis`, behind its failover). A third backend
//! is held to the same tests by adding it to [`Backend`].

mod cache;
mod limit;
mod polls;

use std::sync::Arc;

use iot_jobs_gateway::{
    backends::{
        local::Local,
        redis::{RedisSettings, Replicas, Shared},
    },
    domain::{
        Backend as RoleSource, JobsSettings, cache::AnswerCache, limit::RateLimit,
        watch::ownership::PollOwnership,
    },
    upstream::DescribeJob,
};

use crate::support::redis::RedisServer;

/// DescribeJob's roles from one implementation, and what they run on.
pub struct Backend {
    pub roles: Roles,
    /// Keeps the Redis server of the shared roles running.
    _redis: Option<RedisServer>,
}

/// The roles under test.
pub struct Roles {
    pub limit: Arc<dyn RateLimit>,
    pub cache: Arc<dyn AnswerCache<DescribeJob>>,
    pub polls: Arc<dyn PollOwnership>,
}

impl Roles {
    async fn of(backend: &impl RoleSource, settings: &JobsSettings) -> Self {
        let roles = backend
            .operation::<DescribeJob>(&settings.limiter, &settings.cache)
            .await;
        Self {
            limit: roles.limit,
            cache: roles.cache,
            polls: backend.polls(),
        }
    }
}

impl Backend {
    /// The in-process roles with `settings`.
    pub async fn local(settings: &JobsSettings) -> Self {
        Self {
            roles: Roles::of(&Local, settings).await,
            _redis: None,
        }
    }

    /// The roles shared through a Redis of their own, with `settings` (the
    /// fallback rate equal to the configured one).
    pub async fn redis(settings: &JobsSettings) -> Self {
        let redis = RedisServer::start().await;
        let shared = Shared::connect(&RedisSettings {
            url: redis.url(),
            key_prefix: "roles".into(),
            timeout: std::time::Duration::from_secs(2),
            fallback_rate: settings.limiter.rate,
        })
        .await
        .expect("the test's redis-server accepts the connection");
        Self {
            roles: Roles::of(&Replicas(shared), settings).await,
            _redis: Some(redis),
        }
    }
}

/// Runs each named contract test (`async fn name(backend: Backend)`,
/// given the settings `settings()` of its module) once per implementation.
macro_rules! against_every_backend {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = crate::roles::Backend::local(&super::settings()).await;
                    super::$name(backend).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = crate::roles::Backend::redis(&super::settings()).await;
                    super::$name(backend).await;
                }
            )*
        }
    };
}
pub(crate) use against_every_backend;
