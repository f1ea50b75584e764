//! What watchers see of a job: observations of AWS's answers, their
//! versions, and how one state differs from the one before it.
//!
//! A job state's **version** is a hash of its wire encoding: the same state
//! has the same version on every replica, so a client can resume anywhere.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use prost::Message as _;
use tokio::time::Instant;

use crate::{
    domain::{
        answer::{JobAnswer, JobState},
        error::GatewayError,
    },
    pb,
};

/// When a request for a job's state was sent: later requests see states at
/// least as new. The sequence number orders requests within a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// When, for the poll schedule.
    pub at: Instant,
    /// The process's count of requests so far.
    pub seq: u64,
    /// Why.
    pub trigger: Trigger,
}

impl Sent {
    /// A request sent now for a call.
    pub fn now() -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(1);
        Self {
            at: Instant::now(),
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            trigger: Trigger::Call,
        }
    }

    /// The same request, sent because of `trigger`.
    pub fn because(self, trigger: Trigger) -> Self {
        Self { trigger, ..self }
    }

    /// An answer known from before any request (a cached one): every
    /// request's answer replaces it.
    pub fn before_all(at: Instant) -> Self {
        Self {
            at,
            seq: 0,
            trigger: Trigger::Call,
        }
    }
}

/// What made the gateway ask AWS about a job. Ordered by how soon a
/// watched job's poll should come: an event that the job ended first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trigger {
    /// Not known here: another replica asked.
    Elsewhere,
    /// A caller's call.
    Call,
    /// The watch schedule.
    Schedule,
    /// The events connection came (back); events may have been missed.
    CatchUp,
    /// An AWS IoT Jobs event about the job.
    Event,
    /// An event saying the job ended (completed, canceled, deleted).
    FinalEvent,
}

impl Trigger {
    /// Its number between replicas (0: not known).
    pub fn code(self) -> u32 {
        match self {
            Trigger::Elsewhere => 0,
            Trigger::Call => 1,
            Trigger::Schedule => 2,
            Trigger::CatchUp => 3,
            Trigger::Event => 4,
            Trigger::FinalEvent => 5,
        }
    }

    /// The trigger numbered `code` by another replica.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Trigger::Call,
            2 => Trigger::Schedule,
            3 => Trigger::CatchUp,
            4 => Trigger::Event,
            5 => Trigger::FinalEvent,
            _ => Trigger::Elsewhere,
        }
    }
}

/// Where an observation stands among the observations of its job: a later
/// one never gives way to an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Order {
    /// Counts this process's switches between sharing with replicas and
    /// working alone (0 in one process): after a switch, the other side's
    /// observations come first whatever their terms.
    pub epoch: u64,
    /// The poll lease's fencing token when replicas share pollers (0 in
    /// one process).
    pub term: u64,
    /// The request's sequence number within the term.
    pub seq: u64,
}

/// What the gateway last saw of a job.
#[derive(Debug)]
pub struct Observation {
    /// Identifies the state: a hash of its wire form.
    pub version: u64,
    /// The state.
    pub state: Observed,
    /// When AWS answered (wall clock, for clients).
    pub observed_at: SystemTime,
    /// Why the gateway asked.
    pub trigger: Trigger,
    /// When the request that got this answer was sent (for the schedule).
    pub(crate) sent: Instant,
    /// Older observations never overwrite newer ones.
    pub order: Order,
    /// The version this observation replaced and how the two differ.
    pub(crate) previous: Option<(u64, Changes)>,
}

/// What AWS answered about a job, or why there is no answer.
#[derive(Debug, Clone)]
pub enum Observed {
    /// AWS's answer: the job, or that it does not exist (deleted; final).
    Answer(Arc<JobAnswer>),
    /// The gateway could not read the job; it keeps trying.
    Failed(GatewayError),
}

impl Observation {
    /// What watchers should see of an answer AWS gave to a request sent
    /// at `sent`.
    pub fn answered(answer: &Arc<JobAnswer>, sent: Sent) -> Self {
        Self::new(Observed::Answer(answer.clone()), sent)
    }

    /// A state seen in an answer to a request of this process.
    pub fn new(state: Observed, sent: Sent) -> Self {
        let order = Order {
            epoch: 0,
            term: 0,
            seq: sent.seq,
        };
        Self {
            trigger: sent.trigger,
            ..Self::ordered(state, sent.at, order)
        }
    }

    /// A state another replica saw, in its `order`.
    pub fn ordered(state: Observed, sent: Instant, order: Order) -> Self {
        let answered = match &state {
            Observed::Answer(answer) => answer.answered_at,
            Observed::Failed(_) => Instant::now(),
        };
        let version = version_of(&state);
        let observed_at = SystemTime::now()
            .checked_sub(answered.elapsed())
            .unwrap_or_else(SystemTime::now);
        Self {
            version,
            state,
            observed_at,
            trigger: Trigger::Elsewhere,
            sent,
            order,
            previous: None,
        }
    }

    /// Whether no further change is expected: COMPLETED, CANCELED or gone.
    pub fn is_final(&self) -> bool {
        match &self.state {
            Observed::Answer(answer) => answer.is_terminal(),
            Observed::Failed(_) => false,
        }
    }
}

/// What kind of change an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The first state on this stream: nothing to compare with.
    Current,
    /// The job's status changed.
    StatusChanged,
    /// Only the rollout's counters and `lastUpdatedAt` changed.
    Progress,
    /// Other fields changed.
    Updated,
    /// The job no longer exists.
    Gone,
    /// The job could not be read.
    Failed,
}

/// How one state differs from the one before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The kind of change.
    pub kind: ChangeKind,
    /// The top-level job fields (JSON names) that differ.
    pub fields: Vec<&'static str>,
}

impl Changes {
    /// How `next` differs from `before` (`None`: nothing sent before).
    pub fn between(before: Option<&Observed>, next: &Observed) -> Self {
        let kind_only = |kind| Self {
            kind,
            fields: Vec::new(),
        };
        match (found(before), next) {
            (_, Observed::Answer(answer)) if matches!(answer.state, JobState::NotFound(_)) => {
                kind_only(ChangeKind::Gone)
            }
            (_, Observed::Failed(_)) => kind_only(ChangeKind::Failed),
            (Some(a), Observed::Answer(answer)) => {
                let JobState::Found(b) = &answer.state else {
                    unreachable!("the arm above took answers without a job")
                };
                let fields = changed_fields(a, b);
                let kind = if fields.contains(&"status") {
                    ChangeKind::StatusChanged
                } else if !fields.is_empty()
                    && fields
                        .iter()
                        .all(|f| matches!(*f, "jobProcessDetails" | "lastUpdatedAt"))
                {
                    ChangeKind::Progress
                } else {
                    ChangeKind::Updated
                };
                Self { kind, fields }
            }
            (None, Observed::Answer(_)) => kind_only(ChangeKind::Current),
        }
    }
}

/// The job in `observed`, if it holds one.
fn found(observed: Option<&Observed>) -> Option<&Arc<pb::DescribeJobResponse>> {
    match observed? {
        Observed::Answer(answer) => match &answer.state {
            JobState::Found(response) => Some(response),
            JobState::NotFound(_) => None,
        },
        Observed::Failed(_) => None,
    }
}

/// Lists the fields of `pb::Job` (by JSON name) that differ between two
/// answers; `documentSource` (beside the job) counts as one of them.
macro_rules! job_fields {
    ($($field:ident => $json:literal),* $(,)?) => {
        /// The JSON names of every compared job field.
        #[cfg(test)]
        const JOB_FIELDS: &[&str] = &[$($json),*];

        fn changed_fields(a: &pb::DescribeJobResponse, b: &pb::DescribeJobResponse) -> Vec<&'static str> {
            let mut fields = Vec::new();
            if a.document_source != b.document_source {
                fields.push("documentSource");
            }
            let empty = pb::Job::default();
            let (a, b) = (a.job.as_ref().unwrap_or(&empty), b.job.as_ref().unwrap_or(&empty));
            $(if a.$field != b.$field { fields.push($json); })*
            fields
        }
    };
}

job_fields! {
    job_arn => "jobArn",
    job_id => "jobId",
    target_selection => "targetSelection",
    status => "status",
    force_canceled => "forceCanceled",
    reason_code => "reasonCode",
    comment => "comment",
    targets => "targets",
    description => "description",
    presigned_url_config => "presignedUrlConfig",
    job_executions_rollout_config => "jobExecutionsRolloutConfig",
    abort_config => "abortConfig",
    created_at => "createdAt",
    last_updated_at => "lastUpdatedAt",
    completed_at => "completedAt",
    job_process_details => "jobProcessDetails",
    timeout_config => "timeoutConfig",
    namespace_id => "namespaceId",
    job_template_arn => "jobTemplateArn",
    job_executions_retry_config => "jobExecutionsRetryConfig",
    document_parameters => "documentParameters",
    is_concurrent => "isConcurrent",
    scheduling_config => "schedulingConfig",
    scheduled_job_rollouts => "scheduledJobRollouts",
    destination_package_versions => "destinationPackageVersions",
    unrecognized_values => "unrecognizedValues",
}

/// A state's version: FNV-1a over its wire encoding (maps are ordered, so
/// the encoding is the same on every replica), or over the error code.
fn version_of(state: &Observed) -> u64 {
    let bytes = match state {
        Observed::Answer(answer) => match &answer.state {
            JobState::Found(response) => response.encode_to_vec(),
            JobState::NotFound(_) => b"gone".to_vec(),
        },
        Observed::Failed(err) => format!("failed:{:?}", err.code()).into_bytes(),
    };
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(status: pb::job::Status, succeeded: i32) -> Observed {
        let response = Arc::new(pb::DescribeJobResponse {
            document_source: None,
            job: Some(pb::Job {
                job_id: Some("j".into()),
                status: Some(status as i32),
                job_process_details: Some(pb::JobProcessDetails {
                    number_of_succeeded_things: Some(succeeded),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        });
        Observed::Answer(Arc::new(JobAnswer::now(JobState::Found(response))))
    }

    #[test]
    fn every_job_field_of_the_contract_is_compared() {
        let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
        let job = set
            .file
            .iter()
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == "Job")
            .unwrap();
        let mut contract: Vec<&str> = job.field.iter().map(|f| f.json_name()).collect();
        let mut compared = JOB_FIELDS.to_vec();
        contract.sort_unstable();
        compared.sort_unstable();
        assert_eq!(compared, contract);
    }

    #[test]
    fn changes_are_named_by_kind_and_field() {
        use pb::job::Status::*;
        let a = found(InProgress, 1);
        let progress = Changes::between(Some(&a), &found(InProgress, 2));
        assert_eq!(progress.kind, ChangeKind::Progress);
        assert_eq!(progress.fields, vec!["jobProcessDetails"]);
        let done = Changes::between(Some(&a), &found(Completed, 2));
        assert_eq!(done.kind, ChangeKind::StatusChanged);
        assert_eq!(done.fields, vec!["status", "jobProcessDetails"]);
        assert_eq!(Changes::between(None, &a).kind, ChangeKind::Current);
    }

    #[test]
    fn equal_states_have_equal_versions() {
        use pb::job::Status::*;
        let v = |o: &Observed| version_of(o);
        assert_eq!(v(&found(InProgress, 1)), v(&found(InProgress, 1)));
        assert_ne!(v(&found(InProgress, 1)), v(&found(InProgress, 2)));
    }
}
