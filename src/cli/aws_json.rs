//! The gateway's answers in the AWS CLI's JSON shape: AWS's camelCase
//! names in AWS's model order, enum values as strings, timestamps as epoch
//! seconds with milliseconds (`1560787022.733`, as the AWS CLI prints them),
//! absent fields left out. This is not proto3 JSON: that one would print
//! timestamps as RFC 3339 strings and add `unrecognizedValues`.
//!
//! Values AWS sent that the contract cannot hold (a new enum value, a number
//! too large for its field) travel in `Job.unrecognized_values` under their
//! JSON path; here they go back in place, as AWS sent them.

use std::collections::BTreeMap;

use prost_types::Timestamp;
use serde_json::{Map, Number, Value};

use crate::pb;

/// A DescribeJob answer as `aws iot describe-job` prints it.
pub fn describe_job(response: &pb::DescribeJobResponse) -> Value {
    let mut out = Map::new();
    put(&mut out, "documentSource", response.document_source.clone());
    if let Some(job) = &response.job {
        out.insert("job".into(), self::job(job));
    }
    Value::Object(out)
}

/// A DescribeJobExecution answer as `aws iot describe-job-execution`
/// prints it.
pub fn describe_job_execution(response: &pb::DescribeJobExecutionResponse) -> Value {
    let mut out = Map::new();
    if let Some(execution) = &response.execution {
        out.insert("execution".into(), self::execution(execution));
    }
    Value::Object(out)
}

fn status_name(value: i32) -> Option<&'static str> {
    pb::job_execution::Status::try_from(value)
        .ok()
        .map(|s| s.as_str_name())
}

fn execution(e: &pb::JobExecution) -> Value {
    let f = Fields::new(&e.unrecognized_values, "");
    let details = e.status_details.as_ref().map(|d| {
        let map: Map<String, Value> = d
            .details_map
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        let mut out = Map::new();
        if !map.is_empty() {
            out.insert("detailsMap".into(), Value::Object(map));
        }
        Value::Object(out)
    });
    f.value("jobId", e.job_id.clone())
        .enumeration("status", e.status, status_name)
        .value("forceCanceled", e.force_canceled)
        .object("statusDetails", details)
        .value("thingArn", e.thing_arn.clone())
        .object("queuedAt", e.queued_at.as_ref().map(epoch_seconds))
        .object("startedAt", e.started_at.as_ref().map(epoch_seconds))
        .object(
            "lastUpdatedAt",
            e.last_updated_at.as_ref().map(epoch_seconds),
        )
        .int("executionNumber", e.execution_number)
        .int("versionNumber", e.version_number)
        .int(
            "approximateSecondsBeforeTimedOut",
            e.approximate_seconds_before_timed_out,
        )
        .build()
}

/// One execution's summary in a listing, in AWS's member order.
fn execution_summary(s: &pb::JobExecutionSummary) -> Value {
    Fields::new(&s.unrecognized_values, "")
        .enumeration("status", s.status, status_name)
        .object("queuedAt", s.queued_at.as_ref().map(epoch_seconds))
        .object("startedAt", s.started_at.as_ref().map(epoch_seconds))
        .object(
            "lastUpdatedAt",
            s.last_updated_at.as_ref().map(epoch_seconds),
        )
        .int("executionNumber", s.execution_number)
        .int("retryAttempt", s.retry_attempt)
        .build()
}

/// The items of a ListJobExecutionsForJob page, as the AWS CLI prints them.
pub fn job_execution_summaries(page: &pb::ListJobExecutionsForJobResponse) -> Vec<Value> {
    page.execution_summaries
        .iter()
        .map(|item| {
            let mut out = Map::new();
            put(&mut out, "thingArn", item.thing_arn.clone());
            if let Some(summary) = &item.job_execution_summary {
                out.insert("jobExecutionSummary".into(), execution_summary(summary));
            }
            Value::Object(out)
        })
        .collect()
}

/// The items of a ListJobExecutionsForThing page, likewise.
pub fn thing_execution_summaries(page: &pb::ListJobExecutionsForThingResponse) -> Vec<Value> {
    page.execution_summaries
        .iter()
        .map(|item| {
            let mut out = Map::new();
            put(&mut out, "jobId", item.job_id.clone());
            if let Some(summary) = &item.job_execution_summary {
                out.insert("jobExecutionSummary".into(), execution_summary(summary));
            }
            Value::Object(out)
        })
        .collect()
}

/// A timestamp as epoch seconds with milliseconds. The text is what AWS
/// sends; parsing it gives the same `f64` the AWS CLI parses and prints.
pub fn epoch_seconds(t: &Timestamp) -> Value {
    let millis = i128::from(t.seconds) * 1000 + i128::from(t.nanos) / 1_000_000;
    let text = format!(
        "{}{}.{:03}",
        if millis < 0 { "-" } else { "" },
        millis.abs() / 1000,
        millis.abs() % 1000
    );
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// Builds one AWS object, leaving out absent fields and putting back the
/// values only `unrecognized_values` could hold.
struct Fields<'a> {
    out: Map<String, Value>,
    unrecognized: &'a BTreeMap<String, String>,
    path: String,
}

impl<'a> Fields<'a> {
    fn new(unrecognized: &'a BTreeMap<String, String>, path: impl Into<String>) -> Self {
        Self {
            out: Map::new(),
            unrecognized,
            path: path.into(),
        }
    }

    fn child(&self, key: &str) -> Fields<'a> {
        let path = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
        Fields::new(self.unrecognized, path)
    }

    fn item(&self, key: &str, index: usize) -> Fields<'a> {
        let mut child = self.child(key);
        child.path.push_str(&format!("[{index}]"));
        child
    }

    fn kept(&self, key: &str) -> Option<&'a String> {
        self.unrecognized.get(&self.child(key).path)
    }

    fn value(mut self, key: &str, value: Option<impl Into<Value>>) -> Self {
        put(&mut self.out, key, value);
        self
    }

    /// An int32 field; a value too large for it was kept as text.
    fn int(self, key: &str, value: Option<i32>) -> Self {
        let kept = self
            .kept(key)
            .and_then(|text| text.parse::<i64>().ok())
            .map(Value::from);
        match value {
            Some(v) => self.value(key, Some(v)),
            None => self.value(key, kept),
        }
    }

    fn double(self, key: &str, value: Option<f64>) -> Self {
        self.value(key, value.and_then(Number::from_f64))
    }

    /// An enum field: the value's AWS name, or the string AWS sent that the
    /// contract does not know.
    fn enumeration(
        self,
        key: &str,
        value: Option<i32>,
        name: fn(i32) -> Option<&'static str>,
    ) -> Self {
        let known = value.filter(|v| *v != 0).and_then(name).map(str::to_owned);
        let kept = self.kept(key).cloned();
        self.value(key, known.or(kept))
    }

    fn strings(self, key: &str, values: &[String]) -> Self {
        self.value(key, (!values.is_empty()).then(|| values.to_vec()))
    }

    fn object(mut self, key: &str, value: Option<Value>) -> Self {
        if let Some(value) = value {
            self.out.insert(key.into(), value);
        }
        self
    }

    fn list<T>(self, key: &str, items: &[T], each: impl Fn(Fields<'a>, &T) -> Value) -> Self {
        if items.is_empty() {
            return self;
        }
        let values = items
            .iter()
            .enumerate()
            .map(|(i, item)| each(self.item(key, i), item))
            .collect::<Vec<_>>();
        self.value(key, Some(values))
    }

    fn build(self) -> Value {
        Value::Object(self.out)
    }
}

fn put(out: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(value) = value {
        out.insert(key.into(), value.into());
    }
}

fn job(j: &pb::Job) -> Value {
    use pb::job::{Status, TargetSelection};
    let f = Fields::new(&j.unrecognized_values, "");
    let presigned = j.presigned_url_config.as_ref().map(|c| {
        f.child("presignedUrlConfig")
            .value("roleArn", c.role_arn.clone())
            .int("expiresInSec", c.expires_in_sec)
            .build()
    });
    let rollout = j
        .job_executions_rollout_config
        .as_ref()
        .map(|c| rollout_config(f.child("jobExecutionsRolloutConfig"), c));
    let abort = j.abort_config.as_ref().map(|c| {
        f.child("abortConfig")
            .list("criteriaList", &c.criteria_list, abort_criteria)
            .build()
    });
    let details = j
        .job_process_details
        .as_ref()
        .map(|d| process_details(f.child("jobProcessDetails"), d));
    let timeout = j.timeout_config.as_ref().map(|c| {
        f.child("timeoutConfig")
            .int(
                "inProgressTimeoutInMinutes",
                c.in_progress_timeout_in_minutes,
            )
            .build()
    });
    let retry = j.job_executions_retry_config.as_ref().map(|c| {
        f.child("jobExecutionsRetryConfig")
            .list("criteriaList", &c.criteria_list, retry_criteria)
            .build()
    });
    let parameters = (!j.document_parameters.is_empty()).then(|| {
        Value::Object(
            j.document_parameters
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect(),
        )
    });
    let scheduling = j
        .scheduling_config
        .as_ref()
        .map(|c| scheduling_config(f.child("schedulingConfig"), c));
    f.value("jobArn", j.job_arn.clone())
        .value("jobId", j.job_id.clone())
        .enumeration("targetSelection", j.target_selection, |v| {
            TargetSelection::try_from(v).ok().map(|t| t.as_str_name())
        })
        .enumeration("status", j.status, |v| {
            Status::try_from(v).ok().map(|s| s.as_str_name())
        })
        .value("forceCanceled", j.force_canceled)
        .value("reasonCode", j.reason_code.clone())
        .value("comment", j.comment.clone())
        .strings("targets", &j.targets)
        .value("description", j.description.clone())
        .object("presignedUrlConfig", presigned)
        .object("jobExecutionsRolloutConfig", rollout)
        .object("abortConfig", abort)
        .object("createdAt", j.created_at.as_ref().map(epoch_seconds))
        .object(
            "lastUpdatedAt",
            j.last_updated_at.as_ref().map(epoch_seconds),
        )
        .object("completedAt", j.completed_at.as_ref().map(epoch_seconds))
        .object("jobProcessDetails", details)
        .object("timeoutConfig", timeout)
        .value("namespaceId", j.namespace_id.clone())
        .value("jobTemplateArn", j.job_template_arn.clone())
        .object("jobExecutionsRetryConfig", retry)
        .object("documentParameters", parameters)
        .value("isConcurrent", j.is_concurrent)
        .object("schedulingConfig", scheduling)
        .list("scheduledJobRollouts", &j.scheduled_job_rollouts, |f, r| {
            f.value("startTime", r.start_time.clone()).build()
        })
        .strings(
            "destinationPackageVersions",
            &j.destination_package_versions,
        )
        .build()
}

fn rollout_config(f: Fields<'_>, c: &pb::JobExecutionsRolloutConfig) -> Value {
    let exponential = c.exponential_rate.as_ref().map(|r| {
        let f = f.child("exponentialRate");
        let criteria = r.rate_increase_criteria.as_ref().map(|c| {
            f.child("rateIncreaseCriteria")
                .int("numberOfNotifiedThings", c.number_of_notified_things)
                .int("numberOfSucceededThings", c.number_of_succeeded_things)
                .build()
        });
        f.int("baseRatePerMinute", r.base_rate_per_minute)
            .double("incrementFactor", r.increment_factor)
            .object("rateIncreaseCriteria", criteria)
            .build()
    });
    f.int("maximumPerMinute", c.maximum_per_minute)
        .object("exponentialRate", exponential)
        .build()
}

fn abort_criteria(f: Fields<'_>, a: &pb::AbortCriteria) -> Value {
    use pb::abort_criteria::{Action, FailureType};
    f.enumeration("failureType", a.failure_type, |v| {
        FailureType::try_from(v).ok().map(|t| t.as_str_name())
    })
    .enumeration("action", a.action, |v| {
        Action::try_from(v).ok().map(|t| t.as_str_name())
    })
    .double("thresholdPercentage", a.threshold_percentage)
    .int("minNumberOfExecutedThings", a.min_number_of_executed_things)
    .build()
}

fn process_details(f: Fields<'_>, d: &pb::JobProcessDetails) -> Value {
    f.strings("processingTargets", &d.processing_targets)
        .int("numberOfCanceledThings", d.number_of_canceled_things)
        .int("numberOfSucceededThings", d.number_of_succeeded_things)
        .int("numberOfFailedThings", d.number_of_failed_things)
        .int("numberOfRejectedThings", d.number_of_rejected_things)
        .int("numberOfQueuedThings", d.number_of_queued_things)
        .int("numberOfInProgressThings", d.number_of_in_progress_things)
        .int("numberOfRemovedThings", d.number_of_removed_things)
        .int("numberOfTimedOutThings", d.number_of_timed_out_things)
        .build()
}

fn retry_criteria(f: Fields<'_>, r: &pb::RetryCriteria) -> Value {
    use pb::retry_criteria::FailureType;
    f.enumeration("failureType", r.failure_type, |v| {
        FailureType::try_from(v).ok().map(|t| t.as_str_name())
    })
    .int("numberOfRetries", r.number_of_retries)
    .build()
}

fn scheduling_config(f: Fields<'_>, c: &pb::SchedulingConfig) -> Value {
    use pb::scheduling_config::EndBehavior;
    f.value("startTime", c.start_time.clone())
        .value("endTime", c.end_time.clone())
        .enumeration("endBehavior", c.end_behavior, |v| {
            EndBehavior::try_from(v).ok().map(|b| b.as_str_name())
        })
        .list("maintenanceWindows", &c.maintenance_windows, |f, w| {
            f.value("startTime", w.start_time.clone())
                .int("durationInMinutes", w.duration_in_minutes)
                .build()
        })
        .build()
}

/// What `--generate-cli-skeleton output` prints: every field of the answer
/// with a placeholder, as the AWS CLI makes it (strings hold their own
/// name, numbers are zero, flags true, lists one item). It goes through the
/// same renderer as real answers, so it cannot promise a field they lack.
/// Timestamps are `0.0`, the epoch in this CLI's timestamp format.
pub fn output_skeleton() -> Value {
    describe_job(&skeleton_response())
}

fn skeleton_response() -> pb::DescribeJobResponse {
    let name = |s: &str| Some(s.to_owned());
    let epoch = || Some(Timestamp::default());
    // Enum placeholders are not enum values, so they travel the way
    // values the contract does not know do.
    let unrecognized = [
        ("targetSelection", "targetSelection"),
        ("status", "status"),
        ("abortConfig.criteriaList[0].failureType", "failureType"),
        ("abortConfig.criteriaList[0].action", "action"),
        (
            "jobExecutionsRetryConfig.criteriaList[0].failureType",
            "failureType",
        ),
        ("schedulingConfig.endBehavior", "endBehavior"),
    ]
    .into_iter()
    .map(|(path, value)| (path.to_owned(), value.to_owned()))
    .collect();
    pb::DescribeJobResponse {
        document_source: name("documentSource"),
        job: Some(pb::Job {
            job_arn: name("jobArn"),
            job_id: name("jobId"),
            target_selection: Some(0),
            status: Some(0),
            force_canceled: Some(true),
            reason_code: name("reasonCode"),
            comment: name("comment"),
            targets: vec!["TargetArn".into()],
            description: name("description"),
            presigned_url_config: Some(pb::PresignedUrlConfig {
                role_arn: name("roleArn"),
                expires_in_sec: Some(0),
            }),
            job_executions_rollout_config: Some(pb::JobExecutionsRolloutConfig {
                maximum_per_minute: Some(0),
                exponential_rate: Some(pb::ExponentialRolloutRate {
                    base_rate_per_minute: Some(0),
                    increment_factor: Some(0.0),
                    rate_increase_criteria: Some(pb::RateIncreaseCriteria {
                        number_of_notified_things: Some(0),
                        number_of_succeeded_things: Some(0),
                    }),
                }),
            }),
            abort_config: Some(pb::AbortConfig {
                criteria_list: vec![pb::AbortCriteria {
                    failure_type: Some(0),
                    action: Some(0),
                    threshold_percentage: Some(0.0),
                    min_number_of_executed_things: Some(0),
                }],
            }),
            created_at: epoch(),
            last_updated_at: epoch(),
            completed_at: epoch(),
            job_process_details: Some(pb::JobProcessDetails {
                processing_targets: vec!["ProcessingTargetName".into()],
                number_of_canceled_things: Some(0),
                number_of_succeeded_things: Some(0),
                number_of_failed_things: Some(0),
                number_of_rejected_things: Some(0),
                number_of_queued_things: Some(0),
                number_of_in_progress_things: Some(0),
                number_of_removed_things: Some(0),
                number_of_timed_out_things: Some(0),
            }),
            timeout_config: Some(pb::TimeoutConfig {
                in_progress_timeout_in_minutes: Some(0),
            }),
            namespace_id: name("namespaceId"),
            job_template_arn: name("jobTemplateArn"),
            job_executions_retry_config: Some(pb::JobExecutionsRetryConfig {
                criteria_list: vec![pb::RetryCriteria {
                    failure_type: Some(0),
                    number_of_retries: Some(0),
                }],
            }),
            document_parameters: [("KeyName".to_owned(), String::new())].into(),
            is_concurrent: Some(true),
            scheduling_config: Some(pb::SchedulingConfig {
                start_time: name("startTime"),
                end_time: name("endTime"),
                end_behavior: Some(0),
                maintenance_windows: vec![pb::MaintenanceWindow {
                    start_time: name("startTime"),
                    duration_in_minutes: Some(0),
                }],
            }),
            scheduled_job_rollouts: vec![pb::ScheduledJobRollout {
                start_time: name("startTime"),
            }],
            destination_package_versions: vec!["PackageVersionArn".into()],
            unrecognized_values: unrecognized,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_aws_sends_them() {
        let ts = |seconds, nanos| epoch_seconds(&Timestamp { seconds, nanos });
        assert_eq!(ts(1_560_787_022, 733_000_000).to_string(), "1560787022.733");
        assert_eq!(ts(1_560_787_026, 294_000_000).to_string(), "1560787026.294");
        assert_eq!(ts(1_560_787_022, 0).to_string(), "1560787022.0");
        assert_eq!(ts(0, 0).to_string(), "0.0");
        assert_eq!(ts(-2, 500_000_000).to_string(), "-1.5");
    }

    #[test]
    fn values_the_contract_cannot_hold_go_back_in_place() {
        let job = pb::Job {
            job_id: Some("j".into()),
            status: Some(0),
            timeout_config: Some(pb::TimeoutConfig {
                in_progress_timeout_in_minutes: None,
            }),
            unrecognized_values: [
                ("status".to_owned(), "QUEUED".to_owned()),
                (
                    "timeoutConfig.inProgressTimeoutInMinutes".to_owned(),
                    "9999999999".to_owned(),
                ),
            ]
            .into(),
            ..Default::default()
        };
        let json = describe_job(&pb::DescribeJobResponse {
            document_source: None,
            job: Some(job),
        });
        assert_eq!(
            json,
            serde_json::json!({"job": {
                "jobId": "j",
                "status": "QUEUED",
                "timeoutConfig": {"inProgressTimeoutInMinutes": 9_999_999_999_i64},
            }})
        );
    }

    #[test]
    fn absent_fields_stay_absent_and_empty_objects_stay() {
        let json = describe_job(&pb::DescribeJobResponse {
            document_source: None,
            job: Some(pb::Job {
                job_id: Some("j".into()),
                presigned_url_config: Some(pb::PresignedUrlConfig::default()),
                ..Default::default()
            }),
        });
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"{"job":{"jobId":"j","presignedUrlConfig":{}}}"#
        );
    }
}
