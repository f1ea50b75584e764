//! Several replicas as one gateway: three real gateway processes, a real
//! `redis-server` and the simulator playing AWS. One AWS budget, one cache,
//! one AWS call per cold question and one poller per watched job across the
//! set; a killed or paused lease holder; Redis going away and coming back.

use crate::support;

use std::time::Duration;

use iot_jobs_gateway::{
    backends::local::limit::LocalRateLimit,
    backends::redis::RedisSettings,
    backends::redis::Shared,
    backends::redis::limit::SharedRateLimit,
    domain::limit::LimiterSettings,
    domain::limit::RateLimit as _,
    domain::limit::Share,
    pb::{self, watch_jobs_response::Event},
    simulator::{AwsOperation, Fault, FaultRule, SimConfig, busiest_second},
};
use redis::AsyncCommands as _;
use support::{
    describe, fresh,
    metrics::Scrape,
    process::GatewayProcess,
    redis::RedisServer,
    sim::{TestSim, create_fleet_job},
};
use tokio::time::{Instant, timeout};
use tonic::Streaming;

/// Starts `n` replicas in front of `sim`, sharing `redis`.
async fn replicas(
    n: usize,
    sim: &TestSim,
    redis: &RedisServer,
    extra: &[&str],
) -> Vec<GatewayProcess> {
    let mut set = Vec::with_capacity(n);
    let url = redis.url();
    for _ in 0..n {
        let flags = [&["--redis-url", url.as_str()][..], extra].concat();
        set.push(GatewayProcess::serve(&sim.url, &flags, "replica").await);
    }
    set
}

fn calls_for(sim: &TestSim, job_id: &str) -> u64 {
    sim.sim.stats().per_job.get(job_id).copied().unwrap_or(0)
}

/// What an open loop of calls got.
#[derive(Debug, Default)]
struct Outcomes {
    /// Answered, found or not.
    answered: usize,
    /// Refused at once by the rate limit (RESOURCE_EXHAUSTED).
    limited: usize,
    /// Granted a turn, but the answer came after the 2 s deadline.
    late: usize,
}

/// Calls `count` distinct job ids spread over `set`, `per_second` a second,
/// each with a 2 s deadline.
async fn open_loop(
    set: &[GatewayProcess],
    prefix: &str,
    per_second: f64,
    count: usize,
) -> Outcomes {
    let mut clients = Vec::new();
    for replica in set {
        clients.push(replica.client().await);
    }
    let interval = Duration::from_secs_f64(1.0 / per_second);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until(started + interval * i as u32).await;
        let mut client = clients[i % clients.len()].clone();
        let id = format!("{prefix}-{i}");
        tasks.push(tokio::spawn(async move {
            client
                .describe_job(describe(&id, Some(Duration::from_secs(2))))
                .await
        }));
    }
    let mut outcomes = Outcomes::default();
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => outcomes.answered += 1,
            Err(status) => match status.code() {
                tonic::Code::NotFound => outcomes.answered += 1,
                tonic::Code::ResourceExhausted => outcomes.limited += 1,
                // The gateway's answer came too late, or (on a busy
                // machine) the client's own timer ran out first.
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => outcomes.late += 1,
                _ => panic!("unexpected failure: {status:?}"),
            },
        }
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_calls_spread_over_three_replicas_cost_one_aws_call() {
    let redis = RedisServer::start().await;
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "cold").await;
    // AWS takes half a second, so all 300 calls are in flight together.
    sim.sim.inject(FaultRule {
        fault: Fault::Latency { ms: 500 },
        operation: AwsOperation::DescribeJob,
        job_id: Some("cold".into()),
        times: Some(1),
    });
    // One attempt per question, so an injected failure is the answer.
    let set = replicas(3, &sim, &redis, &["--upstream-max-attempts", "1"]).await;
    let mut clients = Vec::new();
    for replica in &set {
        clients.push(replica.client().await);
    }

    let calls: Vec<_> = (0..300)
        .map(|i| {
            let mut client = clients[i % 3].clone();
            tokio::spawn(async move {
                let answer = client.describe_job(describe("cold", None)).await.unwrap();
                let cache = answer
                    .metadata()
                    .get("x-cache")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                (i % 3, cache)
            })
        })
        .collect();
    let mut sources = std::collections::BTreeMap::<(usize, String), usize>::new();
    for call in calls {
        *sources.entry(call.await.unwrap()).or_default() += 1;
    }

    assert_eq!(
        calls_for(&sim, "cold"),
        1,
        "one AWS call for the set: {sources:?}"
    );
    let count = |kind: &str| {
        sources
            .iter()
            .filter(|((_, k), _)| k == kind)
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    assert_eq!(count("miss"), 1, "{sources:?}");
    for replica in 0..3 {
        assert!(
            sources
                .get(&(replica, "coalesced".into()))
                .copied()
                .unwrap_or(0)
                >= 50,
            "replica {replica} waited for the one AWS call: {sources:?}"
        );
    }
    // Within the TTL, every replica answers from the shared cache.
    for client in &mut clients {
        for _ in 0..10 {
            let answer = client.describe_job(describe("cold", None)).await.unwrap();
            assert_eq!(answer.metadata().get("x-cache").unwrap(), "hit");
        }
    }
    assert_eq!(calls_for(&sim, "cold"), 1);

    // `cache-control: no-cache` on any replica asks AWS again, and fresh
    // calls on different replicas still share that call.
    sim.sim.inject(FaultRule {
        fault: Fault::Latency { ms: 500 },
        operation: AwsOperation::DescribeJob,
        job_id: Some("cold".into()),
        times: Some(1),
    });
    let fresh_calls: Vec<_> = clients
        .iter()
        .map(|client| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let answer = client
                    .describe_job(fresh(describe("cold", None)))
                    .await
                    .unwrap();
                answer
                    .metadata()
                    .get("x-cache")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    let mut fresh_sources = Vec::new();
    for call in fresh_calls {
        fresh_sources.push(call.await.unwrap());
    }
    assert_eq!(
        calls_for(&sim, "cold"),
        2,
        "one more AWS call: {fresh_sources:?}"
    );
    assert!(
        !fresh_sources.contains(&"hit".to_owned()),
        "{fresh_sources:?}"
    );

    // "No such job" is remembered for the set.
    for client in &mut clients {
        let status = client
            .describe_job(describe("missing", None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
    assert_eq!(calls_for(&sim, "missing"), 1);

    // A failure is shared by the callers that waited for it, on every
    // replica, and is not cached.
    sim.sim.inject(FaultRule {
        fault: Fault::Latency { ms: 500 },
        operation: AwsOperation::DescribeJob,
        job_id: Some("broken".into()),
        times: Some(1),
    });
    sim.sim.inject(FaultRule {
        fault: Fault::ServiceUnavailableException,
        operation: AwsOperation::DescribeJob,
        job_id: Some("broken".into()),
        times: Some(1),
    });
    let failing: Vec<_> = (0..30)
        .map(|i| {
            let mut client = clients[i % 3].clone();
            tokio::spawn(async move { client.describe_job(describe("broken", None)).await })
        })
        .collect();
    for call in failing {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    assert_eq!(
        calls_for(&sim, "broken"),
        1,
        "one AWS call, its error shared"
    );
    let status = clients[1]
        .describe_job(describe("broken", None))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::NotFound,
        "the failure was not cached"
    );
    assert_eq!(calls_for(&sim, "broken"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_the_quota_spread_over_the_replicas_stays_within_it() {
    let redis = RedisServer::start().await;
    // AWS's quota: 10 calls/s.
    let sim = TestSim::start(SimConfig::default()).await;
    let set = replicas(
        3,
        &sim,
        &redis,
        &["--upstream-rate", "10", "--upstream-burst", "5"],
    )
    .await;

    let Outcomes {
        answered,
        limited,
        late,
    } = open_loop(&set, "q", 100.0, 800).await;

    let arrivals = sim.sim.arrivals();
    let span = (arrivals.last().unwrap() - arrivals[0]) as f64 / 1e6;
    let sustained = (arrivals.len() - 1) as f64 / span;
    let busiest = busiest_second(&arrivals);
    let stats = sim.sim.stats();
    assert!(
        busiest <= 15,
        "at most rate + burst in any second: {busiest}"
    );
    assert!(
        sustained >= 9.5,
        "at least 95% of the rate: {sustained:.2}/s over {span:.1} s"
    );
    assert_eq!(stats.throttled, 0, "AWS never throttled the set");
    assert!(
        late <= 8,
        "{late} calls granted a turn missed their deadline"
    );
    assert_eq!(answered + limited + late, 800);
    assert!(limited > 600, "the rest were refused at once: {limited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_seen_by_one_replica_slows_the_whole_set() {
    let redis = RedisServer::start().await;
    // AWS allows 4 calls/s; each replica believes the set may make 20.
    let sim = TestSim::start(SimConfig {
        describe_rate_limit: Some(4),
        ..SimConfig::default()
    })
    .await;
    let set = replicas(
        3,
        &sim,
        &redis,
        &["--upstream-rate", "20", "--upstream-max-attempts", "1"],
    )
    .await;

    let load = open_loop(&set, "t", 60.0, 720);
    let watch = async {
        tokio::time::sleep(Duration::from_secs(7)).await;
        (sim.sim.stats(), sim.sim.arrivals().len())
    };
    let (outcomes, (early, early_arrivals)) = tokio::join!(load, watch);
    let late = sim.sim.stats();
    let arrivals = sim.sim.arrivals();
    let late_arrivals = arrivals.len() - early_arrivals;
    let window = (arrivals[arrivals.len() - 1] - arrivals[early_arrivals - 1]) as f64 / 1e6;
    let late_rate = late_arrivals as f64 / window;

    assert!(early.throttled > 0, "the set was throttled at first");
    // The last ~5 s: below AWS's 4/s, hardly throttled.
    assert!(
        late_rate <= 4.4,
        "the set settled at AWS's rate: {late_arrivals} calls in the last {window:.1} s"
    );
    assert!(
        late.throttled - early.throttled <= 3,
        "{} throttles in the last 5 s",
        late.throttled - early.throttled
    );
    assert!(late_arrivals >= 10, "and kept calling: {late_arrivals}");
    // Throttled calls are refused (one attempt); a few may miss their
    // deadline while the rate changes under them.
    assert!(outcomes.late <= 15, "{outcomes:?}");
    assert_eq!(outcomes.answered + outcomes.limited + outcomes.late, 720);
    // The lowered rate is the set's, in Redis.
    let mut conn = redis.client().await;
    let generation: Option<u64> = conn.hget("{iot-jobs-gateway}:limit", "gen").await.unwrap();
    assert!(generation.unwrap_or(0) >= 1, "the backoff is shared");
}

/// Opens a watch on `job_id` through `replica` and reads its first event.
async fn watch(
    replica: &GatewayProcess,
    job_id: &str,
) -> (Streaming<pb::WatchJobsResponse>, pb::JobEvent) {
    let mut stream = replica
        .client()
        .await
        .watch_jobs(pb::WatchJobsRequest {
            job_ids: vec![job_id.to_owned()],
            ..Default::default()
        })
        .await
        .expect("the watch starts")
        .into_inner();
    let first = next_job(&mut stream, Duration::from_secs(15))
        .await
        .expect("a first event");
    (stream, first)
}

/// The next job event within `patience` (heartbeats skipped); `None` if the
/// stream ended or broke.
async fn next_job(
    stream: &mut Streaming<pb::WatchJobsResponse>,
    patience: Duration,
) -> Option<pb::JobEvent> {
    let give_up = Instant::now() + patience;
    loop {
        let message = timeout(
            give_up.saturating_duration_since(Instant::now()),
            stream.message(),
        )
        .await
        .expect("an event in time");
        match message.ok()??.event? {
            Event::Job(event) => return Some(event),
            Event::Heartbeat(_) => continue,
        }
    }
}

/// How far a rollout of 10 things has come: things started plus things
/// succeeded; it grows with every simulated second until the end (-1: the
/// event holds no job).
fn progress(event: &pb::JobEvent) -> i32 {
    match &event.state {
        Some(pb::job_event::State::Response(response)) => rollout_progress(response),
        _ => -1,
    }
}

fn rollout_progress(response: &pb::DescribeJobResponse) -> i32 {
    response
        .job
        .as_ref()
        .and_then(|j| j.job_process_details.as_ref())
        .map_or(-1, |d| {
            10 - d.number_of_queued_things() + d.number_of_succeeded_things()
        })
}

/// The replica holding `job_id`'s poll lease (its name carries its pid).
async fn lease_holder(redis: &RedisServer, set: &[GatewayProcess], job_id: &str) -> Option<usize> {
    let mut conn = redis.client().await;
    let value: Option<String> = conn
        .get(format!("{{iot-jobs-gateway}}:lease:{job_id}:-"))
        .await
        .unwrap();
    let name = value?.split_once(' ')?.1.to_owned();
    set.iter()
        .position(|r| name.contains(&format!("-{}-", r.pid())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_polls_a_watched_job_and_another_takes_over_when_it_is_killed() {
    let redis = RedisServer::start().await;
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let mut set = replicas(3, &sim, &redis, &["--watch-poll-interval", "1s"]).await;
    let mut streams = Vec::new();
    for replica in &set {
        streams.push(watch(replica, "rollout").await);
    }

    // One poll per interval across the set, not one per replica.
    let before = calls_for(&sim, "rollout");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let polls = calls_for(&sim, "rollout") - before;
    assert!(
        (3..=9).contains(&polls),
        "{polls} polls in 6 s at one per second"
    );

    // Every watcher sees every change.
    for _ in 0..2 {
        sim.advance(Duration::from_secs(1));
        let mut versions = Vec::new();
        for (stream, last) in &mut streams {
            let event = next_job(stream, Duration::from_secs(10))
                .await
                .expect("the change");
            assert!(progress(&event) >= progress(last));
            versions.push(event.version);
            *last = event;
        }
        assert!(
            versions.windows(2).all(|w| w[0] == w[1]),
            "the same state everywhere: {versions:?}"
        );
    }

    // kill -9 of the lease holder: polling resumes elsewhere.
    let holder = lease_holder(&redis, &set, "rollout")
        .await
        .expect("a lease holder");
    set[holder].signal("KILL");
    let killed = Instant::now();
    let _ = set[holder].exited().await;
    let (_, seen) = streams.remove(holder);
    // Its client reconnects to another replica, resuming from the version
    // it saw: nothing is repeated.
    let elsewhere = (holder + 1) % set.len();
    let mut resumed = set[elsewhere]
        .client()
        .await
        .watch_jobs(pb::WatchJobsRequest {
            job_ids: vec!["rollout".into()],
            resume_from: [("rollout".to_owned(), seen.version)].into(),
            ..Default::default()
        })
        .await
        .expect("the watch resumes")
        .into_inner();
    sim.advance(Duration::from_secs(1));
    for (stream, last) in &mut streams {
        let event = next_job(stream, Duration::from_secs(20))
            .await
            .expect("the change after the kill");
        assert!(
            progress(&event) > progress(last),
            "a newer state: {:?} {} after {:?} {}",
            event.kind(),
            progress(&event),
            last.kind(),
            progress(last)
        );
        *last = event;
    }
    let after = next_job(&mut resumed, Duration::from_secs(20))
        .await
        .expect("the change");
    assert_ne!(
        after.version, seen.version,
        "the resumed watch starts after what it saw"
    );
    assert!(progress(&after) > progress(&seen));
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(12),
        "took over after {takeover:?} (lease 6 s + cycle 2 s)"
    );
    let new_holder = lease_holder(&redis, &set, "rollout")
        .await
        .expect("a new holder");
    assert_ne!(new_holder, holder);

    // The survivors follow the rollout to the end.
    for _ in 0..15 {
        sim.advance(Duration::from_secs(1));
    }
    for (stream, _) in &mut streams {
        let mut last = None;
        while let Some(event) = next_job(stream, Duration::from_secs(15)).await {
            last = Some(event);
        }
        let last = last.expect("events up to the end");
        assert!(last.r#final, "the last event is final");
        assert_eq!(progress(&last), 20, "all ten started and succeeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_lease_holder_cannot_put_an_older_state_over_a_newer_one() {
    let redis = RedisServer::start().await;
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "fenced").await;
    // Long AWS timeouts: the paused holder really gets its old answer.
    let flags = [
        "--watch-poll-interval",
        "1s",
        "--upstream-attempt-timeout",
        "60s",
        "--upstream-operation-timeout",
        "60s",
    ];
    let set = replicas(3, &sim, &redis, &flags).await;
    let mut streams = Vec::new();
    for replica in &set {
        streams.push(watch(replica, "fenced").await);
    }
    sim.advance(Duration::from_secs(2));
    for (stream, last) in &mut streams {
        *last = next_job(stream, Duration::from_secs(10))
            .await
            .expect("a state with progress");
    }
    let old = streams[0].1.clone();

    // The holder's next poll is held up at AWS; pause it while it waits.
    let holder = lease_holder(&redis, &set, "fenced")
        .await
        .expect("a lease holder");
    sim.sim.inject(FaultRule {
        fault: Fault::Latency { ms: 2000 },
        operation: AwsOperation::DescribeJob,
        job_id: Some("fenced".into()),
        times: Some(1),
    });
    let calls = calls_for(&sim, "fenced");
    let asked = Instant::now() + Duration::from_secs(10);
    while calls_for(&sim, "fenced") == calls {
        assert!(Instant::now() < asked, "the holder polls again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    set[holder].signal("STOP");

    // Another replica takes the lease and publishes newer states.
    streams.remove(holder);
    sim.advance(Duration::from_secs(3));
    let mut newest = Vec::new();
    for (stream, last) in &mut streams {
        let event = next_job(stream, Duration::from_secs(20))
            .await
            .expect("a newer state");
        assert!(progress(&event) > progress(&old));
        newest.push(progress(&event));
        *last = event;
    }

    // The old holder wakes up with its old answer: it must not show.
    set[holder].signal("CONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (i, (stream, last)) in streams.iter_mut().enumerate() {
        while let Ok(Some(event)) = timeout(
            Duration::from_millis(300),
            next_job(stream, Duration::from_secs(1)),
        )
        .await
        {
            assert!(
                progress(&event) >= newest[i],
                "an older state ({}) came after a newer one ({})",
                progress(&event),
                newest[i]
            );
            assert_ne!(
                event.version, old.version,
                "the old state was published again"
            );
            *last = event;
        }
    }
    let mut conn = redis.client().await;
    let cached: Option<Vec<u8>> = conn
        .hget("{iot-jobs-gateway}:answer:fenced:-", "v")
        .await
        .unwrap();
    let cached = iot_jobs_gateway::backends::redis::wire::StoredAnswer::decode_answer(
        &cached.expect("cached"),
    )
    .expect("an answer");
    let cached = match cached.state {
        iot_jobs_gateway::domain::answer::JobState::Found(response) => rollout_progress(&response),
        iot_jobs_gateway::domain::answer::JobState::NotFound(_) => -1,
    };
    assert!(
        cached >= newest[0],
        "the shared cache kept the newer state: {cached} < {}",
        newest[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_replicas_keep_answering_within_their_fallback_rates_and_rejoin() {
    let tools = support::python::tools().await;
    let mut redis = RedisServer::start().await;
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "hot").await;
    // A long TTL: the hot job is still cached when Redis goes.
    let flags = [
        "--upstream-rate",
        "9",
        "--upstream-burst",
        "3",
        "--redis-fallback-rate",
        "3",
        "--cache-ttl",
        "60s",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let set = replicas(3, &sim, &redis, &flags).await;
    // What each replica's /metrics says of Redis: (fallback, errors, leases).
    let redis_metrics = async |set: &[GatewayProcess]| {
        let mut seen = Vec::new();
        for replica in set {
            let s = Scrape::of(tools, replica.metrics_addr.as_deref().unwrap()).await;
            seen.push((
                s.value("iot_jobs_gateway_redis_fallback", &[]),
                s.value("iot_jobs_gateway_redis_errors_total", &[]),
                s.value("iot_jobs_gateway_redis_leases_held", &[]),
            ));
        }
        seen
    };
    let mut clients = Vec::new();
    for replica in &set {
        let mut client = replica.client().await;
        client.describe_job(describe("hot", None)).await.unwrap();
        clients.push(client);
    }
    assert_eq!(calls_for(&sim, "hot"), 1);
    let (mut stream, mut last) = watch(&set[1], "hot").await;
    sim.advance(Duration::from_secs(1));
    last = next_job(&mut stream, Duration::from_secs(10))
        .await
        .map_or(last, |event| event);
    let before = redis_metrics(&set).await;
    assert!(
        before
            .iter()
            .all(|(fallback, errors, _)| (*fallback, *errors) == (0.0, 0.0))
    );
    assert_eq!(
        before.iter().map(|(_, _, leases)| leases).sum::<f64>(),
        1.0,
        "one replica holds the watched job's lease: {before:?}"
    );

    redis.kill().await;
    // Hot answers are still hits; health stays SERVING.
    for client in &mut clients {
        let answer = client.describe_job(describe("hot", None)).await.unwrap();
        assert_eq!(answer.metadata().get("x-cache").unwrap(), "hit");
    }
    for replica in &set {
        let channel = support::channel(replica.addr.parse().unwrap()).await;
        let health = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            health.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    // The watcher keeps getting news: its replica polls the job itself.
    sim.advance(Duration::from_secs(2));
    let during = next_job(&mut stream, Duration::from_secs(10))
        .await
        .expect("a change while Redis is away");
    assert!(
        progress(&during) > progress(&last),
        "a newer state, in fallback mode"
    );
    // Misses: each replica at its fallback rate, 3/s, burst 1.
    let before = sim.sim.arrivals().len();
    let started = Instant::now();
    let Outcomes {
        answered,
        limited,
        late,
    } = open_loop(&set, "fb", 30.0, 120).await;
    assert!(late <= 2, "{late} calls missed their deadline");
    let took = started.elapsed().as_secs_f64() + 2.0;
    let upstream = sim.sim.arrivals().len() - before;
    assert!(answered >= 20, "misses were answered: {answered}");
    assert!(limited > 0);
    let allowed = (3.0 * 3.0 * took + 3.0).ceil() as usize;
    assert!(
        upstream <= allowed,
        "{upstream} AWS calls in {took:.1} s; fallback rates allow {allowed}"
    );
    for replica in &set {
        assert!(
            replica.logged("Redis is unreachable"),
            "one warning per replica"
        );
    }
    let away = redis_metrics(&set).await;
    assert!(
        away.iter()
            .all(|(fallback, errors, _)| *fallback == 1.0 && *errors >= 1.0),
        "every replica in fallback, its Redis errors counted: {away:?}"
    );

    // Redis back: shared mode resumes without a restart.
    redis.restart().await;
    let back = Instant::now() + Duration::from_secs(15);
    while !set.iter().all(|r| r.logged("Redis is back")) {
        assert!(Instant::now() < back, "the replicas rejoin");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rejoined = redis_metrics(&set).await;
    assert!(
        rejoined.iter().all(|(fallback, _, _)| *fallback == 0.0),
        "{rejoined:?}"
    );
    for client in &mut clients {
        client
            .describe_job(describe("after", None))
            .await
            .unwrap_err();
    }
    assert_eq!(
        calls_for(&sim, "after"),
        1,
        "one AWS call for the set again"
    );
}

/// Arrivals for the bucket comparison: bursts, gaps and steady runs, in
/// whole milliseconds from an arbitrary start.
fn arrivals() -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(13);
    let mut t = 0;
    (0..400)
        .map(|i| {
            t += match i % 50 {
                0 => 1_000 + rng.u64(0..2_000),
                1..=10 => rng.u64(0..20),
                _ => rng.u64(30..250),
            };
            t
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_buckets_script_decides_as_the_in_process_bucket_does() {
    let redis = RedisServer::start().await;
    let settings = LimiterSettings {
        rate: 10.0,
        burst: 5,
        max_waiters: 100,
        background_share: 0.2,
    };
    let arrivals = arrivals();

    // The in-process bucket, on a paused clock.
    let local = {
        let settings = settings.clone();
        let arrivals = arrivals.clone();
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async move {
                let bucket = LocalRateLimit::new(settings);
                let start = Instant::now();
                let mut decisions = Vec::new();
                for at in arrivals {
                    tokio::time::advance((start + Duration::from_millis(at)) - Instant::now())
                        .await;
                    decisions.push(
                        bucket
                            .acquire(Instant::now(), &Share::of("test"))
                            .await
                            .is_ok(),
                    );
                }
                decisions
            })
        })
        .await
        .unwrap()
    };

    // The script, told the same times.
    let shared = Shared::connect(&RedisSettings {
        url: redis.url(),
        key_prefix: "bucket-test".into(),
        timeout: Duration::from_secs(2),
        fallback_rate: 1.0,
    })
    .await
    .unwrap();
    let bucket = SharedRateLimit::new(shared, "", settings.clone(), settings);
    let base = 1_800_000_000_000.0;
    let mut script = Vec::new();
    for at in &arrivals {
        script.push(bucket.decide_at(base + *at as f64).await.unwrap());
    }

    assert_eq!(script, local, "the same decisions on the same arrivals");
    let granted = local.iter().filter(|g| **g).count();
    assert!(
        granted > 100 && granted < arrivals.len(),
        "both outcomes occur: {granted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_through_redis_over_tls_with_a_password() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = support::process::empty_home("redis-tls");
    // A private CA and a certificate for 127.0.0.1 signed by it.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(
        CertificateParams::new(Vec::<String>::new()).unwrap(),
        &ca_key,
    );
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    let ca_file = write("ca.pem", ca.pem());
    let cert_file = write("server.pem", server.pem());
    let key_file = write("server.key", server_key.serialize_pem());

    let redis = RedisServer::start_with(&[
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "s3cret-pw",
    ])
    .await;
    let url = format!(
        "rediss://default:s3cret-pw@127.0.0.1:{}",
        redis.tls_port().unwrap()
    );
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "tls").await;
    let mut set = Vec::new();
    for _ in 0..2 {
        let replica = GatewayProcess::serve_with_env(
            &sim.url,
            &["--redis-url", &url],
            &[("SSL_CERT_FILE", ca_file.as_str())],
            "replica-tls",
        )
        .await;
        set.push(replica);
    }
    for replica in &set {
        assert!(replica.logged("through Redis"), "shared mode over TLS");
        let text = replica
            .logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.to_string())
            .collect::<String>();
        assert!(
            !text.contains("s3cret-pw"),
            "the password stays out of the logs"
        );
        replica
            .client()
            .await
            .describe_job(describe("tls", None))
            .await
            .unwrap();
    }
    assert_eq!(
        calls_for(&sim, "tls"),
        1,
        "one AWS call for both, through the TLS Redis"
    );
    assert!(set.iter().all(|r| !r.logged("Redis is unreachable")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_stay_with_their_holders_while_they_renew_them() {
    let redis = RedisServer::start().await;
    let sim = TestSim::unlimited().await;
    let ids: Vec<String> = (0..6).map(|i| format!("steady-{i}")).collect();
    for id in &ids {
        create_fleet_job(&sim, id).await;
    }
    let set = replicas(3, &sim, &redis, &["--watch-poll-interval", "1s"]).await;
    // All six watched through one replica: it holds several leases.
    let mut stream = set[0]
        .client()
        .await
        .watch_jobs(pb::WatchJobsRequest {
            job_ids: ids.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..ids.len() {
        next_job(&mut stream, Duration::from_secs(15))
            .await
            .expect("a first state");
    }
    let leases = |conn: redis::aio::MultiplexedConnection| {
        let ids = ids.clone();
        async move {
            let mut conn = conn;
            let mut values = Vec::new();
            for id in &ids {
                let value: Option<String> = conn
                    .get(format!("{{iot-jobs-gateway}}:lease:{id}:-"))
                    .await
                    .unwrap();
                values.push(value.expect("every watched job has a lease holder"));
            }
            values
        }
    };
    let before = leases(redis.client().await).await;
    // Three renewal cycles.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = leases(redis.client().await).await;
    assert_eq!(
        after, before,
        "no lease changed hands or token while renewed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_bucket_recovers_when_redis_loses_its_state() {
    let redis = RedisServer::start().await;
    let sim = TestSim::unlimited().await;
    let set = replicas(
        1,
        &sim,
        &redis,
        &["--upstream-rate", "4", "--upstream-burst", "1"],
    )
    .await;
    let mut client = set[0].client().await;
    // One ThrottlingException: the shared rate goes down, the generation up.
    sim.sim.inject(FaultRule {
        fault: Fault::ThrottlingException,
        operation: AwsOperation::DescribeJob,
        job_id: None,
        times: Some(1),
    });
    let _ = client.describe_job(describe("first", None)).await;
    let mut conn = redis.client().await;
    let generation: Option<u64> = conn.hget("{iot-jobs-gateway}:limit", "gen").await.unwrap();
    assert!(generation.is_some(), "the backoff is in Redis");
    // Redis loses the bucket (it expired, or Redis restarted empty).
    let _: () = conn.del("{iot-jobs-gateway}:limit").await.unwrap();

    // Calls that must wait for their turn still get it, and reserve one
    // turn each, not one per retry.
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .describe_job(describe(
                        &format!("after-{i}"),
                        Some(Duration::from_secs(5)),
                    ))
                    .await
            })
        })
        .collect();
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "answered: {status:?}");
    }
    let tat: f64 = conn.hget("{iot-jobs-gateway}:limit", "tat").await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    assert!(
        tat - now_ms < 2_000.0,
        "the bucket was not run ahead: {:.0} ms",
        tat - now_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_the_set_calls_go_before_polls_which_keep_their_share() {
    let redis = RedisServer::start().await;
    let shared = Shared::connect(&RedisSettings {
        url: redis.url(),
        key_prefix: "share-test".into(),
        timeout: Duration::from_secs(2),
        fallback_rate: 1.0,
    })
    .await
    .unwrap();
    let settings = LimiterSettings {
        rate: 10.0,
        burst: 5,
        max_waiters: 1000,
        background_share: 0.2,
    };
    let bucket = SharedRateLimit::new(shared, "", settings.clone(), settings);
    // 20 s on Redis's terms: calls that may wait 2 s arrive every 10 ms, and
    // the watch scheduler asks for a token as often.
    let base = 1_800_000_000_000.0;
    let (mut calls, mut polls, mut refused) = (0, 0, 0);
    for step in 0..2000 {
        let now = base + f64::from(step) * 10.0;
        match bucket
            .turn_at(Some(Duration::from_secs(2)), now)
            .await
            .unwrap()
        {
            Some(_) => calls += 1,
            None => refused += 1,
        }
        if bucket.turn_at(None, now).await.unwrap().is_some() {
            polls += 1;
        }
    }
    // 10/s for 20 s, plus the burst and the turns queued at the end.
    let total = calls + polls;
    assert!(
        (200..=230).contains(&total),
        "{calls} calls + {polls} polls"
    );
    assert!(
        (38..=44).contains(&polls),
        "polls keep about 20% of the rate while calls wait: {polls} of {total}"
    );
    assert!(
        refused > 1500,
        "calls beyond the queue are refused at once: {refused}"
    );

    // With no call waiting, polls take every token.
    let later = base + 60_000.0;
    let mut alone = 0;
    for step in 0..100 {
        if bucket
            .turn_at(None, later + f64::from(step) * 100.0)
            .await
            .unwrap()
            == Some(Duration::ZERO)
        {
            alone += 1;
        }
    }
    assert!(
        alone >= 99,
        "polls alone get the whole rate: {alone} of 100"
    );
}
