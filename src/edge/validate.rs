//! Request validation at the gRPC edge: a request becomes a
//! [`JobQuery`] only if AWS could accept it, so bad input costs AWS nothing.

use std::fmt::Display;

use crate::{
    domain::{
        error::GatewayError,
        listing::ListingQuery,
        rules::{FieldViolation, MAX_JOB_ID_LEN, job_id, namespace_id, thing_name},
        watch::WatchTargets,
    },
    pb,
    upstream::{ExecutionQuery, JobExecutionsPage, JobQuery, ThingExecutionsPage},
};

impl TryFrom<pb::DescribeJobRequest> for JobQuery {
    type Error = GatewayError;

    fn try_from(req: pb::DescribeJobRequest) -> Result<Self, Self::Error> {
        query("job_id", req)
    }
}

impl TryFrom<pb::DescribeJobExecutionRequest> for ExecutionQuery {
    type Error = GatewayError;

    fn try_from(req: pb::DescribeJobExecutionRequest) -> Result<Self, Self::Error> {
        execution("", req)
    }
}

/// Checks an execution question; `prefix` goes before the field names
/// (`requests[3].` in a batch).
fn execution(
    prefix: impl Display + Copy,
    req: pb::DescribeJobExecutionRequest,
) -> Result<ExecutionQuery, GatewayError> {
    job_id(format_args!("{prefix}job_id"), &req.job_id).map_err(GatewayError::InvalidArgument)?;
    thing_name(format_args!("{prefix}thing_name"), &req.thing_name)
        .map_err(GatewayError::InvalidArgument)?;
    Ok(ExecutionQuery {
        job_id: req.job_id,
        thing_name: req.thing_name,
        execution_number: req.execution_number,
    })
}

/// Checks item `index` of a batch of executions; a violation names the
/// item's field (`requests[3].thing_name`).
pub fn execution_item(
    index: usize,
    req: pb::DescribeJobExecutionRequest,
) -> Result<ExecutionQuery, GatewayError> {
    execution(format_args!("requests[{index}]."), req)
}

/// AWS's page sizes for both execution listings.
const EXECUTIONS_PAGE: std::ops::RangeInclusive<i32> = 1..=250;

impl TryFrom<pb::ListJobExecutionsForJobRequest> for JobExecutionsPage {
    type Error = GatewayError;

    fn try_from(req: pb::ListJobExecutionsForJobRequest) -> Result<Self, Self::Error> {
        job_id("job_id", &req.job_id).map_err(GatewayError::InvalidArgument)?;
        Ok(JobExecutionsPage {
            job_id: req.job_id,
            status: status_filter(req.status)?,
            max_results: page_size(req.max_results)?,
            next_token: page_token(req.next_token)?,
        })
    }
}

impl TryFrom<pb::StreamJobExecutionsForJobRequest> for ListingQuery {
    type Error = GatewayError;

    fn try_from(req: pb::StreamJobExecutionsForJobRequest) -> Result<Self, Self::Error> {
        job_id("job_id", &req.job_id).map_err(GatewayError::InvalidArgument)?;
        Ok(ListingQuery {
            job_id: req.job_id,
            status: status_filter(req.status)?,
        })
    }
}

impl TryFrom<pb::ListJobExecutionsForThingRequest> for ThingExecutionsPage {
    type Error = GatewayError;

    fn try_from(req: pb::ListJobExecutionsForThingRequest) -> Result<Self, Self::Error> {
        thing_name("thing_name", &req.thing_name).map_err(GatewayError::InvalidArgument)?;
        if let Some(id) = &req.job_id {
            job_id("job_id", id).map_err(GatewayError::InvalidArgument)?;
        }
        if let Some(namespace) = &req.namespace_id {
            namespace_id("namespace_id", namespace).map_err(GatewayError::InvalidArgument)?;
        }
        Ok(ThingExecutionsPage {
            thing_name: req.thing_name,
            status: status_filter(req.status)?,
            namespace_id: req.namespace_id,
            job_id: req.job_id,
            max_results: page_size(req.max_results)?,
            next_token: page_token(req.next_token)?,
        })
    }
}

/// A violation of `field`, described for the caller.
fn invalid(field: &str, description: String) -> GatewayError {
    GatewayError::InvalidArgument(FieldViolation {
        field: field.to_owned(),
        description,
    })
}

/// A listing's status filter, as AWS names it.
fn status_filter(status: Option<i32>) -> Result<Option<&'static str>, GatewayError> {
    let Some(value) = status else {
        return Ok(None);
    };
    match pb::job_execution::Status::try_from(value) {
        Ok(status) if status != pb::job_execution::Status::Unspecified => {
            Ok(Some(status.as_str_name()))
        }
        _ => Err(invalid(
            "status",
            format!(
                "status {value} is not an execution status; use QUEUED, IN_PROGRESS, \
                 SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED or CANCELED, or leave \
                 it out"
            ),
        )),
    }
}

/// A listing's page size, within AWS's range.
fn page_size(size: Option<i32>) -> Result<Option<i32>, GatewayError> {
    match size {
        Some(size) if !EXECUTIONS_PAGE.contains(&size) => Err(invalid(
            "max_results",
            format!(
                "max_results is {size}; AWS IoT lists {} to {} executions per page",
                EXECUTIONS_PAGE.start(),
                EXECUTIONS_PAGE.end()
            ),
        )),
        size => Ok(size),
    }
}

/// A listing's token: absent for the first page, never empty.
fn page_token(token: Option<String>) -> Result<Option<String>, GatewayError> {
    if token.as_deref() == Some("") {
        return Err(invalid(
            "next_token",
            "next_token is empty; leave it out for the first page, or send the \
             previous page's next_token"
                .to_owned(),
        ));
    }
    Ok(token)
}

fn query(
    job_id_field: impl Display + Copy,
    req: pb::DescribeJobRequest,
) -> Result<JobQuery, GatewayError> {
    job_id(job_id_field, &req.job_id).map_err(GatewayError::InvalidArgument)?;
    Ok(JobQuery {
        job_id: req.job_id,
        before_substitution: req.before_substitution,
    })
}

/// Checks item `index` of a batch; a violation names the item
/// (`requests[3].job_id`) so the caller can find it.
pub fn batch_item(index: usize, req: pb::DescribeJobRequest) -> Result<JobQuery, GatewayError> {
    query(format_args!("requests[{index}].job_id"), req)
}

/// Checks a batch of `operation` requests' size: at least one item, at
/// most `max` (the caller's own limit when `by_policy`, else the gateway's).
pub fn batch_size(
    operation: &str,
    len: usize,
    max: usize,
    by_policy: bool,
) -> Result<(), GatewayError> {
    let description = if len == 0 {
        format!("requests is empty; send 1 to {max} {operation} requests")
    } else if len > max && by_policy {
        format!(
            "requests has {len} items; this caller may send at most {max} per batch \
             (its policy's max_batch_size): split the batch"
        )
    } else if len > max {
        format!(
            "requests has {len} items; this gateway answers at most {max} per batch \
             (--max-batch-size): split the batch"
        )
    } else {
        return Ok(());
    };
    Err(GatewayError::InvalidArgument(FieldViolation {
        field: "requests".to_owned(),
        description,
    }))
}

/// Checks a watch request: 1 to `max_jobs` distinct valid ids (a repeated id
/// counts once), and resume points only for jobs of the request.
pub fn watch(req: pb::WatchJobsRequest, max_jobs: usize) -> Result<WatchTargets, GatewayError> {
    let invalid = |field: String, description: String| {
        GatewayError::InvalidArgument(FieldViolation { field, description })
    };
    let mut ids: Vec<String> = Vec::with_capacity(req.job_ids.len().min(max_jobs));
    for (index, id) in req.job_ids.into_iter().enumerate() {
        job_id(format_args!("job_ids[{index}]"), &id).map_err(GatewayError::InvalidArgument)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
        if ids.len() > max_jobs {
            return Err(invalid(
                "job_ids".to_owned(),
                format!(
                    "job_ids names more than {max_jobs} jobs; this gateway watches at most \
                     {max_jobs} per stream (--watch-max-jobs): open several streams"
                ),
            ));
        }
    }
    if ids.is_empty() {
        return Err(invalid(
            "job_ids".to_owned(),
            format!("job_ids is empty; name 1 to {max_jobs} jobs to watch"),
        ));
    }
    if let Some(stray) = req.resume_from.keys().find(|key| !ids.contains(key)) {
        let shown: String = stray.chars().take(MAX_JOB_ID_LEN).collect();
        return Err(invalid(
            format!("resume_from[{shown}]"),
            format!(
                "resume_from names job {shown:?}, which is not in job_ids; resume only the \
                 jobs this stream watches"
            ),
        ));
    }
    let targets = ids
        .into_iter()
        .map(|id| {
            let resume = req.resume_from.get(&id).copied();
            let query = JobQuery {
                job_id: id,
                before_substitution: req.before_substitution,
            };
            (query, resume)
        })
        .collect();
    Ok(WatchTargets(targets))
}
