//! The example clients in `examples/` (Python with grpcio, TypeScript with
//! @grpc/grpc-js), run as a user runs them against the real gateway binary
//! in front of the simulator. Both take the same command line and print the
//! same lines (`examples/README.md`), so every scenario here runs for each.

use crate::support;

mod later;
mod output;

use std::{collections::BTreeMap, time::Duration};

use later::{LATER, later_gateway};
use output::{Following, Line, run};
use support::{
    debian::free_port,
    process::GatewayProcess,
    sim::{TestSim, create_fleet_job},
};
use tokio::{process::Command, time::timeout};

#[derive(Clone, Copy, Debug)]
enum Client {
    Python,
    TypeScript,
}

impl Client {
    /// The client's command, its tools installed first (a test asks for it
    /// before it starts anything that runs on a clock).
    async fn command(self) -> Command {
        match self {
            Client::Python => support::python::tools().await.python_example(),
            Client::TypeScript => support::node::typescript_example().await,
        }
    }

    fn home(self, scenario: &str) -> String {
        format!("examples-{self:?}-{scenario}")
    }
}

/// The simulator with a fleet job for each id: IN_PROGRESS until 14
/// simulated seconds have passed (its clock moves only when told).
async fn simulator_with(job_ids: &[&str]) -> TestSim {
    let sim = TestSim::unlimited().await;
    for job_id in job_ids {
        create_fleet_job(&sim, job_id).await;
    }
    sim
}

async fn describes_with_a_deadline_and_names_a_missing_job(client: Client) {
    let command = client.command().await;
    let sim = simulator_with(&["firmware-a"]).await;
    let gw = GatewayProcess::serve(&sim.url, &[], &client.home("describe")).await;

    let ran = run(
        command,
        &gw.addr,
        &["--deadline", "5", "describe", "firmware-a", "no-such-job"],
    )
    .await;

    assert_eq!(
        ran.code,
        Some(1),
        "a missing job fails the run\n{}",
        ran.shown()
    );
    let jobs = ran.of("job");
    assert_eq!(jobs.len(), 1, "{}", ran.shown());
    assert_eq!(jobs[0].get("id"), "firmware-a");
    assert_eq!(jobs[0].get("status"), "IN_PROGRESS");
    assert_eq!(jobs[0].get("cache"), "miss");
    let missing = ran.of("not-found");
    assert_eq!(missing.len(), 1, "{}", ran.shown());
    assert_eq!(missing[0].get("id"), "no-such-job");
    assert_eq!(missing[0].get("reason"), "JOB_NOT_FOUND", "from ErrorInfo");
}

async fn waits_as_retry_info_says_when_rate_limited(client: Client) {
    let command = client.command().await;
    let ids = ["rl-0", "rl-1", "rl-2", "rl-3"];
    let sim = simulator_with(&ids).await;
    // An AWS call every 2 s, no burst: with 1 s deadlines, calls in a row
    // find no AWS call free in time and are refused with RetryInfo (and a
    // call that gets through has most of a second to be answered).
    let gw = GatewayProcess::serve(
        &sim.url,
        &["--upstream-rate", "0.5", "--upstream-burst", "1"],
        &client.home("rate"),
    )
    .await;
    let calls_before = sim.sim.stats().describe_job_calls;

    let mut args = vec!["--deadline", "1", "describe"];
    args.extend(ids);
    let ran = run(command, &gw.addr, &args).await;

    assert_eq!(ran.code, Some(0), "{}", ran.shown());
    let described: Vec<&str> = ran.of("job").iter().map(|l| l.get("id")).collect();
    assert_eq!(described, ids, "every job, in order\n{}", ran.shown());
    let waits = ran.of("rate-limited");
    assert!(
        !waits.is_empty(),
        "nothing was rate limited\n{}",
        ran.shown()
    );
    for wait in waits {
        let ms: u64 = wait.get("retry-in-ms").parse().unwrap();
        assert!(
            (1..=2_000).contains(&ms),
            "RetryInfo at one call in 2 s: {}",
            wait.text
        );
    }
    assert_eq!(
        sim.sim.stats().describe_job_calls - calls_before,
        4,
        "refused calls cost AWS nothing"
    );
}

async fn runs_a_batch_with_an_answer_or_an_error_per_item(client: Client) {
    let command = client.command().await;
    let sim = simulator_with(&["firmware-a", "firmware-b"]).await;
    let gw = GatewayProcess::serve(&sim.url, &[], &client.home("batch")).await;

    let ran = run(
        command,
        &gw.addr,
        &[
            "batch",
            "firmware-a",
            "no-such-job",
            "firmware-b",
            "firmware-a",
        ],
    )
    .await;

    assert_eq!(ran.code, Some(0), "{}", ran.shown());
    let items = ran.of("item");
    let order: Vec<(&str, &str)> = items
        .iter()
        .map(|l| (l.get("index"), l.get("id")))
        .collect();
    assert_eq!(
        order,
        [
            ("0", "firmware-a"),
            ("1", "no-such-job"),
            ("2", "firmware-b"),
            ("3", "firmware-a")
        ],
        "{}",
        ran.shown()
    );
    for found in [items[0], items[2], items[3]] {
        assert_eq!(found.get("status"), "IN_PROGRESS", "{}", found.text);
        assert!(
            ["MISS", "COALESCED", "HIT"].contains(&found.get("cache")),
            "{}",
            found.text
        );
    }
    assert_eq!(items[1].get("code"), "NOT_FOUND");
    assert_eq!(items[1].get("reason"), "JOB_NOT_FOUND");
    assert_eq!(
        sim.sim.stats().describe_job_calls,
        3,
        "a repeated job costs one AWS call"
    );
}

async fn follows_a_watch_across_a_restart_with_resume_from(client: Client) {
    let command = client.command().await;
    let sim = simulator_with(&["firmware-a", "firmware-b"]).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let flags = ["--watch-poll-interval", "200ms", "--watch-heartbeat", "1s"];
    let home = client.home("watch");
    let mut first = GatewayProcess::serve_at(&listen, &sim.url, &flags, &[], &home).await;

    let mut watch = Following::start(command, &listen, &["watch", "firmware-a", "firmware-b"]);
    let mut versions = BTreeMap::new();
    while versions.len() < 2 {
        let line = watch.next("each job's current state").await;
        if line.kind == "event" {
            assert_eq!(line.get("kind"), "CURRENT", "{}", line.text);
            assert_eq!(line.get("status"), "IN_PROGRESS", "{}", line.text);
            assert_eq!(line.get("final"), "false", "{}", line.text);
            versions.insert(line.get("id").to_owned(), line.get("version").to_owned());
        }
    }

    // The gateway shuts down: the stream ends with UNAVAILABLE
    // (SHUTTING_DOWN) and the client says where it will resume.
    first.signal("TERM");
    assert!(first.exited().await.success());
    let reconnect = loop {
        let line = watch.next("the client's reconnect").await;
        if line.kind == "reconnect" {
            break line;
        }
        assert_eq!(line.kind, "heartbeat", "{}", line.text);
    };
    assert_eq!(reconnect.get("code"), "UNAVAILABLE");
    assert_eq!(reconnect.get("reason"), "SHUTTING_DOWN", "from ErrorInfo");
    let resume: Vec<String> = versions.iter().map(|(id, v)| format!("{id}:{v}")).collect();
    assert_eq!(reconnect.get("resume"), resume.join(","));

    // Back on the same address. Nothing changed meanwhile, so the resumed
    // stream sends no state again: its first message is a heartbeat.
    let _second = GatewayProcess::serve_at(&listen, &sim.url, &flags, &[], &home).await;
    let resumed = loop {
        let line = watch.next("the resumed stream's first message").await;
        if line.kind != "reconnect" {
            break line;
        }
    };
    assert_eq!(
        resumed.kind, "heartbeat",
        "the resumed stream repeated a state: {}",
        resumed.text
    );
    assert_eq!(resumed.get("watching"), "2");

    // The jobs finish (the fleet job completes 14 simulated seconds after
    // its creation): each ends with a final event, then the stream with OK.
    sim.advance(Duration::from_secs(30));
    let mut finished = BTreeMap::new();
    loop {
        let line = watch.next("the jobs' end").await;
        match line.kind.as_str() {
            "event" if line.get("final") == "true" => {
                assert_eq!(line.get("status"), "COMPLETED", "{}", line.text);
                assert_ne!(line.get("version"), versions[line.get("id")]);
                finished.insert(line.get("id").to_owned(), line.get("kind").to_owned());
            }
            "event" | "heartbeat" => {}
            "done" => break,
            _ => panic!("unexpected: {}", line.text),
        }
    }
    assert_eq!(finished.len(), 2, "{:#?}", watch.seen);
    let status = timeout(Duration::from_secs(10), watch.child.wait())
        .await
        .expect("the client exits after the stream ends")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

async fn streams_each_result_as_it_is_ready(client: Client) {
    let command = client.command().await;
    let sim = simulator_with(&["firmware-a", "firmware-b"]).await;
    let gw = GatewayProcess::serve(&sim.url, &[], &client.home("stream")).await;

    let ran = run(
        command,
        &gw.addr,
        &["stream", "firmware-a", "no-such-job", "firmware-b"],
    )
    .await;

    assert_eq!(ran.code, Some(0), "{}", ran.shown());
    let mut items: Vec<(&str, &Line)> = ran
        .of("item")
        .into_iter()
        .map(|line| (line.get("index"), line))
        .collect();
    items.sort_by_key(|(index, _)| *index);
    let ids: Vec<(&str, &str)> = items.iter().map(|(i, l)| (*i, l.get("id"))).collect();
    assert_eq!(
        ids,
        [
            ("0", "firmware-a"),
            ("1", "no-such-job"),
            ("2", "firmware-b")
        ],
        "one result per item, each with its index\n{}",
        ran.shown()
    );
    assert_eq!(items[0].1.get("status"), "IN_PROGRESS");
    assert_eq!(items[1].1.get("code"), "NOT_FOUND");
    assert_eq!(items[1].1.get("reason"), "JOB_NOT_FOUND");
    assert_eq!(items[2].1.get("status"), "IN_PROGRESS");
}

async fn sends_the_caller_s_token_from_the_environment(client: Client) {
    let command = || async move { client.command().await };
    let sim = simulator_with(&["firmware-a"]).await;
    let home = client.home("token");
    let tokens = support::process::empty_home(&home).join("tokens");
    std::fs::write(
        &tokens,
        format!("{} backend\n", support::sha256_hex("backend-s3cret")),
    )
    .unwrap();
    let gw = GatewayProcess::serve(
        &sim.url,
        &["--auth-tokens", tokens.to_str().unwrap()],
        &home,
    )
    .await;
    let describe = ["describe", "firmware-a"];

    let mut with_token = command().await;
    with_token.env("IOT_JOBS_GATEWAY_TOKEN", "backend-s3cret");
    let ran = run(with_token, &gw.addr, &describe).await;
    assert_eq!(ran.code, Some(0), "{}", ran.shown());
    assert_eq!(ran.of("job").len(), 1, "{}", ran.shown());

    let mut no_token = command().await;
    no_token.env_remove("IOT_JOBS_GATEWAY_TOKEN");
    let mut wrong = command().await;
    wrong.env("IOT_JOBS_GATEWAY_TOKEN", "guessed");
    for (refused, what) in [(no_token, "no token"), (wrong, "a wrong token")] {
        let ran = run(refused, &gw.addr, &describe).await;
        let failed = ran.of("failed");
        assert_eq!(ran.code, Some(1), "{what}: {}", ran.shown());
        assert_eq!(failed.len(), 1, "{what}: {}", ran.shown());
        assert_eq!(failed[0].get("code"), "UNAUTHENTICATED", "{what}");
        assert_eq!(failed[0].get("reason"), "CALLER_UNAUTHENTICATED", "{what}");
    }
    assert_eq!(
        sim.sim.stats().describe_job_calls,
        1,
        "refused callers cost AWS nothing"
    );
}

async fn speaks_tls_to_a_gateway_its_ca_bundle_trusts(client: Client) {
    let command = || async move { client.command().await };
    let sim = simulator_with(&["firmware-a"]).await;
    let home = client.home("tls");
    let dir = support::process::empty_home(&home);
    let pki = support::certs::Pki::new(&dir.join("pki"), "gateway");
    let foreign = support::certs::Pki::new(&dir.join("foreign"), "foreign");
    let server = pki.server("gateway");
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!("{} backend\n", support::sha256_hex("backend-s3cret")),
    )
    .unwrap();
    let gw = GatewayProcess::serve(
        &sim.url,
        &[
            "--tls-cert",
            server.cert.to_str().unwrap(),
            "--tls-key",
            server.key.to_str().unwrap(),
            "--auth-tokens",
            tokens.to_str().unwrap(),
        ],
        &home,
    )
    .await;
    let ca = pki.ca_file();
    let trusted = [
        "--ca-bundle",
        ca.to_str().unwrap(),
        "describe",
        "firmware-a",
    ];

    let mut with_token = command().await;
    with_token.env("IOT_JOBS_GATEWAY_TOKEN", "backend-s3cret");
    let ran = run(with_token, &gw.addr, &trusted).await;
    assert_eq!(ran.code, Some(0), "{}", ran.shown());
    assert_eq!(ran.of("job")[0].get("status"), "IN_PROGRESS");

    let mut wrong_token = command().await;
    wrong_token.env("IOT_JOBS_GATEWAY_TOKEN", "guessed");
    let ran = run(wrong_token, &gw.addr, &trusted).await;
    assert_eq!(ran.code, Some(1), "{}", ran.shown());
    assert_eq!(ran.of("failed")[0].get("reason"), "CALLER_UNAUTHENTICATED");

    // A CA that did not sign the gateway's certificate, and no TLS at all:
    // the connection fails, and no call reaches the gateway.
    let foreign_ca = foreign.ca_file();
    let untrusted = [
        "--ca-bundle",
        foreign_ca.to_str().unwrap(),
        "describe",
        "firmware-a",
    ];
    for (args, what) in [
        (&untrusted[..], "a CA that did not sign it"),
        (&trusted[2..], "plaintext"),
    ] {
        let mut refused = command().await;
        refused.env("IOT_JOBS_GATEWAY_TOKEN", "backend-s3cret");
        let ran = run(refused, &gw.addr, args).await;
        assert_eq!(ran.code, Some(1), "{what}: {}", ran.shown());
        assert_eq!(
            ran.of("failed")[0].get("code"),
            "UNAVAILABLE",
            "{what}: {}",
            ran.shown()
        );
    }
    assert_eq!(sim.sim.stats().describe_job_calls, 1);
}

async fn reads_enum_values_a_later_gateway_adds(client: Client) {
    let addr = later_gateway().await;
    let later = LATER.to_string();

    let ran = run(
        client.command().await,
        &addr,
        &["describe", "new-job", "queued"],
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.shown());
    let jobs = ran.of("job");
    assert_eq!(jobs.len(), 2, "{}", ran.shown());
    assert_eq!(
        jobs[0].get("status"),
        later,
        "the number, for a value it has no name for"
    );
    assert_eq!(
        jobs[1].get("status"),
        "QUEUED",
        "AWS's string from unrecognizedValues"
    );

    let ran = run(client.command().await, &addr, &["batch", "new-job"]).await;
    assert_eq!(ran.code, Some(0), "{}", ran.shown());
    let items = ran.of("item");
    assert_eq!(items.len(), 1, "{}", ran.shown());
    assert_eq!(
        (items[0].get("status"), items[0].get("cache")),
        (later.as_str(), later.as_str())
    );

    let ran = run(client.command().await, &addr, &["watch", "new-job"]).await;
    assert_eq!(ran.code, Some(0), "{}", ran.shown());
    let events = ran.of("event");
    assert_eq!(events.len(), 1, "{}", ran.shown());
    for key in ["kind", "trigger", "status"] {
        assert_eq!(events[0].get(key), later, "{key}: {}", events[0].text);
    }
    assert_eq!(ran.of("done").len(), 1, "{}", ran.shown());
}

async fn lists_the_devices_a_rollout_failed_on(client: Client) {
    use iot_jobs_gateway::simulator::{Answer, seed};
    let command = client.command().await;
    let sim = TestSim::unlimited().await;
    seed::demo_fleet(&sim.sim);
    sim.advance(Duration::from_secs(3600));
    let gw = GatewayProcess::serve(&sim.url, &[], &client.home("failed-devices")).await;

    let ran = run(
        command,
        &gw.addr,
        &["failed-devices", seed::ROLLOUT, "no-such-job"],
    )
    .await;

    // What AWS (the simulator) lists as FAILED for the rollout.
    let (Answer::Body(listed), _) =
        sim.sim
            .list_job_executions_for_job(seed::ROLLOUT, Some("FAILED"), Some(250), None)
    else {
        panic!("the simulator lists the rollout")
    };
    let expected: Vec<String> = listed["executionSummaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let arn = item["thingArn"].as_str().unwrap();
            arn.rsplit('/').next().unwrap().to_owned()
        })
        .collect();
    assert!(
        !expected.is_empty(),
        "the demo rollout fails on some devices"
    );
    let devices: Vec<&str> = ran.of("device").iter().map(|l| l.get("thing")).collect();
    assert_eq!(devices, expected, "{}", ran.shown());
    let counts = ran.of("devices");
    assert_eq!(counts.len(), 1, "{}", ran.shown());
    assert_eq!(counts[0].get("failed"), expected.len().to_string());
    assert_eq!(counts[0].get("pages"), "1");
    let missing = ran.of("failed");
    assert_eq!(missing.len(), 1, "{}", ran.shown());
    assert_eq!(missing[0].get("id"), "no-such-job");
    assert_eq!(missing[0].get("code"), "NOT_FOUND");
    assert_eq!(ran.code, Some(1), "a listing failed: {}", ran.shown());
}

/// Each scenario, once per client.
macro_rules! for_each_client {
    ($($scenario:ident),* $(,)?) => {
        mod python {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Client::Python).await;
                }
            )*
        }
        mod typescript {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Client::TypeScript).await;
                }
            )*
        }
    };
}

for_each_client!(
    describes_with_a_deadline_and_names_a_missing_job,
    waits_as_retry_info_says_when_rate_limited,
    runs_a_batch_with_an_answer_or_an_error_per_item,
    follows_a_watch_across_a_restart_with_resume_from,
    reads_enum_values_a_later_gateway_adds,
    streams_each_result_as_it_is_ready,
    lists_the_devices_a_rollout_failed_on,
    sends_the_caller_s_token_from_the_environment,
    speaks_tls_to_a_gateway_its_ca_bundle_trusts,
);
