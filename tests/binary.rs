//! The `iot-jobs-gateway` binary as an SRE runs it: flags and environment
//! variables, bad configuration, JSON logs, and graceful shutdown on
//! SIGTERM/SIGINT. The process never sees the developer's AWS setup: its
//! environment is cleared and HOME points at an empty directory.

mod support;

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{
    describe,
    fake_aws::{FakeAws, Reply},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
};

const BIN: &str = env!("CARGO_BIN_EXE_iot-jobs-gateway");

fn empty_home(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The binary with a clean environment: no AWS config, no instance metadata.
fn gateway(home: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", empty_home(home))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running gateway process, its address and its JSON log lines.
struct Running {
    child: Child,
    addr: String,
    logs: Arc<Mutex<Vec<Value>>>,
}

async fn start(fake: &FakeAws, extra: &[&str], home: &str) -> Running {
    let mut child = gateway(home)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--region",
            "us-east-1",
        ])
        .args(["--endpoint-url", &fake.url])
        .args(extra)
        .spawn()
        .unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = oneshot::channel();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = logs.clone();
    tokio::spawn(async move {
        let mut addr_tx = Some(addr_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            let entry: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("log line is not JSON: {line}"));
            if entry["message"] == "gateway listening"
                && let Some(tx) = addr_tx.take()
            {
                let _ = tx.send(entry["address"].as_str().unwrap().to_owned());
            }
            sink.lock().unwrap().push(entry);
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(20), addr_rx)
        .await
        .expect("the gateway did not log its address")
        .expect("the gateway exited before listening");
    Running { child, addr, logs }
}

impl Running {
    /// Starts a DescribeJob call on a new connection; it runs in the background.
    async fn start_call(
        &self,
        job_id: &'static str,
    ) -> tokio::task::JoinHandle<
        Result<tonic::Response<iot_jobs_gateway::pb::DescribeJobResponse>, tonic::Status>,
    > {
        let url = format!("http://{}", self.addr);
        let mut client = iot_jobs_gateway::pb::jobs_gateway_client::JobsGatewayClient::connect(url)
            .await
            .unwrap();
        tokio::spawn(async move { client.describe_job(describe(job_id, None)).await })
    }
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn help_lists_every_flag_with_its_environment_variable() {
    let out = gateway("help")
        .args(["serve", "--help"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "GATEWAY_LISTEN"),
        ("--region", "GATEWAY_REGION"),
        ("--endpoint-url", "GATEWAY_ENDPOINT_URL"),
        ("--profile", "GATEWAY_PROFILE"),
        (
            "--upstream-attempt-timeout",
            "GATEWAY_UPSTREAM_ATTEMPT_TIMEOUT",
        ),
        (
            "--upstream-operation-timeout",
            "GATEWAY_UPSTREAM_OPERATION_TIMEOUT",
        ),
        (
            "--upstream-connect-timeout",
            "GATEWAY_UPSTREAM_CONNECT_TIMEOUT",
        ),
        ("--upstream-max-attempts", "GATEWAY_UPSTREAM_MAX_ATTEMPTS"),
        ("--shutdown-grace", "GATEWAY_SHUTDOWN_GRACE"),
        ("--log-format", "GATEWAY_LOG_FORMAT"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        assert!(
            help.contains(&format!("[env: {env}=")),
            "{env} missing from --help:\n{help}"
        );
    }
    assert!(help.contains("[default: 0.0.0.0:50051]"), "{help}");
}

#[tokio::test]
async fn bad_configuration_names_the_setting_and_exits_non_zero() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let occupied = occupied
        .local_addr()
        .map(|a| (occupied, a.to_string()))
        .unwrap();
    // (arguments, environment, exit code, what stderr must say)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--endpoint-url", "localhost:5000"],
            vec![],
            2,
            "--endpoint-url",
        ),
        (
            vec!["--shutdown-grace", "soon"],
            vec![],
            2,
            "--shutdown-grace",
        ),
        (
            vec!["--upstream-max-attempts", "0"],
            vec![],
            2,
            "--upstream-max-attempts",
        ),
        (
            vec![],
            vec![("GATEWAY_LISTEN", "not-an-address")],
            2,
            "--listen",
        ),
        (
            vec![
                "--upstream-attempt-timeout",
                "1m",
                "--upstream-operation-timeout",
                "10s",
            ],
            vec![],
            2,
            "--upstream-attempt-timeout",
        ),
        (vec!["--listen", "127.0.0.1:0"], vec![], 2, "no AWS region"),
        (
            vec!["--listen", &occupied.1, "--region", "us-east-1"],
            vec![],
            1,
            "cannot listen on",
        ),
    ];
    for (args, env, code, needle) in cases {
        let out = gateway("bad-config")
            .arg("serve")
            .args(&args)
            .envs(env.clone())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?} {env:?}: {needle:?} not in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_call_finish_then_exits_zero() {
    let fake = FakeAws::start().await;
    fake.reply(
        "slow-1",
        Reply::slow(
            Duration::from_millis(1500),
            Reply::Job(json!({"job": {"jobId": "slow-1"}})),
        ),
    );
    let mut gw = start(&fake, &["--shutdown-grace", "10s"], "sigterm").await;
    let call = gw.start_call("slow-1").await;
    fake.wait_for_calls(1).await;

    signal(&gw.child, "TERM");

    // While the 1.5 s call is still running, new connections are refused.
    let refused = async {
        while tokio::net::TcpStream::connect(&gw.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), refused)
        .await
        .expect("the listener stops accepting right after SIGTERM");
    assert!(
        !call.is_finished(),
        "the refusal was seen while the call was in flight"
    );

    let answer = call.await.unwrap().expect("the in-flight call finishes");
    assert_eq!(
        answer.into_inner().job.unwrap().job_id.as_deref(),
        Some("slow-1")
    );
    let status = exited(&mut gw.child).await;
    assert_eq!(status.code(), Some(0));

    let logs = gw.logs.lock().unwrap().clone();
    let line = logs
        .iter()
        .find(|l| l["method"] == "DescribeJob")
        .expect("one log line per call");
    assert_eq!(line["job_id"], "slow-1");
    assert_eq!(line["code"], "Ok");
    assert!(line["latency_ms"].as_f64().unwrap() >= 1400.0, "{line}");
    assert!(
        logs.iter()
            .any(|l| l["message"].as_str().unwrap_or("").contains("NOT_SERVING"))
    );
}

#[tokio::test]
async fn a_call_stuck_past_the_grace_period_does_not_hold_up_shutdown() {
    let fake = FakeAws::start().await;
    fake.reply(
        "stuck",
        Reply::slow(Duration::from_secs(60), Reply::Job(json!({"job": {}}))),
    );
    let extra = [
        "--shutdown-grace",
        "500ms",
        "--upstream-attempt-timeout",
        "60s",
        "--upstream-operation-timeout",
        "60s",
    ];
    let mut gw = start(&fake, &extra, "grace").await;
    let call = gw.start_call("stuck").await;
    fake.wait_for_calls(1).await;

    let signalled = Instant::now();
    signal(&gw.child, "INT");

    let status = exited(&mut gw.child).await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "exited after {took:?}"
    );
    assert!(
        call.await.unwrap().is_err(),
        "the stuck call is cut off, not answered"
    );
    let logs = gw.logs.lock().unwrap().clone();
    assert!(logs.iter().any(|l| {
        l["message"]
            .as_str()
            .unwrap_or("")
            .contains("grace period over")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_a_rollout_progress_to_completed_through_grpcurl() {
    // The tools first: on a fresh clone installing them takes minutes, and
    // the demo's rollout runs on the real clock from the moment it starts.
    let tools = support::python::tools().await;
    let mut child = gateway("demo")
        .args(["demo", "--listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let mut addr = None;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), stdout.next_line()).await
    {
        if let Some(rest) = line.trim().strip_prefix("gateway (gRPC):") {
            addr = Some(rest.trim().to_owned());
        }
        banner.push(line);
        if banner.last().is_some_and(|l| l.contains("completes in")) {
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no gateway address in {banner:#?}"));
    let banner = banner.join("\n");
    for id in [
        "firmware-rollout-2-4",
        "fleet-telemetry-agent",
        "maintenance-window-update",
    ] {
        assert!(banner.contains(id), "{id} not offered:\n{banner}");
    }
    assert!(
        banner.contains(&format!("grpcurl -plaintext {addr} list")),
        "{banner}"
    );
    assert!(banner.contains("WatchJobs"), "{banner}");

    // One user watches the rollout; it ends by itself when the job completes.
    let target = addr.clone();
    let watch = tokio::spawn(async move {
        tools
            .grpcurl(&[
                "-plaintext",
                "-max-time",
                "120",
                "-d",
                r#"{"jobIds": ["firmware-rollout-2-4"]}"#,
                &target,
                "iot.jobs.v1.JobsGateway/WatchJobs",
            ])
            .await
    });

    // The banner's client commands, exactly as printed: the watch follows
    // the rollout to COMPLETED and exits 0.
    let client_command = |name: &str| -> Vec<String> {
        let line = banner
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("iot-jobs-gateway {name} "))
            })
            .unwrap_or_else(|| panic!("no {name} in the banner:\n{banner}"));
        shell_words(line.trim())
    };
    let cli_watch = Command::new(BIN)
        .args(&client_command("watch-job")[1..])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Another polls it once a second, as a user re-running grpcurl would.
    let mut succeeded_seen = Vec::new();
    let mut status = String::new();
    for _ in 0..90 {
        let (ok, out, err) = tools
            .grpcurl(&[
                "-plaintext",
                "-d",
                r#"{"jobId": "firmware-rollout-2-4"}"#,
                &addr,
                "iot.jobs.v1.JobsGateway/DescribeJob",
            ])
            .await;
        assert!(ok, "{err}");
        let job: Value = serde_json::from_str(&out).unwrap();
        status = job["job"]["status"].as_str().unwrap().to_owned();
        succeeded_seen.push(
            job["job"]["jobProcessDetails"]["numberOfSucceededThings"]
                .as_i64()
                .unwrap(),
        );
        if status == "COMPLETED" {
            assert!(job["job"]["completedAt"].is_string());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        status, "COMPLETED",
        "succeeded counts seen: {succeeded_seen:?}"
    );
    let distinct: std::collections::BTreeSet<_> = succeeded_seen.iter().collect();
    assert!(
        distinct.len() >= 3,
        "the counters moved: {succeeded_seen:?}"
    );
    assert!(
        succeeded_seen.windows(2).all(|w| w[0] <= w[1]),
        "{succeeded_seen:?}"
    );

    let (ok, out, err) = watch.await.unwrap();
    assert!(ok, "the watch ends with OK once the job completes: {err}");
    let events: Vec<Value> = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .map(|event| event.unwrap()["job"].clone())
        .filter(|event| !event.is_null())
        .collect();
    assert!(events.len() >= 3, "the watch saw the rollout move: {out}");
    assert_eq!(events[0]["kind"], "CURRENT");
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "STATUS_CHANGED");
    assert_eq!(last["final"], true);
    assert_eq!(last["response"]["job"]["status"], "COMPLETED");
    let watched: Vec<i64> = events
        .iter()
        .map(|e| {
            e["response"]["job"]["jobProcessDetails"]["numberOfSucceededThings"]
                .as_i64()
                .unwrap_or(0)
        })
        .collect();
    assert!(watched.windows(2).all(|w| w[0] <= w[1]), "{watched:?}");
    let versions: std::collections::BTreeSet<_> =
        events.iter().map(|e| e["version"].to_string()).collect();
    assert_eq!(versions.len(), events.len(), "no state is sent twice");

    let cli_watch = cli_watch.wait_with_output().await.unwrap();
    let out = String::from_utf8_lossy(&cli_watch.stdout);
    assert_eq!(cli_watch.status.code(), Some(0), "{out}");
    let seen: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(seen.len() >= 3, "watch-job followed the rollout: {out}");
    assert_eq!(seen.last().unwrap()["job"]["status"], "COMPLETED", "{out}");
    for name in ["describe-job", "describe-jobs"] {
        let out = Command::new(BIN)
            .args(&client_command(name)[1..])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name}: {text}");
        assert!(text.contains("COMPLETED"), "{name}: {text}");
    }

    signal(&child, "TERM");
    let exit = exited(&mut child).await;
    assert_eq!(exit.code(), Some(0));
}

/// A banner command line split as a POSIX shell would (single quotes only).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_command_serves_aws_tools() {
    let tools = support::python::tools().await;
    let mut child = gateway("simulator")
        .args(["simulator", "--listen", "127.0.0.1:0", "--demo-fleet"])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();

    let job = tokio::task::spawn_blocking(move || {
        tools.boto3_describe(&url, "us-east-1", "sensor-calibration-v1")
    })
    .await
    .unwrap();

    assert_eq!(job["job"]["status"], "CANCELED");
    assert_eq!(job["job"]["reasonCode"], "CALIBRATION_DRIFT");
    signal(&child, "TERM");
    let exit = exited(&mut child).await;
    assert_eq!(exit.code(), Some(0));
}

/// The exit status of `child`, which must exit within 10 s.
async fn exited(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the process exits within 10 s")
        .unwrap()
}
