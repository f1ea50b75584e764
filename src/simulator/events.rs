//! AWS IoT Jobs events as the simulator publishes them: which transitions
//! of a job and its executions become an event, and each event's topic and
//! payload.
//!
//! Topics and payloads follow AWS's "Jobs events" page of the AWS IoT
//! developer guide (<https://docs.aws.amazon.com/iot/latest/developerguide/events-jobs.html>):
//!
//! | topic | when |
//! |---|---|
//! | `$aws/events/job/{jobId}/cancellation_in_progress` | CancelJob accepted |
//! | `$aws/events/job/{jobId}/canceled` | no execution is running any more after a cancel |
//! | `$aws/events/job/{jobId}/completed` | every execution of a SNAPSHOT job is terminal |
//! | `$aws/events/job/{jobId}/deletion_in_progress` | DeleteJob accepted |
//! | `$aws/events/job/{jobId}/deleted` | the job is gone |
//! | `$aws/events/jobExecution/{jobId}/{succeeded,failed,rejected,timed_out,canceled,removed}` | an execution reaches that terminal status |
//! | `$aws/events/jobExecution/{jobId}/deleted` | its job is gone (`status` is the one before deletion, as AWS notes) |
//!
//! Job states are computed from the clock ([`super::job`]), so nothing
//! announces a transition: the [`Tracker`] remembers what it has published
//! for each job and execution and compares after every admin action and on
//! every tick of the publisher ([`super::publisher`]).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::{
    clock::EpochMillis,
    job::{ExecutionState, Outcome, SimJob},
};

/// The job operations AWS publishes, in the last segment of `$aws/events/job/{jobId}/…`.
pub const JOB_OPERATIONS: [&str; 5] = [
    "completed",
    "canceled",
    "deleted",
    "cancellation_in_progress",
    "deletion_in_progress",
];

/// The execution operations, in the last segment of `$aws/events/jobExecution/{jobId}/…`.
pub const EXECUTION_OPERATIONS: [&str; 7] = [
    "succeeded",
    "failed",
    "rejected",
    "canceled",
    "timed_out",
    "removed",
    "deleted",
];

/// `$aws/events/job/{jobId}/{operation}`.
pub fn job_topic(job_id: &str, operation: &str) -> String {
    format!("$aws/events/job/{job_id}/{operation}")
}

/// `$aws/events/jobExecution/{jobId}/{operation}`.
pub fn execution_topic(job_id: &str, operation: &str) -> String {
    format!("$aws/events/jobExecution/{job_id}/{operation}")
}

/// One MQTT message on its way to the broker.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Outgoing {
    fn json(topic: String, payload: &Value) -> Self {
        Self {
            topic,
            payload: payload.to_string().into_bytes(),
        }
    }
}

/// A uuid-shaped (version 4) event id, as AWS's `eventId`.
pub fn event_id() -> String {
    let bits = (fastrand::u128(..) & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// An execution state's status as AWS spells it.
fn execution_status(state: ExecutionState) -> &'static str {
    match state {
        ExecutionState::Queued => "QUEUED",
        ExecutionState::InProgress => "IN_PROGRESS",
        ExecutionState::Done(Outcome::Succeeded) => "SUCCEEDED",
        ExecutionState::Done(Outcome::Failed) => "FAILED",
        ExecutionState::Done(Outcome::Rejected) => "REJECTED",
        ExecutionState::Done(Outcome::TimedOut) => "TIMED_OUT",
        ExecutionState::Canceled => "CANCELED",
        ExecutionState::Removed => "REMOVED",
    }
}

/// The AWS status of a job operation's event. AWS's example payload for
/// `completed` says `"status": "SUCCEEDED"` (not DescribeJob's COMPLETED);
/// the simulator copies the documentation.
fn job_status(operation: &str) -> &'static str {
    match operation {
        "completed" => "SUCCEEDED",
        "canceled" => "CANCELED",
        "deleted" => "DELETED",
        "cancellation_in_progress" => "CANCELLATION_IN_PROGRESS",
        _ => "DELETION_IN_PROGRESS",
    }
}

/// The counters AWS's `completed` and `canceled` payloads carry.
const EVENT_COUNTERS: [&str; 6] = [
    "numberOfCanceledThings",
    "numberOfRejectedThings",
    "numberOfFailedThings",
    "numberOfRemovedThings",
    "numberOfSucceededThings",
    "numberOfTimedOutThings",
];

/// Builds event payloads for jobs of one simulated account.
#[derive(Clone, Debug)]
pub struct Payloads {
    /// `arn:aws:iot:{region}:{account}:`, for `thingArn`.
    pub arn_prefix: String,
}

impl Payloads {
    /// A job event (`eventType` JOB) about `job` at `at`.
    pub fn job(&self, job: &SimJob, operation: &str, at: EpochMillis, now: EpochMillis) -> Value {
        let mut p = Map::new();
        p.insert("eventType".into(), json!("JOB"));
        p.insert("eventId".into(), json!(event_id()));
        p.insert("timestamp".into(), json!(at.div_euclid(1000)));
        p.insert("operation".into(), json!(operation));
        p.insert("jobId".into(), json!(job.job_id));
        p.insert("status".into(), json!(job_status(operation)));
        if let (Some(c), "canceled") = (&job.canceled, operation) {
            p.insert("forceCanceled".into(), json!(c.force));
        }
        let selection = if job.continuous {
            "CONTINUOUS"
        } else {
            "SNAPSHOT"
        };
        p.insert("targetSelection".into(), json!(selection));
        p.insert("targets".into(), json!(job.targets));
        if let Some(description) = job.echoed.get("description") {
            p.insert("description".into(), description.clone());
        }
        if operation == "completed" {
            p.insert("completedAt".into(), json!(at));
        }
        p.insert("createdAt".into(), json!(job.created_at));
        p.insert("lastUpdatedAt".into(), json!(job.last_updated_at(now)));
        if let Some(comment) = job.canceled.as_ref().and_then(|c| c.comment.as_ref()) {
            p.insert("comment".into(), json!(comment));
        }
        if matches!(operation, "completed" | "canceled") {
            let details = job.process_details(now);
            let counters: Map<String, Value> = EVENT_COUNTERS
                .iter()
                .map(|key| ((*key).to_owned(), details[*key].clone()))
                .collect();
            p.insert("jobProcessDetails".into(), Value::Object(counters));
        }
        Value::Object(p)
    }

    /// An execution event (`eventType` JOB_EXECUTION) for `thing`.
    pub fn execution(
        &self,
        job_id: &str,
        thing: &str,
        operation: &str,
        status: &str,
        at: EpochMillis,
    ) -> Value {
        json!({
            "eventType": "JOB_EXECUTION",
            "eventId": event_id(),
            "timestamp": at.div_euclid(1000),
            "operation": operation,
            "jobId": job_id,
            "thingArn": format!("{}thing/{thing}", self.arn_prefix),
            "status": status,
        })
    }
}

/// The operation of an execution's terminal state, and when it was reached.
fn terminal(job: &SimJob, i: usize, now: EpochMillis) -> Option<(&'static str, EpochMillis)> {
    let e = &job.executions[i];
    let at = match job.execution_state(e, now) {
        ExecutionState::Queued | ExecutionState::InProgress => return None,
        ExecutionState::Done(outcome) => {
            let operation = match outcome {
                Outcome::Succeeded => "succeeded",
                Outcome::Failed => "failed",
                Outcome::Rejected => "rejected",
                Outcome::TimedOut => "timed_out",
            };
            return Some((operation, e.ends_at));
        }
        ExecutionState::Canceled => ("canceled", job.canceled.as_ref().map_or(now, |c| c.at)),
        ExecutionState::Removed => ("removed", e.removed_at.unwrap_or(now)),
    };
    Some(at)
}

/// What the tracker has published about one job.
struct Seen {
    /// Tells a job apart from an earlier one with the same id.
    created_at: EpochMillis,
    /// Job operations already published.
    operations: Vec<&'static str>,
    /// Whether each execution's terminal event went out.
    executions: Vec<bool>,
}

impl Seen {
    fn new(job: &SimJob) -> Self {
        Self {
            created_at: job.created_at,
            operations: Vec::new(),
            executions: vec![false; job.executions.len()],
        }
    }

    /// True the first time `operation` is asked for.
    fn first(&mut self, operation: &'static str) -> bool {
        let first = !self.operations.contains(&operation);
        if first {
            self.operations.push(operation);
        }
        first
    }
}

/// Detects transitions and hands their events to the publisher.
pub struct Tracker {
    payloads: Payloads,
    deletion_delay: EpochMillis,
    seen: HashMap<String, Seen>,
    /// The time of the last full scan, so idle ticks on a stopped clock cost nothing.
    last_scan: Option<EpochMillis>,
    out: UnboundedSender<Outgoing>,
}

impl Tracker {
    pub fn new(
        payloads: Payloads,
        deletion_delay: EpochMillis,
        out: UnboundedSender<Outgoing>,
    ) -> Self {
        Self {
            payloads,
            deletion_delay,
            seen: HashMap::new(),
            last_scan: None,
            out,
        }
    }

    /// How this tracker writes payloads.
    pub fn payloads(&self) -> &Payloads {
        &self.payloads
    }

    /// Queues a message as given.
    pub fn send(&self, message: Outgoing) {
        // The publisher lives as long as the simulator's runtime; once it is
        // gone there is nobody to publish to.
        let _ = self.out.send(message);
    }

    /// Remembers `jobs` as they stand without publishing: what happened
    /// before events were turned on is not announced.
    pub fn baseline<'a>(&mut self, jobs: impl Iterator<Item = &'a SimJob>, now: EpochMillis) {
        for job in jobs {
            self.scan_job(job, now, false);
        }
        self.last_scan = Some(now);
    }

    /// Compares every job with what was published; `force` scans even if
    /// the clock has not moved since the last scan.
    pub fn scan<'a>(
        &mut self,
        jobs: impl Iterator<Item = &'a SimJob> + Clone,
        now: EpochMillis,
        force: bool,
    ) {
        if !force && self.last_scan == Some(now) {
            return;
        }
        self.last_scan = Some(now);
        for job in jobs.clone() {
            self.scan_job(job, now, true);
        }
        // Jobs that disappeared without passing through `gone` (none today).
        let present: std::collections::HashSet<&str> = jobs.map(|j| j.job_id.as_str()).collect();
        self.seen.retain(|id, _| present.contains(id.as_str()));
    }

    /// Publishes what changed about one job at `now` (remembers it
    /// without publishing when `emit` is false).
    pub fn scan_job(&mut self, job: &SimJob, now: EpochMillis, emit: bool) {
        let payloads = &self.payloads;
        let seen = self
            .seen
            .entry(job.job_id.clone())
            .or_insert_with(|| Seen::new(job));
        if seen.created_at != job.created_at {
            *seen = Seen::new(job);
        }
        seen.executions.resize(job.executions.len(), false);
        let mut out = Vec::new();
        let cancel = job.canceled.as_ref().filter(|c| c.at <= now);
        if let Some(c) = cancel
            && seen.first("cancellation_in_progress")
        {
            out.push(job_event(
                payloads,
                job,
                "cancellation_in_progress",
                c.at,
                now,
            ));
        }
        for i in 0..job.executions.len() {
            if seen.executions[i] {
                continue;
            }
            if let Some((operation, at)) = terminal(job, i, now) {
                seen.executions[i] = true;
                let status = execution_status(job.execution_state(&job.executions[i], now));
                let thing = &job.executions[i].thing;
                let payload = payloads.execution(&job.job_id, thing, operation, status, at);
                out.push(Outgoing::json(
                    execution_topic(&job.job_id, operation),
                    &payload,
                ));
            }
        }
        if let Some(c) = cancel {
            let running = job
                .executions
                .iter()
                .any(|e| job.execution_state(e, now) == ExecutionState::InProgress);
            if !running && seen.first("canceled") {
                let done = job.executions.iter().map(|e| e.ends_at.clamp(c.at, now));
                let at = if c.force {
                    c.at
                } else {
                    done.max().unwrap_or(c.at)
                };
                out.push(job_event(payloads, job, "canceled", at, now));
            }
        }
        if job.status(now) == "COMPLETED" && seen.first("completed") {
            let at = job.completed_at(now).unwrap_or(now);
            out.push(job_event(payloads, job, "completed", at, now));
        }
        if let Some(since) = job.deleting_since {
            if seen.first("deletion_in_progress") {
                out.push(job_event(payloads, job, "deletion_in_progress", since, now));
            }
            let at = since + self.deletion_delay;
            if now >= at && seen.first("deleted") {
                out.extend(deleted(payloads, job, since, at));
            }
        }
        if emit {
            for message in out {
                self.send(message);
            }
        }
    }

    /// The simulator is forgetting `job` (its deletion finished): publishes
    /// what is still due and forgets it too.
    pub fn gone(&mut self, job: &SimJob, now: EpochMillis) {
        self.scan_job(job, now, true);
        self.seen.remove(&job.job_id);
    }
}

fn job_event(
    payloads: &Payloads,
    job: &SimJob,
    operation: &str,
    at: EpochMillis,
    now: EpochMillis,
) -> Outgoing {
    let payload = payloads.job(job, operation, at, now);
    Outgoing::json(job_topic(&job.job_id, operation), &payload)
}

/// The `deleted` events of a job whose deletion, accepted at `since`,
/// finished at `at`: one per execution, then the job's.
fn deleted(
    payloads: &Payloads,
    job: &SimJob,
    since: EpochMillis,
    at: EpochMillis,
) -> Vec<Outgoing> {
    let mut out: Vec<Outgoing> = job
        .executions
        .iter()
        .map(|e| {
            // AWS: "the status field reflects the job execution status prior
            // to the deletion".
            let status = execution_status(job.execution_state(e, since));
            let payload = payloads.execution(&job.job_id, &e.thing, "deleted", status, at);
            Outgoing::json(execution_topic(&job.job_id, "deleted"), &payload)
        })
        .collect();
    out.push(job_event(payloads, job, "deleted", at, at));
    out
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;
    use crate::simulator::{SimConfig, Simulator, clock::ManualClock};

    const START: EpochMillis = 1_893_456_000_000;

    fn fleet() -> (Simulator, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(START));
        let sim = Simulator::new(SimConfig::default(), clock.clone());
        let group = sim.arn("thinggroup", "fleet");
        sim.create_job("j", &json!({"targets": [group]})).unwrap();
        (sim, clock)
    }

    fn tracker() -> (Tracker, mpsc::UnboundedReceiver<Outgoing>) {
        let (out, published) = mpsc::unbounded_channel();
        let payloads = Payloads {
            arn_prefix: "arn:aws:iot:us-east-1:123456789012:".into(),
        };
        (Tracker::new(payloads, 3_000, out), published)
    }

    fn topics(published: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<String> {
        std::iter::from_fn(|| published.try_recv().ok())
            .map(|m| m.topic)
            .collect()
    }

    #[test]
    fn each_transition_is_published_once_executions_before_the_job() {
        let (sim, clock) = fleet();
        let (mut tracker, mut published) = tracker();
        let scan = |tracker: &mut Tracker| {
            let state = sim.state();
            tracker.scan(state.jobs.values(), sim.now(), true);
        };
        scan(&mut tracker);
        assert!(topics(&mut published).is_empty());
        clock.advance(Duration::from_secs(7));
        scan(&mut tracker);
        assert_eq!(
            topics(&mut published),
            vec!["$aws/events/jobExecution/j/succeeded"; 3]
        );
        clock.advance(Duration::from_secs(60));
        scan(&mut tracker);
        scan(&mut tracker);
        let mut expected = vec!["$aws/events/jobExecution/j/succeeded"; 7];
        expected.push("$aws/events/job/j/completed");
        assert_eq!(topics(&mut published), expected);
    }

    #[test]
    fn what_happened_before_the_baseline_is_not_published() {
        let (sim, clock) = fleet();
        clock.advance(Duration::from_secs(60));
        let (mut tracker, mut published) = tracker();
        let state = sim.state();
        tracker.baseline(state.jobs.values(), sim.now());
        tracker.scan(state.jobs.values(), sim.now(), true);
        assert!(topics(&mut published).is_empty());
    }

    #[test]
    fn event_ids_are_shaped_like_version_4_uuids() {
        let id = event_id();
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "{id}");
        assert!(matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, event_id());
    }
}
