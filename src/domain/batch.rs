//! A batch: many questions answered concurrently, each result sent as soon
//! as it is ready, identical questions asked once.

use std::collections::HashMap;

use tokio::{sync::mpsc, task::JoinSet};

use crate::{
    domain::{Call, ItemResult, Jobs, error::GatewayError},
    upstream::{JobQuery, UpstreamErrorKind},
};

impl Jobs {
    /// Describes each item of a batch concurrently and sends every result
    /// as soon as it is ready, tagged with its index. Invalid items (already
    /// failed) are sent first; identical questions are asked once. Stops
    /// (dropping AWS requests in flight) when the receiver goes away.
    pub fn describe_each(
        &self,
        items: Vec<Result<JobQuery, GatewayError>>,
        call: Call,
    ) -> mpsc::Receiver<ItemResult> {
        // Room for every result: sending never waits on a slow reader.
        let (tx, rx) = mpsc::channel(items.len().max(1));
        let jobs = self.clone();
        tokio::spawn(async move {
            let mut questions: Vec<(JobQuery, Vec<usize>)> = Vec::new();
            let mut seen: HashMap<JobQuery, usize> = HashMap::new();
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
                let (jobs, call) = (jobs.clone(), call.clone());
                let job_id = query.job_id.clone();
                let id = tasks
                    .spawn(async move { jobs.describe(&query, &call).await })
                    .id();
                indices_of.insert(id, (job_id, indices));
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
                let Some((job_id, indices)) = indices_of.remove(&id) else {
                    continue;
                };
                let result = result.unwrap_or_else(|()| {
                    Err(GatewayError::upstream(
                        job_id,
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
