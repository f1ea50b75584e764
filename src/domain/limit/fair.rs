//! Which waiting call takes the next token: a weighted fair queue of calls,
//! keyed by caller ([`Share`]).
//!
//! Start-time fair queuing (Goyal, Vin and Cheng, 1996) over callers:
//! - Every caller with calls waiting is *active* and has a virtual start:
//!   the virtual time at which its oldest waiting call is due. A call costs
//!   its caller [`UNIT`] / weight of virtual time, so while callers stay
//!   active a caller of weight 3 is due three times as often as one of
//!   weight 1.
//! - The head of the queue, the one call that may take tokens, is the
//!   oldest call of the caller due first (ties: the caller active longest).
//!   The virtual time is the head's virtual start.
//! - A caller that becomes active is due at the virtual time, after the
//!   callers already due then: the end of the current round. It waits for
//!   the callers that have not had their turn in this round (one call each,
//!   a few for a heavier one), not for anyone's backlog: however many calls
//!   one caller has waiting, another caller's call waits for about one
//!   call per active caller.
//! - A caller whose calls have all gone is remembered with its virtual
//!   finish until the virtual time passes it, so it cannot get ahead by
//!   leaving and coming straight back (it would come back due at the
//!   virtual time, before its next turn). When no call waits at all, the
//!   virtual time jumps to the latest finish and nothing needs remembering.
//!
//! Within one caller, calls go in arrival order. A call that leaves without
//! its token (its deadline passed, its client went away) costs its caller
//! nothing: only served calls move a caller's virtual start.
//!
//! Every operation is one short critical section, O(active callers) at
//! most; [`Ticket::turn`] parks the task until its call is the head (no
//! polling loop). Memory: one entry per waiting call and per active caller,
//! plus at most `capacity` remembered idle callers.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    future::poll_fn,
    sync::{Arc, Mutex, MutexGuard},
    task::{Poll, Waker},
    time::Duration,
};

use tokio::time::Instant;

use crate::domain::limit::{RejectReason, Rejected, Share};

/// The virtual time one call costs a caller of weight 1. lcm(1..=16): the
/// cost of every weight up to 16 (and many above) is exact.
const UNIT: u64 = 720_720;

/// Where a call would stand if it joined the queue now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Calls waiting now, of every caller.
    pub waiting: usize,
    /// Calls of this caller waiting now.
    pub own: usize,
    /// Calls that would take tokens before this one, in the fair order as
    /// it stands (callers that become active later may still come first).
    pub ahead: usize,
    /// Calls that take tokens before this caller's oldest waiting call
    /// (`ahead` if it has none): one of its places frees up after them.
    pub ahead_of_oldest: usize,
}

/// How fast a queue moves, for deciding who may join it.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    /// The rate AWS calls are allowed at (told to callers turned away).
    pub rate: f64,
    /// How long each call served first keeps the head (1 / rate when the
    /// queue has the whole rate).
    pub per_call: Duration,
    /// The most calls that may wait.
    pub max_waiters: usize,
}

impl Line {
    /// Whether a call of `share` with `deadline` may join at `place`.
    pub fn admit(&self, place: &Place, share: &Share, deadline: Instant) -> Result<(), Rejected> {
        if place.waiting >= self.max_waiters {
            return Err(self.reject(RejectReason::QueueFull, place.waiting));
        }
        // One of the caller's places frees up when its oldest call goes.
        if share.max_waiting.is_some_and(|max| place.own >= max) {
            return Err(self.reject(RejectReason::CallerQueueFull, place.ahead_of_oldest + 1));
        }
        // Every call served first keeps the head for about `per_call`, and
        // the first of them may have just missed a token: `ahead` calls take
        // up to (ahead + 1) × per_call. With nobody ahead, the bucket says.
        if place.ahead > 0 && Instant::now() + self.wait(place.ahead + 1) > deadline {
            return Err(self.reject(RejectReason::Deadline, place.ahead + 1));
        }
        Ok(())
    }

    /// The refusal of a call whose deadline passed while `ticket` waited
    /// for its turn.
    fn late(&self, ticket: &Ticket<'_>) -> Rejected {
        self.reject(RejectReason::Deadline, ticket.ahead() + 1)
    }

    /// How long `calls` take.
    fn wait(&self, calls: usize) -> Duration {
        self.per_call
            .saturating_mul(u32::try_from(calls).unwrap_or(u32::MAX))
    }

    /// Turned away for `reason`; a retry may expect a turn after `calls`.
    fn reject(&self, reason: RejectReason, calls: usize) -> Rejected {
        Rejected {
            reason,
            retry_after: self.wait(calls),
            rate: self.rate,
        }
    }
}

/// Calls waiting for tokens, in weighted fair order.
pub struct FairQueue {
    state: Mutex<State>,
}

struct State {
    /// Active callers by (virtual start, when they became active).
    due: BTreeMap<(u64, u64), Arc<str>>,
    /// Active callers.
    callers: HashMap<Arc<str>, Caller>,
    /// Every waiting call, with the waker of a task waiting for its turn.
    calls: HashMap<u64, Option<Waker>>,
    /// Virtual finishes of callers with no call waiting that the virtual
    /// time has not yet passed.
    idle: HashMap<Arc<str>, u64>,
    /// The most `idle` holds before it is pruned.
    capacity: usize,
    /// The virtual time: the head's virtual start, or the latest finish
    /// while nothing waits. Never goes back.
    now: u64,
    /// The latest virtual finish of a caller that stopped waiting.
    latest: u64,
    /// Numbers calls and orders callers' activations.
    next: u64,
}

/// One active caller.
struct Caller {
    /// The virtual start of its oldest waiting call.
    start: u64,
    /// When it became active (breaks ties between equal starts).
    since: u64,
    /// Virtual time one of its calls costs: [`UNIT`] / weight.
    cost: u64,
    /// Its waiting calls, oldest first.
    calls: VecDeque<u64>,
}

impl Caller {
    /// Its key in `due`.
    fn key(&self) -> (u64, u64) {
        (self.start, self.since)
    }

    /// How many of its calls are due before a call whose virtual start is
    /// `start` and whose caller became active at `since`.
    fn before(&self, start: u64, since: u64) -> usize {
        // Its k-th call is due at self.start + k * cost; ties go to the
        // caller active longer.
        let due = if self.since < since {
            start
                .checked_sub(self.start)
                .map_or(0, |gap| gap / self.cost + 1)
        } else {
            start
                .checked_sub(self.start)
                .map_or(0, |gap| gap.div_ceil(self.cost))
        };
        usize::try_from(due).map_or(self.calls.len(), |due| due.min(self.calls.len()))
    }
}

impl FairQueue {
    /// An empty queue remembering at most `capacity` idle callers (the
    /// limiter passes its cap on waiting calls).
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                due: BTreeMap::new(),
                callers: HashMap::new(),
                calls: HashMap::new(),
                idle: HashMap::new(),
                capacity: capacity.max(16),
                now: 0,
                latest: 0,
                next: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update keeps the state consistent before it can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls waiting now (the head included).
    pub fn len(&self) -> usize {
        self.state().calls.len()
    }

    /// Whether no call waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins the queue for `share`, unless `admit`, told where the call
    /// would stand, refuses it. Deciding and joining are one step, so
    /// concurrent arrivals cannot both take the last place.
    pub fn join<E>(
        &self,
        share: &Share,
        admit: impl FnOnce(&Place) -> Result<(), E>,
    ) -> Result<Ticket<'_>, E> {
        let mut state = self.state();
        let place = state.place(&share.caller);
        admit(&place)?;
        let id = state.push(share);
        Ok(Ticket {
            queue: self,
            id,
            caller: share.caller.clone(),
            served: false,
        })
    }

    /// Joins for `share` if `line` admits the call, and waits for its turn
    /// at the head; a call whose deadline passes first is refused then
    /// (callers that arrive later may still take turns before it).
    pub async fn wait_turn(
        &self,
        share: &Share,
        line: &Line,
        deadline: Instant,
    ) -> Result<Ticket<'_>, Rejected> {
        let mut ticket = self.join(share, |place| line.admit(place, share, deadline))?;
        if tokio::time::timeout_at(deadline, ticket.turn())
            .await
            .is_err()
        {
            return Err(line.late(&ticket));
        }
        Ok(ticket)
    }
}

impl State {
    /// Where a new call of `caller` would stand.
    fn place(&self, caller: &Arc<str>) -> Place {
        let waiting = self.calls.len();
        let Some(own) = self.callers.get(caller) else {
            // After every caller already active at its start.
            let ahead = self.before(caller, self.newcomer_start(caller), u64::MAX);
            return Place {
                waiting,
                own: 0,
                ahead,
                ahead_of_oldest: ahead,
            };
        };
        let queued = own.calls.len();
        let start = own
            .start
            .saturating_add(own.cost.saturating_mul(queued as u64));
        Place {
            waiting,
            own: queued,
            ahead: queued + self.before(caller, start, own.since),
            ahead_of_oldest: self.before(caller, own.start, own.since),
        }
    }

    /// Calls of callers other than `caller` due before a call of virtual
    /// `start` of a caller active since `since`.
    fn before(&self, caller: &Arc<str>, start: u64, since: u64) -> usize {
        self.callers
            .iter()
            .filter(|(name, _)| *name != caller)
            .map(|(_, other)| other.before(start, since))
            .sum()
    }

    /// The virtual start of `caller` becoming active now: the virtual
    /// time, unless it finished later than that.
    fn newcomer_start(&self, caller: &Arc<str>) -> u64 {
        self.idle
            .get(caller)
            .map_or(self.now, |&finish| finish.max(self.now))
    }

    /// Adds a call of `share`; returns its id.
    fn push(&mut self, share: &Share) -> u64 {
        let id = self.next;
        self.next += 1;
        self.calls.insert(id, None);
        if let Some(caller) = self.callers.get_mut(&share.caller) {
            caller.calls.push_back(id);
            return id;
        }
        let start = self.newcomer_start(&share.caller);
        self.idle.remove(&share.caller);
        let caller = Caller {
            start,
            since: id,
            cost: (UNIT / u64::from(share.weight.max(1))).max(1),
            calls: VecDeque::from([id]),
        };
        self.due.insert(caller.key(), share.caller.clone());
        self.callers.insert(share.caller.clone(), caller);
        self.advance();
        id
    }

    /// The call that may take tokens now.
    fn head(&self) -> Option<u64> {
        let (_, name) = self.due.first_key_value()?;
        self.callers.get(name)?.calls.front().copied()
    }

    /// Removes call `id` of `caller`; a served call (the head, which took
    /// its token) moves its caller's virtual start on. Wakes the next head.
    fn leave(&mut self, id: u64, caller: &Arc<str>, served: bool) {
        let was_head = self.head() == Some(id);
        self.calls.remove(&id);
        let Some(mut own) = self.callers.remove(caller) else {
            return;
        };
        self.due.remove(&own.key());
        if let Some(at) = own.calls.iter().position(|&c| c == id) {
            own.calls.remove(at);
        }
        if served && was_head {
            own.start = own.start.saturating_add(own.cost);
        }
        if own.calls.is_empty() {
            self.latest = self.latest.max(own.start);
            self.remember(caller.clone(), own.start);
        } else {
            self.due.insert(own.key(), caller.clone());
            self.callers.insert(caller.clone(), own);
        }
        self.advance();
        if was_head {
            self.wake_head();
        }
    }

    /// Keeps the virtual time at the head's start, or at the latest finish
    /// when nothing waits (then no idle caller needs remembering).
    fn advance(&mut self) {
        match self.due.first_key_value() {
            Some((&(start, _), _)) => self.now = self.now.max(start),
            None => {
                self.now = self.now.max(self.latest);
                self.idle.clear();
            }
        }
    }

    /// Remembers the virtual finish of a caller that stopped waiting, if
    /// the virtual time has not passed it.
    fn remember(&mut self, caller: Arc<str>, finish: u64) {
        if finish <= self.now {
            return;
        }
        if self.idle.len() >= self.capacity {
            let now = self.now;
            self.idle.retain(|_, &mut f| f > now);
            // Still crowded (very many callers, each gone after one call
            // within one round): forget them all. Each may come back up to
            // one call early, once; memory stays bounded.
            if self.idle.len() >= self.capacity / 2 {
                self.idle.clear();
            }
        }
        self.idle.insert(caller, finish);
    }

    fn wake_head(&mut self) {
        if let Some(id) = self.head()
            && let Some(waker) = self.calls.get_mut(&id).and_then(Option::take)
        {
            waker.wake();
        }
    }
}

/// A call's place in the queue. Dropping it leaves the queue (a head that
/// leaves passes the turn on), so a cancelled waiter never blocks others.
pub struct Ticket<'a> {
    queue: &'a FairQueue,
    id: u64,
    caller: Arc<str>,
    /// Took its token: its caller's next call is due one cost later.
    served: bool,
}

impl Ticket<'_> {
    /// Waits until this call is the head: the one call that may take
    /// tokens. It stays the head until the ticket is dropped.
    pub async fn turn(&mut self) {
        poll_fn(|cx| {
            let mut state = self.queue.state();
            if state.head() == Some(self.id) {
                return Poll::Ready(());
            }
            if let Some(slot) = state.calls.get_mut(&self.id) {
                match slot {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
            }
            Poll::Pending
        })
        .await;
    }

    /// Calls that take tokens before this one, as things stand.
    pub fn ahead(&self) -> usize {
        let state = self.queue.state();
        let Some(own) = state.callers.get(&self.caller) else {
            return 0;
        };
        let earlier = own.calls.iter().take_while(|&&c| c != self.id).count();
        let start = own
            .start
            .saturating_add(own.cost.saturating_mul(earlier as u64));
        earlier + state.before(&self.caller, start, own.since)
    }

    /// The head took its token: leaves the queue, and its caller's next
    /// call is due one cost later.
    pub fn served(mut self) {
        self.served = true;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.queue.state().leave(self.id, &self.caller, self.served);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(caller: &str, weight: u32) -> Share {
        Share {
            caller: caller.into(),
            weight,
            max_waiting: None,
        }
    }

    fn join<'a>(q: &'a FairQueue, caller: &str, weight: u32) -> Ticket<'a> {
        q.join(&share(caller, weight), |_| Ok::<_, ()>(())).unwrap()
    }

    fn place(q: &FairQueue, caller: &str) -> Place {
        let mut seen = None;
        let _ = q.join(&share(caller, 1), |p| {
            seen = Some(*p);
            Err(())
        });
        seen.unwrap()
    }

    /// Serves the head `n` times; returns whose call each was.
    fn serve(q: &FairQueue, tickets: &mut Vec<(String, Ticket<'_>)>, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let head = q.state().head().unwrap();
                let at = tickets.iter().position(|(_, t)| t.id == head).unwrap();
                let (caller, ticket) = tickets.remove(at);
                ticket.served();
                caller
            })
            .collect()
    }

    #[test]
    fn a_new_caller_goes_after_the_head_before_a_backlog() {
        let q = FairQueue::new(100);
        let mut tickets: Vec<_> = (0..100)
            .map(|_| ("a".to_owned(), join(&q, "a", 1)))
            .collect();
        assert_eq!(place(&q, "b").ahead, 1, "only a's head is ahead of b");
        assert_eq!(place(&q, "a").ahead, 100);
        tickets.push(("b".to_owned(), join(&q, "b", 1)));
        assert_eq!(serve(&q, &mut tickets, 3), ["a", "b", "a"]);
        assert_eq!(q.len(), 98);
    }

    #[test]
    fn a_new_caller_waits_for_the_callers_yet_to_have_their_turn() {
        let q = FairQueue::new(100);
        let mut tickets = Vec::new();
        for _ in 0..10 {
            tickets.push(("a".to_owned(), join(&q, "a", 1)));
            tickets.push(("c".to_owned(), join(&q, "c", 1)));
        }
        assert_eq!(serve(&q, &mut tickets, 1), ["a"]);
        // c has not had its turn in this round, a has: b goes between.
        assert_eq!(place(&q, "b").ahead, 1);
        tickets.push(("b".to_owned(), join(&q, "b", 1)));
        assert_eq!(serve(&q, &mut tickets, 4), ["c", "b", "a", "c"]);
    }

    #[test]
    fn weights_share_the_turns() {
        let q = FairQueue::new(100);
        let mut tickets = Vec::new();
        for _ in 0..40 {
            tickets.push(("a".to_owned(), join(&q, "a", 3)));
            tickets.push(("b".to_owned(), join(&q, "b", 1)));
        }
        let order = serve(&q, &mut tickets, 40);
        let a = order.iter().filter(|c| *c == "a").count();
        assert_eq!(a, 30, "{order:?}");
    }

    #[test]
    fn leaving_and_coming_back_at_once_gains_nothing() {
        let q = FairQueue::new(100);
        let mut tickets: Vec<_> = (0..10)
            .map(|_| ("c".to_owned(), join(&q, "c", 1)))
            .collect();
        // a and b each keep one call waiting, asking again as soon as it
        // is served: they share the turns with c's backlog, one each.
        tickets.push(("a".to_owned(), join(&q, "a", 1)));
        tickets.push(("b".to_owned(), join(&q, "b", 1)));
        let mut order = Vec::new();
        for _ in 0..9 {
            let who = serve(&q, &mut tickets, 1).remove(0);
            if who != "c" {
                tickets.push((who.clone(), join(&q, &who, 1)));
            }
            order.push(who);
        }
        assert_eq!(order, ["c", "a", "b", "c", "a", "b", "c", "a", "b"]);
    }

    #[test]
    fn a_call_that_leaves_unserved_costs_its_caller_nothing() {
        let q = FairQueue::new(100);
        let mut tickets = vec![("a".to_owned(), join(&q, "a", 1))];
        let gone = join(&q, "b", 1);
        drop(gone);
        tickets.push(("b".to_owned(), join(&q, "b", 1)));
        tickets.push(("a".to_owned(), join(&q, "a", 1)));
        assert_eq!(serve(&q, &mut tickets, 3), ["a", "b", "a"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_stream_of_new_callers_does_not_starve_a_waiting_one() {
        let q = FairQueue::new(16);
        let mut tickets: Vec<_> = (0..5).map(|_| ("a".to_owned(), join(&q, "a", 1))).collect();
        let mut order = Vec::new();
        for i in 0..1000 {
            // A new caller (a new connection, say) arrives every other
            // token, each with one call: half the tokens are a's.
            if i % 2 == 0 {
                tickets.push(("new".to_owned(), join(&q, &format!("n{i}"), 1)));
            }
            let who = serve(&q, &mut tickets, 1).remove(0);
            if who == "a" {
                tickets.push(("a".to_owned(), join(&q, "a", 1)));
            }
            order.push(who);
        }
        let a = order.iter().filter(|c| *c == "a").count();
        assert!((499..=501).contains(&a), "a got {a} of 1000 turns");
        // Memory stays bounded however many callers came and went.
        assert!(q.state().idle.len() <= 16);
        assert!(q.state().callers.len() <= 2);
    }

    #[test]
    fn idle_callers_are_forgotten_once_nothing_waits() {
        let q = FairQueue::new(16);
        for i in 0..1000 {
            let ticket = join(&q, &format!("c{i}"), 1);
            ticket.served();
        }
        let state = q.state();
        assert!(state.idle.is_empty() && state.callers.is_empty() && state.due.is_empty());
        assert!(state.calls.is_empty());
    }
}
