//! A programmable stand-in for AWS IoT's DescribeJob endpoint, speaking
//! restJson1 like AWS does: `GET /jobs/{jobId}`, errors with their HTTP
//! status, `X-Amzn-ErrorType` header, `__type`/`message` body and
//! `x-amzn-RequestId`. It counts every request, and counts requests whose
//! client went away before the answer (the handler future was dropped).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch};

/// What the fake answers for a job.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this `{"documentSource":..,"job":{..}}` body.
    Job(Value),
    /// An AWS error in its real wire shape.
    AwsError {
        status: u16,
        code: &'static str,
        message: &'static str,
    },
    /// Any status and body, for malformed answers.
    Raw { status: u16, body: &'static str },
    /// Waits, then answers.
    Slow(Duration, Box<Reply>),
}

impl Reply {
    pub fn error(status: u16, code: &'static str, message: &'static str) -> Self {
        Reply::AwsError {
            status,
            code,
            message,
        }
    }

    pub fn slow(delay: Duration, then: Reply) -> Self {
        Reply::Slow(delay, Box::new(then))
    }
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub job_id: String,
    pub query: Option<String>,
    /// The access key id the request was signed with (SigV4's `Credential=`).
    pub access_key_id: Option<String>,
}

#[derive(Default)]
struct Shared {
    replies: Mutex<HashMap<String, Reply>>,
    seen: Mutex<Vec<Seen>>,
    calls: watch::Sender<usize>,
    abandoned: watch::Sender<usize>,
}

/// A running fake; stops when dropped with the test's runtime.
#[derive(Clone)]
pub struct FakeAws {
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeAws {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/jobs/{job_id}", get(describe_job))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, shared }
    }

    /// Sets the answer for `job_id` (unknown ids get ResourceNotFoundException).
    pub fn reply(&self, job_id: &str, reply: Reply) {
        self.shared
            .replies
            .lock()
            .unwrap()
            .insert(job_id.to_owned(), reply);
    }

    /// Requests received so far.
    pub fn calls(&self) -> usize {
        *self.shared.calls.borrow()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests received for `job_id`.
    pub fn calls_for(&self, job_id: &str) -> usize {
        self.seen().iter().filter(|s| s.job_id == job_id).count()
    }

    /// Waits (at most 5 s) until at least `n` requests arrived.
    pub async fn wait_for_calls(&self, n: usize) {
        wait_for(&self.shared.calls, n, "calls").await;
    }

    /// Waits (at most 5 s) until at least `n` requests were abandoned.
    pub async fn wait_for_abandoned(&self, n: usize) {
        wait_for(&self.shared.abandoned, n, "abandoned requests").await;
    }
}

async fn wait_for(counter: &watch::Sender<usize>, n: usize, what: &str) {
    let mut rx = counter.subscribe();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| *v >= n))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "expected {n} {what} at the fake AWS, saw {}",
                *counter.borrow()
            )
        })
        .unwrap();
}

/// Counts a request as abandoned if it is dropped before answering.
struct AbandonGuard {
    shared: Arc<Shared>,
    answered: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.abandoned.send_modify(|n| *n += 1);
        }
    }
}

async fn describe_job(
    State(shared): State<Arc<Shared>>,
    Path(job_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let access_key_id = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|v| v.split('/').next())
        .map(str::to_owned);
    let request_id = {
        let mut seen = shared.seen.lock().unwrap();
        seen.push(Seen {
            job_id: job_id.clone(),
            query,
            access_key_id,
        });
        format!("fake-request-{}", seen.len())
    };
    shared.calls.send_modify(|n| *n += 1);
    let mut guard = AbandonGuard {
        shared: shared.clone(),
        answered: false,
    };
    let mut reply = shared
        .replies
        .lock()
        .unwrap()
        .get(&job_id)
        .cloned()
        .unwrap_or_else(|| {
            Reply::error(
                404,
                "ResourceNotFoundException",
                "The specified resource does not exist",
            )
        });
    while let Reply::Slow(delay, then) = reply {
        tokio::time::sleep(delay).await;
        reply = *then;
    }
    guard.answered = true;
    let mut response = match reply {
        Reply::Job(body) => (StatusCode::OK, body.to_string()).into_response(),
        Reply::AwsError {
            status,
            code,
            message,
        } => {
            let body = json!({"__type": code, "message": message}).to_string();
            let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
            // AWS appends the service's namespace to the code in this header.
            let error_type = format!("{code}:http://internal.amazon.com/coral/com.amazonaws.iot/");
            r.headers_mut().insert(
                "x-amzn-ErrorType",
                HeaderValue::from_str(&error_type).unwrap(),
            );
            r
        }
        Reply::Raw { status, body } => {
            (StatusCode::from_u16(status).unwrap(), body).into_response()
        }
        Reply::Slow(..) => unreachable!("unwrapped above"),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-amzn-RequestId",
        HeaderValue::from_str(&request_id).unwrap(),
    );
    response
}

/// A DescribeJob body in AWS's wire format with every documented field set.
pub fn full_job(job_id: &str) -> Value {
    json!({
        "documentSource": "https://s3.amazonaws.com/bucket/job.json",
        "job": {
            "jobArn": format!("arn:aws:iot:us-east-1:123456789012:job/{job_id}"),
            "jobId": job_id,
            "targetSelection": "SNAPSHOT",
            "status": "IN_PROGRESS",
            "forceCanceled": false,
            "reasonCode": "ROLLBACK",
            "comment": "bad batch",
            "targets": ["arn:aws:iot:us-east-1:123456789012:thinggroup/fleet"],
            "description": "firmware 2.0",
            "presignedUrlConfig": {"roleArn": "arn:aws:iam::123456789012:role/jobs", "expiresInSec": 3600},
            "jobExecutionsRolloutConfig": {
                "maximumPerMinute": 100,
                "exponentialRate": {
                    "baseRatePerMinute": 5,
                    "incrementFactor": 1.5,
                    "rateIncreaseCriteria": {"numberOfNotifiedThings": 10, "numberOfSucceededThings": 8}
                }
            },
            "abortConfig": {"criteriaList": [
                {"failureType": "TIMED_OUT", "action": "CANCEL", "thresholdPercentage": 10.99, "minNumberOfExecutedThings": 5}
            ]},
            "createdAt": 1560787022.733,
            "lastUpdatedAt": 1560787026.294,
            "completedAt": 1560790000.001,
            "jobProcessDetails": {
                "processingTargets": ["arn:aws:iot:us-east-1:123456789012:thing/pi"],
                "numberOfCanceledThings": 1,
                "numberOfSucceededThings": 2,
                "numberOfFailedThings": 3,
                "numberOfRejectedThings": 4,
                "numberOfQueuedThings": 5,
                "numberOfInProgressThings": 6,
                "numberOfRemovedThings": 7,
                "numberOfTimedOutThings": 8
            },
            "timeoutConfig": {"inProgressTimeoutInMinutes": 30},
            "namespaceId": "greengrass",
            "jobTemplateArn": "arn:aws:iot:us-east-1:123456789012:jobtemplate/ota",
            "jobExecutionsRetryConfig": {"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]},
            "documentParameters": {"firmwareUrl": "s3://bucket/fw.bin"},
            "isConcurrent": true,
            "schedulingConfig": {
                "startTime": "2030-01-01T10:00",
                "endTime": "2030-01-02T10:00",
                "endBehavior": "STOP_ROLLOUT",
                "maintenanceWindows": [{"startTime": "cron(0 0 ? * MON *)", "durationInMinutes": 60}]
            },
            "scheduledJobRollouts": [{"startTime": "2030-01-06T00:00"}],
            "destinationPackageVersions": ["arn:aws:iot:us-east-1:123456789012:package/fw/version/2.0"]
        }
    })
}
