//! The example clients in `examples/` (Python with grpcio, TypeScript with
//! @grpc/grpc-js), run as a user runs them against the real gateway binary
//! in front of the simulator. Both take the same command line and print the
//! same lines (`examples/README.md`), so every scenario here runs for each.

mod support;

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use iot_jobs_gateway::pb;
use support::{
    debian::free_port,
    process::GatewayProcess,
    sim::{TestSim, create_fleet_job},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
    time::timeout,
};

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

/// One line a client printed: its first word, then its `key=value` fields.
#[derive(Debug, Clone)]
struct Line {
    kind: String,
    fields: BTreeMap<String, String>,
    text: String,
}

impl Line {
    fn parse(text: &str) -> Self {
        let mut words = text.split(' ');
        let kind = words.next().unwrap_or_default().to_owned();
        let fields = words
            .filter_map(|word| word.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self {
            kind,
            fields,
            text: text.to_owned(),
        }
    }

    fn get(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.text))
    }
}

/// What a client printed and how it exited.
struct Ran {
    code: Option<i32>,
    lines: Vec<Line>,
    stderr: String,
}

impl Ran {
    fn of(&self, kind: &str) -> Vec<&Line> {
        self.lines.iter().filter(|l| l.kind == kind).collect()
    }

    fn shown(&self) -> String {
        let out: Vec<&str> = self.lines.iter().map(|l| l.text.as_str()).collect();
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            out.join("\n"),
            self.stderr
        )
    }
}

/// Runs `client` against the gateway at `addr` to its end (at most 60 s).
async fn run(mut client: Command, addr: &str, args: &[&str]) -> Ran {
    let out = timeout(
        Duration::from_secs(60),
        client.arg("--target").arg(addr).args(args).output(),
    )
    .await
    .expect("the client finishes within 60 s")
    .expect("the client starts");
    Ran {
        code: out.status.code(),
        lines: String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(Line::parse)
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn describes_with_a_deadline_and_names_a_missing_job(client: Client) {
    let command = client.command().await;
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "firmware-a").await;
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
    let sim = TestSim::unlimited().await;
    let ids = ["rl-0", "rl-1", "rl-2", "rl-3"];
    for id in ids {
        create_fleet_job(&sim, id).await;
    }
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
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "firmware-a").await;
    create_fleet_job(&sim, "firmware-b").await;
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

/// A client process whose stdout lines arrive one by one; what it writes
/// on stderr is kept for the failure message.
struct Following {
    child: Child,
    lines: mpsc::UnboundedReceiver<Line>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Following {
    fn start(mut command: Command, addr: &str, args: &[&str]) -> Self {
        let mut child = command
            .arg("--target")
            .arg(addr)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("the client starts");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send(Line::parse(&line)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                let mut kept = sink.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The next line, within 30 s.
    async fn next(&mut self, waiting_for: &str) -> Line {
        let next = timeout(Duration::from_secs(30), self.lines.recv()).await;
        let Ok(Some(line)) = next else {
            let what = match next {
                Err(_) => "no line within 30 s",
                _ => "the client ended",
            };
            panic!(
                "{what} ({waiting_for}); it printed:\n{:#?}\nstderr:\n{}",
                self.seen,
                self.stderr.lock().unwrap()
            );
        };
        self.seen.push(line.text.clone());
        line
    }
}

async fn follows_a_watch_across_a_restart_with_resume_from(client: Client) {
    let command = client.command().await;
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "firmware-a").await;
    create_fleet_job(&sim, "firmware-b").await;
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
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "firmware-a").await;
    create_fleet_job(&sim, "firmware-b").await;
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
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "firmware-a").await;
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

/// A gateway of a later `v1`, as the README says one may be: enum values
/// this contract has no name for (a new `Job.Status`, `CacheInfo.Source`,
/// `JobEvent.Kind` and `Trigger`), and an AWS status passed on the
/// gateway's way (`STATUS_UNSPECIFIED` and the string in
/// `unrecognizedValues`). A stand-in: today's gateway cannot send them.
struct LaterGateway;

/// A number no enum of today's contract has a name for.
const LATER: i32 = 42;

fn later_job(job_id: &str) -> pb::DescribeJobResponse {
    let mut job = pb::Job {
        job_id: Some(job_id.to_owned()),
        status: Some(LATER),
        ..Default::default()
    };
    if job_id == "queued" {
        job.status = Some(pb::job::Status::Unspecified.into());
        job.unrecognized_values
            .insert("status".to_owned(), "QUEUED".to_owned());
    }
    pb::DescribeJobResponse {
        document_source: None,
        job: Some(job),
    }
}

#[tonic::async_trait]
impl pb::jobs_gateway_server::JobsGateway for LaterGateway {
    async fn describe_job(
        &self,
        request: tonic::Request<pb::DescribeJobRequest>,
    ) -> Result<tonic::Response<pb::DescribeJobResponse>, tonic::Status> {
        let mut response = tonic::Response::new(later_job(&request.into_inner().job_id));
        response
            .metadata_mut()
            .insert("x-cache", "hit".parse().unwrap());
        Ok(response)
    }

    async fn batch_describe_jobs(
        &self,
        request: tonic::Request<pb::BatchDescribeJobsRequest>,
    ) -> Result<tonic::Response<pb::BatchDescribeJobsResponse>, tonic::Status> {
        let results = request
            .into_inner()
            .requests
            .into_iter()
            .enumerate()
            .map(|(index, item)| pb::JobResult {
                index: Some(index as u32),
                outcome: Some(pb::job_result::Outcome::Response(later_job(&item.job_id))),
                job_id: item.job_id,
                cache: Some(pb::CacheInfo {
                    source: LATER,
                    age_ms: 0,
                }),
            })
            .collect();
        Ok(tonic::Response::new(pb::BatchDescribeJobsResponse {
            results,
        }))
    }

    type StreamDescribeJobsStream = iot_jobs_gateway::grpc::service::DescribeResultStream;

    async fn stream_describe_jobs(
        &self,
        _request: tonic::Request<pb::StreamDescribeJobsRequest>,
    ) -> Result<tonic::Response<Self::StreamDescribeJobsStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this scenario"))
    }

    type WatchJobsStream = iot_jobs_gateway::grpc::service::WatchEventStream;

    async fn watch_jobs(
        &self,
        request: tonic::Request<pb::WatchJobsRequest>,
    ) -> Result<tonic::Response<Self::WatchJobsStream>, tonic::Status> {
        let events: Vec<_> = request
            .into_inner()
            .job_ids
            .into_iter()
            .map(|job_id| {
                Ok(pb::WatchJobsResponse {
                    event: Some(pb::watch_jobs_response::Event::Job(pb::JobEvent {
                        version: 7,
                        kind: LATER,
                        changed_fields: vec![],
                        r#final: true,
                        state: Some(pb::job_event::State::Response(later_job(&job_id))),
                        job_id,
                        observed_at: None,
                        trigger: LATER,
                    })),
                })
            })
            .collect();
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(events))))
    }
}

/// Serves [`LaterGateway`] on a loopback port.
async fn later_gateway() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::jobs_gateway_server::JobsGatewayServer::new(
                LaterGateway,
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
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
    sends_the_caller_s_token_from_the_environment,
);
