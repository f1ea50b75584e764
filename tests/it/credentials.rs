//! The start-up check of AWS credentials, through the real binary: a
//! misspelt profile or no credentials at all exit with status 2 and the
//! reason; a profile that exists is used; an AWS or credentials endpoint
//! that cannot be reached does not stop the start. Each process gets a
//! cleared environment and its own HOME, as `support::process` does.

use crate::support;

use std::{
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use iot_jobs_gateway::pb::jobs_gateway_client::JobsGatewayClient;
use serde_json::Value;
use support::{
    describe,
    fake_aws::{FakeAws, Reply, full_job},
    process::{GatewayProcess, empty_home, gateway},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
};

/// How long a start-up refusal may take: the check itself reads files and
/// the environment only (instance metadata is disabled).
const PROMPT: Duration = Duration::from_secs(5);

/// `serve` with JSON logs on a free loopback port, in a clean environment
/// whose HOME is `home` (under the tests' temporary directory).
fn serve(home: &str) -> Command {
    let mut cmd = gateway(home);
    cmd.args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"]);
    cmd
}

/// Writes `~/.aws/credentials` under `home`.
fn write_credentials(home: &Path, contents: &str) {
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(home.join(".aws/credentials"), contents).unwrap();
}

/// Runs a command that must exit on its own, and how long it took.
async fn run_to_exit(cmd: &mut Command) -> (Output, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("the gateway exits by itself")
        .unwrap();
    (out, started.elapsed())
}

/// A gateway that got as far as listening: the process, its address, its
/// log lines until then and how long that took.
struct Started {
    _child: Child,
    addr: String,
    logs: Vec<Value>,
    took: Duration,
}

impl Started {
    /// Spawns `cmd` and waits until it logs "gateway listening"; panics
    /// with its stderr if it exits first.
    async fn spawn(cmd: &mut Command) -> Self {
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut logs = Vec::new();
        let mut text = String::new();
        let listening = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                text.push_str(&line);
                text.push('\n');
                let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let addr = entry["address"].as_str().map(str::to_owned);
                let done = entry["message"] == "gateway listening";
                logs.push(entry);
                if done {
                    return addr;
                }
            }
            None
        };
        let addr = tokio::time::timeout(Duration::from_secs(20), listening)
            .await
            .expect("the gateway listens within 20 s");
        let Some(addr) = addr else {
            panic!("the gateway exited before listening: {text}");
        };
        // Keep reading: a closed pipe would fail the gateway's next log line.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            _child: child,
            addr,
            logs,
            took: started.elapsed(),
        }
    }

    /// The log line whose message starts with `text`.
    fn log(&self, text: &str) -> &Value {
        self.logs
            .iter()
            .find(|l| l["message"].as_str().unwrap_or("").starts_with(text))
            .unwrap_or_else(|| panic!("no log line {text:?} in {:#?}", self.logs))
    }
}

/// A loopback port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_misspelt_profile_stops_the_start_naming_it_and_where_it_was_looked_for() {
    let home = empty_home("credentials-misspelt-profile");
    write_credentials(&home, "[staging]\naws_access_key_id = AKIDSTAGING\n");
    // Credentials in the environment win over a profile in aws-config's
    // chain: they must not hide the typo. No --region either: the profile
    // is the reason, not the region it would have given.
    let cases = [
        (vec!["--profile", "nosuchprofile"], vec![], "--profile"),
        (
            vec![],
            vec![("AWS_PROFILE", "nosuchprofile")],
            "AWS_PROFILE",
        ),
    ];
    for (args, env, named_by) in cases {
        let (out, took) = run_to_exit(
            serve("credentials-misspelt-profile")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .envs(env)
                .args(&args),
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{named_by}: {stderr}");
        assert!(took < PROMPT, "{named_by}: took {took:?}");
        let reason = stderr.lines().last().unwrap_or_default();
        let config = home.join(".aws/config");
        for needle in [
            "\"nosuchprofile\"",
            named_by,
            config.to_str().unwrap(),
            "the profiles defined there: staging",
        ] {
            assert!(reason.contains(needle), "{needle:?} not in {stderr}");
        }
    }
}

#[tokio::test]
async fn no_credentials_at_all_stops_the_start_saying_how_to_provide_them() {
    let (out, took) = run_to_exit(serve("credentials-none").args(["--region", "us-east-1"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(took < PROMPT, "took {took:?}");
    let reason = stderr.lines().last().unwrap_or_default();
    assert!(
        reason.starts_with("iot-jobs-gateway: configuration error: no AWS credentials found"),
        "{stderr}"
    );
    for needle in [
        // What was tried, each with why it had nothing.
        "environment variables (AWS_ACCESS_KEY_ID)",
        "shared profile \"default\"",
        "web identity token (EKS IRSA)",
        "EC2 instance metadata: IMDS disabled by AWS_EC2_METADATA_DISABLED",
        // How to fix it.
        "AWS_SECRET_ACCESS_KEY",
        "--profile (GATEWAY_PROFILE)",
        "IRSA or Pod Identity",
        "EC2 instance profile",
    ] {
        assert!(reason.contains(needle), "{needle:?} not in {stderr}");
    }
}

#[tokio::test]
async fn a_profile_in_the_credentials_file_signs_the_calls() {
    let aws = FakeAws::start().await;
    aws.reply("job-1", Reply::Job(full_job("job-1")));
    let home = empty_home("credentials-profile");
    write_credentials(
        &home,
        "[staging]\naws_access_key_id = AKIDSTAGING\naws_secret_access_key = staging-secret\n",
    );
    let gw = Started::spawn(serve("credentials-profile").args([
        "--profile",
        "staging",
        "--region",
        "us-east-1",
        "--endpoint-url",
        &aws.url,
    ]))
    .await;

    let found = gw.log("AWS credentials found");
    assert_eq!(found["source"], "shared profile", "{found}");
    assert_eq!(found["profile"], "staging", "{found}");
    let channel = support::channel(gw.addr.parse().unwrap()).await;
    let mut client = JobsGatewayClient::new(channel);
    client.describe_job(describe("job-1", None)).await.unwrap();
    assert_eq!(
        aws.seen()[0].access_key_id.as_deref(),
        Some("AKIDSTAGING"),
        "the call was signed with the profile's key"
    );
    let logs = serde_json::to_string(&gw.logs).unwrap();
    assert!(!logs.contains("staging-secret"), "a secret was logged");
}

#[tokio::test]
async fn a_stopped_aws_endpoint_does_not_stop_the_start() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port().await);
    let gw = GatewayProcess::serve(&endpoint, &[], "credentials-stopped-endpoint").await;
    assert!(gw.logged("AWS credentials found"));
    // The answers say what is wrong instead.
    let mut client = gw.client().await;
    let request = describe("job-1", Some(Duration::from_secs(10)));
    let status = client.describe_job(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn a_credentials_endpoint_that_never_answers_delays_the_start_by_the_check_timeout_only() {
    // Connections complete in the kernel's backlog; nothing ever answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/creds", silent.local_addr().unwrap());
    let gw = Started::spawn(
        serve("credentials-silent-endpoint")
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri)
            .args(["--region", "us-east-1"]),
    )
    .await;

    let warning = gw.log("AWS credentials could not be loaded at start; starting anyway");
    assert_eq!(warning["level"], "WARN", "{warning}");
    let reason = warning["reason"].as_str().unwrap();
    assert!(
        reason.contains("no answer from the credentials source within 5s"),
        "{reason}"
    );
    assert!(
        gw.took >= Duration::from_secs(4) && gw.took < Duration::from_secs(15),
        "started after {:?}",
        gw.took
    );
}

#[tokio::test]
async fn a_credentials_endpoint_that_refuses_connections_warns_and_starts() {
    let uri = format!("http://127.0.0.1:{}/creds", closed_port().await);
    let gw = Started::spawn(
        serve("credentials-refused-endpoint")
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri)
            .args(["--region", "us-east-1"]),
    )
    .await;

    let warning = gw.log("AWS credentials could not be loaded at start; starting anyway");
    let reason = warning["reason"].as_str().unwrap();
    assert!(reason.contains("Connection refused"), "{reason}");
    assert!(gw.took < PROMPT, "started after {:?}", gw.took);
}
