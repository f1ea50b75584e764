//! The client subcommands, for people and scripts at a terminal:
//! `describe-job` takes the options of `aws iot describe-job` and prints
//! what it prints, through the gateway; `describe-jobs` asks about many jobs
//! in one call; `watch-job` follows jobs live; `describe-job-execution`,
//! `list-job-executions-for-job` and `list-job-executions-for-thing` are
//! `aws iot`'s, with its pagination ([`executions`]).
//!
//! Exit statuses are the AWS CLI v2's: 0 success, 252 bad parameters,
//! 253 bad configuration, 254 the service answered with an error, 255
//! anything else (the gateway could not be reached), 130 interrupted.
//! `watch-job` adds 1: a job ended `CANCELED` or was deleted. A reader
//! that stops reading (`| head`) ends a command quietly with 0, as in the
//! AWS CLI.

pub mod args;
pub mod aws_json;
pub mod executions;
pub mod input;
pub mod output;
pub mod paging;
pub mod stale;
pub mod table;
pub mod text;
pub mod watch;

use std::{io::Write as _, net::IpAddr, process::ExitCode, time::Duration};

use http::Uri;
use serde_json::{Map, Value};
use tonic::{
    Code, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_types::StatusExt as _;

use crate::{
    domain::rules,
    pb::{self, jobs_gateway_client::JobsGatewayClient},
    upstream::error_chain,
};
use args::{ClientArgs, DescribeJobArgs, DescribeJobsArgs, Skeleton};
use input::{InputFormat, ParamError};
use output::{Printer, Query};

/// Why a client command did not succeed, and so its exit status.
#[derive(Debug, thiserror::Error)]
pub enum CommandFailure {
    /// The command's parameters are wrong (252).
    #[error(transparent)]
    Param(#[from] ParamError),
    /// Where or how to reach the gateway is wrong (253).
    #[error("{0}")]
    Config(String),
    /// The gateway answered with an error (254).
    #[error("{0}")]
    Service(String),
    /// Anything else, such as no connection to the gateway (255).
    #[error("{0}")]
    Other(String),
    /// Ctrl-C (130).
    #[error("interrupted")]
    Interrupted,
    /// Whoever read the output stopped reading (`| head`): stop quietly
    /// with 0, as the AWS CLI does.
    #[error("the output was closed")]
    OutputClosed,
}

impl CommandFailure {
    /// The AWS CLI's exit status for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Param(_) => 252,
            Self::Config(_) => 253,
            Self::Service(_) => SERVICE_ERROR,
            Self::Other(_) => 255,
            Self::Interrupted => 130,
            Self::OutputClosed => 0,
        }
    }
}

/// What a client command ended with.
pub type Outcome = Result<ExitCode, CommandFailure>;

/// Runs a client command until it ends or Ctrl-C, and reports a failure on
/// stderr the way the AWS CLI does.
pub async fn run(command: impl Future<Output = Outcome>) -> ExitCode {
    let outcome = tokio::select! {
        outcome = command => outcome,
        _ = tokio::signal::ctrl_c() => Err(CommandFailure::Interrupted),
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            match &failure {
                CommandFailure::Interrupted => eprintln!(),
                CommandFailure::OutputClosed => {}
                CommandFailure::Service(message) => eprintln!("\n{message}"),
                CommandFailure::Param(_) | CommandFailure::Config(_) | CommandFailure::Other(_) => {
                    eprintln!("iot-jobs-gateway: {failure}")
                }
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Where the gateway is, and whether to speak TLS to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL to connect to.
    pub uri: Uri,
    /// TLS: for `https://`, and for a bare `host:port` that is not loopback.
    pub tls: bool,
}

/// Reads `--gateway` / `IOT_JOBS_GATEWAY`: a URL, or `host:port`, which
/// means plaintext on loopback and TLS anywhere else.
pub fn target(text: &str) -> Result<Target, CommandFailure> {
    let bad = |why: &str| {
        CommandFailure::Config(format!(
            "--gateway / IOT_JOBS_GATEWAY {text:?} {why}; expected e.g. http://127.0.0.1:50051, \
             https://gateway.example.com or 127.0.0.1:50051"
        ))
    };
    let (with_scheme, explicit) = if text.contains("://") {
        (text.to_owned(), true)
    } else {
        (format!("http://{text}"), false)
    };
    let uri: Uri = with_scheme.parse().map_err(|_| bad("is not a URL"))?;
    let host = uri.host().ok_or_else(|| bad("has no host"))?;
    let tls = match (explicit, uri.scheme_str()) {
        (true, Some("https")) => true,
        (true, Some("http")) => false,
        (true, _) => return Err(bad("must start with http:// or https://")),
        (false, _) => !is_loopback(host),
    };
    let uri = if tls && !explicit {
        format!("https://{text}")
            .parse()
            .map_err(|_| bad("is not a URL"))?
    } else {
        uri
    };
    Ok(Target { uri, tls })
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `0` means no limit, as in the AWS CLI.
fn limit(seconds: f64) -> Option<Duration> {
    (seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// A connected gateway client, per the shared options.
pub async fn connect(client: &ClientArgs) -> Result<JobsGatewayClient<Channel>, CommandFailure> {
    let target = target(&client.gateway)?;
    let mut endpoint = Endpoint::from(target.uri.clone());
    if let Some(limit) = limit(client.cli_connect_timeout) {
        endpoint = endpoint.connect_timeout(limit);
    }
    let wants_tls = client.ca_bundle.is_some() || client.client_cert.is_some();
    if wants_tls && !target.tls {
        return Err(CommandFailure::Config(format!(
            "--ca-bundle and --client-cert need TLS, but {} is plaintext: use https://",
            target.uri
        )));
    }
    if target.tls {
        endpoint = endpoint.tls_config(tls_config(client)?).map_err(|e| {
            CommandFailure::Config(format!("TLS to {}: {}", target.uri, error_chain(&e)))
        })?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        CommandFailure::Other(format!(
            "Could not connect to the gateway at {}: {}",
            target.uri,
            error_chain(&e)
        ))
    })?;
    Ok(JobsGatewayClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// The client's TLS: the system's roots or `--ca-bundle`, and the client
/// certificate of `--client-cert` / `--client-key`.
fn tls_config(client: &ClientArgs) -> Result<ClientTlsConfig, CommandFailure> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            CommandFailure::Config(format!("{flag} {}: cannot read it: {e}", path.display()))
        })
    };
    let mut tls = ClientTlsConfig::new();
    tls = match &client.ca_bundle {
        Some(path) => tls.ca_certificate(Certificate::from_pem(read("--ca-bundle", path)?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&client.client_cert, &client.client_key) {
        tls = tls.identity(Identity::from_pem(
            read("--client-cert", cert)?,
            read("--client-key", key)?,
        ));
    }
    Ok(tls)
}

/// The code that names an error: AWS's (`ResourceNotFoundException`) when
/// AWS said it, else the gateway's reason (`RATE_LIMITED`), else the gRPC
/// code.
pub fn error_code(status: &tonic_types::pb::Status) -> String {
    use prost::Message as _;
    let code = Code::from(status.code);
    let status = Status::with_details(code, status.message.clone(), status.encode_to_vec().into());
    status_error_code(&status)
}

fn status_error_code(status: &Status) -> String {
    let info = status.get_details_error_info();
    info.as_ref()
        .and_then(|i| i.metadata.get("awsErrorCode").cloned())
        .or_else(|| info.map(|i| i.reason).filter(|r| !r.is_empty()))
        .unwrap_or_else(|| format!("{:?}", status.code()))
}

/// The status the gateway sends when the service answered with an error.
pub const SERVICE_ERROR: u8 = 254;

/// Whether a status is the gateway's answer: its errors always carry
/// `ErrorInfo` in the gateway's domain or a `BadRequest`. Anything else
/// (no HTTP/2, a reply that is not gRPC, a stream a proxy cut short) was
/// made up on the way, by tonic or something in between.
pub fn from_gateway(status: &Status) -> bool {
    status
        .get_details_error_info()
        .is_some_and(|info| info.domain == crate::pb::ERROR_DOMAIN)
        || status.get_details_bad_request().is_some()
}

/// A failed call as the AWS CLI reports it, or as a connection failure when
/// the answer never came from the gateway.
pub fn call_failure(operation: &str, status: &Status) -> CommandFailure {
    if from_gateway(status) {
        CommandFailure::Service(aws_error_line(
            &status_error_code(status),
            operation,
            status.message(),
        ))
    } else {
        CommandFailure::Other(format!(
            "no answer from the gateway to {operation} ({:?}): {}",
            status.code(),
            error_chain(status)
        ))
    }
}

/// The AWS CLI's line for a service error.
pub fn aws_error_line(code: &str, operation: &str, message: &str) -> String {
    format!("An error occurred ({code}) when calling the {operation} operation: {message}")
}

/// Runs a unary call within `--cli-read-timeout`, also telling the gateway
/// that deadline.
async fn within<T, F>(
    client: &ClientArgs,
    operation: &str,
    call: F,
) -> Result<tonic::Response<T>, CommandFailure>
where
    F: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let answer = match limit(client.cli_read_timeout) {
        Some(limit) => tokio::time::timeout(limit, call)
            .await
            .map_err(|_| read_timeout(client, operation))?,
        None => call.await,
    };
    answer.map_err(|status| {
        if is_callers_deadline(&status) {
            read_timeout(client, operation)
        } else {
            call_failure(operation, &status)
        }
    })
}

/// The gateway gave up because the deadline this CLI sent passed: the
/// same read timeout as if the CLI's own timer had fired first.
fn is_callers_deadline(status: &Status) -> bool {
    status.code() == Code::DeadlineExceeded
        && status
            .get_details_error_info()
            .is_some_and(|info| info.metadata.get("deadline").map(String::as_str) == Some("caller"))
}

fn read_timeout(client: &ClientArgs, operation: &str) -> CommandFailure {
    CommandFailure::Other(format!(
        "Read timeout on the gateway {}: no answer to {operation} within {}s (--cli-read-timeout)",
        client.gateway, client.cli_read_timeout
    ))
}

fn request<T>(client: &ClientArgs, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(limit) = limit(client.cli_read_timeout) {
        request.set_timeout(limit);
    }
    authorize(client, &mut request);
    request
}

/// Sends `IOT_JOBS_GATEWAY_TOKEN` as a bearer token, if set.
pub(crate) fn authorize<T>(client: &ClientArgs, request: &mut tonic::Request<T>) {
    let token = client
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(value) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
}

/// Writes to stdout; a reader that went away (`| head`) ends the command
/// quietly.
pub(crate) fn print(text: &str) -> Result<(), CommandFailure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CommandFailure::OutputClosed),
        Err(e) => Err(CommandFailure::Other(format!(
            "cannot write the output: {e}"
        ))),
    }
}

/// The gateway's own job id rule, checked before any call: a bad id is a
/// parameter error (252), in botocore's words.
fn checked_id(field: &str, id: &str) -> Result<(), ParamError> {
    rules::job_id(field, id)
        .map_err(|v| ParamError(format!("Parameter validation failed:\n{}", v.description)))
}

fn query(client: &ClientArgs) -> Result<Option<Query>, CommandFailure> {
    Ok(client.query.as_deref().map(Query::parse).transpose()?)
}

/// `iot-jobs-gateway describe-job`.
pub async fn describe_job(args: DescribeJobArgs) -> Outcome {
    let mut input = match (&args.cli_input_json, &args.cli_input_yaml) {
        (Some(json), _) => input::describe_job(InputFormat::Json, json)?,
        (None, Some(yaml)) => input::describe_job(InputFormat::Yaml, yaml)?,
        (None, None) => input::DescribeJobInput::default(),
    };
    if let Some(id) = &args.job_id {
        input.job_id = Some(id.clone());
    }
    if let Some(flag) = args.before_substitution_flag() {
        input.before_substitution = Some(flag);
    }
    match args.generate_cli_skeleton {
        Some(Skeleton::Input) => {
            print(input::DESCRIBE_JOB_INPUT_SKELETON)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Skeleton::YamlInput) => {
            print(input::DESCRIBE_JOB_YAML_SKELETON)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Skeleton::Output) | None => {}
    }
    let Some(job_id) = input.job_id else {
        return Err(ParamError(
            "the following arguments are required: --job-id (or jobId in --cli-input-json / --cli-input-yaml)"
                .to_owned(),
        )
        .into());
    };
    checked_id("jobId", &job_id)?;
    let printer = Printer::stdout(
        args.output,
        query(&args.client)?,
        args.client.color,
        "DescribeJob",
    );
    if args.generate_cli_skeleton == Some(Skeleton::Output) {
        print(&printer.render(&aws_json::output_skeleton())?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut client = connect(&args.client).await?;
    let message = pb::DescribeJobRequest {
        job_id: job_id.clone(),
        before_substitution: input.before_substitution,
    };
    let response = within(
        &args.client,
        "DescribeJob",
        client.describe_job(request(&args.client, message)),
    )
    .await?;
    if let Some(note) = stale::unary_note(&job_id, response.metadata()) {
        eprintln!("{note}");
    }
    print(&printer.render(&aws_json::describe_job(response.get_ref()))?)?;
    Ok(ExitCode::SUCCESS)
}

/// `iot-jobs-gateway describe-jobs`.
pub async fn describe_jobs(args: DescribeJobsArgs) -> Outcome {
    let mut ids = args.job_ids.clone();
    if let Some(path) = &args.job_ids_file {
        ids.extend(read_ids(path)?);
    }
    if ids.is_empty() {
        return Err(ParamError(format!(
            "no job ids: {} lists none",
            args.job_ids_file.as_deref().unwrap_or("--job-ids")
        ))
        .into());
    }
    let printer = Printer::stdout(
        args.output,
        query(&args.client)?,
        args.client.color,
        "DescribeJobs",
    );
    let mut client = connect(&args.client).await?;
    let before_substitution = args.before_substitution.then_some(true);
    let message = pb::BatchDescribeJobsRequest {
        requests: ids
            .iter()
            .map(|id| pb::DescribeJobRequest {
                job_id: id.clone(),
                before_substitution,
            })
            .collect(),
    };
    let answer = within(
        &args.client,
        "BatchDescribeJobs",
        client.batch_describe_jobs(request(&args.client, message)),
    )
    .await?
    .into_inner();
    if let Some(note) = stale::batch_note(&answer.results) {
        eprintln!("{note}");
    }
    let jobs = answer.results.iter().map(batch_item).collect::<Vec<_>>();
    let failed: Vec<String> = answer
        .results
        .iter()
        .filter_map(|result| match &result.outcome {
            Some(pb::job_result::Outcome::Response(_)) => None,
            Some(pb::job_result::Outcome::Error(status)) => Some(format!(
                "An error occurred ({}) when describing job {:?}: {}",
                error_code(status),
                result.job_id,
                status.message
            )),
            None => Some(format!(
                "An error occurred (Unknown) when describing job {:?}: {NO_OUTCOME}",
                result.job_id
            )),
        })
        .collect();
    print(&printer.render(&Value::Object(Map::from_iter([(
        "jobs".to_owned(),
        Value::Array(jobs),
    )])))?)?;
    for line in &failed {
        eprintln!("{line}");
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(SERVICE_ERROR)
    })
}

/// What a batch result without an answer or an error is reported as.
const NO_OUTCOME: &str = "the gateway sent no outcome";

/// One result of a batch: the job id, then the answer's fields or the error.
fn batch_item(result: &pb::JobResult) -> Value {
    let mut item = Map::from_iter([("jobId".to_owned(), Value::from(result.job_id.clone()))]);
    match &result.outcome {
        Some(pb::job_result::Outcome::Response(response)) => add_outcome(&mut item, Ok(response)),
        Some(pb::job_result::Outcome::Error(status)) => add_outcome(&mut item, Err(status)),
        None => {
            item.insert(
                "error".into(),
                serde_json::json!({"code": "Unknown", "message": NO_OUTCOME}),
            );
        }
    }
    Value::Object(item)
}

/// Adds an answer's fields (`documentSource`, `job`, as describe-job
/// prints them) or its `error` to `object`.
pub fn add_outcome(
    object: &mut Map<String, Value>,
    outcome: Result<&pb::DescribeJobResponse, &tonic_types::pb::Status>,
) {
    match outcome {
        Ok(response) => {
            if let Value::Object(fields) = aws_json::describe_job(response) {
                object.extend(fields);
            }
        }
        Err(status) => {
            object.insert("error".into(), error_json(status));
        }
    }
}

/// A `google.rpc.Status` as `{"code", "message", "grpcCode"}`.
fn error_json(status: &tonic_types::pb::Status) -> Value {
    serde_json::json!({
        "code": error_code(status),
        "message": status.message,
        "grpcCode": format!("{:?}", Code::from(status.code)),
    })
}

/// Job ids from a file or stdin (`-`): split at white space; `#` comments
/// out the rest of a line.
fn read_ids(path: &str) -> Result<Vec<String>, CommandFailure> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| ParamError(format!("cannot read job ids from stdin: {e}")))?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| ParamError(format!("cannot read job ids from {path}: {e}")))?
    };
    Ok(ids_in(&text))
}

fn ids_in(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_on_loopback_tls_elsewhere() {
        let t = |text: &str| target(text).map(|t| (t.uri.to_string(), t.tls));
        assert_eq!(
            t("127.0.0.1:50051").unwrap(),
            ("http://127.0.0.1:50051/".into(), false)
        );
        assert_eq!(
            t("localhost:9000").unwrap(),
            ("http://localhost:9000/".into(), false)
        );
        assert_eq!(
            t("[::1]:50051").unwrap(),
            ("http://[::1]:50051/".into(), false)
        );
        assert_eq!(
            t("gateway.example.com:443").unwrap(),
            ("https://gateway.example.com:443/".into(), true)
        );
        assert_eq!(
            t("10.0.0.7:50051").unwrap(),
            ("https://10.0.0.7:50051/".into(), true)
        );
        assert_eq!(
            t("http://gateway.internal:50051").unwrap(),
            ("http://gateway.internal:50051/".into(), false)
        );
        assert!(t("https://127.0.0.1:1").unwrap().1);
        for bad in ["ftp://x", "http://", "not a url"] {
            assert_eq!(target(bad).unwrap_err().exit_code(), 253, "{bad}");
        }
    }

    #[test]
    fn id_files_allow_lines_spaces_and_comments() {
        assert_eq!(
            ids_in("a b\n# all of it\nc # the third\n\n  d\n"),
            ["a", "b", "c", "d"]
        );
    }
}
