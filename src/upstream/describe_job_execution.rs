//! DescribeJobExecution: one thing's execution of a job (what the device
//! reported, its status and numbers).

use aws_sdk_iot::{operation::describe_job_execution::DescribeJobExecutionOutput, types as aws};

use crate::{
    pb,
    upstream::{
        Operation, UpstreamError,
        aws::classify,
        convert::{Unrecognized, timestamp},
    },
};

/// DescribeJobExecution, as the roles and the fetcher know it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DescribeJobExecution;

/// A validated DescribeJobExecution question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecutionQuery {
    /// The job id; already checked against AWS's pattern.
    pub job_id: String,
    /// The thing's name; already checked against AWS's pattern.
    pub thing_name: String,
    /// Which execution; `None` asks for the latest.
    pub execution_number: Option<i64>,
}

impl Operation for DescribeJobExecution {
    const NAME: &'static str = "DescribeJobExecution";
    const SPACE: &'static str = "execution";
    type Question = ExecutionQuery;
    type Response = pb::DescribeJobExecutionResponse;

    async fn send(
        client: &aws_sdk_iot::Client,
        query: &ExecutionQuery,
    ) -> Result<pb::DescribeJobExecutionResponse, UpstreamError> {
        let output = client
            .describe_job_execution()
            .job_id(&query.job_id)
            .thing_name(&query.thing_name)
            .set_execution_number(query.execution_number)
            .send()
            .await
            .map_err(classify)?;
        Ok(pb::DescribeJobExecutionResponse::from(&output))
    }

    /// SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED and CANCELED
    /// executions no longer change.
    fn settled(response: &pb::DescribeJobExecutionResponse) -> bool {
        use pb::job_execution::Status;
        matches!(
            response.execution.as_ref().map(|e| e.status()),
            Some(
                Status::Succeeded
                    | Status::Failed
                    | Status::TimedOut
                    | Status::Rejected
                    | Status::Removed
                    | Status::Canceled
            )
        )
    }

    fn subject(query: &ExecutionQuery) -> &str {
        &query.job_id
    }

    /// `job-id:thing-name:n` (`-` for the latest); job ids have no `:`,
    /// so the thing's name (which may) is everything before the last one.
    fn key(query: &ExecutionQuery) -> String {
        let number = query
            .execution_number
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        format!("{}:{}:{number}", query.job_id, query.thing_name)
    }
}

impl From<&DescribeJobExecutionOutput> for pb::DescribeJobExecutionResponse {
    fn from(out: &DescribeJobExecutionOutput) -> Self {
        Self {
            execution: out.execution().map(execution),
        }
    }
}

/// Every field AWS sent; an unknown status is kept as text.
pub(crate) fn execution(e: &aws::JobExecution) -> pb::JobExecution {
    let mut unknown = Unrecognized::default();
    let status = e.status().map(|s| {
        unknown.map(s.as_str(), pb::job_execution::Status::from_str_name, || {
            "status".into()
        })
    });
    pb::JobExecution {
        job_id: e.job_id().map(str::to_owned),
        status,
        force_canceled: e.force_canceled(),
        status_details: e.status_details().map(|d| pb::JobExecutionStatusDetails {
            details_map: d
                .details_map()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        }),
        thing_arn: e.thing_arn().map(str::to_owned),
        queued_at: e.queued_at().map(timestamp),
        started_at: e.started_at().map(timestamp),
        last_updated_at: e.last_updated_at().map(timestamp),
        execution_number: e
            .execution_number()
            .and_then(|n| unknown.narrow(n, "executionNumber")),
        // The SDK models it as a number that is always there.
        version_number: unknown.narrow(e.version_number(), "versionNumber"),
        approximate_seconds_before_timed_out: e
            .approximate_seconds_before_timed_out()
            .and_then(|n| unknown.narrow(n, "approximateSecondsBeforeTimedOut")),
        unrecognized_values: std::mem::take(&mut unknown.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_executions_are_settled_and_the_others_not() {
        use pb::job_execution::Status::*;
        for (status, settled) in [
            (Queued, false),
            (InProgress, false),
            (Succeeded, true),
            (Failed, true),
            (TimedOut, true),
            (Rejected, true),
            (Removed, true),
            (Canceled, true),
        ] {
            let response = pb::DescribeJobExecutionResponse {
                execution: Some(pb::JobExecution {
                    status: Some(status as i32),
                    ..Default::default()
                }),
            };
            assert_eq!(
                DescribeJobExecution::settled(&response),
                settled,
                "{status:?}"
            );
        }
    }

    #[test]
    fn an_unknown_status_is_kept_as_text() {
        let sdk = aws::JobExecution::builder()
            .status(aws::JobExecutionStatus::from("PAUSED"))
            .job_id("j")
            .build();
        let wire = execution(&sdk);
        assert_eq!(wire.status, Some(0));
        assert_eq!(
            wire.unrecognized_values.get("status").map(String::as_str),
            Some("PAUSED")
        );
        assert_eq!(wire.execution_number, None, "absent stays absent");
    }

    #[test]
    fn keys_of_distinct_questions_differ() {
        let q = |thing: &str, n| ExecutionQuery {
            job_id: "j".into(),
            thing_name: thing.into(),
            execution_number: n,
        };
        let keys = [
            q("a:b", None),
            q("a", None),
            q("a", Some(1)),
            q("a:1", None),
        ]
        .map(|q| DescribeJobExecution::key(&q));
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
