//! Load generator for BENCHMARKS.md: runs the real `iot-jobs-gateway`
//! binary (gateway and simulator, each its own process on loopback) and
//! measures what the gateway promises about protecting AWS.
//!
//! ```text
//! cargo build --release --bins && target/release/loadgen all
//! ```
//!
//! Every scenario starts a fresh simulator and gateway, so one scenario's
//! cache or token bucket cannot help the next. The two watch scenarios take
//! about ten minutes together: `loadgen all --watch` adds them, or run
//! `loadgen watch-fanout` and `loadgen watch-budget` on their own.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod bare;
mod cluster;
mod events;
mod fairness;
mod floods;
mod instructions;
mod interleaved;
mod listing;
mod operations;
mod procs;
mod protection;
mod recovery;
mod stale;
mod tls;
mod watch;

use bare::bare_server;
use protection::{batch, coalescing, execution_throughput, memory, throttling, throughput};
use watch::{watch_budget, watch_fanout};

/// Measures the gateway against the simulator; prints Markdown.
#[derive(Parser)]
#[command(name = "loadgen")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Every scenario below, in order.
    All(AllArgs),
    /// 1. Concurrent identical DescribeJob calls for a cold job.
    Coalescing {
        #[arg(long, default_value_t = 1000)]
        calls: usize,
    },
    /// 2. Demand 10x the rate on distinct jobs; upstream rate at the simulator.
    Throttling {
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// 3. Cache-hit throughput against a bare tonic server.
    Throughput {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// 4. One BatchDescribeJobs of uncached ids through the rate limit.
    Batch {
        #[arg(long, default_value_t = 100)]
        items: usize,
    },
    /// 5. Gateway RSS with many cached jobs.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
    },
    /// 6. WatchJobs fan-out: AWS polls with 100 vs 10,000 streams, delivery latency, RSS per stream.
    WatchFanout(FanoutArgs),
    /// 7. WatchJobs on a short budget: 1,000 watched jobs polled at 10/s, oldest first.
    WatchBudget(BudgetArgs),
    /// 8. The AWS budget used in the 30 s after a burst of ThrottlingExceptions.
    Recovery {
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// ThrottlingExceptions in a row (injected at the simulator).
        #[arg(long, default_value_t = 10)]
        throttles: u32,
        /// Another build of iot-jobs-gateway to run first, for comparison.
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
    /// 9. Replicas sharing one Redis: 1, 2 and 3 side by side (needs redis-server).
    Cluster {
        /// Seconds of ten times the demand, per set.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// The set sizes to run, side by side.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        replicas: Vec<usize>,
    },
    /// 10. Three replicas, 10,000 watch streams over 1,000 jobs on one budget (needs redis-server).
    ClusterWatch {
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        #[arg(long, default_value_t = 330)]
        seconds: u64,
        /// Things per synthetic job: keeps each IN_PROGRESS this many seconds.
        #[arg(long, default_value_t = 600)]
        group_size: usize,
    },
    /// 11. Fair shares: one connection floods at 10x the rate, another asks 2/s; the second's wait.
    Fairness {
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Rounds per build; medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Another build of iot-jobs-gateway to run side by side (rounds interleaved).
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
    /// 12. TLS with client certificates: cache hits against a bare tonic server with the same TLS, and new connections per second (needs openssl).
    Tls {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// 13. Metrics on the hot path: cache hits with /metrics on and scraped, off, and on a bare tonic server.
    MetricsCost {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Another build of iot-jobs-gateway to run side by side (rounds interleaved).
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
    /// 14. Log volume under excess demand: every refusal logged vs the default bound.
    LogVolume {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// 15. AWS unavailable for 30 s under steady demand: answers fresh, stale and errors, with and without --cache-stale-if-error (and with --cache-stale-while-revalidate), side by side.
    Stale {
        /// Calls per second offered to each gateway.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Jobs the calls go round (each asked every jobs / rate seconds).
        #[arg(long, default_value_t = 30)]
        jobs: usize,
        /// Seconds of demand before the failure.
        #[arg(long, default_value_t = 20)]
        before: u64,
        /// Seconds AWS answers every DescribeJob with ServiceUnavailableException.
        #[arg(long, default_value_t = 30)]
        failing: u64,
        /// Seconds of demand after it.
        #[arg(long, default_value_t = 20)]
        after: u64,
    },
    /// 17. Anonymous floods (streams never ended, silent connections, rapid reset), a minute each: gateway RSS during and after, a normal caller's latency.
    Floods {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, value_delimiter = ',', default_value = "streams,silent,reset")]
        floods: Vec<String>,
        /// Another build of iot-jobs-gateway to meet each flood first, for comparison.
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
    /// 18. A rollout's executions listed whole: one client and ten through the gateway, ten straight to AWS.
    Listing {
        #[arg(long, default_value_t = 10_000)]
        things: usize,
        #[arg(long, default_value_t = 10)]
        clients: usize,
    },
    /// 16. Watch latency with AWS IoT Jobs events: 1,000 watched jobs on a 10/s budget, 50 change; with events and without, side by side (needs mosquitto).
    WatchEvents(events::WatchEventsArgs),
    /// 19. DescribeJobExecution cache-hit throughput against a bare tonic server (and an older build).
    ExecutionThroughput {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Another gateway build, measured side by side.
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
    /// 20. Instructions per cache hit (DescribeJob, DescribeJobExecution) under valgrind's callgrind, against a bare tonic server (needs valgrind).
    Instructions {
        /// Calls of each question counted on each server.
        #[arg(long, default_value_t = 4000)]
        calls: usize,
        /// Another gateway build, counted side by side.
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
    /// (internal) A bare tonic server answering with fixed responses.
    #[command(hide = true)]
    BareServer(bare::BareArgs),
}

#[derive(clap::Args)]
struct AllArgs {
    #[arg(long, default_value_t = 30)]
    throttling_seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 100_000)]
    memory_jobs: usize,
    /// Also run the two watch scenarios with their defaults (about ten more minutes).
    #[arg(long)]
    watch: bool,
}

#[derive(clap::Args)]
pub(crate) struct FanoutArgs {
    /// Watched jobs (synthetic, IN_PROGRESS).
    #[arg(long, default_value_t = 100)]
    jobs: usize,
    /// Streams per job in step 2 (step 1 has one per job).
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// The gateway's --watch-poll-interval, in seconds: 20 s polls 100 jobs
    /// at 5/s, half the upstream budget, so the budget is not what limits polls.
    #[arg(long, default_value_t = 20)]
    poll_interval: u64,
    /// Seconds each measuring window lasts.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Seconds to wait after the streams are open before measuring.
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Things per synthetic job: it stays IN_PROGRESS this many seconds.
    #[arg(long, default_value_t = 600)]
    group_size: usize,
}

#[derive(clap::Args)]
pub(crate) struct BudgetArgs {
    /// Watched jobs (synthetic, IN_PROGRESS), 100 per stream.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Seconds to watch after the streams open.
    #[arg(long, default_value_t = 330)]
    seconds: u64,
    /// Things per synthetic job: it stays IN_PROGRESS this many seconds.
    #[arg(long, default_value_t = 600)]
    group_size: usize,
}

/// A scenario's arguments with every default, for `all`.
fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"));
    T::from_arg_matches(&command.get_matches_from(["defaults"])).expect("defaults parse")
}

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// The gateway's default rate and burst, which scenarios 2 and 4 measure.
pub(crate) const RATE: f64 = 10.0;
pub(crate) const BURST: f64 = 5.0;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::All(a) => {
            machine();
            coalescing(1000).await?;
            throttling(a.throttling_seconds).await?;
            throughput(a.rounds, a.seconds).await?;
            batch(100).await?;
            memory(a.memory_jobs).await?;
            recovery::recovery(30, 10, None).await?;
            if a.watch {
                watch_fanout(defaults()).await?;
                watch_budget(defaults()).await?;
            }
        }
        Scenario::Coalescing { calls } => coalescing(calls).await?,
        Scenario::Throttling { seconds } => throttling(seconds).await?,
        Scenario::Throughput { rounds, seconds } => throughput(rounds, seconds).await?,
        Scenario::Batch { items } => batch(items).await?,
        Scenario::Memory { jobs } => memory(jobs).await?,
        Scenario::WatchFanout(a) => watch_fanout(a).await?,
        Scenario::WatchBudget(a) => watch_budget(a).await?,
        Scenario::Cluster { seconds, replicas } => cluster::cluster(seconds, &replicas).await?,
        Scenario::ClusterWatch {
            jobs,
            streams,
            seconds,
            group_size,
        } => cluster::cluster_watch(jobs, streams, seconds, group_size).await?,
        Scenario::Recovery {
            seconds,
            throttles,
            baseline,
        } => recovery::recovery(seconds, throttles, baseline).await?,
        Scenario::Fairness {
            seconds,
            rounds,
            baseline,
        } => fairness::fairness(seconds, rounds, baseline).await?,
        Scenario::Tls { rounds, seconds } => tls::tls(rounds, seconds).await?,
        Scenario::Stale {
            rate,
            jobs,
            before,
            failing,
            after,
        } => stale::stale(rate, jobs, before, failing, after).await?,
        Scenario::WatchEvents(a) => events::watch_events(a).await?,
        Scenario::LogVolume { seconds } => operations::log_volume(seconds).await?,
        Scenario::Floods {
            seconds,
            floods,
            baseline,
        } => floods::floods(seconds, &floods, baseline).await?,
        Scenario::Listing { things, clients } => listing::listing(things, clients).await?,
        Scenario::MetricsCost {
            rounds,
            seconds,
            baseline,
        } => operations::metrics_cost(rounds, seconds, baseline).await?,
        Scenario::ExecutionThroughput {
            rounds,
            seconds,
            baseline,
        } => execution_throughput(rounds, seconds, baseline).await?,
        Scenario::Instructions { calls, baseline } => {
            instructions::instructions(calls, baseline).await?
        }
        Scenario::BareServer(a) => bare_server(a).await?,
    }
    Ok(())
}

fn machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("## Machine\n\n{cores} cores, {cpu}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn all_watch_runs_the_watch_scenarios_with_their_defaults() {
        let fanout: FanoutArgs = defaults();
        assert_eq!(
            (fanout.jobs, fanout.subscribers, fanout.connections),
            (100, 100, 100)
        );
        assert_eq!((fanout.poll_interval, fanout.window), (20, 60));
        let budget: BudgetArgs = defaults();
        assert_eq!(
            (budget.jobs, budget.seconds, budget.group_size),
            (1000, 330, 600)
        );
    }
}
