//! SDK → wire conversion of a DescribeJob answer. Every AWS field is carried
//! over; fields AWS left out stay absent; timestamps keep their precision;
//! enum values this contract does not know are kept as strings in
//! `Job.unrecognized_values` instead of failing the call.

use std::collections::HashMap;

use aws_sdk_iot::types as aws;

use crate::{pb, upstream::JobDescription};

impl From<&JobDescription> for pb::DescribeJobResponse {
    fn from(out: &JobDescription) -> Self {
        Self {
            document_source: out.document_source().map(str::to_owned),
            job: out.job().map(job),
        }
    }
}

/// Collects enum values the contract does not know, keyed by JSON path.
#[derive(Default)]
struct Unrecognized(HashMap<String, String>);

impl Unrecognized {
    /// Maps an AWS enum string onto a proto enum by its value name; unknown
    /// strings become the enum's zero value and are remembered under `path`.
    fn map<E: Into<i32>>(
        &mut self,
        raw: &str,
        from_name: fn(&str) -> Option<E>,
        path: impl FnOnce() -> String,
    ) -> i32 {
        match from_name(raw).map(Into::into) {
            Some(value) if value != 0 => value,
            _ => {
                self.0.insert(path(), raw.to_owned());
                0
            }
        }
    }
}

fn job(j: &aws::Job) -> pb::Job {
    let mut unknown = Unrecognized::default();
    let target_selection = j.target_selection().map(|t| {
        unknown.map(t.as_str(), pb::job::TargetSelection::from_str_name, || {
            "targetSelection".into()
        })
    });
    let status = j.status().map(|s| {
        unknown.map(s.as_str(), pb::job::Status::from_str_name, || {
            "status".into()
        })
    });
    let abort_config = j.abort_config().map(|c| abort_config(c, &mut unknown));
    let job_executions_retry_config = j
        .job_executions_retry_config()
        .map(|c| retry_config(c, &mut unknown));
    let scheduling_config = j.scheduling_config().map(|c| scheduling(c, &mut unknown));
    pb::Job {
        job_arn: j.job_arn().map(str::to_owned),
        job_id: j.job_id().map(str::to_owned),
        target_selection,
        status,
        force_canceled: j.force_canceled(),
        reason_code: j.reason_code().map(str::to_owned),
        comment: j.comment().map(str::to_owned),
        targets: j.targets().to_vec(),
        description: j.description().map(str::to_owned),
        presigned_url_config: j.presigned_url_config().map(|c| pb::PresignedUrlConfig {
            role_arn: c.role_arn().map(str::to_owned),
            expires_in_sec: c.expires_in_sec(),
        }),
        job_executions_rollout_config: j.job_executions_rollout_config().map(rollout_config),
        abort_config,
        created_at: j.created_at().map(timestamp),
        last_updated_at: j.last_updated_at().map(timestamp),
        completed_at: j.completed_at().map(timestamp),
        job_process_details: j.job_process_details().map(process_details),
        timeout_config: j.timeout_config().map(|c| pb::TimeoutConfig {
            in_progress_timeout_in_minutes: c.in_progress_timeout_in_minutes(),
        }),
        namespace_id: j.namespace_id().map(str::to_owned),
        job_template_arn: j.job_template_arn().map(str::to_owned),
        job_executions_retry_config,
        document_parameters: j.document_parameters().cloned().unwrap_or_default(),
        is_concurrent: j.is_concurrent(),
        scheduling_config,
        scheduled_job_rollouts: j
            .scheduled_job_rollouts()
            .iter()
            .map(|r| pb::ScheduledJobRollout {
                start_time: r.start_time().map(str::to_owned),
            })
            .collect(),
        destination_package_versions: j.destination_package_versions().to_vec(),
        unrecognized_values: unknown.0,
    }
}

/// Seconds and nanoseconds carry over exactly, so AWS's milliseconds survive.
fn timestamp(t: &aws_smithy_types::DateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.secs(),
        // subsec_nanos() is below 1e9, which always fits an i32.
        nanos: i32::try_from(t.subsec_nanos()).unwrap_or(0),
    }
}

fn rollout_config(c: &aws::JobExecutionsRolloutConfig) -> pb::JobExecutionsRolloutConfig {
    pb::JobExecutionsRolloutConfig {
        maximum_per_minute: c.maximum_per_minute(),
        exponential_rate: c.exponential_rate().map(|r| pb::ExponentialRolloutRate {
            base_rate_per_minute: Some(r.base_rate_per_minute()),
            increment_factor: Some(r.increment_factor()),
            rate_increase_criteria: r
                .rate_increase_criteria()
                .map(|c| pb::RateIncreaseCriteria {
                    number_of_notified_things: c.number_of_notified_things(),
                    number_of_succeeded_things: c.number_of_succeeded_things(),
                }),
        }),
    }
}

fn abort_config(c: &aws::AbortConfig, unknown: &mut Unrecognized) -> pb::AbortConfig {
    use pb::abort_criteria::{Action, FailureType};
    let criteria_list = c
        .criteria_list()
        .iter()
        .enumerate()
        .map(|(i, a)| pb::AbortCriteria {
            failure_type: Some(unknown.map(
                a.failure_type().as_str(),
                FailureType::from_str_name,
                || format!("abortConfig.criteriaList[{i}].failureType"),
            )),
            action: Some(unknown.map(a.action().as_str(), Action::from_str_name, || {
                format!("abortConfig.criteriaList[{i}].action")
            })),
            threshold_percentage: Some(a.threshold_percentage()),
            min_number_of_executed_things: Some(a.min_number_of_executed_things()),
        })
        .collect();
    pb::AbortConfig { criteria_list }
}

fn process_details(d: &aws::JobProcessDetails) -> pb::JobProcessDetails {
    pb::JobProcessDetails {
        processing_targets: d.processing_targets().to_vec(),
        number_of_canceled_things: d.number_of_canceled_things(),
        number_of_succeeded_things: d.number_of_succeeded_things(),
        number_of_failed_things: d.number_of_failed_things(),
        number_of_rejected_things: d.number_of_rejected_things(),
        number_of_queued_things: d.number_of_queued_things(),
        number_of_in_progress_things: d.number_of_in_progress_things(),
        number_of_removed_things: d.number_of_removed_things(),
        number_of_timed_out_things: d.number_of_timed_out_things(),
    }
}

fn retry_config(
    c: &aws::JobExecutionsRetryConfig,
    unknown: &mut Unrecognized,
) -> pb::JobExecutionsRetryConfig {
    use pb::retry_criteria::FailureType;
    let criteria_list = c
        .criteria_list()
        .iter()
        .enumerate()
        .map(|(i, r)| pb::RetryCriteria {
            failure_type: Some(unknown.map(
                r.failure_type().as_str(),
                FailureType::from_str_name,
                || format!("jobExecutionsRetryConfig.criteriaList[{i}].failureType"),
            )),
            number_of_retries: Some(r.number_of_retries()),
        })
        .collect();
    pb::JobExecutionsRetryConfig { criteria_list }
}

fn scheduling(c: &aws::SchedulingConfig, unknown: &mut Unrecognized) -> pb::SchedulingConfig {
    use pb::scheduling_config::EndBehavior;
    pb::SchedulingConfig {
        start_time: c.start_time().map(str::to_owned),
        end_time: c.end_time().map(str::to_owned),
        end_behavior: c.end_behavior().map(|b| {
            unknown.map(b.as_str(), EndBehavior::from_str_name, || {
                "schedulingConfig.endBehavior".into()
            })
        }),
        maintenance_windows: c
            .maintenance_windows()
            .iter()
            .map(|w| pb::MaintenanceWindow {
                start_time: Some(w.start_time().to_owned()),
                duration_in_minutes: Some(w.duration_in_minutes()),
            })
            .collect(),
    }
}
