//! One simulated job: what it was created with, the plan its executions
//! follow, and its DescribeJob view at any instant.
//!
//! Nothing runs in the background. Each execution has a planned start, end
//! and outcome; status, counters and timestamps are computed from the clock
//! when the job is read, so a manual clock drives the whole lifecycle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    clock::EpochMillis,
    schedule::{self, Window},
};

/// How a finished execution ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Succeeded,
    Failed,
    Rejected,
    TimedOut,
}

/// One thing's planned execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    /// The thing's name.
    pub thing: String,
    /// When the thing starts running the job (it is queued before).
    pub starts_at: EpochMillis,
    /// When it finishes.
    pub ends_at: EpochMillis,
    /// How it finishes.
    pub outcome: Outcome,
    /// Set when the thing left the job's targets before finishing.
    pub removed_at: Option<EpochMillis>,
}

/// Where one execution stands at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionState {
    Queued,
    InProgress,
    Done(Outcome),
    Canceled,
    Removed,
}

impl ExecutionState {
    fn is_terminal(self) -> bool {
        !matches!(self, ExecutionState::Queued | ExecutionState::InProgress)
    }
}

/// A CancelJob that was accepted.
#[derive(Clone, Debug)]
pub struct Cancellation {
    pub at: EpochMillis,
    pub reason_code: Option<String>,
    pub comment: Option<String>,
    pub force: bool,
}

/// A simulated job.
#[derive(Clone, Debug)]
pub struct SimJob {
    pub job_id: String,
    pub arn: String,
    /// SNAPSHOT jobs complete when every execution is terminal; CONTINUOUS never do.
    pub continuous: bool,
    pub targets: Vec<String>,
    /// The job document's location, possibly with `${aws:iot:parameter:NAME}` placeholders.
    pub document_source: Option<String>,
    pub document_parameters: BTreeMap<String, String>,
    /// Fields echoed back as sent (description, configs, ARNs, ...), in AWS's JSON.
    pub echoed: Map<String, Value>,
    /// Rollout begins here; before it the job is SCHEDULED.
    pub rollout_starts_at: EpochMillis,
    /// Maintenance windows: executions start only inside them, and the job
    /// reads SCHEDULED between them while things are still queued.
    pub windows: Vec<Window>,
    pub created_at: EpochMillis,
    pub executions: Vec<Execution>,
    pub canceled: Option<Cancellation>,
    /// DeleteJob was accepted at this instant; the job reads as
    /// DELETION_IN_PROGRESS until it disappears.
    pub deleting_since: Option<EpochMillis>,
}

impl SimJob {
    /// The execution's state at `now`.
    pub fn execution_state(&self, e: &Execution, now: EpochMillis) -> ExecutionState {
        if e.removed_at.is_some_and(|at| at <= now) {
            return ExecutionState::Removed;
        }
        let natural = |t: EpochMillis| {
            if t < e.starts_at {
                ExecutionState::Queued
            } else if t < e.ends_at {
                ExecutionState::InProgress
            } else {
                ExecutionState::Done(e.outcome)
            }
        };
        if let Some(cancel) = self.canceled.as_ref().filter(|c| c.at <= now) {
            match natural(cancel.at) {
                ExecutionState::Queued => return ExecutionState::Canceled,
                ExecutionState::InProgress if cancel.force => return ExecutionState::Canceled,
                // Without force, running executions finish on their own.
                _ => {}
            }
        }
        natural(now)
    }

    /// The job's status at `now`, as AWS spells it.
    pub fn status(&self, now: EpochMillis) -> &'static str {
        if self.deleting_since.is_some() {
            "DELETION_IN_PROGRESS"
        } else if self.canceled.as_ref().is_some_and(|c| c.at <= now) {
            "CANCELED"
        } else if now < self.rollout_starts_at || self.waiting_for_window(now) {
            "SCHEDULED"
        } else if self.completed_at(now).is_some() {
            "COMPLETED"
        } else {
            "IN_PROGRESS"
        }
    }

    fn waiting_for_window(&self, now: EpochMillis) -> bool {
        !schedule::in_window(&self.windows, now)
            && self
                .executions
                .iter()
                .any(|e| self.execution_state(e, now) == ExecutionState::Queued)
    }

    /// When a SNAPSHOT job finished: its last execution's end, once all are terminal.
    pub(super) fn completed_at(&self, now: EpochMillis) -> Option<EpochMillis> {
        if self.continuous || self.executions.is_empty() {
            return None;
        }
        let all_done = self
            .executions
            .iter()
            .all(|e| self.execution_state(e, now).is_terminal());
        all_done.then(|| {
            self.executions
                .iter()
                .map(|e| e.ends_at.min(now))
                .max()
                .unwrap_or(now)
        })
    }

    /// The last instant anything about the job changed, up to `now`.
    pub(super) fn last_updated_at(&self, now: EpochMillis) -> EpochMillis {
        let mut last = self.created_at;
        for e in &self.executions {
            for t in [e.starts_at, e.ends_at] {
                if t <= now && t > last {
                    last = t;
                }
            }
        }
        if let Some(c) = self.canceled.as_ref().filter(|c| c.at <= now) {
            last = last.max(c.at);
        }
        if let Some(d) = self.deleting_since {
            last = last.max(d);
        }
        last
    }

    /// The `{"documentSource": .., "job": {..}}` body DescribeJob answers at `now`.
    pub fn describe(&self, now: EpochMillis, before_substitution: bool) -> Value {
        let status = self.status(now);
        let mut job = Map::new();
        job.insert("jobArn".into(), json!(self.arn));
        job.insert("jobId".into(), json!(self.job_id));
        let selection = if self.continuous {
            "CONTINUOUS"
        } else {
            "SNAPSHOT"
        };
        job.insert("targetSelection".into(), json!(selection));
        job.insert("status".into(), json!(status));
        if let Some(c) = &self.canceled {
            job.insert("forceCanceled".into(), json!(c.force));
            if let Some(code) = &c.reason_code {
                job.insert("reasonCode".into(), json!(code));
            }
            if let Some(comment) = &c.comment {
                job.insert("comment".into(), json!(comment));
            }
        }
        job.insert("targets".into(), json!(self.targets));
        for (key, value) in &self.echoed {
            job.insert(key.clone(), value.clone());
        }
        job.insert("createdAt".into(), epoch_seconds(self.created_at));
        job.insert(
            "lastUpdatedAt".into(),
            epoch_seconds(self.last_updated_at(now)),
        );
        let completed = match status {
            "COMPLETED" => self.completed_at(now),
            "CANCELED" => self.canceled.as_ref().map(|c| c.at),
            _ => None,
        };
        if let Some(at) = completed {
            job.insert("completedAt".into(), epoch_seconds(at));
        }
        job.insert("jobProcessDetails".into(), self.process_details(now));
        if !self.windows.is_empty() {
            let from = now.max(self.rollout_starts_at);
            let rollouts: Vec<Value> = schedule::next_starts(&self.windows, from, 7)
                .into_iter()
                .map(|start| json!({"startTime": schedule::format(start)}))
                .collect();
            job.insert("scheduledJobRollouts".into(), json!(rollouts));
        }
        if !self.document_parameters.is_empty() {
            job.insert("documentParameters".into(), json!(self.document_parameters));
        }
        let rolling_out = status == "IN_PROGRESS"
            && self
                .executions
                .iter()
                .any(|e| self.execution_state(e, now) == ExecutionState::Queued);
        job.insert("isConcurrent".into(), json!(rolling_out));

        let mut body = Map::new();
        if let Some(source) = &self.document_source {
            let source = if before_substitution {
                source.clone()
            } else {
                substitute(source, &self.document_parameters)
            };
            body.insert("documentSource".into(), json!(source));
        }
        body.insert("job".into(), Value::Object(job));
        Value::Object(body)
    }

    /// The `{"execution": {..}}` body DescribeJobExecution answers at `now`
    /// for `thing` (whose ARN is `thing_arn`), or `None` if the job has no
    /// execution on it. Each thing runs the job once: execution number 1.
    /// The version counts the device's updates: 1 when queued, 2 once
    /// started, 3 once it reported how it ended.
    pub fn describe_execution(
        &self,
        thing: &str,
        thing_arn: &str,
        now: EpochMillis,
    ) -> Option<Value> {
        let e = self.executions.iter().find(|e| e.thing == thing)?;
        Some(json!({"execution": self.execution(e, thing_arn, now)}))
    }

    /// The listings' summary of execution `e`: the execution's status,
    /// times and number.
    pub fn summary(&self, e: &Execution, now: EpochMillis) -> Map<String, Value> {
        let Value::Object(mut execution) = self.execution(e, "", now) else {
            unreachable!("an execution is an object")
        };
        execution.retain(|key, _| {
            matches!(
                key.as_str(),
                "status" | "queuedAt" | "startedAt" | "lastUpdatedAt" | "executionNumber"
            )
        });
        execution
    }

    /// DescribeJobExecution's `execution` of `e`.
    fn execution(&self, e: &Execution, thing_arn: &str, now: EpochMillis) -> Value {
        let state = self.execution_state(e, now);
        let queued_at = self.rollout_starts_at.max(self.created_at);
        let started = e.starts_at <= now
            && !matches!(state, ExecutionState::Queued)
            && !(state == ExecutionState::Canceled
                && self.canceled.as_ref().is_some_and(|c| c.at < e.starts_at));
        let (status, details, version): (&str, Option<(&str, &str)>, i64) = match state {
            ExecutionState::Queued => ("QUEUED", None, 1),
            ExecutionState::InProgress => ("IN_PROGRESS", Some(("progress", "installing")), 2),
            ExecutionState::Done(Outcome::Succeeded) => {
                ("SUCCEEDED", Some(("result", "installed")), 3)
            }
            ExecutionState::Done(Outcome::Failed) => (
                "FAILED",
                Some(("reason", "the device reported a failure")),
                3,
            ),
            ExecutionState::Done(Outcome::Rejected) => (
                "REJECTED",
                Some(("reason", "the device rejected the job")),
                3,
            ),
            ExecutionState::Done(Outcome::TimedOut) => ("TIMED_OUT", None, 2),
            ExecutionState::Canceled => ("CANCELED", None, if started { 2 } else { 1 }),
            ExecutionState::Removed => ("REMOVED", None, if started { 2 } else { 1 }),
        };
        let mut last = queued_at;
        if started {
            last = last.max(e.starts_at);
        }
        match state {
            ExecutionState::Done(_) => last = last.max(e.ends_at),
            ExecutionState::Canceled => {
                last = last.max(self.canceled.as_ref().map_or(last, |c| c.at));
            }
            ExecutionState::Removed => last = last.max(e.removed_at.unwrap_or(last)),
            _ => {}
        }
        let mut execution = Map::new();
        execution.insert("jobId".into(), json!(self.job_id));
        execution.insert("status".into(), json!(status));
        if state == ExecutionState::Canceled {
            let forced = self.canceled.as_ref().is_some_and(|c| c.force) && started;
            execution.insert("forceCanceled".into(), json!(forced));
        }
        if let Some((key, value)) = details {
            execution.insert("statusDetails".into(), json!({"detailsMap": {key: value}}));
        }
        execution.insert("thingArn".into(), json!(thing_arn));
        execution.insert("queuedAt".into(), epoch_seconds(queued_at));
        if started {
            execution.insert("startedAt".into(), epoch_seconds(e.starts_at));
        }
        execution.insert("lastUpdatedAt".into(), epoch_seconds(last));
        execution.insert("executionNumber".into(), json!(1));
        execution.insert("versionNumber".into(), json!(version));
        Value::Object(execution)
    }

    pub(super) fn process_details(&self, now: EpochMillis) -> Value {
        let mut counts = BTreeMap::<&str, i64>::new();
        let mut processing = Vec::new();
        for e in &self.executions {
            let key = match self.execution_state(e, now) {
                ExecutionState::Queued => {
                    processing.push(e.thing.clone());
                    "numberOfQueuedThings"
                }
                ExecutionState::InProgress => "numberOfInProgressThings",
                ExecutionState::Done(Outcome::Succeeded) => "numberOfSucceededThings",
                ExecutionState::Done(Outcome::Failed) => "numberOfFailedThings",
                ExecutionState::Done(Outcome::Rejected) => "numberOfRejectedThings",
                ExecutionState::Done(Outcome::TimedOut) => "numberOfTimedOutThings",
                ExecutionState::Canceled => "numberOfCanceledThings",
                ExecutionState::Removed => "numberOfRemovedThings",
            };
            *counts.entry(key).or_default() += 1;
        }
        let mut details = json!({
            "numberOfCanceledThings": 0, "numberOfSucceededThings": 0, "numberOfFailedThings": 0,
            "numberOfRejectedThings": 0, "numberOfQueuedThings": 0, "numberOfInProgressThings": 0,
            "numberOfRemovedThings": 0, "numberOfTimedOutThings": 0,
        });
        for (key, n) in counts {
            details[key] = json!(n);
        }
        if !processing.is_empty() {
            details["processingTargets"] = json!(processing);
        }
        details
    }
}

/// AWS writes timestamps as epoch seconds with milliseconds: `1560787022.733`.
fn epoch_seconds(ms: EpochMillis) -> Value {
    json!(ms as f64 / 1000.0)
}

/// Resolves `${aws:iot:parameter:NAME}` placeholders.
pub fn substitute(text: &str, parameters: &BTreeMap<String, String>) -> String {
    parameters
        .iter()
        .fold(text.to_owned(), |acc, (name, value)| {
            acc.replace(&format!("${{aws:iot:parameter:{name}}}"), value)
        })
}
