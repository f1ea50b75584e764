//! What the batch RPCs share, whatever operation their items ask: the
//! batch's checks before any AWS call (its size, each item's validity and
//! permission), and each item's result in wire form, noted.

use tokio::sync::mpsc::Receiver;
use tonic::{Request, Status};
use tracing::warn;

use crate::{
    domain::{Call, ItemResult, Served, Source, error::Failure, error::GatewayError},
    edge::{
        observe::{CallNote, Received},
        service::call_of,
        status::rpc_status,
        validate,
    },
    pb,
    security::auth::Caller,
    upstream::{Operation, Subject, UpstreamErrorKind},
};

/// A batch's items, checked (a bad or forbidden item fails only itself),
/// and the channel their results arrive on. The whole batch is refused
/// when it is empty or larger than the caller may send.
pub(super) fn start<O: Operation, Item>(
    request: Request<Vec<Item>>,
    note: &CallNote,
    max_batch_size: usize,
    check: impl Fn(usize, Item, &Caller) -> Result<O::Question, GatewayError>,
    ask: impl FnOnce(Vec<Result<O::Question, GatewayError>>, Call) -> Receiver<ItemResult<O>>,
) -> Result<Receiver<ItemResult<O>>, Status> {
    let caller = Caller::of(&request);
    let call = call_of(&request, &caller, Received::of(&request));
    note.caller(caller.name_shared());
    let requests = request.into_inner();
    note.batch(requests.len());
    let (max, by_policy) = caller.max_batch_size(max_batch_size);
    if let Err(err) = validate::batch_size(O::NAME, requests.len(), max, by_policy) {
        note.failed(&err);
        return Err(err.into());
    }
    let items = requests
        .into_iter()
        .enumerate()
        .map(|(index, request)| check(index, request, &caller))
        .collect();
    Ok(ask(items, call))
}

/// One item's outcome in wire form, noted: the answer and where it came
/// from, or its error as a `google.rpc.Status`. Items AWS could not answer
/// for an unexpected reason get a log line each; refusals and answers are
/// in the batch's line (and its counts).
pub(super) fn outcome<O: Operation>(
    note: &CallNote,
    method: &'static str,
    index: usize,
    subject: &Subject,
    result: Result<Served<O>, GatewayError>,
) -> (
    Result<O::Response, tonic_types::pb::Status>,
    Option<pb::CacheInfo>,
) {
    note.item(result.is_ok());
    match result {
        Ok(answer) => {
            let cache = cache_info(&answer);
            (Ok(O::Response::clone(&answer.response)), Some(cache))
        }
        Err(err) => {
            if err.failure() == Failure::Fault {
                let caller = note.caller_name();
                let caller = caller.as_deref().unwrap_or_default();
                warn!(method, caller, index, subject = %subject, code = ?err.code(), error = %err.chain(), "batch item failed");
            }
            (Err(rpc_status(err)), None)
        }
    }
}

/// An item the batch lost: a gateway defect, reported as the item's error.
pub(super) fn lost<O: Operation>(subject: &Subject) -> Result<Served<O>, GatewayError> {
    Err(GatewayError::upstream(
        subject.clone(),
        UpstreamErrorKind::Internal,
        "the gateway lost this item's answer",
    ))
}

fn cache_info<O: Operation>(answer: &Served<O>) -> pb::CacheInfo {
    use pb::cache_info::Source as Wire;
    let source = match answer.source {
        Source::Hit => Wire::Hit,
        Source::Miss => Wire::Miss,
        Source::Coalesced => Wire::Coalesced,
        Source::Stale => Wire::Stale,
    };
    pb::CacheInfo {
        source: source as i32,
        age_ms: u64::try_from(answer.age.as_millis()).unwrap_or(u64::MAX),
    }
}
