//! The bodies of an observed call: their gRPC messages counted as they
//! pass, and a request's messages awaited within the message timeout.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame};
use tokio::time::Instant;
use tonic::{Code, Status};

use super::{CallNote, CallRecord, Ended, Observer};
use crate::domain::error::Failure;

/// What a body's messages count as.
pub(super) enum Count {
    /// Requests of the method at this index.
    Received(Arc<Observer>, usize),
    /// Responses of this call, which ends with the body.
    Sent(Option<CallRecord>),
}

/// How much of a request must arrive within the message timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Until {
    /// Its first message.
    FirstMessage,
    /// All of it.
    End,
}

/// A request still awaited: the deadline for its messages.
pub(super) struct Awaited {
    pub(super) until: Until,
    pub(super) at: Instant,
    /// Made only once the request keeps the call waiting: most arrive
    /// whole with their headers and never need one.
    pub(super) timer: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) note: Arc<CallNote>,
    pub(super) timeout: Duration,
}

impl Awaited {
    /// Whether the deadline has passed (and, if not, wakes `cx` at it).
    fn passed(&mut self, cx: &mut Context<'_>) -> bool {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(self.at)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// The status that ends the call, noted as a refusal: the client held
    /// a stream open without sending its request.
    fn expired(&self) -> Status {
        let message = format!(
            "the request's message did not arrive within {} ms of its headers \
             (--request-message-timeout); send the request with its headers",
            self.timeout.as_millis()
        );
        let mut details = self.note.details();
        details.cause = Some(message.clone());
        details.failure = Some(Failure::Refusal);
        Status::deadline_exceeded(message)
    }
}

pin_project_lite::pin_project! {
    /// A body whose gRPC messages are counted as they pass (and, for a
    /// request, that must arrive in time).
    pub(super) struct Counted<B> {
        #[pin]
        pub(super) body: B,
        pub(super) frames: Frames,
        pub(super) count: Count,
        pub(super) awaited: Option<Awaited>,
    }

    impl<B> PinnedDrop for Counted<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its trailers: the client left mid-stream.
            if let Count::Sent(call) = this.project().count
                && let Some(call) = call.take()
            {
                call.finish(Ended::Dropped);
            }
        }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = match this.body.poll_frame(cx) {
            Poll::Ready(frame) => frame.map(|frame| frame.map_err(Into::into)),
            Poll::Pending => {
                if let Some(awaited) = this.awaited
                    && awaited.passed(cx)
                {
                    let status = awaited.expired();
                    *this.awaited = None;
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                return Poll::Pending;
            }
        };
        if frame.is_none() {
            *this.awaited = None;
        }
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let messages = this.frames.feed(data.chunk());
                    if messages > 0
                        && this
                            .awaited
                            .as_ref()
                            .is_some_and(|a| a.until == Until::FirstMessage)
                    {
                        *this.awaited = None;
                    }
                    match this.count {
                        Count::Received(observer, method) => observer
                            .metrics
                            .received(observer.metrics.at(*method), messages),
                        Count::Sent(Some(call)) => {
                            call.observer.metrics.sent(call.method(), messages)
                        }
                        Count::Sent(None) => {}
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Count::Sent(call) = this.count
                    && let Some(call) = call.take()
                {
                    let ended = Ended::from_headers(trailers).unwrap_or_else(|| {
                        let missing = "the response ended without a status".to_owned();
                        Ended::Status(Code::Unknown, Some(missing))
                    });
                    call.finish(ended);
                }
            }
            Some(Err(_)) | None => {
                if let Count::Sent(call) = this.count
                    && let Some(call) = call.take()
                {
                    let ended = match frame {
                        None => Ended::Status(
                            Code::Unknown,
                            Some("the response ended without a status".to_owned()),
                        ),
                        Some(_) => Ended::Status(
                            Code::Internal,
                            Some("the response body failed".to_owned()),
                        ),
                    };
                    call.finish(ended);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Finds gRPC message boundaries in a byte stream: each message is a
/// 5-byte prefix (compressed flag, big-endian length) and its bytes, and
/// either may be split across chunks.
#[derive(Debug, Default)]
pub(super) struct Frames {
    /// Bytes of the current message still to skip.
    remaining: u64,
    /// Prefix bytes seen so far.
    prefix: [u8; 5],
    filled: usize,
}

impl Frames {
    /// Reads `chunk`; returns how many messages started in it.
    fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        let mut started = 0;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip =
                    usize::try_from(self.remaining).map_or(chunk.len(), |r| r.min(chunk.len()));
                chunk = &chunk[skip..];
                self.remaining -= skip as u64;
                continue;
            }
            let take = (5 - self.filled).min(chunk.len());
            self.prefix[self.filled..self.filled + take].copy_from_slice(&chunk[..take]);
            self.filled += take;
            chunk = &chunk[take..];
            if self.filled == 5 {
                started += 1;
                self.filled = 0;
                let length = [
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ];
                self.remaining = u64::from(u32::from_be_bytes(length));
            }
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, len as usize));
        bytes
    }

    #[test]
    fn messages_are_counted_however_the_chunks_split_them() {
        let stream: Vec<u8> = [message(3), message(0), message(300), message(1)].concat();
        for size in [1, 2, 4, 5, 6, 7, 64, stream.len()] {
            let mut frames = Frames::default();
            let counted: u64 = stream.chunks(size).map(|c| frames.feed(c)).sum();
            assert_eq!(counted, 4, "chunks of {size}");
        }
    }
}
