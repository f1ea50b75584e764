//! The executions commands: `describe-job-execution`,
//! `list-job-executions-for-job` and `list-job-executions-for-thing`, with
//! `aws iot`'s options, input documents, skeletons, output formats and
//! pagination ([`super::paging`]), through the gateway.

use std::process::ExitCode;

use serde_json::{Map, Value};

use super::{
    CommandFailure, Outcome,
    args::{
        CommandIo, DescribeJobExecutionArgs, ListJobExecutionsForJobArgs,
        ListJobExecutionsForThingArgs, Skeleton,
    },
    aws_json, connect,
    input::{self, InputFormat, Kind, ParamError},
    output::Printer,
    paging::{self, Page, Paging},
    print, query, request, within,
};
use crate::{domain::rules, pb};

/// The command's input document (or none), its members checked.
fn input_document(
    io: &CommandIo,
    members: &[(&str, Kind)],
) -> Result<Map<String, Value>, ParamError> {
    match (&io.cli_input_json, &io.cli_input_yaml) {
        (Some(json), _) => input::read_members(InputFormat::Json, json, members),
        (None, Some(yaml)) => input::read_members(InputFormat::Yaml, yaml, members),
        (None, None) => Ok(Map::new()),
    }
}

/// Prints the asked-for input skeleton; whether one was asked for.
fn skeleton(io: &CommandIo, json: &str, yaml: &str) -> Result<bool, CommandFailure> {
    match io.generate_cli_skeleton {
        Some(Skeleton::Input) => print(json).map(|()| true),
        Some(Skeleton::YamlInput) => print(yaml).map(|()| true),
        // The AWS CLI v1 prints no output skeleton for these either.
        Some(Skeleton::Output) => Err(ParamError(
            "--generate-cli-skeleton output is not offered for this command; use input or \
             yaml-input"
                .to_owned(),
        )
        .into()),
        None => Ok(false),
    }
}

fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    fields.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// A required parameter, from its flag or the input document.
fn required(
    flag: &Option<String>,
    fields: &Map<String, Value>,
    name: &str,
    option: &str,
) -> Result<String, ParamError> {
    flag.clone().or_else(|| text(fields, name)).ok_or_else(|| {
        ParamError(format!(
            "the following arguments are required: {option} (or {name} in --cli-input-json / \
             --cli-input-yaml)"
        ))
    })
}

/// A rule of AWS's, checked before any call, in botocore's words.
fn checked(rule: Result<(), rules::FieldViolation>) -> Result<(), ParamError> {
    rule.map_err(|v| ParamError(format!("Parameter validation failed:\n{}", v.description)))
}

/// `--status`: one of AWS's execution statuses.
fn status(text: Option<String>) -> Result<Option<i32>, ParamError> {
    text.map(|name| {
        pb::job_execution::Status::from_str_name(&name)
            .filter(|s| *s != pb::job_execution::Status::Unspecified)
            .map(|s| s as i32)
            .ok_or_else(|| {
                ParamError(format!(
                    "Invalid value for parameter status: {name:?}; valid values are: QUEUED, \
                     IN_PROGRESS, SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED"
                ))
            })
    })
    .transpose()
}

fn printer(io: &CommandIo, title: &'static str) -> Result<Printer, CommandFailure> {
    Ok(Printer::stdout(
        io.output,
        query(&io.client)?,
        io.client.color,
        title,
    ))
}

/// `iot-jobs-gateway describe-job-execution`.
pub async fn describe_job_execution(args: DescribeJobExecutionArgs) -> Outcome {
    let io = &args.io;
    let fields = input_document(
        io,
        &[
            ("jobId", Kind::Str),
            ("thingName", Kind::Str),
            ("executionNumber", Kind::Int),
        ],
    )?;
    if skeleton(
        io,
        input::DESCRIBE_JOB_EXECUTION_INPUT_SKELETON,
        input::DESCRIBE_JOB_EXECUTION_YAML_SKELETON,
    )? {
        return Ok(ExitCode::SUCCESS);
    }
    let job_id = required(&args.job_id, &fields, "jobId", "--job-id")?;
    let thing_name = required(&args.thing_name, &fields, "thingName", "--thing-name")?;
    checked(rules::job_id("jobId", &job_id))?;
    checked(rules::thing_name("thingName", &thing_name))?;
    let execution_number = args
        .execution_number
        .or_else(|| fields.get("executionNumber").and_then(Value::as_i64));
    let printer = printer(io, "DescribeJobExecution")?;
    let mut client = connect(&io.client).await?;
    let message = pb::DescribeJobExecutionRequest {
        job_id,
        thing_name,
        execution_number,
    };
    let response = within(
        &io.client,
        "DescribeJobExecution",
        client.describe_job_execution(request(&io.client, message)),
    )
    .await?;
    print(&printer.render(&aws_json::describe_job_execution(response.get_ref()))?)?;
    Ok(ExitCode::SUCCESS)
}

const LIST_FOR_JOB: &str = "ListJobExecutionsForJob";
const LIST_FOR_THING: &str = "ListJobExecutionsForThing";

/// `iot-jobs-gateway list-job-executions-for-job`.
pub async fn list_job_executions_for_job(args: ListJobExecutionsForJobArgs) -> Outcome {
    let io = &args.io;
    let fields = input_document(
        io,
        &[
            ("jobId", Kind::Str),
            ("status", Kind::Str),
            ("maxResults", Kind::Int),
            ("nextToken", Kind::Str),
        ],
    )?;
    if skeleton(
        io,
        input::LIST_FOR_JOB_INPUT_SKELETON,
        input::LIST_FOR_JOB_YAML_SKELETON,
    )? {
        return Ok(ExitCode::SUCCESS);
    }
    let job_id = required(&args.job_id, &fields, "jobId", "--job-id")?;
    checked(rules::job_id("jobId", &job_id))?;
    let status = status(args.status.clone().or_else(|| text(&fields, "status")))?;
    let paging = paging::paging(
        &args.paging,
        fields.get("maxResults").and_then(Value::as_i64),
        text(&fields, "nextToken"),
    )?;
    let printer = printer(io, LIST_FOR_JOB)?;
    let client = connect(&io.client).await?;
    let fetch = |next_token: Option<String>, max_results: Option<i32>| {
        let mut client = client.clone();
        let message = pb::ListJobExecutionsForJobRequest {
            job_id: job_id.clone(),
            status,
            max_results,
            next_token,
        };
        async move {
            let page = within(
                &io.client,
                LIST_FOR_JOB,
                client.list_job_executions_for_job(request(&io.client, message)),
            )
            .await?
            .into_inner();
            Ok(Page {
                items: aws_json::job_execution_summaries(&page),
                next_token: page.next_token,
            })
        }
    };
    print(&listed(&printer, paging, fetch).await?)?;
    Ok(ExitCode::SUCCESS)
}

/// `iot-jobs-gateway list-job-executions-for-thing`.
pub async fn list_job_executions_for_thing(args: ListJobExecutionsForThingArgs) -> Outcome {
    let io = &args.io;
    let fields = input_document(
        io,
        &[
            ("thingName", Kind::Str),
            ("status", Kind::Str),
            ("namespaceId", Kind::Str),
            ("maxResults", Kind::Int),
            ("nextToken", Kind::Str),
            ("jobId", Kind::Str),
        ],
    )?;
    if skeleton(
        io,
        input::LIST_FOR_THING_INPUT_SKELETON,
        input::LIST_FOR_THING_YAML_SKELETON,
    )? {
        return Ok(ExitCode::SUCCESS);
    }
    let thing_name = required(&args.thing_name, &fields, "thingName", "--thing-name")?;
    checked(rules::thing_name("thingName", &thing_name))?;
    let job_id = args.job_id.clone().or_else(|| text(&fields, "jobId"));
    if let Some(job_id) = &job_id {
        checked(rules::job_id("jobId", job_id))?;
    }
    let namespace_id = args
        .namespace_id
        .clone()
        .or_else(|| text(&fields, "namespaceId"));
    if let Some(namespace_id) = &namespace_id {
        checked(rules::namespace_id("namespaceId", namespace_id))?;
    }
    let status = status(args.status.clone().or_else(|| text(&fields, "status")))?;
    let paging = paging::paging(
        &args.paging,
        fields.get("maxResults").and_then(Value::as_i64),
        text(&fields, "nextToken"),
    )?;
    let printer = printer(io, LIST_FOR_THING)?;
    let client = connect(&io.client).await?;
    let fetch = |next_token: Option<String>, max_results: Option<i32>| {
        let mut client = client.clone();
        let message = pb::ListJobExecutionsForThingRequest {
            thing_name: thing_name.clone(),
            status,
            namespace_id: namespace_id.clone(),
            max_results,
            next_token,
            job_id: job_id.clone(),
        };
        async move {
            let page = within(
                &io.client,
                LIST_FOR_THING,
                client.list_job_executions_for_thing(request(&io.client, message)),
            )
            .await?
            .into_inner();
            Ok(Page {
                items: aws_json::thing_execution_summaries(&page),
                next_token: page.next_token,
            })
        }
    };
    print(&listed(&printer, paging, fetch).await?)?;
    Ok(ExitCode::SUCCESS)
}

/// A listing's output, paged as `paging` says.
async fn listed<F, Fut>(
    printer: &Printer,
    paging: Paging,
    mut fetch: F,
) -> Result<String, CommandFailure>
where
    F: FnMut(Option<String>, Option<i32>) -> Fut,
    Fut: Future<Output = Result<Page, CommandFailure>>,
{
    const KEY: &str = "executionSummaries";
    match paging {
        Paging::Once {
            max_results,
            next_token,
        } => paging::render_once(printer, KEY, fetch(next_token, max_results).await?),
        Paging::All {
            page_size,
            max_items,
            start,
        } => {
            let listed = paging::list(page_size, max_items, start, fetch).await?;
            paging::render(printer, KEY, listed)
        }
    }
}
