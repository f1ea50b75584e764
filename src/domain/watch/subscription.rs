//! Watch streams: a stream's place under the caps, the events it sends,
//! and what it has sent of each of its jobs.

use std::{pin::Pin, sync::Arc, sync::atomic::Ordering, time::Duration};

use tokio::{
    sync::watch,
    time::{Instant, Sleep},
};
use tokio_stream::{StreamExt as _, StreamMap, wrappers::WatchStream};

use crate::domain::{
    error::GatewayError,
    watch::{
        WatchTargets, Watches,
        observation::{Changes, Observation},
        pollers::Latest,
    },
};

/// A stream's place under the caps; gives it back when dropped.
pub(crate) struct StreamTicket {
    pub(super) watches: Arc<Watches>,
    pub(super) owner: Option<Arc<str>>,
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        self.watches.streams.fetch_sub(1, Ordering::SeqCst);
        if let Some(owner) = self.owner.take() {
            let mut per_owner = self
                .watches
                .per_owner
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(open) = per_owner.get_mut(&owner) {
                *open -= 1;
                if *open == 0 {
                    per_owner.remove(&owner);
                }
            }
        }
        // Its pollers may have no subscriber left.
        self.watches.wake.notify_one();
    }
}

/// What a watch stream sends.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A job's state, first or changed.
    Job {
        /// The job.
        job_id: String,
        /// Its state.
        observation: Arc<Observation>,
        /// How it differs from what this stream sent before.
        changes: Changes,
        /// No more events follow for this job on this stream.
        last: bool,
    },
    /// Nothing happened for a while.
    Heartbeat {
        /// Jobs of the stream that are not final yet.
        watching: usize,
    },
}

/// One job of a stream.
struct StreamJob {
    job_id: String,
    /// The last state sent on this stream.
    sent: Option<Arc<Observation>>,
    /// The version the client said it saw, until the first state arrives.
    resume_from: Option<u64>,
}

/// One watch stream: its jobs' channels, what it sent, its heartbeat.
pub struct Subscription {
    updates: StreamMap<usize, WatchStream<Latest>>,
    jobs: Vec<StreamJob>,
    heartbeat_every: Duration,
    heartbeat: Pin<Box<Sleep>>,
    /// Turns true when the gateway shuts down.
    closing: watch::Receiver<bool>,
    ended: bool,
    _ticket: StreamTicket,
}

impl Subscription {
    pub(crate) fn new(
        watches: Arc<Watches>,
        ticket: StreamTicket,
        targets: WatchTargets,
        receivers: Vec<watch::Receiver<Latest>>,
    ) -> Self {
        let mut updates = StreamMap::with_capacity(receivers.len());
        for (index, receiver) in receivers.into_iter().enumerate() {
            updates.insert(index, WatchStream::new(receiver));
        }
        let jobs = targets
            .0
            .into_iter()
            .map(|(query, resume_from)| StreamJob {
                job_id: query.job_id,
                sent: None,
                resume_from,
            })
            .collect();
        let heartbeat_every = watches.settings.heartbeat;
        Self {
            updates,
            jobs,
            heartbeat_every,
            heartbeat: Box::pin(tokio::time::sleep(heartbeat_every)),
            closing: watches.closing.subscribe(),
            ended: false,
            _ticket: ticket,
        }
    }

    /// Jobs of the stream that are not final yet.
    pub fn watching(&self) -> usize {
        self.updates.len()
    }

    /// The next event; `None` once every job is final. At shutdown, one
    /// `ShuttingDown` error and then `None`.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, GatewayError>> {
        loop {
            if self.ended || self.updates.is_empty() {
                return None;
            }
            if *self.closing.borrow_and_update() {
                self.ended = true;
                return Some(Err(GatewayError::ShuttingDown));
            }
            tokio::select! {
                biased;
                changed = self.closing.changed() => {
                    // The sender lives as long as this stream's ticket; if
                    // it were gone, the gateway would be going away too.
                    if changed.is_err() {
                        self.ended = true;
                        return Some(Err(GatewayError::ShuttingDown));
                    }
                }
                update = self.updates.next() => {
                    let Some((index, Some(observation))) = update else { continue };
                    if let Some(event) = self.event(index, observation) {
                        self.heartbeat.as_mut().reset(Instant::now() + self.heartbeat_every);
                        return Some(Ok(event));
                    }
                }
                () = self.heartbeat.as_mut() => {
                    self.heartbeat.as_mut().reset(Instant::now() + self.heartbeat_every);
                    return Some(Ok(WatchEvent::Heartbeat { watching: self.watching() }));
                }
            }
        }
    }

    /// The event for job `index`'s new state, if this stream should send one.
    fn event(&mut self, index: usize, observation: Arc<Observation>) -> Option<WatchEvent> {
        let watched = &mut self.jobs[index];
        let is_final = observation.is_final();
        let unchanged = match &watched.sent {
            Some(sent) => sent.version == observation.version,
            None => watched.resume_from == Some(observation.version),
        };
        if unchanged {
            if watched.sent.is_none() {
                watched.sent = Some(observation);
            }
            if is_final {
                // The client saw the final state before it reconnected.
                self.updates.remove(&index);
            }
            return None;
        }
        let changes = match (&watched.sent, &observation.previous) {
            (Some(sent), Some((previous, changes))) if sent.version == *previous => changes.clone(),
            (sent, _) => Changes::between(sent.as_ref().map(|s| &s.state), &observation.state),
        };
        watched.sent = Some(observation.clone());
        if is_final {
            self.updates.remove(&index);
        }
        Some(WatchEvent::Job {
            job_id: watched.job_id.clone(),
            observation,
            changes,
            last: is_final,
        })
    }
}
