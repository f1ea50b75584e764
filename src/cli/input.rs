//! `--cli-input-json` / `--cli-input-yaml` and the input skeletons, with
//! the AWS CLI's rules: the value is inline text or `file://path`, its keys
//! are the API's member names, unknown keys and wrong types are parameter
//! errors, and flags given on the command line override the input.

use std::fs;

use serde_json::{Map, Value};

/// A problem with the command's parameters (exit status 252).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

/// The parameters of DescribeJob.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DescribeJobInput {
    /// `jobId`.
    pub job_id: Option<String>,
    /// `beforeSubstitution`.
    pub before_substitution: Option<bool>,
}

/// Which input option the text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// `--cli-input-json`.
    Json,
    /// `--cli-input-yaml`.
    Yaml,
}

impl InputFormat {
    fn option(self) -> &'static str {
        match self {
            Self::Json => "--cli-input-json",
            Self::Yaml => "--cli-input-yaml",
        }
    }
}

/// Reads the text of an option that may say `file://path`.
pub fn read_param(option: &str, value: &str) -> Result<String, ParamError> {
    match value.strip_prefix("file://") {
        Some(path) => fs::read_to_string(path).map_err(|e| {
            ParamError(format!(
                "Error parsing parameter '{option}': Unable to load paramfile {value}: {e}"
            ))
        }),
        None => Ok(value.to_owned()),
    }
}

/// A member's type in an operation's input, as botocore checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// An integer.
    Int,
    /// A boolean.
    Bool,
}

impl Kind {
    fn valid(self) -> &'static str {
        match self {
            Self::Str => "<class 'str'>",
            Self::Int => "<class 'int'>",
            Self::Bool => "<class 'bool'>",
        }
    }

    fn holds(self, value: &Value) -> bool {
        match self {
            Self::Str => value.is_string(),
            Self::Int => value.is_i64() || value.is_u64(),
            Self::Bool => value.is_boolean(),
        }
    }
}

/// Reads an operation's input document (`--cli-input-json` or
/// `--cli-input-yaml`) whose members are `members`, in the model's order:
/// the given members, each checked for its type.
pub fn read_members(
    format: InputFormat,
    value: &str,
    members: &[(&str, Kind)],
) -> Result<Map<String, Value>, ParamError> {
    let option = format.option();
    let text = read_param(option, value)?;
    let document: Value = match format {
        InputFormat::Json => serde_json::from_str(&text).map_err(|e| {
            ParamError(format!(
                "Error parsing parameter '{option}': Invalid JSON: {e}"
            ))
        })?,
        // An empty YAML document is no input at all.
        InputFormat::Yaml if text.trim().is_empty() => Value::Object(Map::new()),
        InputFormat::Yaml => serde_yaml::from_str(&text).map_err(|e| {
            ParamError(format!(
                "Error parsing parameter '{option}': Invalid YAML: {e}"
            ))
        })?,
    };
    let Value::Object(fields) = document else {
        let first = members.first().map_or("", |(name, _)| name);
        return Err(ParamError(format!(
            "Error parsing parameter '{option}': the input must be an object such as \
             {{\"{first}\": \"...\"}} (see --generate-cli-skeleton)"
        )));
    };
    let names: Vec<&str> = members.iter().map(|(name, _)| *name).collect();
    let mut problems = Vec::new();
    for (key, value) in &fields {
        match members.iter().find(|(name, _)| name == key) {
            Some((_, kind)) if kind.holds(value) => {}
            Some((name, kind)) => problems.push(type_error(name, value, kind.valid())),
            None => problems.push(format!(
                "Unknown parameter in input: \"{key}\", must be one of: {}",
                names.join(", ")
            )),
        }
    }
    if problems.is_empty() {
        Ok(fields)
    } else {
        Err(ParamError(format!(
            "Parameter validation failed:\n{}",
            problems.join("\n")
        )))
    }
}

/// Parses DescribeJob's input document.
pub fn describe_job(format: InputFormat, value: &str) -> Result<DescribeJobInput, ParamError> {
    let fields = read_members(
        format,
        value,
        &[("jobId", Kind::Str), ("beforeSubstitution", Kind::Bool)],
    )?;
    Ok(DescribeJobInput {
        job_id: fields
            .get("jobId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        before_substitution: fields.get("beforeSubstitution").and_then(Value::as_bool),
    })
}

/// botocore's wording for a value of the wrong type.
fn type_error(name: &str, value: &Value, valid: &str) -> String {
    let kind = match value {
        Value::Null => "<class 'NoneType'>",
        Value::Bool(_) => "<class 'bool'>",
        Value::Number(n) if n.is_f64() => "<class 'float'>",
        Value::Number(_) => "<class 'int'>",
        Value::String(_) => "<class 'str'>",
        Value::Array(_) => "<class 'list'>",
        Value::Object(_) => "<class 'dict'>",
    };
    let value = super::text::python_str(value);
    format!("Invalid type for parameter {name}, value: {value}, type: {kind}, valid types: {valid}")
}

/// What `--generate-cli-skeleton` (or `input`) prints for DescribeJob.
pub const DESCRIBE_JOB_INPUT_SKELETON: &str =
    "{\n    \"jobId\": \"\",\n    \"beforeSubstitution\": true\n}\n";

/// What `--generate-cli-skeleton yaml-input` prints for DescribeJob.
pub const DESCRIBE_JOB_YAML_SKELETON: &str = "\
jobId: '' # [REQUIRED] The unique identifier you assigned to this job when it was created.
beforeSubstitution: true # Show the job document as it was before substitution parameters were resolved.
";

/// What `--generate-cli-skeleton` prints for DescribeJobExecution.
pub const DESCRIBE_JOB_EXECUTION_INPUT_SKELETON: &str =
    "{\n    \"jobId\": \"\",\n    \"thingName\": \"\",\n    \"executionNumber\": 0\n}\n";

/// What `--generate-cli-skeleton yaml-input` prints for DescribeJobExecution.
pub const DESCRIBE_JOB_EXECUTION_YAML_SKELETON: &str = "\
jobId: '' # [REQUIRED] The unique identifier you assigned to this job when it was created.
thingName: '' # [REQUIRED] The name of the thing on which the job execution is running.
executionNumber: 0 # A string (consisting of the digits \"0\" through \"9\" which is used to specify a particular job execution on a particular device.
";

/// What `--generate-cli-skeleton` prints for ListJobExecutionsForJob.
pub const LIST_FOR_JOB_INPUT_SKELETON: &str = "{\n    \"jobId\": \"\",\n    \"status\": \"QUEUED\",\n    \"maxResults\": 0,\n    \"nextToken\": \"\"\n}\n";

/// What `--generate-cli-skeleton yaml-input` prints for ListJobExecutionsForJob.
pub const LIST_FOR_JOB_YAML_SKELETON: &str = "\
jobId: '' # [REQUIRED] The unique identifier you assigned to this job when it was created.
status: QUEUED # The status of the job. Valid values are: QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED.
maxResults: 0 # The maximum number of results to be returned per request.
nextToken: '' # The token to retrieve the next set of results.
";

/// What `--generate-cli-skeleton` prints for ListJobExecutionsForThing.
pub const LIST_FOR_THING_INPUT_SKELETON: &str = "{\n    \"thingName\": \"\",\n    \"status\": \"QUEUED\",\n    \"namespaceId\": \"\",\n    \"maxResults\": 0,\n    \"nextToken\": \"\",\n    \"jobId\": \"\"\n}\n";

/// What `--generate-cli-skeleton yaml-input` prints for ListJobExecutionsForThing.
pub const LIST_FOR_THING_YAML_SKELETON: &str = "\
thingName: '' # [REQUIRED] The thing name.
status: QUEUED # An optional filter that lets you search for jobs that have the specified status. Valid values are: QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED.
namespaceId: '' # The namespace used to indicate that a job is a customer-managed job.
maxResults: 0 # The maximum number of results to be returned per request.
nextToken: '' # The token to retrieve the next set of results.
jobId: '' # The unique identifier you assigned to this job when it was created.
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeletons_read_back_as_input() {
        let want = DescribeJobInput {
            job_id: Some(String::new()),
            before_substitution: Some(true),
        };
        let json = describe_job(InputFormat::Json, DESCRIBE_JOB_INPUT_SKELETON).unwrap();
        let yaml = describe_job(InputFormat::Yaml, DESCRIBE_JOB_YAML_SKELETON).unwrap();
        assert_eq!(json, want);
        assert_eq!(yaml, want);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let err = describe_job(
            InputFormat::Json,
            r#"{"jobID": "x", "beforeSubstitution": "yes"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(r#"Unknown parameter in input: "jobID""#),
            "{err}"
        );
        assert!(
            err.contains("Invalid type for parameter beforeSubstitution"),
            "{err}"
        );
        let err = describe_job(InputFormat::Yaml, "- a list")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be an object"), "{err}");
        let err = describe_job(InputFormat::Json, "{")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Invalid JSON"), "{err}");
        let err = describe_job(InputFormat::Json, "file:///nonexistent/input.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Unable to load paramfile"), "{err}");
    }
}
