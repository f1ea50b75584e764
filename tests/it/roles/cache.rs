//! The answer cache's contract: a question costs one fetch however many ask
//! it at once, its answer is kept for its lifetime, a failure is shared
//! with the waiters but never kept, and an answer set aside is asked again.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::future::join_all;
use iot_jobs_gateway::{
    domain::{
        JobsSettings,
        answer::{JobAnswer, JobState},
        cache::{CacheSettings, Fetch},
        error::GatewayError,
    },
    pb,
    upstream::{DescribeJob, JobQuery, UpstreamErrorKind},
};
use tokio::time::Instant;

use super::{Backend, against_every_backend};

/// Answers live 300 ms, so a test sees one expire.
fn settings() -> JobsSettings {
    JobsSettings {
        cache: CacheSettings {
            ttl: Duration::from_millis(300),
            ..CacheSettings::default()
        },
        ..JobsSettings::default()
    }
}

fn query(job_id: &str) -> JobQuery {
    JobQuery {
        job_id: job_id.to_owned(),
        before_substitution: None,
    }
}

/// An answer about `job_id` (its ARN names it, so answers differ).
fn answer(job_id: &str) -> Arc<JobAnswer> {
    let job = pb::Job {
        job_id: Some(job_id.to_owned()),
        job_arn: Some(format!("arn:aws:iot:us-east-1:123456789012:job/{job_id}")),
        ..Default::default()
    };
    let response = pb::DescribeJobResponse {
        job: Some(job),
        document_source: None,
    };
    Arc::new(JobAnswer::now(JobState::Found(Arc::new(response))))
}

/// Fetches that count themselves and, after `delay`, give `answer(job_id)`.
fn counted(
    job_id: &str,
    fetches: &Arc<AtomicUsize>,
    delay: Duration,
) -> impl Fn() -> Fetch<'static, DescribeJob> + Send + Sync + 'static {
    let (job_id, fetches) = (job_id.to_owned(), fetches.clone());
    move || {
        let (job_id, fetches) = (job_id.clone(), fetches.clone());
        Box::pin(async move {
            fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok(answer(&job_id))
        })
    }
}

fn job_id_of(answer: &JobAnswer) -> Option<String> {
    match &answer.state {
        JobState::Found(response) => response.job.as_ref().and_then(|j| j.job_id.clone()),
        JobState::NotFound(_) => None,
    }
}

async fn a_miss_is_fetched_once_and_then_hit(backend: Backend) {
    let cache = backend.roles.cache;
    let fetches = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let got = cache
            .get_or_fetch(&query("fw-1"), &counted("fw-1", &fetches, Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(job_id_of(&got).as_deref(), Some("fw-1"));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "one fetch, then hits");
}

async fn concurrent_misses_share_one_fetch(backend: Backend) {
    let cache = backend.roles.cache;
    let fetches = Arc::new(AtomicUsize::new(0));
    let q = query("fw-2");
    let ask = counted("fw-2", &fetches, Duration::from_millis(100));
    let asks = (0..20).map(|_| cache.get_or_fetch(&q, &ask));
    for got in join_all(asks).await {
        assert_eq!(job_id_of(&got.unwrap()).as_deref(), Some("fw-2"));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "20 askers, one fetch");
}

async fn a_failure_reaches_every_waiter_and_is_not_kept(backend: Backend) {
    let cache = backend.roles.cache;
    let failing = || -> Fetch<'_, DescribeJob> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(GatewayError::upstream(
                "fw-3",
                UpstreamErrorKind::Unavailable,
                "AWS is away",
            ))
        })
    };
    let q = query("fw-3");
    let asks = (0..5).map(|_| cache.get_or_fetch(&q, &failing));
    for got in join_all(asks).await {
        let err = got.expect_err("the fetch failed");
        assert!(err.chain().contains("AWS is away"), "{}", err.chain());
    }
    // Once its waiters have heard it (with Redis, the outcome is published
    // just after the fetch returns), a new ask fetches again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let got = cache
        .get_or_fetch(&q, &counted("fw-3", &fetches, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(job_id_of(&got).as_deref(), Some("fw-3"));
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "the failure was not kept"
    );
}

async fn a_stored_answer_is_there_fresh_and_then_expires(backend: Backend) {
    let cache = backend.roles.cache;
    let q = query("fw-4");
    assert!(cache.peek(&q).await.is_none());
    cache.store(&q, answer("fw-4")).await;
    let peeked = cache.peek(&q).await.expect("stored");
    assert_eq!(job_id_of(&peeked).as_deref(), Some("fw-4"));
    assert!(cache.cached(&q).await.expect("stored").fresh);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let fetches = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_fetch(&q, &counted("fw-4", &fetches, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "past its 300 ms lifetime"
    );
}

async fn an_answer_set_aside_is_asked_again(backend: Backend) {
    let cache = backend.roles.cache;
    let q = query("fw-5");
    let fetches = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_fetch(&q, &counted("fw-5", &fetches, Duration::ZERO))
        .await
        .unwrap();
    // Redis keeps times to the millisecond: the event comes a little later.
    tokio::time::sleep(Duration::from_millis(20)).await;
    cache.forget_older_than(&q, Instant::now()).await;
    cache
        .get_or_fetch(&q, &counted("fw-5", &fetches, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "an event said the job changed"
    );
}

against_every_backend!(
    a_miss_is_fetched_once_and_then_hit,
    concurrent_misses_share_one_fetch,
    a_failure_reaches_every_waiter_and_is_not_kept,
    a_stored_answer_is_there_fresh_and_then_expires,
    an_answer_set_aside_is_asked_again,
);
