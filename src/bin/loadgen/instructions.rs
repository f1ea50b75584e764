//! Scenario 20: instructions per cache hit, counted by valgrind's
//! callgrind, for DescribeJob and DescribeJobExecution, on the gateway (and
//! an older build) and on the bare tonic server.
//!
//! CPU time per call on a shared machine swings with the neighbours (the
//! same binary from 44 to 61 µs between rounds of scenario 19); the
//! instructions a process executes per call do not. Each server runs under
//! callgrind; its counters are zeroed after a warm-up and dumped after
//! `calls` calls of one question, so the count is that question's work and
//! nothing else the process did (start-up, warm-up, connections).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use iot_jobs_gateway::{
    pb::jobs_gateway_client::JobsGatewayClient, simulator::seed::synthetic_job_id,
};
use tonic::transport::Channel;

use crate::{
    Error,
    procs::*,
    protection::{Answer, Question, bare_server_under},
};

/// Callers at once, over `CONNECTIONS` connections.
const CALLERS: usize = 8;
const CONNECTIONS: usize = 4;
/// Calls of each question before the counters are zeroed.
const WARM_UP: usize = 400;

/// A server running under callgrind, and how many dumps it has written.
struct Counted {
    name: String,
    server: Proc,
    /// Its `--callgrind-out-file`; dump `n` goes to `<out>.<n>`.
    out: PathBuf,
    dumps: usize,
    clients: Vec<JobsGatewayClient<Channel>>,
}

/// valgrind running a server under callgrind; its counts go to `out`.
fn callgrind(valgrind: &Path, out: &Path) -> Vec<String> {
    vec![
        valgrind.display().to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
    ]
}

fn out_file(name: &str) -> PathBuf {
    sibling("loadgen-logs").join(format!("callgrind-{name}.out"))
}

impl Counted {
    async fn new(name: &str, server: Proc, out: PathBuf) -> Result<Self, Error> {
        let clients = channels(server.port, CONNECTIONS).await?;
        Ok(Self {
            name: name.into(),
            server,
            out,
            dumps: 0,
            clients,
        })
    }

    /// Instructions per call of `question`: `calls` calls between a zeroing
    /// and a dump of the counters.
    async fn per_call(
        &mut self,
        control: &Path,
        question: &Question,
        calls: usize,
    ) -> Result<f64, Error> {
        ask_many(&self.clients, question, WARM_UP).await?;
        self.control(control, "-z").await?;
        ask_many(&self.clients, question, calls).await?;
        self.control(control, "-d").await?;
        self.dumps += 1;
        let dump = PathBuf::from(format!("{}.{}", self.out.display(), self.dumps));
        Ok(totals(&dump).await? as f64 / calls as f64)
    }

    /// `callgrind_control FLAG PID`: zero (`-z`) or dump (`-d`) the counters.
    async fn control(&self, control: &Path, flag: &str) -> Result<(), Error> {
        let output = tokio::process::Command::new(control)
            .arg(flag)
            .arg(self.server.pid().to_string())
            .output()
            .await?;
        if !output.status.success() {
            return Err(format!(
                "callgrind_control {flag} for {} failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        Ok(())
    }
}

/// The `totals:` (events of the whole dump) of a callgrind dump, once
/// callgrind has written it (bounded: 60 s).
async fn totals(dump: &Path) -> Result<u64, Error> {
    for _ in 0..600 {
        let text = std::fs::read_to_string(dump).unwrap_or_default();
        let total = text
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok());
        if let Some(total) = total {
            return Ok(total);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("no totals in {} after 60 s", dump.display()).into())
}

/// `calls` calls of `question` from `CALLERS` callers over `clients`; an
/// error if any fails (a failed call is not a hit).
async fn ask_many(
    clients: &[JobsGatewayClient<Channel>],
    question: &Question,
    calls: usize,
) -> Result<(), Error> {
    let next = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let (question, next) = (question.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < calls {
                    question.ask(&mut client, Duration::from_secs(60)).await?;
                }
                Ok::<_, tonic::Status>(())
            })
        })
        .collect();
    for caller in callers {
        caller.await??;
    }
    Ok(())
}

pub(crate) async fn instructions(calls: usize, baseline: Option<PathBuf>) -> Result<(), Error> {
    at_least_one("--calls", calls as u64)?;
    let scenario = "loadgen instructions";
    let valgrind = installed("valgrind", "valgrind", scenario)?;
    let control = installed("callgrind_control", "valgrind", scenario)?;
    let sim = simulator(10, 10).await?;
    create_job(&sim, "rollout").await?;
    let questions = [
        ("DescribeJob", Question::job(&synthetic_job_id(3))),
        (
            "DescribeJobExecution",
            Question::Execution {
                job_id: "rollout".into(),
                thing_name: "fleet-3".into(),
            },
        ),
    ];
    let ttl = ["--cache-ttl", "1h"];
    let mut builds = vec![("gateway", sibling("iot-jobs-gateway"))];
    if let Some(program) = baseline {
        builds.push(("before", program));
    }
    let mut servers = Vec::new();
    let mut answers: Vec<Answer> = Vec::new();
    for (name, program) in builds {
        let out = out_file(name);
        let launcher = callgrind(&valgrind, &out);
        let gw = start_gateway_under(&launcher, program, &sim, &ttl, name).await?;
        let counted = Counted::new(name, gw, out).await?;
        if answers.is_empty() {
            // What the gateway answers is what the bare server answers.
            let mut client = counted.clients[0].clone();
            for (_, question) in &questions {
                answers.push(question.ask(&mut client, Duration::from_secs(60)).await?);
            }
        }
        servers.push(counted);
    }
    let out = out_file("bare");
    let answered: Vec<&Answer> = answers.iter().collect();
    let bare =
        bare_server_under(&callgrind(&valgrind, &out), &answered, None, "bare-server").await?;
    servers.push(Counted::new("bare", bare, out).await?);

    println!(
        "## 20. Instructions per cache hit under callgrind: {calls} calls of each question from {CALLERS} callers over {CONNECTIONS} connections, after {WARM_UP} to warm\n"
    );
    // counts[server][question]
    let mut counts = Vec::new();
    for server in &mut servers {
        let mut per_question = Vec::new();
        for (_, question) in &questions {
            per_question.push(server.per_call(&control, question, calls).await?);
        }
        counts.push(per_question);
    }
    print!("| server |");
    for (name, _) in &questions {
        print!(" {name} instructions per hit | / bare |");
    }
    println!();
    println!("|---|{}", "---|---|".repeat(questions.len()));
    let bare = counts.last().cloned().unwrap_or_default();
    for (server, per_question) in servers.iter().zip(&counts) {
        print!("| {} |", server.name);
        for (count, bare) in per_question.iter().zip(&bare) {
            print!(" {count:.0} | {:.3} |", count / bare);
        }
        println!();
    }
    let worst = counts[0]
        .iter()
        .zip(&bare)
        .map(|(gw, bare)| gw / bare)
        .fold(0.0, f64::max);
    let stats = sim_get(&sim, "/_sim/stats").await?;
    println!(
        "\nUpstream calls during the run: {} DescribeJob, {} DescribeJobExecution (each gateway's first of each). Target: gateway at most 1.1x bare's instructions per hit for each question ({worst:.3}). Result: {}\n",
        stats["describeJobCalls"],
        stats["describeJobExecutionCalls"],
        verdict(worst <= 1.1)
    );
    Ok(())
}
