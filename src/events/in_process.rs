//! Events from inside the process: the demo's simulator hands the AWS IoT
//! Jobs events it makes straight to the gateway, with no broker between.

use std::pin::Pin;

use futures_util::{Stream, StreamExt as _};
use tokio::task::JoinHandle;

use crate::events::{EventSource, Listener};

/// A stream of event topics (in the order they were made).
pub struct InProcess {
    topics: Pin<Box<dyn Stream<Item = String> + Send>>,
}

impl InProcess {
    /// A source reading `topics` until it ends.
    pub fn new(topics: impl Stream<Item = String> + Send + 'static) -> Self {
        Self {
            topics: Box::pin(topics),
        }
    }
}

impl EventSource for InProcess {
    fn start(self: Box<Self>, listener: Listener) -> JoinHandle<()> {
        let mut topics = self.topics;
        tokio::spawn(async move {
            // Connected from the start, so every watched job is polled once
            // as a broker's first connection does.
            listener.connected();
            while let Some(topic) = topics.next().await {
                listener.event(&topic).await;
            }
        })
    }
}
