//! The rate limit's contract: a burst at once, then tokens at the rate; a
//! call whose token would come after its deadline, or that finds the queue
//! full, is refused at once; AWS's throttling lowers the rate; background
//! work gets tokens no call wants.

use std::time::Duration;

use futures_util::future::join_all;
use iot_jobs_gateway::domain::{
    JobsSettings,
    limit::{LimiterSettings, RejectReason, Share},
};
use tokio::time::Instant;

use super::{Backend, against_every_backend};

/// 4 calls a second (a token every 250 ms), a burst of 2, at most 3
/// waiting.
fn settings() -> JobsSettings {
    JobsSettings {
        limiter: LimiterSettings {
            rate: 4.0,
            burst: 2,
            max_waiters: 3,
            ..LimiterSettings::default()
        },
        ..JobsSettings::default()
    }
}

fn share() -> Share {
    Share::of("contract")
}

async fn a_second_holds_the_burst_and_the_rate_and_no_more(backend: Backend) {
    let limit = backend.roles.limit;
    let started = Instant::now();
    let end = started + Duration::from_secs(1);
    let mut granted = 0;
    while Instant::now() < end {
        // One caller at a time, each willing to wait until the second ends.
        if let Ok(permit) = limit.acquire(end, &share()).await {
            limit.answered(permit);
            granted += 1;
        }
    }
    // 2 at once, then one every 250 ms.
    assert!(
        (4..=7).contains(&granted),
        "{granted} tokens in one second at 4/s with a burst of 2"
    );
}

async fn a_token_due_after_the_deadline_is_refused_at_once(backend: Backend) {
    let limit = backend.roles.limit;
    let far = Instant::now() + Duration::from_secs(10);
    for _ in 0..2 {
        limit.answered(limit.acquire(far, &share()).await.unwrap());
    }
    let asked = Instant::now();
    let refused = limit
        .acquire(asked + Duration::from_millis(10), &share())
        .await
        .expect_err("the next token is 250 ms away, the deadline 10 ms");
    assert_eq!(refused.reason, RejectReason::Deadline);
    assert!(refused.retry_after > Duration::ZERO);
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "refused without waiting: {:?}",
        asked.elapsed()
    );
}

async fn a_full_queue_turns_the_next_call_away(backend: Backend) {
    let limit = backend.roles.limit;
    let far = Instant::now() + Duration::from_secs(30);
    for _ in 0..2 {
        limit.answered(limit.acquire(far, &share()).await.unwrap());
    }
    // Three wait (the most allowed) while the fourth asks.
    let waiters = (0..3).map(|i| {
        let limit = limit.clone();
        tokio::spawn(async move { limit.acquire(far, &Share::of(format!("waiter-{i}"))).await })
    });
    let waiters: Vec<_> = waiters.collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while limit.waiting() < 3 {
        assert!(Instant::now() < deadline, "three calls wait");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = limit
        .acquire(far, &Share::of("late"))
        .await
        .expect_err("the queue is full");
    assert_eq!(refused.reason, RejectReason::QueueFull);
    for waited in join_all(waiters).await {
        limit.answered(waited.unwrap().expect("the waiters get their turns"));
    }
}

async fn aws_throttling_lowers_the_rate(backend: Backend) {
    let limit = backend.roles.limit;
    assert_eq!(limit.current_rate(), 4.0);
    let permit = limit
        .acquire(Instant::now() + Duration::from_secs(1), &share())
        .await
        .unwrap();
    limit.throttled(permit);
    let deadline = Instant::now() + Duration::from_secs(5);
    while limit.current_rate() >= 4.0 {
        assert!(Instant::now() < deadline, "the rate went down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(limit.current_rate() < 4.0);
}

async fn background_work_gets_a_token_when_no_call_wants_one(backend: Backend) {
    let limit = backend.roles.limit;
    let permit = tokio::time::timeout(Duration::from_secs(2), limit.acquire_background())
        .await
        .expect("an idle bucket gives background work a token");
    limit.answered(permit);
}

against_every_backend!(
    a_second_holds_the_burst_and_the_rate_and_no_more,
    a_token_due_after_the_deadline_is_refused_at_once,
    a_full_queue_turns_the_next_call_away,
    aws_throttling_lowers_the_rate,
    background_work_gets_a_token_when_no_call_wants_one,
);
