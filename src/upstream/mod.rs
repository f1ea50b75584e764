//! The seam between the gateway and AWS: the AWS operations the gateway
//! asks ([`Operation`], one file each: [`describe_job`],
//! [`describe_job_execution`], [`list_job_executions_for_job`],
//! [`list_job_executions_for_thing`]), the client that
//! sends them ([`aws::AwsJobsUpstream`]) and how an answer can fail
//! ([`UpstreamError`]). `serve` checks the client's credentials at start
//! ([`credentials`]); tests and the demo point it at a local stand-in (the
//! simulator, moto). AWS's answers become the gateway's wire model (which
//! mirrors AWS field for field) in [`convert`].

pub mod aws;
pub mod convert;
pub mod credentials;
pub mod describe_job;
pub mod describe_job_execution;
pub mod list_job_executions_for_job;
pub mod list_job_executions_for_thing;
pub mod retry;

use std::{error::Error as StdError, fmt, future::Future, hash::Hash, sync::Arc, time::Duration};

pub use describe_job::{DescribeJob, JobQuery};
pub use describe_job_execution::{DescribeJobExecution, ExecutionQuery};
pub use list_job_executions_for_job::{JobExecutionsPage, ListJobExecutionsForJob};
pub use list_job_executions_for_thing::{ListJobExecutionsForThing, ThingExecutionsPage};

/// One AWS IoT operation the gateway answers: its validated question, the
/// one AWS request that asks it (its failures classified, its answer made
/// the wire model), when that answer stops changing, and its question's
/// key. The domain's roles are generic over it, so each operation has its
/// own bucket, its own cache space and its own coalescing.
pub trait Operation: Copy + fmt::Debug + Default + Send + Sync + 'static {
    /// AWS's name of the operation (`DescribeJob`), as metrics, logs and
    /// errors show it.
    const NAME: &'static str;
    /// Its space in the keys replicas share (empty for DescribeJob, whose
    /// keys came first).
    const SPACE: &'static str;
    /// The validated question: a request that passed AWS's rules.
    type Question: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static;
    /// The answer in wire form, converted once and served many times.
    type Response: prost::Message + fmt::Debug + Default + Clone + PartialEq + Send + Sync + 'static;

    /// Makes exactly one attempt; retries and deadlines belong to the caller.
    fn send(
        client: &aws_sdk_iot::Client,
        question: &Self::Question,
    ) -> impl Future<Output = Result<Self::Response, UpstreamError>> + Send;

    /// Whether the answer has stopped changing (it is kept longer).
    fn settled(response: &Self::Response) -> bool;

    /// What its questions are about: a job (the default) or a thing.
    const ABOUT: About = About::Job;

    /// The job (or thing, as [`Operation::ABOUT`] says) the question is
    /// about, for errors and logs.
    fn subject(question: &Self::Question) -> &str;

    /// The question as it appears in shared keys and messages: distinct
    /// questions of one operation have distinct keys.
    fn key(question: &Self::Question) -> String;
}

/// What an operation's questions are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum About {
    /// A job: its id.
    Job,
    /// A thing: its name.
    Thing,
}

impl About {
    /// The word for it in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Job => "job",
            Self::Thing => "thing",
        }
    }

    /// AWS's JSON name of the field that names it, as error metadata keys it.
    pub fn field(self) -> &'static str {
        match self {
            Self::Job => "jobId",
            Self::Thing => "thingName",
        }
    }
}

/// The job or thing a failed call was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// A job or a thing.
    pub about: About,
    /// Its id or name.
    pub name: String,
}

impl Subject {
    /// What `question` of `O` is about.
    pub fn of<O: Operation>(question: &O::Question) -> Self {
        Self {
            about: O::ABOUT,
            name: O::subject(question).to_owned(),
        }
    }
}

/// A job id names a job.
impl From<&str> for Subject {
    fn from(job_id: &str) -> Self {
        Self {
            about: About::Job,
            name: job_id.to_owned(),
        }
    }
}

impl From<String> for Subject {
    fn from(job_id: String) -> Self {
        Self {
            about: About::Job,
            name: job_id,
        }
    }
}

/// `job "firmware-1"`, `thing "sensor-7"`.
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.about.noun(), self.name)
    }
}

/// How an upstream call failed, in the gateway's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// AWS rejected the request as malformed (InvalidRequestException).
    InvalidRequest,
    /// The job does not exist (ResourceNotFoundException).
    NotFound,
    /// AWS is rate limiting the account (ThrottlingException).
    Throttled,
    /// AWS is down or unreachable (ServiceUnavailableException, connect errors).
    Unavailable,
    /// The gateway's AWS identity lacks permission (AccessDeniedException).
    AccessDenied,
    /// The gateway has no valid AWS credentials (missing, expired, bad signature).
    Unauthenticated,
    /// AWS did not answer within the attempt timeout.
    Timeout,
    /// Anything else: InternalFailure, an unreadable response, unknown codes.
    Internal,
}

/// A failed upstream call: the classification plus what AWS told us.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    /// The AWS operation that failed ([`Operation::NAME`]).
    pub operation: &'static str,
    /// The gateway's classification, which decides the gRPC status.
    pub kind: UpstreamErrorKind,
    /// AWS's error code (`ThrottlingException`), when AWS sent one.
    pub aws_code: Option<String>,
    /// AWS's own message, when it sent one. Logged; shown to callers only
    /// where it cannot reveal the gateway's identity.
    pub aws_message: Option<String>,
    /// AWS's request id, for support cases.
    pub request_id: Option<String>,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// The underlying error, kept for the server-side log.
    pub source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl UpstreamError {
    /// An error of `kind` with nothing else known; retryable if the kind
    /// usually is. It is DescribeJob's until [`UpstreamError::of`] says
    /// otherwise (the fetcher of each operation does).
    pub fn new(kind: UpstreamErrorKind) -> Self {
        use UpstreamErrorKind::*;
        Self {
            operation: DescribeJob::NAME,
            kind,
            aws_code: None,
            aws_message: None,
            request_id: None,
            retryable: matches!(kind, Throttled | Unavailable | Timeout),
            source: None,
        }
    }

    /// Says which operation failed.
    pub fn of(mut self, operation: &'static str) -> Self {
        self.operation = operation;
        self
    }

    /// Sets AWS's error code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.aws_code = Some(code.into());
        self
    }

    /// Sets AWS's message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.aws_message = Some(message.into());
        self
    }

    /// Sets whether another attempt may succeed.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Keeps the underlying error for logs.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AWS IoT {} failed ({:?}", self.operation, self.kind)?;
        if let Some(code) = &self.aws_code {
            write!(f, ", {code}")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, ", request id {id}")?;
        }
        f.write_str(")")?;
        if let Some(message) = &self.aws_message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl StdError for UpstreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// How long a caller should wait before retrying after AWS throttling, when
/// nothing better is known: the RetryInfo of UPSTREAM_THROTTLED.
pub const DEFAULT_THROTTLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// An error and its causes on one line, for people and logs: each cause
/// after a `": "` unless the text so far already says it (tonic and hyper
/// errors repeat their sources), line breaks as spaces.
pub fn error_chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out.replace('\n', " ")
}
