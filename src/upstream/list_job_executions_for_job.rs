//! ListJobExecutionsForJob: one page of a job's executions.

use aws_sdk_iot::{
    operation::list_job_executions_for_job::ListJobExecutionsForJobOutput, types as aws,
};

use crate::{
    pb,
    upstream::{
        Operation, UpstreamError,
        aws::classify,
        convert::{Unrecognized, timestamp},
    },
};

/// ListJobExecutionsForJob, as the roles and the fetcher know it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListJobExecutionsForJob;

/// A validated question for one page: its whole question is its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobExecutionsPage {
    /// The job id; already checked against AWS's pattern.
    pub job_id: String,
    /// Only executions in this status (AWS's name, `FAILED`).
    pub status: Option<&'static str>,
    /// The page size, 1 to 250; `None` leaves it to AWS.
    pub max_results: Option<i32>,
    /// Where the page starts; `None` for the first.
    pub next_token: Option<String>,
}

impl Operation for ListJobExecutionsForJob {
    const NAME: &'static str = "ListJobExecutionsForJob";
    const SPACE: &'static str = "job-executions";
    type Question = JobExecutionsPage;
    type Response = pb::ListJobExecutionsForJobResponse;

    async fn send(
        client: &aws_sdk_iot::Client,
        page: &JobExecutionsPage,
    ) -> Result<pb::ListJobExecutionsForJobResponse, UpstreamError> {
        let output = client
            .list_job_executions_for_job()
            .job_id(&page.job_id)
            .set_status(page.status.map(aws::JobExecutionStatus::from))
            .set_max_results(page.max_results)
            .set_next_token(page.next_token.clone())
            .send()
            .await
            .map_err(classify)?;
        Ok(pb::ListJobExecutionsForJobResponse::from(&output))
    }

    /// A page can always change (executions move on, things join a
    /// continuous job), so it lives as long as any changing answer.
    fn settled(_page: &pb::ListJobExecutionsForJobResponse) -> bool {
        false
    }

    fn subject(page: &JobExecutionsPage) -> &str {
        &page.job_id
    }

    /// `job-id:status:size:token` (`-` for each part left out); the token,
    /// which may hold anything, comes last.
    fn key(page: &JobExecutionsPage) -> String {
        format!(
            "{}:{}:{}",
            page.job_id,
            page.status.unwrap_or("-"),
            page_key(page.max_results, page.next_token.as_deref())
        )
    }
}

impl From<&ListJobExecutionsForJobOutput> for pb::ListJobExecutionsForJobResponse {
    fn from(out: &ListJobExecutionsForJobOutput) -> Self {
        Self {
            execution_summaries: out
                .execution_summaries()
                .iter()
                .map(|s| pb::JobExecutionSummaryForJob {
                    thing_arn: s.thing_arn().map(str::to_owned),
                    job_execution_summary: s.job_execution_summary().map(summary),
                })
                .collect(),
            next_token: out.next_token().map(str::to_owned),
        }
    }
}

/// A page question's last key parts, `size:token`: `-` for a size left
/// out, `-` or `+` and the token (which may hold anything, so it comes last).
pub(crate) fn page_key(max_results: Option<i32>, next_token: Option<&str>) -> String {
    let size = max_results.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let token = next_token.map_or_else(|| "-".to_owned(), |t| format!("+{t}"));
    format!("{size}:{token}")
}

/// Every field AWS sent; an unknown status is kept as text.
pub(crate) fn summary(s: &aws::JobExecutionSummary) -> pb::JobExecutionSummary {
    let mut unknown = Unrecognized::default();
    let status = s.status().map(|status| {
        unknown.map(
            status.as_str(),
            pb::job_execution::Status::from_str_name,
            || "status".into(),
        )
    });
    pb::JobExecutionSummary {
        status,
        queued_at: s.queued_at().map(timestamp),
        started_at: s.started_at().map(timestamp),
        last_updated_at: s.last_updated_at().map(timestamp),
        execution_number: s
            .execution_number()
            .and_then(|n| unknown.narrow(n, "executionNumber")),
        retry_attempt: s.retry_attempt(),
        unrecognized_values: std::mem::take(&mut unknown.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_a_page_question_is_in_its_key() {
        let page = |status, size, token: Option<&str>| JobExecutionsPage {
            job_id: "j".into(),
            status,
            max_results: size,
            next_token: token.map(str::to_owned),
        };
        let keys = [
            page(None, None, None),
            page(Some("FAILED"), None, None),
            page(None, Some(3), None),
            page(None, None, Some("-")),
            page(None, None, Some("abc")),
        ]
        .map(|p| ListJobExecutionsForJob::key(&p));
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
