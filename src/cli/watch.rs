//! `iot-jobs-gateway watch-job`: follows jobs through `WatchJobs` until
//! every one is final. On a terminal it draws a live progress bar per job
//! and a line per status change; otherwise it prints one JSON object per
//! event and line. If the gateway goes away (a restart, a redeploy) it
//! reconnects and resumes from the versions it has seen.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use serde_json::{Map, Value};
use tonic::{Code, Status, transport::Channel};

use super::{
    CommandFailure, Outcome, add_outcome, args::WatchJobArgs, args::WatchOutput, aws_error_line,
    aws_json, call_failure, checked_id, connect, error_code, from_gateway, input::ParamError,
    limit, output::Query, print, query,
};
use crate::pb::{
    self, job_event::Kind, jobs_gateway_client::JobsGatewayClient, watch_jobs_response::Event,
};

/// How often, at most, a dropped watch is re-opened in a row.
const RECONNECTS: u32 = 5;

/// `iot-jobs-gateway watch-job`.
pub async fn watch_job(args: WatchJobArgs) -> Outcome {
    let mut ids: Vec<String> = Vec::new();
    for id in &args.job_id {
        checked_id("--job-id", id)?;
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let query = query(&args.client)?;
    let terminal = std::io::stdout().is_terminal();
    let mode = match (args.output, &query) {
        (Some(WatchOutput::Progress), Some(_)) => {
            return Err(ParamError(
                "--query shapes JSON output; use it with --output json (or without --output)"
                    .to_owned(),
            )
            .into());
        }
        (Some(mode), _) => mode,
        (None, None) if terminal => WatchOutput::Progress,
        (None, _) => WatchOutput::Json,
    };
    let mut view = View::new(&ids, mode, args.client.color.enabled(terminal), query);
    let mut client = connect(&args.client).await?;
    let mut retries = 0;
    loop {
        let request = pb::WatchJobsRequest {
            job_ids: view.open_ids(),
            before_substitution: args.before_substitution.then_some(true),
            resume_from: view.versions(),
        };
        let heard_before = view.heard;
        let broken = match follow(&mut client, request, &mut view, &args).await? {
            None if view.open_ids().is_empty() => return view.finish(),
            None => Break::EndedEarly,
            Some(broken) => broken,
        };
        if view.heard != heard_before {
            retries = 0;
        }
        if !broken.resumable() || retries == RECONNECTS {
            return Err(broken.into_failure(&args));
        }
        retries += 1;
        view.note(&format!(
            "the watch was interrupted ({}); reconnecting ({retries}/{RECONNECTS})",
            broken.describe()
        ))?;
        tokio::time::sleep(Duration::from_millis(250 << retries)).await;
        if let Ok(fresh) = connect(&args.client).await {
            client = fresh;
        }
    }
}

/// Why a watch stream stopped before every job was final.
enum Break {
    /// The call or the stream failed.
    Status(Status),
    /// Nothing came, not even a heartbeat, for `--cli-read-timeout`.
    Silence,
    /// The stream ended with OK while jobs were still open.
    EndedEarly,
}

impl Break {
    /// Worth reconnecting: the gateway restarted or shut down, the
    /// connection broke or went quiet.
    fn resumable(&self) -> bool {
        match self {
            Self::Status(status) if from_gateway(status) => {
                error_reason(status).as_deref() == Some("SHUTTING_DOWN")
            }
            Self::Status(status) => matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            ),
            Self::Silence | Self::EndedEarly => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Status(status) => status.message().to_owned(),
            Self::Silence => "no event or heartbeat within --cli-read-timeout".to_owned(),
            Self::EndedEarly => "the gateway ended the stream early".to_owned(),
        }
    }

    fn into_failure(self, args: &WatchJobArgs) -> CommandFailure {
        match self {
            Self::Status(status) => call_failure("WatchJobs", &status),
            Self::Silence => CommandFailure::Other(format!(
                "Read timeout on the gateway {}: nothing (not even a heartbeat) within {}s \
                 (--cli-read-timeout)",
                args.client.gateway, args.client.cli_read_timeout
            )),
            Self::EndedEarly => CommandFailure::Other(
                "the gateway kept ending the watch while jobs were still open".to_owned(),
            ),
        }
    }
}

fn error_reason(status: &Status) -> Option<String> {
    use tonic_types::StatusExt as _;
    status.get_details_error_info().map(|i| i.reason)
}

/// Opens one watch stream and shows what it says until it ends: `None`
/// when it ended with OK, else why it broke. Every wait, the first answer
/// included, is bounded by `--cli-read-timeout`.
async fn follow(
    client: &mut JobsGatewayClient<Channel>,
    request: pb::WatchJobsRequest,
    view: &mut View,
    args: &WatchJobArgs,
) -> Result<Option<Break>, CommandFailure> {
    let silence = limit(args.client.cli_read_timeout);
    let mut request = tonic::Request::new(request);
    super::authorize(&args.client, &mut request);
    let mut stream = match bounded(silence, client.watch_jobs(request)).await {
        None => return Ok(Some(Break::Silence)),
        Some(Err(status)) => return Ok(Some(Break::Status(status))),
        Some(Ok(response)) => response.into_inner(),
    };
    loop {
        match bounded(silence, stream.message()).await {
            None => return Ok(Some(Break::Silence)),
            Some(Err(status)) => return Ok(Some(Break::Status(status))),
            Some(Ok(None)) => return Ok(None),
            Some(Ok(Some(message))) => view.show(message)?,
        }
    }
}

/// `wait`'s output, or `None` if `limit` passed first.
async fn bounded<F: Future>(limit: Option<Duration>, wait: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, wait).await.ok(),
        None => Some(wait.await),
    }
}

/// What is known of one watched job.
#[derive(Debug, Default)]
struct JobView {
    version: Option<u64>,
    status: Option<String>,
    counts: Counts,
    done: bool,
    seen: bool,
    gone: bool,
    /// The last error about the job: AWS's (or the gateway's) code, message.
    problem: Option<(String, String)>,
}

/// A rollout's execution counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    succeeded: i64,
    failed: i64,
    rejected: i64,
    timed_out: i64,
    canceled: i64,
    removed: i64,
    in_progress: i64,
    queued: i64,
}

impl Counts {
    fn of(job: &pb::Job) -> Self {
        let d = job.job_process_details.clone().unwrap_or_default();
        let n = |v: Option<i32>| i64::from(v.unwrap_or(0));
        Self {
            succeeded: n(d.number_of_succeeded_things),
            failed: n(d.number_of_failed_things),
            rejected: n(d.number_of_rejected_things),
            timed_out: n(d.number_of_timed_out_things),
            canceled: n(d.number_of_canceled_things),
            removed: n(d.number_of_removed_things),
            in_progress: n(d.number_of_in_progress_things),
            queued: n(d.number_of_queued_things),
        }
    }

    fn total(&self) -> i64 {
        self.finished() + self.in_progress + self.queued
    }

    fn finished(&self) -> i64 {
        self.succeeded + self.failed + self.rejected + self.timed_out + self.canceled + self.removed
    }

    fn summary(&self) -> String {
        let mut out = format!(
            "succeeded {} · failed {} · rejected {} · timed out {} · in progress {} · queued {}",
            self.succeeded,
            self.failed,
            self.rejected,
            self.timed_out,
            self.in_progress,
            self.queued,
        );
        for (count, name) in [(self.canceled, "canceled"), (self.removed, "removed")] {
            if count > 0 {
                out.push_str(&format!(" · {name} {count}"));
            }
        }
        out.push_str(&format!(" · total {}", self.total()));
        out
    }
}

/// The output: JSON lines, or a live region of progress bars under a log
/// of status changes.
struct View {
    jobs: BTreeMap<String, JobView>,
    order: Vec<String>,
    mode: WatchOutput,
    color: bool,
    query: Option<Query>,
    drawn: usize,
    heard: Option<SystemTime>,
}

/// Width of a progress bar, in cells.
const BAR: usize = 30;

impl View {
    fn new(ids: &[String], mode: WatchOutput, color: bool, query: Option<Query>) -> Self {
        Self {
            jobs: ids
                .iter()
                .map(|id| (id.clone(), JobView::default()))
                .collect(),
            order: ids.to_vec(),
            mode,
            color,
            query,
            drawn: 0,
            heard: None,
        }
    }

    /// Jobs not yet final, to (re)subscribe.
    fn open_ids(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|id| !self.jobs[*id].done)
            .cloned()
            .collect()
    }

    fn versions(&self) -> BTreeMap<String, u64> {
        self.jobs
            .iter()
            .filter(|(_, s)| !s.done)
            .filter_map(|(id, s)| s.version.map(|v| (id.clone(), v)))
            .collect()
    }

    fn show(&mut self, message: pb::WatchJobsResponse) -> Result<(), CommandFailure> {
        self.heard = Some(SystemTime::now());
        match message.event {
            Some(Event::Job(event)) => self.event(event),
            Some(Event::Heartbeat(_)) | None => match self.mode {
                WatchOutput::Progress => self.draw(&[]),
                WatchOutput::Json => Ok(()),
            },
        }
    }

    fn event(&mut self, event: pb::JobEvent) -> Result<(), CommandFailure> {
        let kind = Kind::try_from(event.kind).unwrap_or(Kind::Unspecified);
        let Some(state) = self.jobs.get_mut(&event.job_id) else {
            return Ok(());
        };
        let before = state.status.clone();
        state.version = Some(event.version);
        state.done = event.r#final;
        let mut log = Vec::new();
        match &event.state {
            Some(pb::job_event::State::Response(response)) => {
                let job = response.job.clone().unwrap_or_default();
                let status = aws_json::describe_job(response)["job"]["status"]
                    .as_str()
                    .map(str::to_owned);
                state.counts = Counts::of(&job);
                state.seen = true;
                state.problem = None;
                state.status = status;
                if state.status != before {
                    log.push(status_line(&event.job_id, before.as_deref(), state));
                }
            }
            Some(pb::job_event::State::Error(status)) => {
                let code = error_code(status);
                state.problem = Some((code.clone(), status.message.clone()));
                if kind == Kind::Gone {
                    state.gone = true;
                    log.push(format!(
                        "{}  {}  {}",
                        now(),
                        event.job_id,
                        if state.seen { "deleted" } else { "not found" }
                    ));
                } else {
                    log.push(format!(
                        "{}  {}  cannot read it now ({code}: {}); still watching",
                        now(),
                        event.job_id,
                        status.message
                    ));
                }
            }
            None => {}
        }
        match self.mode {
            WatchOutput::Json => self.json_line(&event, kind),
            WatchOutput::Progress => self.draw(&log),
        }
    }

    fn json_line(&self, event: &pb::JobEvent, kind: Kind) -> Result<(), CommandFailure> {
        let mut line = Map::new();
        line.insert("jobId".into(), event.job_id.clone().into());
        line.insert("kind".into(), kind.as_str_name().into());
        // A string, as in proto3 JSON: versions do not fit a JSON number.
        line.insert("version".into(), event.version.to_string().into());
        line.insert("final".into(), event.r#final.into());
        line.insert("changedFields".into(), event.changed_fields.clone().into());
        if let Some(at) = &event.observed_at {
            line.insert("observedAt".into(), aws_json::epoch_seconds(at));
        }
        match &event.state {
            Some(pb::job_event::State::Response(response)) => add_outcome(&mut line, Ok(response)),
            Some(pb::job_event::State::Error(status)) => add_outcome(&mut line, Err(status)),
            None => {}
        }
        let mut value = Value::Object(line);
        if let Some(query) = &self.query {
            value = query.apply(&value)?;
        }
        print(&format!("{value}\n"))
    }

    /// A line for people, in either mode (stderr for JSON lines).
    fn note(&mut self, text: &str) -> Result<(), CommandFailure> {
        let line = format!("{}  {text}", now());
        match self.mode {
            WatchOutput::Json => {
                eprintln!("{line}");
                Ok(())
            }
            WatchOutput::Progress => self.draw(&[line]),
        }
    }

    /// Redraws the live region, with `log` lines printed above it for good.
    fn draw(&mut self, log: &[String]) -> Result<(), CommandFailure> {
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        out.push_str("\r\x1b[J");
        for line in log {
            out.push_str(line);
            out.push('\n');
        }
        // A line wider than the terminal would wrap and break the count of
        // lines to move up, so each is cut to fit.
        let columns = terminal_size::terminal_size_of(std::io::stdout())
            .map_or(80, |(w, _)| usize::from(w.0));
        let region = self.region();
        self.drawn = region.len();
        for line in region {
            out.push_str(&fit(&line, columns.saturating_sub(1).max(1)));
            out.push('\n');
        }
        print(&out)
    }

    fn region(&self) -> Vec<String> {
        let width = self.order.iter().map(String::len).max().unwrap_or(0);
        let mut lines = Vec::new();
        for id in &self.order {
            let state = &self.jobs[id];
            let status = state
                .status
                .as_deref()
                .unwrap_or(if state.gone { "GONE" } else { "…" });
            let c = state.counts;
            lines.push(format!(
                "{id:<width$}  {status:<11}  {}  {}/{}",
                self.bar(&c),
                c.finished(),
                c.total()
            ));
            let detail = match &state.problem {
                Some((code, message)) => format!("{code}: {message}"),
                None if !state.seen => "waiting for the gateway's first answer".to_owned(),
                None => c.summary(),
            };
            lines.push(format!("{:<width$}  {detail}", ""));
        }
        if let Some(heard) = self.heard {
            let open = self.open_ids().len();
            lines.push(format!(
                "watching {open} of {} jobs · last heard from the gateway {}",
                self.order.len(),
                humantime::format_rfc3339_seconds(heard)
            ));
        }
        lines
    }

    /// Succeeded, failed (failed, rejected, timed out, canceled, removed),
    /// in progress and queued, in proportion to the total.
    fn bar(&self, c: &Counts) -> String {
        let parts = [
            (c.succeeded, '█', "32"),
            (c.finished() - c.succeeded, '▓', "31"),
            (c.in_progress, '▒', "33"),
            (c.queued, '░', "2"),
        ];
        let total = c.total();
        let mut out = String::new();
        let (mut sum, mut drawn) = (0, 0);
        for (count, glyph, color) in parts {
            sum += count;
            let edge = if total > 0 {
                usize::try_from((sum * BAR as i64 + total / 2) / total).unwrap_or(0)
            } else {
                0
            };
            let cells = edge.saturating_sub(drawn);
            drawn += cells;
            if cells > 0 {
                let run: String = std::iter::repeat_n(glyph, cells).collect();
                if self.color {
                    out.push_str(&format!("\x1b[{color}m{run}\x1b[0m"));
                } else {
                    out.push_str(&run);
                }
            }
        }
        out.push_str(&" ".repeat(BAR - drawn.min(BAR)));
        format!("[{out}]")
    }

    /// The exit status: 0 if every job completed, 1 if one was canceled or
    /// deleted, 254 if one did not exist.
    fn finish(&mut self) -> Outcome {
        let missing: Vec<&String> = self
            .order
            .iter()
            .filter(|id| self.jobs[*id].gone && !self.jobs[*id].seen)
            .collect();
        if let Some(id) = missing.first() {
            let (code, message) = self.jobs[*id].problem.clone().unwrap_or_default();
            return Err(CommandFailure::Service(aws_error_line(
                &code,
                "WatchJobs",
                &message,
            )));
        }
        let all_completed = self
            .jobs
            .values()
            .all(|s| s.status.as_deref() == Some("COMPLETED") && !s.gone);
        Ok(if all_completed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }
}

/// `line` cut to `columns` visible characters (colour codes take none),
/// ending with `…` when cut.
fn fit(line: &str, columns: usize) -> String {
    let visible = |text: &str| {
        let mut n = 0;
        let mut in_code = false;
        for c in text.chars() {
            match c {
                '\x1b' => in_code = true,
                'm' if in_code => in_code = false,
                _ if !in_code => n += 1,
                _ => {}
            }
        }
        n
    };
    if visible(line) <= columns {
        return line.to_owned();
    }
    let mut out = String::new();
    let (mut shown, mut in_code) = (0, false);
    for c in line.chars() {
        match c {
            '\x1b' => in_code = true,
            'm' if in_code => in_code = false,
            _ if in_code => {}
            _ if shown + 1 == columns => break,
            _ => shown += 1,
        }
        out.push(c);
    }
    out.push('…');
    if line.contains('\x1b') {
        out.push_str("\x1b[0m");
    }
    out
}

fn status_line(id: &str, before: Option<&str>, state: &JobView) -> String {
    let status = state.status.as_deref().unwrap_or("?");
    let change = match before {
        Some(before) => format!("{before} → {status}"),
        None => status.to_owned(),
    };
    let c = state.counts;
    format!(
        "{}  {id}  {change}  (succeeded {}, failed {}, rejected {}, timed out {}, of {})",
        now(),
        c.succeeded,
        c.failed,
        c.rejected,
        c.timed_out,
        c.total()
    )
}

fn now() -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        View::new(&["a".into()], WatchOutput::Progress, false, None)
    }

    #[test]
    fn the_bar_shows_each_outcome_in_proportion() {
        let counts = Counts {
            succeeded: 15,
            failed: 3,
            rejected: 1,
            timed_out: 1,
            in_progress: 5,
            queued: 5,
            ..Counts::default()
        };
        assert_eq!(view().bar(&counts), "[███████████████▓▓▓▓▓▒▒▒▒▒░░░░░]");
        assert_eq!(
            view().bar(&Counts::default()),
            format!("[{}]", " ".repeat(BAR))
        );
    }

    #[test]
    fn lines_are_cut_to_the_terminal_not_counting_colour() {
        assert_eq!(fit("abcdef", 10), "abcdef");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abcd", 4), "abcd");
        assert_eq!(fit("\x1b[32mabcdef\x1b[0m", 4), "\x1b[32mabc…\x1b[0m");
        assert_eq!(fit("\x1b[32mab\x1b[0m", 2), "\x1b[32mab\x1b[0m");
    }

    #[test]
    fn exit_status_follows_the_final_states() {
        let mut v = View::new(&["a".into(), "b".into()], WatchOutput::Json, false, None);
        for id in ["a", "b"] {
            let s = v.jobs.get_mut(id).unwrap();
            s.status = Some("COMPLETED".into());
            s.seen = true;
            s.done = true;
        }
        assert_eq!(v.finish().unwrap(), ExitCode::SUCCESS);
        v.jobs.get_mut("b").unwrap().status = Some("CANCELED".into());
        assert_eq!(v.finish().unwrap(), ExitCode::from(1));
        let b = v.jobs.get_mut("b").unwrap();
        b.seen = false;
        b.gone = true;
        assert_eq!(v.finish().unwrap_err().exit_code(), 254);
    }
}
