//! The simulator's HTTP face: AWS IoT's restJson1 routes for the Jobs calls
//! the gateway and standard AWS tools use, and a small admin API under
//! `/_sim/` for tests and benchmarks.
//!
//! | route | AWS operation |
//! |---|---|
//! | `GET /jobs/{jobId}?beforeSubstitution=` | DescribeJob |
//! | `GET /things/{thingName}/jobs/{jobId}?executionNumber=` | DescribeJobExecution |
//! | `GET /jobs/{jobId}/things?status=&maxResults=&nextToken=` | ListJobExecutionsForJob |
//! | `GET /things/{thingName}/jobs?status=&namespaceId=&jobId=&maxResults=&nextToken=` | ListJobExecutionsForThing |
//! | `PUT /jobs/{jobId}` | CreateJob |
//! | `PUT /jobs/{jobId}/cancel?force=` | CancelJob |
//! | `DELETE /jobs/{jobId}?force=` | DeleteJob |
//! | `GET /_sim/stats` | call counts |
//! | `GET /_sim/calls` | DescribeJob arrival times (`{"arrivalsUs": [...]}`, µs since start) |
//! | `GET /_sim/polls` | the same per job (`{"jobId": [...]}`) |
//! | `POST /_sim/faults`, `DELETE /_sim/faults` | inject or clear faults |
//! | `POST /_sim/clock/advance` | move the simulator's time forward |
//! | `POST /_sim/jobs/{jobId}/executions/advance` | finish executions now |
//! | `GET /_sim/events/stats` | the events publisher's counters ([`super::publisher::EventsStats`]) |
//! | `POST /_sim/events` | publish `{"topic": .., "payload": ..}` as given (a JSON payload is sent as JSON text) |
//! | `POST /_sim/events/job/{jobId}/{operation}` | publish a forged job event in AWS's shape |
//! | `POST /_sim/events/jobExecution/{jobId}/{operation}?count=N` | publish N forged execution events |

use std::{
    collections::HashMap,
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{Answer, FaultRule, SimError, Simulator, ThingFilter};

type Params = Query<HashMap<String, String>>;

/// Serves the simulator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    simulator: Simulator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(simulator))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The simulator's routes.
pub fn router(simulator: Simulator) -> Router {
    Router::new()
        .route(
            "/jobs/{job_id}",
            get(describe_job).put(create_job).delete(delete_job),
        )
        .route("/jobs/{job_id}/cancel", put(cancel_job))
        .route("/jobs/{job_id}/things", get(list_job_executions_for_job))
        .route(
            "/things/{thing_name}/jobs/{job_id}",
            get(describe_job_execution),
        )
        .route(
            "/things/{thing_name}/jobs",
            get(list_job_executions_for_thing),
        )
        .route("/_sim/stats", get(stats))
        .route("/_sim/calls", get(arrivals))
        .route("/_sim/polls", get(polls))
        .route(
            "/_sim/faults",
            axum::routing::post(inject).delete(clear_faults),
        )
        .route("/_sim/clock/advance", axum::routing::post(advance_clock))
        .route(
            "/_sim/jobs/{job_id}/executions/advance",
            axum::routing::post(advance_executions),
        )
        .route("/_sim/events/stats", get(events_stats))
        .route("/_sim/events", axum::routing::post(publish_raw))
        .route(
            "/_sim/events/job/{job_id}/{operation}",
            axum::routing::post(forge_job_event),
        )
        .route(
            "/_sim/events/jobExecution/{job_id}/{operation}",
            axum::routing::post(forge_execution_events),
        )
        .with_state(simulator)
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "true")
}

async fn describe_job(
    State(sim): State<Simulator>,
    Path(job_id): Path<String>,
    Query(params): Params,
) -> Response {
    respond(sim.describe_job(&job_id, flag(&params, "beforeSubstitution"))).await
}

/// Writes an operation's answer after its injected delay.
async fn respond((answer, delay): (Answer, std::time::Duration)) -> Response {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match answer {
        Answer::Body(body) => ok(body),
        Answer::Error(err) => error(err),
        Answer::MalformedBody => {
            with_request_id((StatusCode::OK, "{\"job\": {\"jobId\": ").into_response())
        }
        Answer::ConnectionReset => {
            // Headers go out, then the body fails: hyper aborts the connection.
            let broken = tokio_stream::once(Err::<Bytes, std::io::Error>(
                std::io::ErrorKind::ConnectionReset.into(),
            ));
            with_request_id((StatusCode::OK, Body::from_stream(broken)).into_response())
        }
    }
}

/// The number in query parameter `name`, if sent; AWS's refusal if it is
/// not one.
fn number_param<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, SimError> {
    match params.get(name).map(|n| n.parse::<T>()) {
        None => Ok(None),
        Some(Ok(n)) => Ok(Some(n)),
        Some(Err(_)) => Err(SimError::new(
            400,
            "InvalidRequestException",
            format!("{name} must be a number"),
        )),
    }
}

async fn describe_job_execution(
    State(sim): State<Simulator>,
    Path((thing, job_id)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    let number = match number_param::<i64>(&params, "executionNumber") {
        Ok(number) => number,
        Err(refused) => return error(refused),
    };
    respond(sim.describe_job_execution(&job_id, &thing, number)).await
}

async fn list_job_executions_for_job(
    State(sim): State<Simulator>,
    Path(job_id): Path<String>,
    Query(params): Params,
) -> Response {
    let size = match number_param::<usize>(&params, "maxResults") {
        Ok(size) => size,
        Err(refused) => return error(refused),
    };
    let param = |name: &str| params.get(name).map(String::as_str);
    respond(sim.list_job_executions_for_job(&job_id, param("status"), size, param("nextToken")))
        .await
}

async fn list_job_executions_for_thing(
    State(sim): State<Simulator>,
    Path(thing_name): Path<String>,
    Query(params): Params,
) -> Response {
    let size = match number_param::<usize>(&params, "maxResults") {
        Ok(size) => size,
        Err(refused) => return error(refused),
    };
    let param = |name: &str| params.get(name).map(String::as_str);
    let filter = ThingFilter {
        status: param("status"),
        namespace_id: param("namespaceId"),
        job_id: param("jobId"),
    };
    respond(sim.list_job_executions_for_thing(&thing_name, filter, size, param("nextToken"))).await
}

async fn create_job(
    State(sim): State<Simulator>,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Response {
    match parse_body(&body).and_then(|body| sim.create_job(&job_id, &body)) {
        Ok(answer) => ok(answer),
        Err(err) => error(err),
    }
}

async fn cancel_job(
    State(sim): State<Simulator>,
    Path(job_id): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    match parse_body(&body).and_then(|body| sim.cancel_job(&job_id, flag(&params, "force"), &body))
    {
        Ok(answer) => ok(answer),
        Err(err) => error(err),
    }
}

async fn delete_job(
    State(sim): State<Simulator>,
    Path(job_id): Path<String>,
    Query(params): Params,
) -> Response {
    match sim.delete_job(&job_id, flag(&params, "force")) {
        Ok(()) => with_request_id(StatusCode::OK.into_response()),
        Err(err) => error(err),
    }
}

async fn stats(State(sim): State<Simulator>) -> Response {
    Json(sim.stats()).into_response()
}

async fn arrivals(State(sim): State<Simulator>) -> Response {
    Json(json!({"arrivalsUs": sim.arrivals()})).into_response()
}

async fn polls(State(sim): State<Simulator>) -> Response {
    Json(sim.polls()).into_response()
}

async fn inject(State(sim): State<Simulator>, Json(rule): Json<FaultRule>) -> StatusCode {
    sim.inject(rule);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(sim): State<Simulator>) -> StatusCode {
    sim.clear_faults();
    StatusCode::NO_CONTENT
}

/// `{"ms": 60000}`
#[derive(serde::Deserialize)]
struct ClockAdvance {
    ms: u64,
}

async fn advance_clock(State(sim): State<Simulator>, Json(req): Json<ClockAdvance>) -> Response {
    sim.advance_clock(std::time::Duration::from_millis(req.ms));
    Json(json!({"now": sim.now()})).into_response()
}

/// `{"count": 3, "outcome": "FAILED"}`
#[derive(serde::Deserialize)]
struct ExecutionsAdvance {
    count: usize,
    outcome: super::job::Outcome,
}

async fn advance_executions(
    State(sim): State<Simulator>,
    Path(job_id): Path<String>,
    Json(req): Json<ExecutionsAdvance>,
) -> Response {
    match sim.advance_executions(&job_id, req.count, req.outcome) {
        Ok(finished) => Json(json!({"finished": finished})).into_response(),
        Err(err) => error(err),
    }
}

async fn events_stats(State(sim): State<Simulator>) -> Response {
    match sim.events_stats() {
        Some(stats) => Json(stats).into_response(),
        None => error(super::publisher::PublishError::Off.into()),
    }
}

/// `{"topic": "$aws/events/job/j/completed", "payload": {...} | "text"}`
#[derive(serde::Deserialize)]
struct RawEvent {
    topic: String,
    payload: Value,
}

async fn publish_raw(State(sim): State<Simulator>, Json(req): Json<RawEvent>) -> Response {
    let payload = match req.payload {
        Value::String(text) => text,
        other => other.to_string(),
    };
    match sim.publish_raw(&req.topic, payload) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => error(err.into()),
    }
}

async fn forge_job_event(
    State(sim): State<Simulator>,
    Path((job_id, operation)): Path<(String, String)>,
) -> Response {
    match sim.forge_job_event(&job_id, &operation) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => error(err.into()),
    }
}

async fn forge_execution_events(
    State(sim): State<Simulator>,
    Path((job_id, operation)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    let count = match params.get("count").map(|c| c.parse::<usize>()) {
        None => 1,
        Some(Ok(count)) => count,
        Some(Err(_)) => return error(SimError::invalid("count must be a whole number")),
    };
    match sim.forge_execution_events(&job_id, &operation, count) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => error(err.into()),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, SimError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| SimError::invalid(format!("request body is not JSON: {e}")))
}

fn ok(body: Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_request_id(response)
}

/// An AWS error in its wire shape: status, `x-amzn-ErrorType`, `__type` and `message`.
fn error(err: SimError) -> Response {
    let body = json!({"__type": err.code, "message": err.message}).to_string();
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let error_type = format!(
        "{}:http://internal.amazon.com/coral/com.amazonaws.iot/",
        err.code
    );
    if let Ok(value) = HeaderValue::from_str(&error_type) {
        headers.insert("x-amzn-ErrorType", value);
    }
    with_request_id(response)
}

fn with_request_id(mut response: Response) -> Response {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = format!("sim-{:012}", NEXT.fetch_add(1, Ordering::Relaxed));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-amzn-RequestId", value);
    }
    response
}

/// One HTTP/1.1 exchange with a simulator at `addr` (`host:port`), as the
/// admin API's clients (tests, the load generator) need it: the status code
/// and the body. The simulator's answers always have a known length.
pub async fn admin_request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
