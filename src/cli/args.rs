//! The client subcommands' options. `describe-job` takes the AWS CLI's own
//! options for `aws iot describe-job`, so scripts carry over; the options
//! every client subcommand shares live in [`ClientArgs`].

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Where the gateway is when neither `--gateway` nor the variable says.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:50051";

/// Options every client subcommand shares: which gateway, how long to wait.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The gateway to ask: a URL, or host:port (plaintext on loopback, TLS elsewhere).
    #[arg(long, env = "IOT_JOBS_GATEWAY", default_value = DEFAULT_GATEWAY)]
    pub gateway: String,

    /// Seconds to wait for a connection to the gateway (0 = no limit), as in the AWS CLI.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, value_parser = parse_seconds)]
    pub cli_connect_timeout: f64,

    /// Seconds to wait for an answer (0 = no limit), as in the AWS CLI; for
    /// watch-job, the longest silence (events and heartbeats) before giving up.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, value_parser = parse_seconds)]
    pub cli_read_timeout: f64,

    /// A JMESPath query applied to the output, as in the AWS CLI.
    #[arg(long)]
    pub query: Option<String>,

    /// Colour in table and progress output: on, off, or auto (only on a terminal).
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,

    /// Accepted for AWS CLI v2 scripts; this CLI never pages its output.
    #[arg(long)]
    pub no_cli_pager: bool,

    /// TLS: trust the gateway certificate's CA from this PEM bundle instead of the system's, as in the AWS CLI.
    #[arg(long, env = "IOT_JOBS_GATEWAY_CA_BUNDLE", value_name = "PEM")]
    pub ca_bundle: Option<PathBuf>,

    /// mTLS: present this client certificate (PEM) to the gateway.
    #[arg(
        long,
        env = "IOT_JOBS_GATEWAY_CLIENT_CERT",
        value_name = "PEM",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,

    /// mTLS: the private key of --client-cert (PEM).
    #[arg(
        long,
        env = "IOT_JOBS_GATEWAY_CLIENT_KEY",
        value_name = "PEM",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,

    /// A bearer token (opaque or JWT) sent as `authorization: Bearer …`; only from the environment, so it stays out of shell history.
    #[arg(
        long,
        env = "IOT_JOBS_GATEWAY_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// Always colour.
    On,
    /// Never colour.
    Off,
    /// Colour when writing to a terminal.
    Auto,
}

impl Color {
    /// Whether to colour output that goes to a terminal (`terminal`) or not.
    pub fn enabled(self, terminal: bool) -> bool {
        match self {
            Self::On => true,
            Self::Off => false,
            Self::Auto => terminal,
        }
    }
}

/// `--output` of `describe-job` and `describe-jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// JSON, indented as the AWS CLI prints it.
    Json,
    /// YAML, block style as AWS CLI v2 prints it.
    Yaml,
    /// Tab-separated lines, as the AWS CLI's text output.
    Text,
    /// Boxed tables, as the AWS CLI's table output.
    Table,
}

/// `--generate-cli-skeleton`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Skeleton {
    /// A sample input JSON for `--cli-input-json`.
    Input,
    /// A sample input YAML for `--cli-input-yaml`.
    YamlInput,
    /// Validate the inputs and print a sample output, calling nothing.
    Output,
}

/// `iot-jobs-gateway describe-job`: `aws iot describe-job`, through the gateway.
#[derive(Debug, Clone, Args)]
pub struct DescribeJobArgs {
    /// The unique identifier you assigned to this job when it was created.
    #[arg(long)]
    pub job_id: Option<String>,

    /// Show the job document as it was before substitution parameters were resolved.
    #[arg(long, overrides_with = "no_before_substitution")]
    pub before_substitution: bool,

    /// Show the job document with substitution parameters resolved (the default).
    #[arg(long, overrides_with = "before_substitution")]
    pub no_before_substitution: bool,

    /// Input as JSON (inline or file://path), in the shape --generate-cli-skeleton prints; flags override it.
    #[arg(long, value_name = "JSON", conflicts_with = "cli_input_yaml")]
    pub cli_input_json: Option<String>,

    /// Input as YAML (inline or file://path), in the shape --generate-cli-skeleton yaml-input prints; flags override it.
    #[arg(long, value_name = "YAML")]
    pub cli_input_yaml: Option<String>,

    /// Print a sample input (input, the default; yaml-input) or output (output) and call nothing.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "input")]
    pub generate_cli_skeleton: Option<Skeleton>,

    /// Output format.
    #[arg(long, value_enum, env = "AWS_DEFAULT_OUTPUT", default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,

    /// Gateway, timeouts, query and colour.
    #[command(flatten)]
    pub client: ClientArgs,
}

impl DescribeJobArgs {
    /// `--before-substitution` (true), `--no-before-substitution` (false), or neither.
    pub fn before_substitution_flag(&self) -> Option<bool> {
        if self.before_substitution {
            Some(true)
        } else if self.no_before_substitution {
            Some(false)
        } else {
            None
        }
    }
}

/// `iot-jobs-gateway describe-jobs`: many jobs in one BatchDescribeJobs call.
#[derive(Debug, Clone, Args)]
pub struct DescribeJobsArgs {
    /// The jobs to describe, in the order the results should come.
    #[arg(long, num_args = 1.., required_unless_present = "job_ids_file")]
    pub job_ids: Vec<String>,

    /// Also read job ids from this file (`-` = stdin): separated by spaces or newlines, `#` starts a comment.
    #[arg(long, value_name = "PATH")]
    pub job_ids_file: Option<String>,

    /// Show each job document as it was before substitution parameters were resolved.
    #[arg(long)]
    pub before_substitution: bool,

    /// Output format.
    #[arg(long, value_enum, env = "AWS_DEFAULT_OUTPUT", default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,

    /// Gateway, timeouts, query and colour.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `--output` of `watch-job`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WatchOutput {
    /// A live progress bar per job and a line per status change.
    Progress,
    /// One JSON object per event, one per line.
    Json,
}

/// `iot-jobs-gateway watch-job`: follow jobs live until they finish.
#[derive(Debug, Clone, Args)]
pub struct WatchJobArgs {
    /// The jobs to follow (repeat the flag or list several ids).
    #[arg(long, num_args = 1.., required = true)]
    pub job_id: Vec<String>,

    /// Show each job document as it was before substitution parameters were resolved.
    #[arg(long)]
    pub before_substitution: bool,

    /// progress on a terminal, json (one object per event and line) otherwise.
    #[arg(long, value_enum)]
    pub output: Option<WatchOutput>,

    /// Gateway, timeouts, query and colour.
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(s),
        _ => Err("seconds, a number from 0 to 86400 (0 = no limit)".to_owned()),
    }
}

/// The AWS CLI's pagination options of a listing command.
#[derive(Debug, Clone, Args)]
pub struct PagingArgs {
    /// Items per AWS call while paging (the API's maxResults); all pages are still listed.
    #[arg(long, value_name = "N")]
    pub page_size: Option<i64>,

    /// List at most this many items; a NextToken in the output continues with --starting-token.
    #[arg(long, value_name = "N")]
    pub max_items: Option<i64>,

    /// Continue where the NextToken of an earlier --max-items listing left off.
    #[arg(long, value_name = "TOKEN")]
    pub starting_token: Option<String>,

    /// One AWS call only: its page, with AWS's own nextToken.
    #[arg(long)]
    pub no_paginate: bool,

    /// One page of at most this many items (the API's own option; --page-size when paging).
    #[arg(long, value_name = "N")]
    pub max_results: Option<i64>,

    /// AWS's token of the page to list (the API's own option: turns paging off).
    #[arg(long, value_name = "TOKEN")]
    pub next_token: Option<String>,
}

/// Input, skeleton and output options every executions command shares.
#[derive(Debug, Clone, Args)]
pub struct CommandIo {
    /// Input as JSON (inline or file://path), in the shape --generate-cli-skeleton prints; flags override it.
    #[arg(long, value_name = "JSON", conflicts_with = "cli_input_yaml")]
    pub cli_input_json: Option<String>,

    /// Input as YAML (inline or file://path), in the shape --generate-cli-skeleton yaml-input prints; flags override it.
    #[arg(long, value_name = "YAML")]
    pub cli_input_yaml: Option<String>,

    /// Print a sample input (input, the default; yaml-input) and call nothing.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "input")]
    pub generate_cli_skeleton: Option<Skeleton>,

    /// Output format.
    #[arg(long, value_enum, env = "AWS_DEFAULT_OUTPUT", default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,

    /// Gateway, timeouts, query and colour.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `iot-jobs-gateway describe-job-execution`: `aws iot describe-job-execution`, through the gateway.
#[derive(Debug, Clone, Args)]
pub struct DescribeJobExecutionArgs {
    /// The unique identifier you assigned to this job when it was created.
    #[arg(long)]
    pub job_id: Option<String>,

    /// The name of the thing on which the job execution is running.
    #[arg(long)]
    pub thing_name: Option<String>,

    /// Which execution of the job on the thing (AWS numbers them from 1); the latest when left out.
    #[arg(long, value_name = "N")]
    pub execution_number: Option<i64>,

    /// Input, skeletons, output and the gateway.
    #[command(flatten)]
    pub io: CommandIo,
}

/// `iot-jobs-gateway list-job-executions-for-job`: `aws iot list-job-executions-for-job`, through the gateway.
#[derive(Debug, Clone, Args)]
pub struct ListJobExecutionsForJobArgs {
    /// The unique identifier you assigned to this job when it was created.
    #[arg(long)]
    pub job_id: Option<String>,

    /// The status of the job.
    #[arg(long)]
    pub status: Option<String>,

    /// Paging as the AWS CLI pages.
    #[command(flatten)]
    pub paging: PagingArgs,

    /// Input, skeletons, output and the gateway.
    #[command(flatten)]
    pub io: CommandIo,
}

/// `iot-jobs-gateway list-job-executions-for-thing`: `aws iot list-job-executions-for-thing`, through the gateway.
#[derive(Debug, Clone, Args)]
pub struct ListJobExecutionsForThingArgs {
    /// The thing name.
    #[arg(long)]
    pub thing_name: Option<String>,

    /// An optional filter that lets you search for jobs that have the specified status.
    #[arg(long)]
    pub status: Option<String>,

    /// The namespace used to indicate that a job is a customer-managed job.
    #[arg(long)]
    pub namespace_id: Option<String>,

    /// The unique identifier you assigned to this job when it was created.
    #[arg(long)]
    pub job_id: Option<String>,

    /// Paging as the AWS CLI pages.
    #[command(flatten)]
    pub paging: PagingArgs,

    /// Input, skeletons, output and the gateway.
    #[command(flatten)]
    pub io: CommandIo,
}
