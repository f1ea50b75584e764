//! A batch: many questions answered concurrently, each result sent as soon
//! as it is ready, identical questions asked once.

use std::collections::HashMap;

use tokio::{sync::mpsc, task::JoinSet};

use crate::{
    domain::{Answers, Call, ItemResult, error::GatewayError},
    upstream::{Operation, Subject, UpstreamErrorKind},
};

impl<O: Operation> Answers<O> {
    /// Answers each item of a batch concurrently and sends every result as
    /// soon as it is ready, tagged with its index. Invalid items (already
    /// failed) are sent first; identical questions are asked once. Stops
    /// (dropping AWS requests in flight) when the receiver goes away.
    pub fn each(
        &self,
        items: Vec<Result<O::Question, GatewayError>>,
        call: Call,
    ) -> mpsc::Receiver<ItemResult<O>> {
        // Room for every result: sending never waits on a slow reader.
        let (tx, rx) = mpsc::channel(items.len().max(1));
        let answers = self.clone();
        tokio::spawn(async move {
            let mut questions: Vec<(O::Question, Vec<usize>)> = Vec::new();
            let mut seen: HashMap<O::Question, usize> = HashMap::new();
            for (index, item) in items.into_iter().enumerate() {
                match item {
                    Err(err) => {
                        if tx.send((index, Err(err))).await.is_err() {
                            return;
                        }
                    }
                    Ok(query) => match seen.get(&query) {
                        Some(&at) => questions[at].1.push(index),
                        None => {
                            seen.insert(query.clone(), questions.len());
                            questions.push((query, vec![index]));
                        }
                    },
                }
            }
            let mut tasks = JoinSet::new();
            let mut indices_of = HashMap::new();
            for (query, indices) in questions {
                let (answers, call) = (answers.clone(), call.clone());
                let subject = Subject::of::<O>(&query);
                let id = tasks
                    .spawn(async move { answers.ask(&query, &call).await })
                    .id();
                indices_of.insert(id, (subject, indices));
            }
            loop {
                let joined = tokio::select! {
                    joined = tasks.join_next_with_id() => joined,
                    () = tx.closed() => return,
                };
                let Some(joined) = joined else { return };
                let (id, result) = match joined {
                    Ok((id, result)) => (id, Ok(result)),
                    Err(failed) => (failed.id(), Err(())),
                };
                let Some((subject, indices)) = indices_of.remove(&id) else {
                    continue;
                };
                let result = result.unwrap_or_else(|()| {
                    Err(GatewayError::upstream(
                        subject,
                        UpstreamErrorKind::Internal,
                        "the gateway failed while answering this item",
                    ))
                });
                for index in indices {
                    if tx.send((index, result.clone())).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }
}
