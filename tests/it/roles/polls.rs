//! Poll ownership's contract, for one process on its own: a job watched
//! here comes to be polled here, and what a poll finds reaches the
//! watchers here; a job nobody watches is polled by nobody here.

use std::{sync::Arc, time::Duration};

use iot_jobs_gateway::{
    domain::{
        JobsSettings,
        answer::{JobAnswer, JobState},
        watch::{
            Observation, Observed, WatchSettings, Watches, observation::Sent,
            ownership::PollOwnership,
        },
    },
    pb,
    upstream::JobQuery,
};
use tokio::time::Instant;

use super::{Backend, against_every_backend};

fn settings() -> JobsSettings {
    JobsSettings::default()
}

fn query(job_id: &str) -> JobQuery {
    JobQuery {
        job_id: job_id.to_owned(),
        before_substitution: None,
    }
}

/// The watches the role serves, started as the domain starts them.
fn watches_of(polls: &Arc<dyn PollOwnership>) -> Arc<Watches> {
    let watches = Arc::new(Watches::new(WatchSettings::default(), polls.clone()));
    polls.start(Arc::downgrade(&watches));
    watches
}

async fn a_job_watched_here_is_polled_here_and_its_answers_reach_its_watchers(backend: Backend) {
    let polls = backend.roles.polls;
    let watches = watches_of(&polls);
    let q = query("fw-watched");
    let mut watcher = watches.subscribe(&q);

    let deadline = Instant::now() + Duration::from_secs(10);
    while !polls.owns(&q, true) {
        assert!(Instant::now() < deadline, "the only process polls its job");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = pb::DescribeJobResponse {
        job: Some(pb::Job {
            job_id: Some("fw-watched".into()),
            ..Default::default()
        }),
        document_source: None,
    };
    let answer = Arc::new(JobAnswer::now(JobState::Found(Arc::new(response))));
    polls.publish(
        &watches,
        &q,
        Box::new(|| Observation::answered(&answer, Sent::now())),
    );
    tokio::time::timeout(Duration::from_secs(5), watcher.changed())
        .await
        .expect("the watcher hears the poll's answer")
        .unwrap();
    let seen = watcher.borrow().clone().expect("an observation");
    match &seen.state {
        Observed::Answer(got) => match &got.state {
            JobState::Found(response) => assert_eq!(
                response.job.as_ref().and_then(|j| j.job_id.as_deref()),
                Some("fw-watched")
            ),
            JobState::NotFound(err) => panic!("no such job instead of the answer: {err}"),
        },
        Observed::Failed(err) => panic!("a failure instead of the answer: {}", err.chain()),
    }
}

async fn a_job_nobody_watches_is_not_polled_here(backend: Backend) {
    let polls = backend.roles.polls;
    let watches = watches_of(&polls);
    let watched = query("fw-watched");
    let _watcher = watches.subscribe(&watched);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !polls.owns(&watched, true) {
        assert!(Instant::now() < deadline, "the watched job is polled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!polls.owns(&query("fw-unwatched"), false));
}

against_every_backend!(
    a_job_watched_here_is_polled_here_and_its_answers_reach_its_watchers,
    a_job_nobody_watches_is_not_polled_here,
);
