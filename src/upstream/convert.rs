//! SDK → wire conversion of a DescribeJob answer, and the helpers every
//! operation's conversion shares. Every AWS field is carried over; fields AWS left out stay absent; timestamps keep their precision;
//! enum values this contract does not know are kept as strings in
//! `Job.unrecognized_values` instead of failing the call.

use std::collections::BTreeMap;

use aws_sdk_iot::{operation::describe_job::DescribeJobOutput as JobDescription, types as aws};

use crate::pb;

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
pub(crate) struct Unrecognized(pub(crate) BTreeMap<String, String>);

impl Unrecognized {
    /// Maps an AWS enum string onto a proto enum by its value name; unknown
    /// strings become the enum's zero value and are remembered under `path`.
    pub(crate) fn map<E: Into<i32>>(
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

impl Unrecognized {
    /// AWS types these values as 64-bit but documents small ranges, so the
    /// contract uses int32 (plain JSON numbers, as AWS prints them). A value
    /// that does not fit is kept as text under `path` rather than truncated.
    pub(crate) fn narrow(&mut self, value: i64, path: &str) -> Option<i32> {
        match i32::try_from(value) {
            Ok(v) => Some(v),
            Err(_) => {
                self.0.insert(path.to_owned(), value.to_string());
                None
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
            expires_in_sec: c
                .expires_in_sec()
                .and_then(|v| unknown.narrow(v, "presignedUrlConfig.expiresInSec")),
        }),
        job_executions_rollout_config: j.job_executions_rollout_config().map(rollout_config),
        abort_config,
        created_at: j.created_at().map(timestamp),
        last_updated_at: j.last_updated_at().map(timestamp),
        completed_at: j.completed_at().map(timestamp),
        job_process_details: j.job_process_details().map(process_details),
        timeout_config: j.timeout_config().map(|c| pb::TimeoutConfig {
            in_progress_timeout_in_minutes: c
                .in_progress_timeout_in_minutes()
                .and_then(|v| unknown.narrow(v, "timeoutConfig.inProgressTimeoutInMinutes")),
        }),
        namespace_id: j.namespace_id().map(str::to_owned),
        job_template_arn: j.job_template_arn().map(str::to_owned),
        job_executions_retry_config,
        document_parameters: j
            .document_parameters()
            .map(|p| p.clone().into_iter().collect())
            .unwrap_or_default(),
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
        unrecognized_values: std::mem::take(&mut unknown.0),
    }
}

/// AWS sends timestamps as epoch seconds with millisecond precision, which
/// the SDK parses through an `f64` (`.294` arrives as `.293999910`). Rounding
/// to the nearest millisecond restores exactly what AWS sent.
pub(crate) fn timestamp(t: &aws_smithy_types::DateTime) -> prost_types::Timestamp {
    let nanos = i128::from(t.secs()) * 1_000_000_000 + i128::from(t.subsec_nanos());
    let millis = (nanos + 500_000).div_euclid(1_000_000);
    prost_types::Timestamp {
        // The quotient of an i64 second count fits an i64 again.
        seconds: i64::try_from(millis.div_euclid(1000)).unwrap_or(i64::MAX),
        // A remainder below 1000 ms is below 1e9 ns, which fits an i32.
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
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

#[cfg(test)]
mod tests {
    use aws_sdk_iot::types::*;
    use aws_smithy_types::DateTime;
    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};

    use super::*;

    /// A DescribeJob output with every field AWS documents set.
    fn fully_populated() -> JobDescription {
        let abort = AbortCriteria::builder()
            .failure_type(JobExecutionFailureType::TimedOut)
            .action(AbortAction::Cancel)
            .threshold_percentage(10.99)
            .min_number_of_executed_things(5)
            .build()
            .unwrap();
        let retry = RetryCriteria::builder()
            .failure_type(RetryableFailureType::Failed)
            .number_of_retries(2)
            .build()
            .unwrap();
        let window = MaintenanceWindow::builder()
            .start_time("cron(0 0 ? * MON *)")
            .duration_in_minutes(60)
            .build()
            .unwrap();
        let rate = ExponentialRolloutRate::builder()
            .base_rate_per_minute(5)
            .increment_factor(1.5)
            .rate_increase_criteria(
                RateIncreaseCriteria::builder()
                    .number_of_notified_things(10)
                    .number_of_succeeded_things(8)
                    .build(),
            )
            .build()
            .unwrap();
        let job = Job::builder()
            .job_arn("arn:aws:iot:us-west-2:123456789012:job/fw-1")
            .job_id("fw-1")
            .target_selection(TargetSelection::Snapshot)
            .status(JobStatus::InProgress)
            .force_canceled(false)
            .reason_code("ROLLBACK")
            .comment("bad batch")
            .targets("arn:aws:iot:us-west-2:123456789012:thinggroup/fleet")
            .description("firmware 2.0")
            .presigned_url_config(
                PresignedUrlConfig::builder()
                    .role_arn("arn:aws:iam::123456789012:role/jobs")
                    .expires_in_sec(3600)
                    .build(),
            )
            .job_executions_rollout_config(
                JobExecutionsRolloutConfig::builder()
                    .maximum_per_minute(100)
                    .exponential_rate(rate)
                    .build(),
            )
            .abort_config(AbortConfig::builder().criteria_list(abort).build().unwrap())
            .created_at(DateTime::from_millis(1_560_787_022_733))
            .last_updated_at(DateTime::from_millis(1_560_787_026_294))
            .completed_at(DateTime::from_millis(1_560_790_000_001))
            .job_process_details(
                JobProcessDetails::builder()
                    .processing_targets("arn:aws:iot:us-west-2:123456789012:thing/pi")
                    .number_of_canceled_things(1)
                    .number_of_succeeded_things(2)
                    .number_of_failed_things(3)
                    .number_of_rejected_things(4)
                    .number_of_queued_things(5)
                    .number_of_in_progress_things(6)
                    .number_of_removed_things(7)
                    .number_of_timed_out_things(8)
                    .build(),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .in_progress_timeout_in_minutes(30)
                    .build(),
            )
            .namespace_id("greengrass")
            .job_template_arn("arn:aws:iot:us-west-2:123456789012:jobtemplate/ota")
            .job_executions_retry_config(
                JobExecutionsRetryConfig::builder()
                    .criteria_list(retry)
                    .build()
                    .unwrap(),
            )
            .document_parameters("firmwareUrl", "s3://bucket/fw.bin")
            .is_concurrent(true)
            .scheduling_config(
                SchedulingConfig::builder()
                    .start_time("2030-01-01T10:00")
                    .end_time("2030-01-02T10:00")
                    .end_behavior(JobEndBehavior::StopRollout)
                    .maintenance_windows(window)
                    .build(),
            )
            .scheduled_job_rollouts(
                ScheduledJobRollout::builder()
                    .start_time("2030-01-06T00:00")
                    .build(),
            )
            .destination_package_versions(
                "arn:aws:iot:us-west-2:123456789012:package/fw/version/2.0",
            )
            .build();
        JobDescription::builder()
            .document_source("https://s3.amazonaws.com/bucket/job.json")
            .job(job)
            .build()
    }

    fn reflect(response: &pb::DescribeJobResponse) -> DynamicMessage {
        let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
        let descriptor = pool
            .get_message_by_name("iot.jobs.v1.DescribeJobResponse")
            .unwrap();
        DynamicMessage::decode(descriptor, response.encode_to_vec().as_slice()).unwrap()
    }

    fn to_json(response: &pb::DescribeJobResponse) -> serde_json::Value {
        serde_json::to_value(reflect(response)).unwrap()
    }

    /// Lists every field of `message` (recursively) that is not set, or is
    /// an empty list or map.
    fn missing_fields(message: &DynamicMessage, path: &str, missing: &mut Vec<String>) {
        for field in message.descriptor().fields() {
            let name = format!("{path}{}", field.json_name());
            if field.name() == "unrecognized_values" {
                continue; // filled only when AWS sends unknown enum values
            }
            if !message.has_field(&field) {
                missing.push(name);
                continue;
            }
            match &*message.get_field(&field) {
                Value::Message(inner) => missing_fields(inner, &format!("{name}."), missing),
                Value::List(items) if items.is_empty() => missing.push(name),
                Value::List(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Value::Message(inner) = item {
                            missing_fields(inner, &format!("{name}[{i}]."), missing);
                        }
                    }
                }
                Value::Map(entries) if entries.is_empty() => missing.push(name),
                _ => {}
            }
        }
    }

    #[test]
    fn a_fully_populated_answer_keeps_every_field() {
        let response = pb::DescribeJobResponse::from(&fully_populated());
        let mut missing = Vec::new();
        missing_fields(&reflect(&response), "", &mut missing);
        assert!(
            missing.is_empty(),
            "fields dropped in conversion: {missing:?}"
        );
    }

    #[test]
    fn json_uses_aws_names_enum_strings_and_millisecond_timestamps() {
        let json = to_json(&pb::DescribeJobResponse::from(&fully_populated()));
        let job = &json["job"];
        assert_eq!(job["jobArn"], "arn:aws:iot:us-west-2:123456789012:job/fw-1");
        assert_eq!(job["status"], "IN_PROGRESS");
        assert_eq!(job["targetSelection"], "SNAPSHOT");
        assert_eq!(job["schedulingConfig"]["endBehavior"], "STOP_ROLLOUT");
        assert_eq!(
            job["abortConfig"]["criteriaList"][0]["failureType"],
            "TIMED_OUT"
        );
        assert_eq!(job["abortConfig"]["criteriaList"][0]["action"], "CANCEL");
        assert_eq!(
            job["abortConfig"]["criteriaList"][0]["thresholdPercentage"],
            10.99
        );
        assert_eq!(
            job["jobExecutionsRetryConfig"]["criteriaList"][0]["failureType"],
            "FAILED"
        );
        assert_eq!(job["jobProcessDetails"]["numberOfSucceededThings"], 2);
        assert_eq!(job["createdAt"], "2019-06-17T15:57:02.733Z");
        assert_eq!(job["completedAt"], "2019-06-17T16:46:40.001Z");
        assert_eq!(job["forceCanceled"], false, "an explicit false is kept");
        assert_eq!(
            job["documentParameters"]["firmwareUrl"],
            "s3://bucket/fw.bin"
        );
        assert_eq!(
            json["documentSource"],
            "https://s3.amazonaws.com/bucket/job.json"
        );
    }

    #[test]
    fn timestamps_parsed_through_floats_come_back_as_aws_sent_them() {
        for (wire, seconds, nanos) in [
            ("1560787026.294", 1_560_787_026, 294_000_000),
            ("1560787022.733", 1_560_787_022, 733_000_000),
            ("1560790000.999", 1_560_790_000, 999_000_000),
            ("1560790000", 1_560_790_000, 0),
            ("-1.5", -2, 500_000_000),
        ] {
            let parsed = DateTime::from_secs_f64(wire.parse().unwrap());
            let ts = timestamp(&parsed);
            assert_eq!((ts.seconds, ts.nanos), (seconds, nanos), "{wire}");
        }
    }

    #[test]
    fn a_number_too_large_for_its_field_is_kept_as_text() {
        let job = Job::builder()
            .job_id("j")
            .timeout_config(
                TimeoutConfig::builder()
                    .in_progress_timeout_in_minutes(1 << 40)
                    .build(),
            )
            .presigned_url_config(PresignedUrlConfig::builder().expires_in_sec(3600).build())
            .build();
        let json = to_json(&pb::DescribeJobResponse::from(
            &JobDescription::builder().job(job).build(),
        ));
        assert_eq!(json["job"]["timeoutConfig"], serde_json::json!({}));
        assert_eq!(
            json["job"]["unrecognizedValues"]["timeoutConfig.inProgressTimeoutInMinutes"],
            "1099511627776"
        );
        assert_eq!(json["job"]["presignedUrlConfig"]["expiresInSec"], 3600);
    }

    #[test]
    fn fields_aws_left_out_stay_absent() {
        let sparse = JobDescription::builder()
            .job(Job::builder().job_id("j").build())
            .build();
        let json = to_json(&pb::DescribeJobResponse::from(&sparse));
        assert_eq!(json, serde_json::json!({"job": {"jobId": "j"}}));
    }

    #[test]
    fn unknown_enum_values_are_kept_as_strings() {
        let job = Job::builder()
            .job_id("j")
            .status(JobStatus::from("QUEUED"))
            .abort_config(
                AbortConfig::builder()
                    .criteria_list(
                        AbortCriteria::builder()
                            .failure_type(JobExecutionFailureType::from("EXPLODED"))
                            .action(AbortAction::Cancel)
                            .threshold_percentage(1.0)
                            .min_number_of_executed_things(1)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .build();
        let response = pb::DescribeJobResponse::from(&JobDescription::builder().job(job).build());
        let json = to_json(&response);
        assert_eq!(json["job"]["status"], "STATUS_UNSPECIFIED");
        assert_eq!(json["job"]["unrecognizedValues"]["status"], "QUEUED");
        assert_eq!(
            json["job"]["unrecognizedValues"]["abortConfig.criteriaList[0].failureType"],
            "EXPLODED"
        );
        assert_eq!(
            json["job"]["abortConfig"]["criteriaList"][0]["action"],
            "CANCEL"
        );
    }
}
