//! Whole listings: every page of a job's executions (optionally of one
//! status), walked through AWS once however many callers want it.
//!
//! The first caller starts a walk: page after page of 250 (AWS's largest,
//! the fewest calls) through ListJobExecutionsForJob's own answers, so each
//! page spends that operation's budget, is cached and coalesced (across
//! replicas too, with Redis). A caller asking for the same listing while it
//! is walked joins it: it is sent the pages already fetched, then each new
//! one as it arrives. A finished listing is kept for `--cache-ttl`, so a
//! caller shortly after costs AWS nothing; a failed one is forgotten at
//! once. When every caller of a walk has gone, the walk stops.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use futures_util::Stream;
use tokio::sync::watch;

use crate::{
    domain::{Answers, Call, error::GatewayError},
    pb,
    upstream::{JobExecutionsPage, ListJobExecutionsForJob},
};

/// AWS's largest page of a job's executions.
pub const PAGE_SIZE: i32 = 250;

/// Which listing: a job, and only executions of one status if set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListingQuery {
    /// The job id; already checked against AWS's pattern.
    pub job_id: String,
    /// Only executions in this status (AWS's name).
    pub status: Option<&'static str>,
}

/// The pages of one listing so far, and how it ended (once it has).
#[derive(Debug, Default)]
struct Progress {
    pages: Vec<Arc<pb::ListJobExecutionsForJobResponse>>,
    end: Option<Result<(), GatewayError>>,
}

type Walk = watch::Sender<Progress>;

/// The listings being walked or kept, by question.
pub struct Listings {
    pages: Answers<ListJobExecutionsForJob>,
    /// How long a finished listing is kept.
    keep: Duration,
    walks: Arc<Mutex<HashMap<ListingQuery, Arc<Walk>>>>,
}

/// One page of a listing, as a caller is sent it.
#[derive(Debug, Clone)]
pub struct ListedPage {
    /// Its place in the listing, from 0.
    pub index: usize,
    /// The page, as AWS gave it.
    pub page: Arc<pb::ListJobExecutionsForJobResponse>,
}

impl Listings {
    /// Listings over `pages`, finished ones kept for `keep`.
    pub fn new(pages: Answers<ListJobExecutionsForJob>, keep: Duration) -> Self {
        Self {
            pages,
            keep,
            walks: Arc::default(),
        }
    }

    /// The whole listing `query`, page by page as AWS gives them: the
    /// listing in progress or kept if there is one, else a new walk asking
    /// with `call`'s share. Ends after the last page, or with the failure
    /// that stopped the walk.
    pub fn list(
        &self,
        query: &ListingQuery,
        call: &Call,
    ) -> impl Stream<Item = Result<ListedPage, GatewayError>> + Send + 'static {
        let progress = self.join_or_start(query, call);
        futures_util::stream::unfold(
            (progress, 0usize, false),
            |(mut progress, next, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    // Only the page wanted (or the end) is taken, not the
                    // listing so far.
                    let (page, end) = {
                        let seen = progress.borrow_and_update();
                        (seen.pages.get(next).cloned(), seen.end.clone())
                    };
                    if let Some(page) = page {
                        let listed = ListedPage { index: next, page };
                        return Some((Ok(listed), (progress, next + 1, false)));
                    }
                    match end {
                        Some(Ok(())) => return None,
                        Some(Err(err)) => return Some((Err(err), (progress, next, true))),
                        None => {}
                    }
                    if progress.changed().await.is_err() {
                        // The walk is gone (kept long enough, or the
                        // gateway stops): what it had is still sent.
                        let seen = progress.borrow();
                        if seen.pages.len() <= next && seen.end.is_none() {
                            return None;
                        }
                    }
                }
            },
        )
    }

    fn join_or_start(&self, query: &ListingQuery, call: &Call) -> watch::Receiver<Progress> {
        let mut walks = self.walks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(walk) = walks.get(query) {
            return walk.subscribe();
        }
        let walk = Arc::new(watch::Sender::new(Progress::default()));
        let receiver = walk.subscribe();
        walks.insert(query.clone(), walk.clone());
        drop(walks);
        let walker = Walker {
            pages: self.pages.clone(),
            query: query.clone(),
            call: Call {
                deadline: None,
                fresh: false,
                ..call.clone()
            },
            walk: Arc::downgrade(&walk),
            walks: self.walks.clone(),
            keep: self.keep,
        };
        tokio::spawn(walker.run());
        receiver
    }
}

/// The task that walks one listing.
struct Walker {
    pages: Answers<ListJobExecutionsForJob>,
    query: ListingQuery,
    call: Call,
    walk: Weak<Walk>,
    walks: Arc<Mutex<HashMap<ListingQuery, Arc<Walk>>>>,
    keep: Duration,
}

impl Walker {
    /// Asks page after page until the last, a failure, or no caller left.
    /// The registry holds the walk; the walker only a weak reference, so
    /// it sees callers leave.
    async fn run(self) {
        let mut token: Option<String> = None;
        let end = loop {
            let Some(walk) = self.walk.upgrade() else {
                return;
            };
            if walk.receiver_count() == 0 {
                self.forget(&walk);
                return;
            }
            drop(walk);
            let question = JobExecutionsPage {
                job_id: self.query.job_id.clone(),
                status: self.query.status,
                max_results: Some(PAGE_SIZE),
                next_token: token.take(),
            };
            match self.pages.ask(&question, &self.call).await {
                Ok(served) => {
                    token = served.response.next_token.clone();
                    let done = token.is_none();
                    let Some(walk) = self.walk.upgrade() else {
                        return;
                    };
                    walk.send_modify(|progress| progress.pages.push(served.response.clone()));
                    if done {
                        break Ok(());
                    }
                }
                Err(err) => break Err(err),
            }
        };
        let Some(walk) = self.walk.upgrade() else {
            return;
        };
        let failed = end.is_err();
        walk.send_modify(|progress| progress.end = Some(end));
        if failed {
            self.forget(&walk);
            return;
        }
        drop(walk);
        tokio::time::sleep(self.keep).await;
        if let Some(walk) = self.walk.upgrade() {
            self.forget(&walk);
        }
    }

    /// Takes this walk out of the registry (not a newer one).
    fn forget(&self, walk: &Arc<Walk>) {
        let mut walks = self.walks.lock().unwrap_or_else(|p| p.into_inner());
        if walks.get(&self.query).is_some_and(|w| Arc::ptr_eq(w, walk)) {
            walks.remove(&self.query);
        }
    }
}
