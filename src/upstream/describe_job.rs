//! DescribeJob: one job's summary, the gateway's first operation.

use crate::{
    pb,
    upstream::{Operation, UpstreamError, aws::classify},
};

/// DescribeJob, as the roles and the fetcher know it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DescribeJob;

/// A validated DescribeJob question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobQuery {
    /// The job id; already checked against AWS's pattern.
    pub job_id: String,
    /// `None` leaves AWS's default (substituted document) in place.
    pub before_substitution: Option<bool>,
}

impl JobQuery {
    /// Every question that can be asked about `job_id`.
    pub fn all_about(job_id: &str) -> [JobQuery; 3] {
        [None, Some(false), Some(true)].map(|before_substitution| JobQuery {
            job_id: job_id.to_owned(),
            before_substitution,
        })
    }

    /// The question back from its key ([`Operation::key`]).
    pub fn from_key(text: &str) -> Option<JobQuery> {
        let (job_id, before) = text.rsplit_once(':')?;
        let before_substitution = match before {
            "-" => None,
            "0" => Some(false),
            "1" => Some(true),
            _ => return None,
        };
        Some(JobQuery {
            job_id: job_id.to_owned(),
            before_substitution,
        })
    }
}

impl Operation for DescribeJob {
    const NAME: &'static str = "DescribeJob";
    const SPACE: &'static str = "";
    type Question = JobQuery;
    type Response = pb::DescribeJobResponse;

    async fn send(
        client: &aws_sdk_iot::Client,
        query: &JobQuery,
    ) -> Result<pb::DescribeJobResponse, UpstreamError> {
        let output = client
            .describe_job()
            .job_id(&query.job_id)
            .set_before_substitution(query.before_substitution)
            .send()
            .await
            .map_err(classify)?;
        Ok(pb::DescribeJobResponse::from(&output))
    }

    /// COMPLETED and CANCELED jobs no longer change.
    fn settled(response: &pb::DescribeJobResponse) -> bool {
        use pb::job::Status;
        matches!(
            response.job.as_ref().map(|job| job.status()),
            Some(Status::Completed | Status::Canceled)
        )
    }

    fn subject(query: &JobQuery) -> &str {
        &query.job_id
    }

    /// `job-id:-`, `:0` or `:1` for `beforeSubstitution` unset, false or
    /// true (job ids have no `:`).
    fn key(query: &JobQuery) -> String {
        let before = match query.before_substitution {
            None => "-",
            Some(false) => "0",
            Some(true) => "1",
        };
        format!("{}:{before}", query.job_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_comes_back_from_its_key() {
        for query in JobQuery::all_about("rollout-7") {
            assert_eq!(JobQuery::from_key(&DescribeJob::key(&query)), Some(query));
        }
        assert_eq!(JobQuery::from_key("rollout-7:x"), None);
    }
}
