//! ListJobExecutionsForThing: one page of the jobs a thing runs.

use aws_sdk_iot::{
    operation::list_job_executions_for_thing::ListJobExecutionsForThingOutput, types as aws,
};

use crate::{
    pb,
    upstream::{
        About, Operation, UpstreamError,
        aws::classify,
        list_job_executions_for_job::{page_key, summary},
    },
};

/// ListJobExecutionsForThing, as the roles and the fetcher know it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListJobExecutionsForThing;

/// A validated question for one page of a thing's executions: its whole
/// question is its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThingExecutionsPage {
    /// The thing's name; already checked against AWS's pattern.
    pub thing_name: String,
    /// Only executions in this status (AWS's name, `FAILED`).
    pub status: Option<&'static str>,
    /// Only jobs of this namespace (AWS IoT Greengrass's customer-managed
    /// jobs); already checked against AWS's pattern.
    pub namespace_id: Option<String>,
    /// Only this job's executions; already checked against AWS's pattern.
    pub job_id: Option<String>,
    /// The page size, 1 to 250; `None` leaves it to AWS.
    pub max_results: Option<i32>,
    /// Where the page starts; `None` for the first.
    pub next_token: Option<String>,
}

impl Operation for ListJobExecutionsForThing {
    const NAME: &'static str = "ListJobExecutionsForThing";
    const SPACE: &'static str = "thing-executions";
    const ABOUT: About = About::Thing;
    type Question = ThingExecutionsPage;
    type Response = pb::ListJobExecutionsForThingResponse;

    async fn send(
        client: &aws_sdk_iot::Client,
        page: &ThingExecutionsPage,
    ) -> Result<pb::ListJobExecutionsForThingResponse, UpstreamError> {
        let output = client
            .list_job_executions_for_thing()
            .thing_name(&page.thing_name)
            .set_status(page.status.map(aws::JobExecutionStatus::from))
            .set_namespace_id(page.namespace_id.clone())
            .set_job_id(page.job_id.clone())
            .set_max_results(page.max_results)
            .set_next_token(page.next_token.clone())
            .send()
            .await
            .map_err(classify)?;
        Ok(pb::ListJobExecutionsForThingResponse::from(&output))
    }

    /// A thing's jobs can always change (a job is added to it, one moves
    /// on), so a page lives as long as any changing answer.
    fn settled(_page: &pb::ListJobExecutionsForThingResponse) -> bool {
        false
    }

    fn subject(page: &ThingExecutionsPage) -> &str {
        &page.thing_name
    }

    /// `thing:status:namespace:job:size:token` (`-` for each part left
    /// out; names cannot contain `:` or `+` except the thing's, which comes
    /// first and has no `+`); the token, which may hold anything, comes
    /// last.
    fn key(page: &ThingExecutionsPage) -> String {
        let or_dash = |part: Option<&str>| part.unwrap_or("-").to_owned();
        format!(
            "{}:{}:{}:{}:{}",
            page.thing_name,
            or_dash(page.status),
            or_dash(page.namespace_id.as_deref()),
            or_dash(page.job_id.as_deref()),
            page_key(page.max_results, page.next_token.as_deref())
        )
    }
}

impl From<&ListJobExecutionsForThingOutput> for pb::ListJobExecutionsForThingResponse {
    fn from(out: &ListJobExecutionsForThingOutput) -> Self {
        Self {
            execution_summaries: out
                .execution_summaries()
                .iter()
                .map(|s| pb::JobExecutionSummaryForThing {
                    job_id: s.job_id().map(str::to_owned),
                    job_execution_summary: s.job_execution_summary().map(summary),
                })
                .collect(),
            next_token: out.next_token().map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_a_page_question_is_in_its_key() {
        let page =
            |status, namespace: Option<&str>, job: Option<&str>, size, token: Option<&str>| {
                ThingExecutionsPage {
                    thing_name: "t:1".into(),
                    status,
                    namespace_id: namespace.map(str::to_owned),
                    job_id: job.map(str::to_owned),
                    max_results: size,
                    next_token: token.map(str::to_owned),
                }
            };
        let keys = [
            page(None, None, None, None, None),
            page(Some("FAILED"), None, None, None, None),
            page(None, Some("gg"), None, None, None),
            page(None, None, Some("gg"), None, None),
            page(None, None, None, Some(3), None),
            page(None, None, None, None, Some("-")),
            page(None, None, None, None, Some("abc")),
        ]
        .map(|p| ListJobExecutionsForThing::key(&p));
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
