//! An embedded stand-in for the AWS IoT Jobs control plane.
//!
//! It speaks AWS IoT's restJson1 protocol ([`http`]) for DescribeJob,
//! CreateJob, CancelJob and DeleteJob, so the gateway's real aws-sdk-iot
//! path — and boto3 or the AWS CLI with `--endpoint-url` — run unchanged
//! against it. Jobs follow AWS's lifecycle on a [`clock::Clock`] that tests
//! can drive ([`job`]). Tests and benchmarks program it through this Rust
//! API or the admin HTTP API: inject faults, enforce a rate limit, and count
//! how many DescribeJob calls reached "AWS". Given an MQTT broker, it also
//! publishes AWS IoT Jobs events as AWS does ([`events`], [`publisher`]).

pub mod clock;
pub mod events;
pub mod http;
pub mod job;
pub mod publisher;
pub mod schedule;
pub mod seed;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use self::{
    clock::{Clock, EpochMillis},
    job::{Cancellation, Execution, Outcome, SimJob},
};

/// Tunables of a simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub region: String,
    pub account: String,
    /// Things a thing-group target stands for.
    pub group_size: usize,
    /// Gap between two executions starting, unless the job's rollout config
    /// sets `maximumPerMinute`.
    pub execution_interval: Duration,
    /// How long one execution runs.
    pub execution_duration: Duration,
    /// How long a deleted job reads as DELETION_IN_PROGRESS.
    pub deletion_delay: Duration,
    /// DescribeJob calls per second before ThrottlingException (AWS's
    /// default quota is 10); `None` turns the limit off.
    pub describe_rate_limit: Option<u32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account: "123456789012".into(),
            group_size: 10,
            execution_interval: Duration::from_secs(1),
            execution_duration: Duration::from_secs(5),
            deletion_delay: Duration::from_secs(3),
            describe_rate_limit: Some(10),
        }
    }
}

/// An AWS error as the simulator sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl SimError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found(job_id: &str) -> Self {
        Self::new(
            404,
            "ResourceNotFoundException",
            format!("Job {job_id} does not exist."),
        )
    }

    fn throttled() -> Self {
        Self::new(400, "ThrottlingException", "Rate exceeded")
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequestException", message)
    }
}

/// A failure the simulator injects into DescribeJob answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Fault {
    /// Answer after this delay (other faults still apply).
    Latency {
        ms: u64,
    },
    ThrottlingException,
    ServiceUnavailableException,
    InternalFailure,
    /// Drop the connection mid-answer.
    ConnectionReset,
    /// Answer 200 with a body that is not JSON.
    MalformedBody,
}

impl Fault {
    /// The answer this fault gives instead of the operation's, if it is a
    /// failure (a latency only delays the real answer).
    fn failure(&self) -> Option<Answer> {
        Some(match self {
            Self::Latency { .. } => return None,
            Self::ThrottlingException => Answer::Error(SimError::throttled()),
            Self::ServiceUnavailableException => Answer::Error(SimError::new(
                503,
                "ServiceUnavailableException",
                "Service is unavailable.",
            )),
            Self::InternalFailure => Answer::Error(SimError::new(
                500,
                "InternalFailure",
                "An internal error occurred.",
            )),
            Self::ConnectionReset => Answer::ConnectionReset,
            Self::MalformedBody => Answer::MalformedBody,
        })
    }
}

/// The AWS operations the simulator answers, as faults are aimed at them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AwsOperation {
    #[default]
    DescribeJob,
    DescribeJobExecution,
    ListJobExecutionsForJob,
    ListJobExecutionsForThing,
}

/// A fault and where it applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    #[serde(flatten)]
    pub fault: Fault,
    /// The operation it hits: DescribeJob when absent.
    #[serde(default)]
    pub operation: AwsOperation,
    /// Only calls naming this job (a ListJobExecutionsForThing call names
    /// one with its `jobId` filter); every call when absent.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Apply to this many calls, then lapse; forever when absent.
    #[serde(default)]
    pub times: Option<u32>,
}

/// How many DescribeJob arrival times the simulator remembers (for
/// [`Simulator::arrivals`] and [`Simulator::polls`] together).
pub const ARRIVALS_KEPT: usize = 200_000;

/// How many DescribeJob calls reached the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallStats {
    pub describe_job_calls: u64,
    /// DescribeJobExecution calls (they have their own quota at AWS, so
    /// they pass no rate limit here).
    pub describe_job_execution_calls: u64,
    /// ListJobExecutionsForThing calls (pages asked for), likewise.
    pub list_job_executions_for_thing_calls: u64,
    /// ListJobExecutionsForJob calls (pages asked for), likewise.
    pub list_job_executions_for_job_calls: u64,
    pub per_job: BTreeMap<String, u64>,
    /// Calls in each whole second since the simulator started.
    pub per_second: BTreeMap<u64, u64>,
    /// Calls answered with ThrottlingException by the rate limit.
    pub throttled: u64,
}

/// What an operation answers, before it is written to the wire.
#[derive(Clone, Debug)]
pub enum Answer {
    /// The operation's answer, as AWS writes it.
    Body(Value),
    Error(SimError),
    ConnectionReset,
    MalformedBody,
}

struct State {
    jobs: BTreeMap<String, SimJob>,
    faults: Vec<FaultRule>,
    stats: CallStats,
    /// When recent DescribeJob calls arrived, in µs since the simulator
    /// started (the last [`ARRIVALS_KEPT`]), each with the index of its job
    /// id in `asked`.
    arrivals: std::collections::VecDeque<(usize, u64)>,
    /// Every job id DescribeJob was asked about, in order of first call,
    /// and the reverse map: arrivals name their job by index, not by a copy.
    asked: Vec<String>,
    asked_index: std::collections::HashMap<String, usize>,
    /// Token bucket of the DescribeJob rate limit.
    tokens: f64,
    refilled: Instant,
    /// The events publisher, once [`Simulator::publish_events_to`] started it.
    events: Option<publisher::Events>,
}

impl From<Result<Value, SimError>> for Answer {
    fn from(result: Result<Value, SimError>) -> Self {
        match result {
            Ok(body) => Self::Body(body),
            Err(err) => Self::Error(err),
        }
    }
}

/// A running simulator; clones share state.
#[derive(Clone)]
pub struct Simulator {
    config: Arc<SimConfig>,
    clock: Arc<dyn Clock>,
    started: Instant,
    /// Added to the clock's time; the admin API moves it forward.
    offset: Arc<std::sync::atomic::AtomicI64>,
    state: Arc<Mutex<State>>,
}

impl Simulator {
    /// An empty simulator on `clock`.
    pub fn new(config: SimConfig, clock: Arc<dyn Clock>) -> Self {
        let tokens = f64::from(config.describe_rate_limit.unwrap_or(0));
        Self {
            config: Arc::new(config),
            clock,
            started: Instant::now(),
            offset: Arc::default(),
            state: Arc::new(Mutex::new(State {
                jobs: BTreeMap::new(),
                faults: Vec::new(),
                stats: CallStats::default(),
                arrivals: std::collections::VecDeque::new(),
                asked: Vec::new(),
                asked_index: std::collections::HashMap::new(),
                tokens,
                refilled: Instant::now(),
                events: None,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in
        // a way later readers could not handle, so a poisoned lock is reused.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The simulator's current time.
    pub fn now(&self) -> EpochMillis {
        self.clock
            .now()
            .saturating_add(self.offset.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Moves the simulator's time forward, whatever its clock.
    pub fn advance_clock(&self, by: Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        let _ = self.offset.fetch_update(SeqCst, SeqCst, |offset| {
            Some(offset.saturating_add(millis(by)))
        });
        self.scan_events();
    }

    /// Finishes the next `count` unfinished executions of a job now, with
    /// `outcome`; returns how many were finished.
    pub fn advance_executions(
        &self,
        job_id: &str,
        count: usize,
        outcome: Outcome,
    ) -> Result<usize, SimError> {
        self.with_job(job_id, |job, now| {
            let unfinished: Vec<usize> = (0..job.executions.len())
                .filter(|&i| {
                    matches!(
                        job.execution_state(&job.executions[i], now),
                        job::ExecutionState::Queued | job::ExecutionState::InProgress
                    )
                })
                .take(count)
                .collect();
            for &i in &unfinished {
                let e = &mut job.executions[i];
                e.starts_at = e.starts_at.min(now);
                e.ends_at = now;
                e.outcome = outcome;
            }
            Ok(unfinished.len())
        })
    }

    /// CreateJob: `body` is the AWS CreateJob request JSON.
    pub fn create_job(&self, job_id: &str, body: &Value) -> Result<Value, SimError> {
        let now = self.now();
        let mut state = self.state();
        self.purge_if_gone(&mut state, job_id, now);
        if state.jobs.contains_key(job_id) {
            return Err(SimError::new(
                409,
                "ResourceAlreadyExistsException",
                format!("Job {job_id} already exists."),
            ));
        }
        let job = self.build_job(job_id, body, now)?;
        let answer =
            json!({"jobArn": job.arn, "jobId": job_id, "description": body.get("description")});
        state.jobs.insert(job_id.to_owned(), job);
        state.track(job_id, now);
        Ok(answer)
    }

    fn build_job(&self, job_id: &str, body: &Value, now: EpochMillis) -> Result<SimJob, SimError> {
        let targets: Vec<String> = body
            .get("targets")
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if targets.is_empty() {
            return Err(SimError::invalid(
                "targets must name at least one thing or thing group",
            ));
        }
        let continuous = match body.get("targetSelection").and_then(Value::as_str) {
            None | Some("SNAPSHOT") => false,
            Some("CONTINUOUS") => true,
            Some(other) => {
                return Err(SimError::invalid(format!(
                    "unknown targetSelection {other}"
                )));
            }
        };
        let rollout_starts_at = match body
            .pointer("/schedulingConfig/startTime")
            .and_then(Value::as_str)
        {
            Some(start) => parse_schedule_time(start)?,
            None => now,
        };
        let interval = body
            .pointer("/jobExecutionsRolloutConfig/maximumPerMinute")
            .and_then(Value::as_i64)
            .filter(|m| *m > 0)
            .map(|per_minute| 60_000 / per_minute)
            .unwrap_or_else(|| millis(self.config.execution_interval));
        let duration = millis(self.config.execution_duration);
        let windows = maintenance_windows(body)?;
        let executions = self
            .things(&targets)
            .into_iter()
            .enumerate()
            .map(|(i, thing)| {
                let starts_at =
                    schedule::after_window_time(&windows, rollout_starts_at, interval * i as i64);
                Execution {
                    thing,
                    starts_at,
                    ends_at: starts_at + duration,
                    outcome: Outcome::Succeeded,
                    removed_at: None,
                }
            })
            .collect();
        let echoed: Map<String, Value> = ECHOED
            .iter()
            .filter_map(|key| body.get(*key).map(|v| ((*key).to_owned(), v.clone())))
            .collect();
        let document_parameters = body
            .get("documentParameters")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(SimJob {
            job_id: job_id.to_owned(),
            arn: self.arn("job", job_id),
            continuous,
            targets,
            document_source: body
                .get("documentSource")
                .and_then(Value::as_str)
                .map(str::to_owned),
            document_parameters,
            echoed,
            rollout_starts_at,
            windows,
            created_at: now,
            executions,
            canceled: None,
            deleting_since: None,
        })
    }

    /// The ARN of an IoT resource in the simulated account and region.
    pub fn arn(&self, kind: &str, name: &str) -> String {
        format!(
            "arn:aws:iot:{}:{}:{kind}/{name}",
            self.config.region, self.config.account
        )
    }

    /// The things a list of targets stands for.
    fn things(&self, targets: &[String]) -> Vec<String> {
        let mut things = Vec::new();
        for target in targets {
            let name = target.rsplit('/').next().unwrap_or(target);
            if target.contains(":thinggroup/") {
                things.extend((1..=self.config.group_size).map(|n| format!("{name}-{n}")));
            } else {
                things.push(name.to_owned());
            }
        }
        things
    }

    /// Changes a job through the Rust API (set outcomes, remove things, ...).
    pub fn update_job(
        &self,
        job_id: &str,
        change: impl FnOnce(&mut SimJob),
    ) -> Result<(), SimError> {
        self.with_job(job_id, |job, _| {
            change(job);
            Ok(())
        })
    }

    /// Runs `f` on a job (or answers ResourceNotFoundException) with the
    /// simulator's current time, under the state lock.
    fn with_job<T>(
        &self,
        job_id: &str,
        f: impl FnOnce(&mut SimJob, EpochMillis) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        let now = self.now();
        let mut state = self.state();
        self.purge_if_gone(&mut state, job_id, now);
        let job = state
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| SimError::not_found(job_id))?;
        let result = f(job, now);
        state.track(job_id, now);
        result
    }

    /// CancelJob.
    pub fn cancel_job(&self, job_id: &str, force: bool, body: &Value) -> Result<Value, SimError> {
        self.with_job(job_id, |job, now| {
        match job.status(now) {
            "IN_PROGRESS" | "SCHEDULED" => {}
            other => {
                return Err(SimError::new(
                    409,
                    "InvalidStateTransitionException",
                    format!("Job {job_id} is {other} and cannot be canceled."),
                ));
            }
        }
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        job.canceled = Some(Cancellation {
            at: now,
            reason_code: text("reasonCode"),
            comment: text("comment"),
            force,
        });
        Ok(
            json!({"jobArn": job.arn, "jobId": job_id, "description": job.echoed.get("description")}),
        )
        })
    }

    /// DeleteJob: the job reads DELETION_IN_PROGRESS, then disappears.
    pub fn delete_job(&self, job_id: &str, force: bool) -> Result<(), SimError> {
        self.with_job(job_id, |job, now| {
            if job.status(now) == "IN_PROGRESS" && !force {
                return Err(SimError::new(
                    409,
                    "InvalidStateTransitionException",
                    format!("Job {job_id} is IN_PROGRESS; delete it with force=true."),
                ));
            }
            job.deleting_since.get_or_insert(now);
            Ok(())
        })
    }

    /// DescribeJob, with counting, the rate limit and injected faults.
    pub fn describe_job(&self, job_id: &str, before_substitution: bool) -> (Answer, Duration) {
        let now = self.now();
        let mut state = self.state();
        let since_start = self.started.elapsed();
        let second = since_start.as_secs();
        if state.arrivals.len() == ARRIVALS_KEPT {
            state.arrivals.pop_front();
        }
        let micros = u64::try_from(since_start.as_micros()).unwrap_or(u64::MAX);
        let job = state.job_index(job_id);
        state.arrivals.push_back((job, micros));
        state.stats.describe_job_calls += 1;
        match state.stats.per_job.get_mut(job_id) {
            Some(calls) => *calls += 1,
            None => {
                state.stats.per_job.insert(job_id.to_owned(), 1);
            }
        }
        *state.stats.per_second.entry(second).or_default() += 1;

        if !self.take_token(&mut state) {
            state.stats.throttled += 1;
            return (Answer::Error(SimError::throttled()), Duration::ZERO);
        }
        let (failure, delay) = take_faults(&mut state.faults, AwsOperation::DescribeJob, job_id);
        let answer =
            failure.unwrap_or_else(|| self.read_job(&mut state, job_id, now, before_substitution));
        (answer, delay)
    }

    /// DescribeJobExecution: one thing's execution of a job, counted, with
    /// the faults aimed at it (the rate limit is DescribeJob's only).
    pub fn describe_job_execution(
        &self,
        job_id: &str,
        thing: &str,
        execution_number: Option<i64>,
    ) -> (Answer, Duration) {
        let mut state = self.state();
        state.stats.describe_job_execution_calls += 1;
        let operation = AwsOperation::DescribeJobExecution;
        let (failure, delay) = take_faults(&mut state.faults, operation, job_id);
        let answer = failure.unwrap_or_else(|| {
            self.read_execution(&mut state, job_id, thing, execution_number)
                .into()
        });
        (answer, delay)
    }

    fn read_execution(
        &self,
        state: &mut State,
        job_id: &str,
        thing: &str,
        execution_number: Option<i64>,
    ) -> Result<Value, SimError> {
        let now = self.now();
        self.purge_if_gone(state, job_id, now);
        let thing_arn = self.arn("thing", thing);
        state
            .jobs
            .get(job_id)
            .filter(|_| execution_number.is_none_or(|n| n == 1))
            .and_then(|job| job.describe_execution(thing, &thing_arn, now))
            .ok_or_else(|| {
                SimError::new(
                    404,
                    "ResourceNotFoundException",
                    format!("Job Execution for job {job_id} on thing {thing} does not exist."),
                )
            })
    }

    /// ListJobExecutionsForJob: one page of a job's executions in the
    /// order its things were targeted, `max_results` long (10 when left
    /// out; AWS does not document its own default), optionally of one
    /// status; `next_token` is opaque, as AWS's is. Counted, with the
    /// faults aimed at it.
    pub fn list_job_executions_for_job(
        &self,
        job_id: &str,
        status: Option<&str>,
        max_results: Option<usize>,
        next_token: Option<&str>,
    ) -> (Answer, Duration) {
        let mut state = self.state();
        state.stats.list_job_executions_for_job_calls += 1;
        let operation = AwsOperation::ListJobExecutionsForJob;
        let (failure, delay) = take_faults(&mut state.faults, operation, job_id);
        let answer = failure.unwrap_or_else(|| {
            self.job_page(&mut state, job_id, status, max_results, next_token)
                .into()
        });
        (answer, delay)
    }

    fn job_page(
        &self,
        state: &mut State,
        job_id: &str,
        status: Option<&str>,
        max_results: Option<usize>,
        next_token: Option<&str>,
    ) -> Result<Value, SimError> {
        let now = self.now();
        self.purge_if_gone(state, job_id, now);
        let (start, size) = page_bounds(max_results, next_token, job_id)?;
        let job = state
            .jobs
            .get(job_id)
            .ok_or_else(|| SimError::not_found(job_id))?;
        let matching = job.executions.iter().filter_map(|e| {
            let summary = job.summary(e, now);
            if status.is_some_and(|wanted| summary["status"] != wanted) {
                return None;
            }
            let arn = self.arn("thing", &e.thing);
            Some(json!({"thingArn": arn, "jobExecutionSummary": summary}))
        });
        Ok(one_page(matching, job_id, start, size))
    }

    /// ListJobExecutionsForThing: one page of the executions on `thing`,
    /// by job id, paged and filtered as [`Simulator::list_job_executions_for_job`]
    /// pages; a thing no job targets has none (as moto answers). A
    /// `namespace_id` keeps the jobs created with it. Counted, with the
    /// faults aimed at it.
    pub fn list_job_executions_for_thing(
        &self,
        thing: &str,
        filter: ThingFilter<'_>,
        max_results: Option<usize>,
        next_token: Option<&str>,
    ) -> (Answer, Duration) {
        let mut state = self.state();
        state.stats.list_job_executions_for_thing_calls += 1;
        let operation = AwsOperation::ListJobExecutionsForThing;
        let job_id = filter.job_id.unwrap_or_default();
        let (failure, delay) = take_faults(&mut state.faults, operation, job_id);
        let answer = failure.unwrap_or_else(|| {
            self.thing_page(&state, thing, filter, max_results, next_token)
                .into()
        });
        (answer, delay)
    }

    fn thing_page(
        &self,
        state: &State,
        thing: &str,
        filter: ThingFilter<'_>,
        max_results: Option<usize>,
        next_token: Option<&str>,
    ) -> Result<Value, SimError> {
        let now = self.now();
        let (start, size) = page_bounds(max_results, next_token, thing)?;
        let matching = state
            .jobs
            .values()
            .filter(|job| {
                filter.namespace_id.is_none_or(|ns| {
                    job.echoed.get("namespaceId").and_then(Value::as_str) == Some(ns)
                })
            })
            .filter(|job| filter.job_id.is_none_or(|id| id == job.job_id))
            .filter_map(|job| {
                let e = job.executions.iter().find(|e| e.thing == thing)?;
                let summary = job.summary(e, now);
                if filter
                    .status
                    .is_some_and(|wanted| summary["status"] != wanted)
                {
                    return None;
                }
                Some(json!({"jobId": job.job_id, "jobExecutionSummary": summary}))
            });
        Ok(one_page(matching, thing, start, size))
    }

    fn read_job(
        &self,
        state: &mut State,
        job_id: &str,
        now: EpochMillis,
        before_substitution: bool,
    ) -> Answer {
        self.purge_if_gone(state, job_id, now);
        state.track(job_id, now);
        match state.jobs.get(job_id) {
            Some(job) => Answer::Body(job.describe(now, before_substitution)),
            None => Answer::Error(SimError::not_found(job_id)),
        }
    }

    /// Forgets a job whose deletion has finished, so every operation sees
    /// it gone (and its id can be used again), as in AWS.
    fn purge_if_gone(&self, state: &mut State, job_id: &str, now: EpochMillis) {
        let gone = state
            .jobs
            .get(job_id)
            .and_then(|j| j.deleting_since)
            .is_some_and(|since| now >= since + millis(self.config.deletion_delay));
        if gone
            && let Some(job) = state.jobs.remove(job_id)
            && let Some(events) = state.events.as_mut()
        {
            events.tracker.gone(&job, now);
        }
    }

    /// Takes a rate-limit token, refilling at the configured rate (burst = rate).
    fn take_token(&self, state: &mut State) -> bool {
        let Some(rate) = self.config.describe_rate_limit else {
            return true;
        };
        let rate = f64::from(rate);
        let now = Instant::now();
        let elapsed = now.duration_since(state.refilled).as_secs_f64();
        state.refilled = now;
        state.tokens = (state.tokens + elapsed * rate).min(rate);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Adds a fault rule.
    pub fn inject(&self, rule: FaultRule) {
        self.state().faults.push(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// What reached the simulator so far.
    pub fn stats(&self) -> CallStats {
        self.state().stats.clone()
    }

    /// When the most recent DescribeJob calls arrived (at most
    /// [`ARRIVALS_KEPT`]), in µs since the simulator started, oldest first.
    pub fn arrivals(&self) -> Vec<u64> {
        self.state().arrivals.iter().map(|&(_, us)| us).collect()
    }

    /// The same arrival times grouped by job id: when each job was asked
    /// about, oldest first (the last [`ARRIVALS_KEPT`] calls of all jobs).
    pub fn polls(&self) -> BTreeMap<String, Vec<u64>> {
        let state = self.state();
        let mut by_index: Vec<Vec<u64>> = vec![Vec::new(); state.asked.len()];
        for &(job, us) in &state.arrivals {
            by_index[job].push(us);
        }
        state
            .asked
            .iter()
            .zip(by_index)
            .filter(|(_, polls)| !polls.is_empty())
            .map(|(id, polls)| (id.clone(), polls))
            .collect()
    }
}

impl State {
    /// Publishes what changed about `job_id`, when events are on.
    fn track(&mut self, job_id: &str, now: EpochMillis) {
        if let (Some(events), Some(job)) = (self.events.as_mut(), self.jobs.get(job_id)) {
            events.tracker.scan_job(job, now, true);
        }
    }

    /// The index of `job_id` in `asked`, adding it on its first call.
    fn job_index(&mut self, job_id: &str) -> usize {
        if let Some(&index) = self.asked_index.get(job_id) {
            return index;
        }
        let index = self.asked.len();
        self.asked.push(job_id.to_owned());
        self.asked_index.insert(job_id.to_owned(), index);
        index
    }
}

/// The CreateJob fields DescribeJob reports back unchanged.
const ECHOED: &[&str] = &[
    "description",
    "presignedUrlConfig",
    "jobExecutionsRolloutConfig",
    "abortConfig",
    "timeoutConfig",
    "namespaceId",
    "jobTemplateArn",
    "jobExecutionsRetryConfig",
    "schedulingConfig",
    "destinationPackageVersions",
];

/// Picks the fault for this call: the delay of every matching latency rule,
/// and the first matching failure. Rules with a count use one up.
fn take_faults(
    rules: &mut Vec<FaultRule>,
    operation: AwsOperation,
    job_id: &str,
) -> (Option<Answer>, Duration) {
    let mut delay = Duration::ZERO;
    let mut failure = None;
    for rule in rules.iter_mut() {
        if rule.operation != operation
            || rule.job_id.as_deref().is_some_and(|id| id != job_id)
            || rule.times == Some(0)
        {
            continue;
        }
        match &rule.fault {
            Fault::Latency { ms } => delay += Duration::from_millis(*ms),
            _ if failure.is_some() => continue,
            other => failure = other.failure(),
        }
        if let Some(times) = rule.times.as_mut() {
            *times -= 1;
        }
    }
    rules.retain(|r| r.times != Some(0));
    (failure, delay)
}

/// The job's maintenance windows, or InvalidRequestException for a cron
/// expression outside the subset the simulator understands.
fn maintenance_windows(body: &Value) -> Result<Vec<schedule::Window>, SimError> {
    let Some(windows) = body
        .pointer("/schedulingConfig/maintenanceWindows")
        .and_then(Value::as_array)
    else {
        return Ok(Vec::new());
    };
    windows
        .iter()
        .map(|w| {
            let cron = w
                .get("startTime")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let minutes = w
                .get("durationInMinutes")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            schedule::Window::parse(cron, minutes).ok_or_else(|| {
                SimError::invalid(format!(
                    "maintenance window {cron:?} ({minutes} min): the simulator understands daily \
                     cron(M H * * ? *) and weekly cron(M H ? * DAY *) windows of at least a minute"
                ))
            })
        })
        .collect()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Parses AWS's scheduling time (`YYYY-MM-DDTHH:MM`, UTC) to epoch millis.
fn parse_schedule_time(text: &str) -> Result<EpochMillis, SimError> {
    use aws_smithy_types::{DateTime, date_time::Format};
    let full = if text.len() == 16 {
        format!("{text}:00Z")
    } else {
        text.to_owned()
    };
    DateTime::from_str(&full, Format::DateTime)
        .map(|t| t.to_millis().unwrap_or(i64::MAX))
        .map_err(|_| {
            SimError::invalid(format!(
                "schedulingConfig.startTime {text:?} is not YYYY-MM-DDTHH:MM"
            ))
        })
}

/// The most arrivals (µs, ascending, as [`Simulator::arrivals`] gives them)
/// in any sliding second: what AWS's per-second quota sees.
pub fn busiest_second(arrivals: &[u64]) -> usize {
    let mut busiest = 0;
    let mut j = 0;
    for i in 0..arrivals.len() {
        while j < arrivals.len() && arrivals[j] < arrivals[i] + 1_000_000 {
            j += 1;
        }
        busiest = busiest.max(j - i);
    }
    busiest
}

/// What ListJobExecutionsForThing may narrow its listing to.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThingFilter<'a> {
    /// One status.
    pub status: Option<&'a str>,
    /// One namespace.
    pub namespace_id: Option<&'a str>,
    /// One job.
    pub job_id: Option<&'a str>,
}

/// The page of `size` listed items from `start` on, with the opaque token
/// of the next page (for listings of `of`) when there is one.
fn one_page(mut items: impl Iterator<Item = Value>, of: &str, start: usize, size: usize) -> Value {
    use base64::Engine as _;
    let page: Vec<Value> = items.by_ref().skip(start).take(size).collect();
    let mut body = json!({"executionSummaries": page});
    if items.next().is_some() {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{of}@{}", start + size));
        body["nextToken"] = json!(token);
    }
    body
}

/// Where a page of a listing of `of` starts and how long it is: 10 items
/// unless `max_results` (1 to 250) says otherwise, from the start or where
/// `next_token` says.
fn page_bounds(
    max_results: Option<usize>,
    next_token: Option<&str>,
    of: &str,
) -> Result<(usize, usize), SimError> {
    let invalid = |message: &str| SimError::new(400, "InvalidRequestException", message);
    let size = max_results.unwrap_or(10);
    if !(1..=250).contains(&size) {
        return Err(invalid("maxResults must be between 1 and 250"));
    }
    let start = match next_token {
        None => 0,
        Some(token) => {
            page_start(token, of).ok_or_else(|| invalid("The nextToken is not valid."))?
        }
    };
    Ok((start, size))
}

/// Where a listing of `of` continues, from a token [`one_page`] gave.
fn page_start(token: &str, of: &str) -> Option<usize> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (listed, offset) = text.rsplit_once('@')?;
    (listed == of).then(|| offset.parse().ok())?
}
