//! The client subcommands as people and scripts use them: the real binary
//! against a real gateway (in front of the AWS stand-in or the simulator),
//! side by side with the real AWS CLI (v1 from PyPI) against the same
//! stand-in. Same output byte for byte, same upstream requests, same exit
//! statuses; golden files keep each output format reviewable; watch-job on
//! a pipe and on a pseudo-terminal.
//!
//! To rewrite the golden files after an intended change:
//! `UPDATE_GOLDEN=1 cargo test --test cli`.

use crate::support;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::{Value, json};
use support::{
    TestGateway,
    fake_aws::{FakeAws, Reply, full_job},
    python::{Run, tools},
    sim::{TestSim, create_fleet_job},
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    process::Command,
};

const BIN: &str = env!("CARGO_BIN_EXE_iot-jobs-gateway");

/// A gateway in front of the AWS stand-in, which knows `full-job` (every
/// field set) and `unicode-job` (non-ASCII text).
async fn gateway() -> (FakeAws, TestGateway) {
    let fake = FakeAws::start().await;
    fake.reply("full-job", Reply::Job(full_job("full-job")));
    let mut unicode = full_job("unicode-job");
    unicode["job"]["description"] = json!("Firmware für Geräte ✓ 固件");
    fake.reply("unicode-job", Reply::Job(unicode));
    fake.reply(
        "missing-job",
        Reply::error(
            404,
            "ResourceNotFoundException",
            "Job missing-job not found",
        ),
    );
    let gw = TestGateway::aws(&fake.url).await;
    (fake, gw)
}

/// Our binary with `args`, aimed at `gw`, stdout piped.
pub(crate) async fn ours(gw: &TestGateway, args: &[&str]) -> Run {
    ours_with_stdin(gw, args, "").await
}

async fn ours_with_stdin(gw: &TestGateway, args: &[&str], stdin: &str) -> Run {
    let mut child = command(gw)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    run_of(child.wait_with_output().await.unwrap())
}

fn command(gw: &TestGateway) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("IOT_JOBS_GATEWAY", gw.addr.to_string())
        .env_remove("AWS_DEFAULT_OUTPUT")
        .kill_on_drop(true);
    cmd
}

fn run_of(out: std::process::Output) -> Run {
    Run::of(out)
}

/// Compares `actual` with `tests/it/golden/<name>` (or rewrites it).
pub(crate) fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

#[tokio::test]
async fn describe_job_prints_what_the_aws_cli_prints_in_every_format() {
    let tools = tools().await;
    let (fake, gw) = gateway().await;
    for job in ["full-job", "unicode-job"] {
        for format in ["json", "text", "table"] {
            let args = ["describe-job", "--job-id", job, "--output", format];
            let theirs = tools.aws_cli(&fake.url, &iot(&args)).await;
            assert_eq!(theirs.code, 0, "{}", theirs.stderr);
            let mine = ours(&gw, &args).await;
            assert_eq!(mine.code, 0, "{}", mine.stderr);
            assert_eq!(
                mine.stdout, theirs.stdout,
                "{job} --output {format}: ours (left) vs the AWS CLI (right)"
            );
            if job == "full-job" {
                golden(&format!("describe-job.{format}"), &mine.stdout);
            }
        }
    }
    // The AWS CLI v1 has no YAML output; v2's is the same data in YAML.
    let theirs = tools
        .aws_cli(&fake.url, &["iot", "describe-job", "--job-id", "full-job"])
        .await;
    let yaml = ours(
        &gw,
        &["describe-job", "--job-id", "full-job", "--output", "yaml"],
    )
    .await;
    assert_eq!(yaml.code, 0, "{}", yaml.stderr);
    assert_eq!(
        tools.yaml_to_json(&yaml.stdout),
        serde_json::from_str::<Value>(&theirs.stdout).unwrap()
    );
    golden("describe-job.yaml", &yaml.stdout);
}

#[tokio::test]
async fn every_demo_job_prints_as_the_aws_cli_prints_it() {
    let tools = tools().await;
    let sim = TestSim::unlimited().await;
    let ids = iot_jobs_gateway::simulator::seed::demo_fleet(&sim.sim);
    let gw = TestGateway::aws(&sim.url).await;
    for id in ids {
        for extra in [&[][..], &["--before-substitution"]] {
            let args = [&["describe-job", "--job-id", id][..], extra].concat();
            let theirs = tools.aws_cli(&sim.url, &iot(&args)).await;
            let mine = ours(&gw, &args).await;
            assert_eq!(
                (theirs.code, mine.code),
                (0, 0),
                "{}{}",
                theirs.stderr,
                mine.stderr
            );
            assert_eq!(
                mine.stdout, theirs.stdout,
                "{args:?}: ours (left) vs the AWS CLI (right)"
            );
        }
    }
}

#[tokio::test]
async fn query_results_match_the_aws_cli() {
    let tools = tools().await;
    let (fake, gw) = gateway().await;
    let queries = [
        "job.status",
        "job.[jobId, status]",
        "job.{id: jobId, queued: jobProcessDetails.numberOfQueuedThings, done: jobProcessDetails.numberOfSucceededThings}",
        "job.abortConfig.criteriaList[0]",
        "job.targets",
        "job.jobProcessDetails",
        "job.createdAt",
        "length(job.targets)",
        "job.forceCanceled",
        "job.nothing",
        "job.abortConfig.criteriaList[?thresholdPercentage > `10`].failureType",
        // Compiles, but fails on the answer: not a parameter error (255).
        "length(job.createdAt)",
    ];
    for query in queries {
        for format in ["json", "text", "table"] {
            let args = [
                "describe-job",
                "--job-id",
                "full-job",
                "--query",
                query,
                "--output",
                format,
            ];
            let theirs = tools.aws_cli(&fake.url, &iot(&args)).await;
            let mine = ours(&gw, &args).await;
            assert_eq!(
                (mine.code, &mine.stdout),
                (theirs.code, &theirs.stdout),
                "--query {query:?} --output {format}: ours (left) vs the AWS CLI (right); \
                 stderr: {} / {}",
                mine.stderr,
                theirs.stderr
            );
        }
    }
    let bad = ours(
        &gw,
        &["describe-job", "--job-id", "full-job", "--query", "job.["],
    )
    .await;
    assert_eq!(bad.code, 252, "{}", bad.stderr);
    assert!(bad.stderr.contains("--query"), "{}", bad.stderr);
}

#[tokio::test]
async fn input_documents_and_flags_ask_aws_what_the_aws_cli_asks() {
    let tools = tools().await;
    let (fake, gw) = gateway().await;
    let dir = tempdir("input");
    let yaml = dir.join("input.yaml");
    std::fs::write(&yaml, "jobId: full-job\nbeforeSubstitution: true\n").unwrap();
    let yaml_arg = format!("file://{}", yaml.display());
    // (ours, the AWS CLI's): v1 has no --cli-input-yaml, so it gets the
    // same input as JSON.
    let yaml_as_json = r#"{"jobId": "full-job", "beforeSubstitution": true}"#;
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        // The input alone.
        (vec!["--cli-input-json", r#"{"jobId": "full-job"}"#], vec![]),
        (
            vec!["--cli-input-yaml", &yaml_arg],
            vec!["--cli-input-json", yaml_as_json],
        ),
        // Flags override the input.
        (
            vec![
                "--cli-input-json",
                r#"{"jobId": "other-job"}"#,
                "--job-id",
                "full-job",
            ],
            vec![],
        ),
        (
            vec!["--cli-input-yaml", &yaml_arg, "--no-before-substitution"],
            vec!["--cli-input-json", yaml_as_json, "--no-before-substitution"],
        ),
        (
            vec![
                "--cli-input-json",
                r#"{"jobId": "full-job", "beforeSubstitution": false}"#,
                "--before-substitution",
            ],
            vec![],
        ),
    ];
    for (case, for_aws_cli) in cases {
        let args = [&["describe-job"], &case[..]].concat();
        let aws_args = if for_aws_cli.is_empty() {
            args.clone()
        } else {
            [&["describe-job"], &for_aws_cli[..]].concat()
        };
        let before = fake.seen().len();
        let theirs = tools.aws_cli(&fake.url, &iot(&aws_args)).await;
        assert_eq!(theirs.code, 0, "{aws_args:?}: {}", theirs.stderr);
        let asked_by_aws_cli = fake.seen()[before..].to_vec();
        // A fresh gateway each time, so the cache cannot hide a request.
        let gw = TestGateway::aws(&fake.url).await;
        let before = fake.seen().len();
        let mine = ours(&gw, &args).await;
        assert_eq!(mine.code, 0, "{case:?}: {}", mine.stderr);
        let asked_by_us = fake.seen()[before..].to_vec();
        assert_eq!(
            format!("{asked_by_us:?}"),
            format!("{asked_by_aws_cli:?}"),
            "{case:?}: upstream requests, ours (left) vs the AWS CLI (right)"
        );
        assert_eq!(mine.stdout, theirs.stdout, "{case:?}");
    }
    // The two input options exclude each other; unknown keys are named.
    let both = ours(
        &gw,
        &[
            "describe-job",
            "--cli-input-json",
            "{}",
            "--cli-input-yaml",
            "{}",
        ],
    )
    .await;
    assert_eq!(both.code, 252, "{}", both.stderr);
    let unknown = ours(
        &gw,
        &["describe-job", "--cli-input-json", r#"{"jobID": "x"}"#],
    )
    .await;
    assert_eq!(unknown.code, 252);
    assert!(
        unknown
            .stderr
            .contains(r#"Unknown parameter in input: "jobID""#),
        "{}",
        unknown.stderr
    );
}

#[tokio::test]
async fn skeletons_call_nothing_and_match_the_aws_cli() {
    let tools = tools().await;
    let (fake, gw) = gateway().await;
    for flag in [
        &["--generate-cli-skeleton"][..],
        &["--generate-cli-skeleton", "input"],
    ] {
        let args = [&["describe-job"], flag].concat();
        let theirs = tools.aws_cli(&fake.url, &iot(&args)).await;
        let mine = ours(&gw, &args).await;
        assert_eq!((mine.code, &mine.stdout), (0, &theirs.stdout), "{flag:?}");
        golden("describe-job.skeleton-input.json", &mine.stdout);
    }
    // The YAML skeleton, filled in, is a valid input.
    let yaml = ours(
        &gw,
        &["describe-job", "--generate-cli-skeleton", "yaml-input"],
    )
    .await;
    assert_eq!(yaml.code, 0);
    golden("describe-job.skeleton-input.yaml", &yaml.stdout);
    let filled = yaml.stdout.replace("jobId: ''", "jobId: full-job");
    let used = ours(
        &gw,
        &[
            "describe-job",
            "--cli-input-yaml",
            &filled,
            "--query",
            "job.jobId",
        ],
    )
    .await;
    assert_eq!(
        (used.code, used.stdout.as_str()),
        (0, "\"full-job\"\n"),
        "{}",
        used.stderr
    );
    // `output` validates the input, then prints botocore's sample output.
    let calls = fake.calls();
    let sample = ours(
        &gw,
        &[
            "describe-job",
            "--job-id",
            "full-job",
            "--generate-cli-skeleton",
            "output",
        ],
    )
    .await;
    assert_eq!(sample.code, 0, "{}", sample.stderr);
    golden("describe-job.skeleton-output.json", &sample.stdout);
    let mut expected = tools.botocore_output_skeleton();
    for field in ["createdAt", "lastUpdatedAt", "completedAt"] {
        // botocore's sample time is 1970-01-01; ours prints it as epoch seconds.
        assert_eq!(expected["job"][field], "1970-01-01T00:00:00");
        expected["job"][field] = json!(0.0);
    }
    assert_eq!(
        serde_json::from_str::<Value>(&sample.stdout).unwrap(),
        expected
    );
    for args in [
        &["describe-job", "--generate-cli-skeleton", "output"][..],
        &[
            "describe-job",
            "--job-id",
            "no such/job",
            "--generate-cli-skeleton",
            "output",
        ],
    ] {
        let refused = ours(&gw, args).await;
        assert_eq!(refused.code, 252, "{args:?}: {}", refused.stderr);
    }
    assert_eq!(fake.calls(), calls, "skeletons never call AWS");
}

#[tokio::test]
async fn exit_codes_are_the_aws_clis() {
    let tools = tools().await;
    let (fake, gw) = gateway().await;
    // The statuses AWS CLI v2 documents. (The v1 we run beside ours exits
    // 255 for service errors and 2 for usage errors; it agrees on 0 and on
    // 255 for no connection, checked below.)
    for (args, code) in [
        (&["describe-job", "--job-id", "full-job"][..], 0),
        (&["describe-job", "--job-id", "missing-job"], 254),
        (
            &["describe-job", "--job-id", "full-job", "--no-such-option"],
            252,
        ),
        (&["describe-job"], 252),
        (
            &["describe-job", "--job-id", "full-job", "--output", "xml"],
            252,
        ),
    ] {
        let mine = ours(&gw, args).await;
        assert_eq!(mine.code, code, "{args:?}: {}", mine.stderr);
    }
    let theirs = tools
        .aws_cli(
            &fake.url,
            &iot(&["describe-job", "--job-id", "missing-job"]),
        )
        .await;
    assert!(theirs.stderr.contains(
        "An error occurred (ResourceNotFoundException) when calling the DescribeJob operation"
    ));
    let missing = ours(&gw, &["describe-job", "--job-id", "missing-job"]).await;
    assert!(
        missing.stderr.contains(
            "An error occurred (ResourceNotFoundException) when calling the DescribeJob operation"
        ),
        "{}",
        missing.stderr
    );
    // A bad id never reaches AWS.
    let calls = fake.calls();
    let bad = ours(&gw, &["describe-job", "--job-id", "no such/job"]).await;
    assert_eq!(bad.code, 252, "{}", bad.stderr);
    assert!(bad.stderr.contains("jobId contains ' '"), "{}", bad.stderr);
    assert_eq!(fake.calls(), calls);
    // Configuration: where the gateway is.
    let config = ours(
        &gw,
        &[
            "describe-job",
            "--job-id",
            "full-job",
            "--gateway",
            "ftp://x",
        ],
    )
    .await;
    assert_eq!(config.code, 253, "{}", config.stderr);
    // Nothing listening: the AWS CLI says 255 when it cannot connect.
    let closed = closed_port().await;
    let theirs = tools
        .aws_cli(
            &format!("http://{closed}"),
            &["iot", "describe-job", "--job-id", "x"],
        )
        .await;
    let mine = ours(
        &gw,
        &["describe-job", "--job-id", "x", "--gateway", &closed],
    )
    .await;
    assert_eq!((theirs.code, mine.code), (255, 255), "{}", mine.stderr);
    assert!(
        mine.stderr.contains("Could not connect to the gateway"),
        "{}",
        mine.stderr
    );
    // Something that speaks HTTP/2 but is not a gateway: tonic makes up a
    // status, which is not the service's answer.
    let not_gateway = ours(
        &gw,
        &[
            "describe-job",
            "--job-id",
            "full-job",
            "--gateway",
            &fake.url,
        ],
    )
    .await;
    assert_eq!(not_gateway.code, 255, "{}", not_gateway.stderr);
    // A reader that goes away is no failure, as in the AWS CLI.
    let mut child = command(&gw)
        .args(["describe-job", "--job-id", "full-job"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    // TLS where asked for: a plaintext gateway fails the handshake.
    let tls = ours(
        &gw,
        &[
            "describe-job",
            "--job-id",
            "full-job",
            "--gateway",
            &format!("https://{}", gw.addr),
        ],
    )
    .await;
    assert_eq!(tls.code, 255, "{}", tls.stderr);
    // Read timeout, then Ctrl-C during a slow call.
    fake.reply(
        "slow-job",
        Reply::slow(Duration::from_secs(30), Reply::Job(full_job("slow-job"))),
    );
    let slow = ours(
        &gw,
        &[
            "describe-job",
            "--job-id",
            "slow-job",
            "--cli-read-timeout",
            "0.5",
        ],
    )
    .await;
    assert_eq!(slow.code, 255, "{}", slow.stderr);
    assert!(
        slow.stderr.contains("--cli-read-timeout"),
        "{}",
        slow.stderr
    );
    let child = command(&gw)
        .args([
            "describe-job",
            "--job-id",
            "slow-job",
            "--cli-read-timeout",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let before = fake.calls_for("slow-job");
    tokio::time::timeout(Duration::from_secs(10), async {
        while fake.calls_for("slow-job") == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the call reaches AWS");
    interrupt(&child);
    let interrupted = run_of(child.wait_with_output().await.unwrap());
    assert_eq!(interrupted.code, 130, "{}", interrupted.stderr);
}

/// `aws iot <args>`.
pub(crate) fn iot<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [&["iot"][..], args].concat()
}

fn interrupt(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A loopback address nothing listens on.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

fn tempdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tmp")
        .join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn describe_jobs_answers_every_id_in_order_in_one_call() {
    let (fake, gw) = gateway().await;
    let calls = fake.calls();
    let run = ours_with_stdin(
        &gw,
        &[
            "describe-jobs",
            "--job-ids",
            "full-job",
            "missing-job",
            "--job-ids-file",
            "-",
        ],
        "# from a file\nunicode-job bad/id\n",
    )
    .await;
    assert_eq!(run.code, 254, "some ids failed: {}", run.stderr);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    let jobs = out["jobs"].as_array().unwrap();
    let ids: Vec<&str> = jobs.iter().map(|j| j["jobId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["full-job", "missing-job", "unicode-job", "bad/id"]);
    assert_eq!(jobs[0]["job"]["status"], "IN_PROGRESS");
    assert_eq!(jobs[0]["job"]["createdAt"], json!(1560787022.733));
    assert_eq!(jobs[1]["error"]["code"], "ResourceNotFoundException");
    assert_eq!(jobs[1]["error"]["grpcCode"], "NotFound");
    assert_eq!(jobs[2]["job"]["description"], "Firmware für Geräte ✓ 固件");
    assert_eq!(jobs[3]["error"]["grpcCode"], "InvalidArgument");
    assert!(
        run.stderr.contains(r#"when describing job "missing-job""#),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(r#"when describing job "bad/id""#),
        "{}",
        run.stderr
    );
    // Three valid ids, three AWS calls, one gateway call; the bad id costs nothing.
    assert_eq!(fake.calls() - calls, 3);
    // Each job is described as describe-job describes it.
    let single = ours(&gw, &["describe-job", "--job-id", "full-job"]).await;
    let single: Value = serde_json::from_str(&single.stdout).unwrap();
    assert_eq!(jobs[0]["job"], single["job"]);
    assert_eq!(jobs[0]["documentSource"], single["documentSource"]);

    let fine = ours(
        &gw,
        &[
            "describe-jobs",
            "--job-ids",
            "full-job",
            "unicode-job",
            "--output",
            "text",
            "--query",
            "jobs[].job.jobId",
        ],
    )
    .await;
    assert_eq!(
        (fine.code, fine.stdout.as_str()),
        (0, "full-job\tunicode-job\n"),
        "{}",
        fine.stderr
    );
    let none = ours(&gw, &["describe-jobs"]).await;
    assert_eq!(none.code, 252, "{}", none.stderr);
}

/// A gateway in front of the simulator, polling watched jobs every 50 ms.
async fn watching(sim: &TestSim) -> TestGateway {
    TestGateway::aws_edited(&sim.url, |jobs| {
        jobs.watch.poll_interval = Duration::from_millis(50);
        jobs.watch.heartbeat = Duration::from_millis(500);
    })
    .await
}

/// Moves the simulator's clock a second every 100 ms until `done` ends
/// (at most 60 simulated seconds), and returns what it returned.
async fn drive<T>(sim: &TestSim, done: impl Future<Output = T>) -> T {
    tokio::pin!(done);
    for _ in 0..60 {
        tokio::select! {
            out = &mut done => return out,
            () = tokio::time::sleep(Duration::from_millis(100)) => sim.advance(Duration::from_secs(1)),
        }
    }
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("the command ends once the rollout is over")
}

#[tokio::test]
async fn watch_job_piped_prints_one_json_object_per_event_and_exits_by_the_final_status() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    create_fleet_job(&sim, "doomed").await;
    let gw = watching(&sim).await;
    let child = command(&gw)
        .args(["watch-job", "--job-id", "rollout", "--job-id", "doomed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = drive(&sim, async {
        // Cancel one job once the watch has seen it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        support::iot_client(&sim.url)
            .cancel_job()
            .job_id("doomed")
            .send()
            .await
            .unwrap();
        run_of(child.wait_with_output().await.unwrap())
    })
    .await;
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    let of = |id: &str| {
        events
            .iter()
            .filter(move |e| e["jobId"] == id)
            .collect::<Vec<_>>()
    };
    let rollout = of("rollout");
    assert_eq!(rollout[0]["kind"], "CURRENT");
    let last = rollout.last().unwrap();
    assert_eq!(
        (last["job"]["status"].as_str(), last["final"].as_bool()),
        (Some("COMPLETED"), Some(true))
    );
    let succeeded: Vec<i64> = rollout
        .iter()
        .map(|e| {
            e["job"]["jobProcessDetails"]["numberOfSucceededThings"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(succeeded.windows(2).all(|w| w[0] <= w[1]), "{succeeded:?}");
    assert!(
        rollout.len() >= 3,
        "the rollout is seen step by step: {succeeded:?}"
    );
    assert!(
        last["observedAt"].is_f64() && last["version"].is_string(),
        "{last}"
    );
    let doomed = of("doomed");
    assert_eq!(doomed.last().unwrap()["job"]["status"], "CANCELED");
    // One job canceled: exit 1, as documented.
    assert_eq!(run.code, 1, "{}", run.stderr);

    // A missing job is the service's error; --query shapes each line.
    let missing = command(&gw)
        .args([
            "watch-job",
            "--job-id",
            "no-such-job",
            "--query",
            "[jobId, kind, error.code]",
        ])
        .output()
        .await
        .unwrap();
    let missing = run_of(missing);
    assert_eq!(missing.code, 254, "{}", missing.stderr);
    assert_eq!(
        missing.stdout,
        "[\"no-such-job\",\"GONE\",\"ResourceNotFoundException\"]\n"
    );
}

#[tokio::test]
async fn watch_job_on_a_terminal_draws_progress_bars_and_status_changes() {
    let tools = tools().await;
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let gw = watching(&sim).await;
    let gateway = gw.addr.to_string();
    let run = drive(
        &sim,
        tools.on_terminal(
            Path::new(BIN),
            &["watch-job", "--job-id", "rollout", "--gateway", &gateway],
        ),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    let screen = &run.stdout;
    assert!(screen.contains("rollout  IN_PROGRESS"), "{screen}");
    assert!(screen.contains("IN_PROGRESS → COMPLETED"), "{screen}");
    assert!(screen.contains('█'), "a progress bar: {screen}");
    assert!(
        screen.contains("succeeded 10 · failed 0"),
        "the final counts: {screen}"
    );
    assert!(
        screen.contains("\x1b[32m"),
        "coloured on a terminal: {screen}"
    );
    assert!(screen.contains("\x1b[J"), "redrawn in place: {screen}");
    assert!(
        !screen.contains("\"jobId\""),
        "no JSON on a terminal: {screen}"
    );
}

#[tokio::test]
async fn watch_job_resumes_through_a_gateway_restart() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let mut first = watching(&sim).await;
    let addr = first.addr;
    let mut child = command(&first)
        .args(["watch-job", "--job-id", "rollout"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a first event")
        .unwrap()
        .expect("a line");
    events.push(line);
    // The gateway restarts in place: the watch ends with SHUTTING_DOWN, and
    // a new process takes the address.
    first.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(10), &mut first.server).await;
    let second = TestGateway::aws_at(addr, &sim.url, |jobs| {
        jobs.watch.poll_interval = Duration::from_millis(50);
    })
    .await;
    // Nothing changes until the watch is back, so a resumed watch has
    // nothing new to say and a restarted one would repeat its state.
    tokio::time::timeout(Duration::from_secs(10), async {
        while second.jobs.watches().open_streams() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the watch reconnects");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rest = drive(&sim, async {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    })
    .await;
    events.extend(rest);
    let run = run_of(child.wait_with_output().await.unwrap());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("reconnecting"), "{}", run.stderr);
    let events: Vec<Value> = events
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let versions: std::collections::BTreeSet<_> =
        events.iter().map(|e| e["version"].to_string()).collect();
    assert_eq!(
        versions.len(),
        events.len(),
        "resumed without repeating a state: {events:#?}"
    );
    assert_eq!(events.last().unwrap()["job"]["status"], "COMPLETED");
}
