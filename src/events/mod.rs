//! AWS IoT Jobs events: they decide *when* a watched job is polled, never
//! what watchers see.
//!
//! With jobs events enabled in the account's event configuration, AWS IoT
//! publishes to reserved topics when a job or one of its executions
//! changes: `$aws/events/job/{jobId}/{completed|canceled|deleted|
//! cancellation_in_progress|deletion_in_progress}` and
//! `$aws/events/jobExecution/{jobId}/{succeeded|failed|rejected|canceled|
//! timed_out|removed|deleted}`. The gateway subscribes to both with
//! wildcards (two subscriptions, whatever the number of watched jobs:
//! AWS IoT allows 50 per connection, and an IoT policy grants
//! `iot:Subscribe` on the two topic filters once). An event about a
//! watched job makes its next poll due at once, ahead of the schedule but
//! still through the rate limit at poll priority; an event that the job
//! ended is polled first. The job's cached answers are set aside too, so
//! the next call asks AWS.
//!
//! Only the topic is read: the job id and what kind of change it was. The
//! state on a watch stream always comes from a DescribeJob answer, so a
//! forged, repeated, lost or reordered message can hasten or delay a poll
//! but never put a wrong state on a stream.
//!
//! Where the events come from is an [`EventSource`]: AWS IoT Core or any
//! broker over MQTT ([`mqtt::Subscriber`]), or, in the demo, the simulator
//! in the same process ([`InProcess`]). Either hands each event's topic to
//! the [`Listener`] and tells it when it (re)connected, which polls every
//! watched job once (events may have been missed meanwhile).

mod in_process;
pub mod mqtt;

pub use in_process::InProcess;
pub use mqtt::{EventsError, EventsSettings};

use tokio::task::JoinHandle;
use tracing::debug;

use crate::domain::{Jobs, watch::observation::Trigger};

/// The topic filters subscribed to.
pub const TOPICS: [&str; 2] = ["$aws/events/job/+/+", "$aws/events/jobExecution/+/+"];

/// A source of AWS IoT Jobs events, started once with the gateway and
/// stopped with it (its task is aborted).
pub trait EventSource: Send + 'static {
    /// Hands events to `listener` until the task is aborted.
    fn start(self: Box<Self>, listener: Listener) -> JoinHandle<()>;
}

/// What an [`EventSource`] tells the gateway.
pub struct Listener {
    jobs: Jobs,
}

impl Listener {
    /// A listener that polls `jobs`' watched jobs.
    pub fn new(jobs: Jobs) -> Self {
        Self { jobs }
    }

    /// The source is (again) connected: events from before are lost, so
    /// every watched job is polled once.
    pub fn connected(&self) {
        self.jobs.watches().hasten_all(Trigger::CatchUp);
    }

    /// An event arrived on `topic`.
    pub async fn event(&self, topic: &str) {
        match parse_topic(topic) {
            Some((job_id, trigger)) => {
                let watched = self.jobs.job_event(job_id, trigger).await;
                debug!(topic, watched, "AWS IoT Jobs event");
            }
            None => debug!(topic, "not an AWS IoT Jobs event; ignored"),
        }
    }
}

/// What an event topic says: the job, and why to poll it.
pub fn parse_topic(topic: &str) -> Option<(&str, Trigger)> {
    let rest = topic.strip_prefix("$aws/events/")?;
    let (kind, rest) = rest.split_once('/')?;
    let (job_id, event) = rest.split_once('/')?;
    let valid_id = crate::domain::rules::job_id("jobId", job_id).is_ok();
    if !valid_id || event.contains('/') {
        return None;
    }
    match (kind, event) {
        ("job", "completed" | "canceled" | "deleted") => Some((job_id, Trigger::FinalEvent)),
        ("job", "cancellation_in_progress" | "deletion_in_progress") => {
            Some((job_id, Trigger::Event))
        }
        (
            "jobExecution",
            "succeeded" | "failed" | "rejected" | "canceled" | "timed_out" | "removed" | "deleted",
        ) => Some((job_id, Trigger::Event)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_the_job_and_whether_it_ended() {
        assert_eq!(
            parse_topic("$aws/events/job/fw-1/completed"),
            Some(("fw-1", Trigger::FinalEvent))
        );
        assert_eq!(
            parse_topic("$aws/events/job/fw-1/deletion_in_progress"),
            Some(("fw-1", Trigger::Event))
        );
        assert_eq!(
            parse_topic("$aws/events/jobExecution/fw_2/succeeded"),
            Some(("fw_2", Trigger::Event))
        );
        for ignored in [
            "$aws/events/job/fw-1/completed/extra",
            "$aws/events/job/not a job/completed",
            "$aws/events/job/fw-1/exploded",
            "$aws/events/thing/fw-1/created",
            "$aws/things/t/jobs/notify",
            "",
        ] {
            assert_eq!(parse_topic(ignored), None, "{ignored}");
        }
    }
}
