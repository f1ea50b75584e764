//! The real `iot-jobs-gateway` binary as a process, as an SRE runs it: a
//! clean environment (no AWS config, no instance metadata), JSON logs
//! collected, signals sent with `kill`.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
};

use iot_jobs_gateway::pb::jobs_gateway_client::JobsGatewayClient;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_iot-jobs-gateway");

/// An empty directory under the tests' temporary directory.
pub fn empty_home(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The binary with a clean environment: no AWS config, no instance metadata.
pub fn gateway(home: &str) -> Command {
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

/// A running `serve` process, its address and its JSON log lines.
pub struct GatewayProcess {
    pub child: Child,
    pub addr: String,
    pub logs: Arc<Mutex<Vec<Value>>>,
    /// Where `/metrics` is served, when `--metrics-listen` was given.
    pub metrics_addr: Option<String>,
    pid: u32,
}

impl GatewayProcess {
    /// `serve` in front of the AWS stand-in at `endpoint`, with `extra`
    /// flags; waits until it listens.
    pub async fn serve(endpoint: &str, extra: &[&str], home: &str) -> Self {
        Self::serve_with_env(endpoint, extra, &[], home).await
    }

    /// The same, with extra environment variables.
    pub async fn serve_with_env(
        endpoint: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        home: &str,
    ) -> Self {
        Self::serve_at("127.0.0.1:0", endpoint, extra, env, home).await
    }

    /// The same, listening on `listen` (to restart a gateway where its
    /// clients will look for it).
    pub async fn serve_at(
        listen: &str,
        endpoint: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        home: &str,
    ) -> Self {
        Self::start(gateway(home), listen, endpoint, extra, env).await
    }

    /// `serve` as [`serve`](Self::serve), under a soft and hard limit of
    /// `files` open files (`ulimit -n`).
    pub async fn serve_with_file_limit(
        endpoint: &str,
        extra: &[&str],
        files: u32,
        home: &str,
    ) -> Self {
        let mut cmd = gateway(home);
        // The shell sets the limit and becomes the gateway (same pid).
        let mut limited = Command::new("sh");
        limited
            .args(["-c", "ulimit -n \"$0\" && exec \"$@\""])
            .arg(files.to_string())
            .arg(BIN)
            .env_clear()
            .envs(cmd.as_std().get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd = limited;
        Self::start(cmd, "127.0.0.1:0", endpoint, extra, &[]).await
    }

    async fn start(
        mut cmd: Command,
        listen: &str,
        endpoint: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = cmd
            .envs(env.iter().copied())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .args(["--log-format", "json", "serve", "--listen", listen])
            .args(["--region", "us-east-1", "--endpoint-url", endpoint])
            .args(extra)
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = oneshot::channel();
        let metrics_addr = Arc::new(Mutex::new(None));
        let metrics_seen = metrics_addr.clone();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                let entry: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("log line is not JSON: {line}"));
                if entry["message"] == "metrics listening" {
                    *metrics_seen.lock().unwrap() = entry["address"].as_str().map(str::to_owned);
                }
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
        let pid = child.id().expect("the process is running");
        // Logged before the gateway's own address.
        let metrics_addr = metrics_addr.lock().unwrap().clone();
        Self {
            child,
            addr,
            logs,
            metrics_addr,
            pid,
        }
    }

    /// A gRPC client on a new connection.
    pub async fn client(&self) -> JobsGatewayClient<Channel> {
        JobsGatewayClient::new(super::channel(self.addr.parse().unwrap()).await)
    }

    /// The process id (also once it has exited).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends signal `name` (TERM, INT, KILL, STOP, CONT).
    pub fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// Whether a log line's message contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l["message"].as_str().unwrap_or("").contains(text))
    }

    /// The exit status; the process must exit within 10 s.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        exited(&mut self.child).await
    }
}

/// Sends signal `name` to `child`.
pub fn signal(child: &Child, name: &str) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The exit status of `child`, which must exit within 10 s.
pub async fn exited(child: &mut Child) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the process exits within 10 s")
        .unwrap()
}
