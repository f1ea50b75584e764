//! The gRPC server's metrics, under the names of go-grpc-prometheus that
//! operators' dashboards and alerts already use: calls started and handled
//! (by status code), messages received and sent, and the handling time.
//!
//! Labels come from a fixed table of the services this server offers;
//! any other path counts as `unknown`, so a scanner cannot grow the label
//! set. Each method's series are looked up once, when the gateway starts.

use std::sync::OnceLock;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tonic::Code;

use crate::{
    domain::metrics::{Buckets, Labels},
    pb::{HEALTH_SERVICE, REFLECTION_SERVICES, SERVICE_NAME, rpc},
};

/// Handling time buckets, in seconds: cache hits take well under a
/// millisecond, AWS round trips tens of milliseconds, watch streams hours.
const HANDLING_SECONDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    3600.0,
];

/// The shape of an RPC, as go-grpc-prometheus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcType {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStream,
    /// Streams both ways.
    BidiStream,
}

impl RpcType {
    fn name(self) -> &'static str {
        match self {
            RpcType::Unary => "unary",
            RpcType::ServerStream => "server_stream",
            RpcType::BidiStream => "bidi_stream",
        }
    }
}

/// Every method this server offers: (service, method, type).
const METHODS: [(&str, &str, RpcType); 13] = [
    (SERVICE_NAME, rpc::DESCRIBE_JOB, RpcType::Unary),
    (SERVICE_NAME, rpc::BATCH_DESCRIBE_JOBS, RpcType::Unary),
    (
        SERVICE_NAME,
        rpc::STREAM_DESCRIBE_JOBS,
        RpcType::ServerStream,
    ),
    (SERVICE_NAME, rpc::WATCH_JOBS, RpcType::ServerStream),
    (SERVICE_NAME, rpc::DESCRIBE_JOB_EXECUTION, RpcType::Unary),
    (
        SERVICE_NAME,
        rpc::LIST_JOB_EXECUTIONS_FOR_JOB,
        RpcType::Unary,
    ),
    (
        SERVICE_NAME,
        rpc::LIST_JOB_EXECUTIONS_FOR_THING,
        RpcType::Unary,
    ),
    (
        SERVICE_NAME,
        rpc::BATCH_DESCRIBE_JOB_EXECUTIONS,
        RpcType::Unary,
    ),
    (
        SERVICE_NAME,
        rpc::STREAM_JOB_EXECUTIONS_FOR_JOB,
        RpcType::ServerStream,
    ),
    (HEALTH_SERVICE, "Check", RpcType::Unary),
    (HEALTH_SERVICE, "Watch", RpcType::ServerStream),
    (
        REFLECTION_SERVICES[0],
        "ServerReflectionInfo",
        RpcType::BidiStream,
    ),
    (
        REFLECTION_SERVICES[1],
        "ServerReflectionInfo",
        RpcType::BidiStream,
    ),
];

/// Where calls to paths the server does not offer are counted.
const UNKNOWN: (&str, &str, RpcType) = ("unknown", "unknown", RpcType::Unary);

/// Status codes as grpc-go spells them (go-grpc-prometheus' `grpc_code`).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The series of one method.
pub struct Method {
    /// The service's full name (`iot.jobs.v1.JobsGateway`).
    pub service: &'static str,
    /// The method's name (`DescribeJob`).
    pub method: &'static str,
    /// Its shape.
    pub rpc_type: RpcType,
    started: Counter,
    received: Counter,
    sent: Counter,
    seconds: Histogram,
    handled: [OnceLock<Counter>; 17],
}

/// The gRPC server's metric families and each method's series.
pub struct GrpcMetrics {
    started: Family<Labels<3>, Counter>,
    handled: Family<Labels<4>, Counter>,
    received: Family<Labels<3>, Counter>,
    sent: Family<Labels<3>, Counter>,
    seconds: Family<Labels<3>, Histogram, Buckets>,
    methods: Vec<Method>,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        let started = Family::<Labels<3>, Counter>::default();
        let received = Family::<Labels<3>, Counter>::default();
        let sent = Family::<Labels<3>, Counter>::default();
        let seconds = Family::new_with_constructor(Buckets(&HANDLING_SECONDS));
        let methods = METHODS
            .iter()
            .chain(std::iter::once(&UNKNOWN))
            .map(|&(service, method, rpc_type)| {
                let labels = method_labels(service, method, rpc_type);
                Method {
                    service,
                    method,
                    rpc_type,
                    started: started.get_or_create_owned(&labels),
                    received: received.get_or_create_owned(&labels),
                    sent: sent.get_or_create_owned(&labels),
                    seconds: seconds.get_or_create_owned(&labels),
                    handled: Default::default(),
                }
            })
            .collect();
        Self {
            started,
            handled: Family::default(),
            received,
            sent,
            seconds,
            methods,
        }
    }
}

fn method_labels(service: &'static str, method: &'static str, rpc_type: RpcType) -> Labels<3> {
    [
        ("grpc_type", rpc_type.name()),
        ("grpc_service", service),
        ("grpc_method", method),
    ]
}

impl GrpcMetrics {
    /// Where the series of the method at `path` (`/service/method`) are;
    /// paths the server does not offer share the `unknown` ones.
    pub fn index(&self, path: &str) -> usize {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", ""));
        self.methods
            .iter()
            // Methods first: their lengths mostly differ, so most entries
            // are passed over without comparing any bytes.
            .position(|m| m.method == method && m.service == service)
            // The last entry is `unknown`.
            .unwrap_or(self.methods.len() - 1)
    }

    /// The series at `index` (from [`GrpcMetrics::index`]).
    pub fn at(&self, index: usize) -> &Method {
        &self.methods[index.min(self.methods.len() - 1)]
    }

    /// A call of `method` started.
    pub fn started(&self, method: &Method) {
        method.started.inc();
    }

    /// `count` messages of `method` arrived from the client.
    pub fn received(&self, method: &Method, count: u64) {
        if count > 0 {
            method.received.inc_by(count);
        }
    }

    /// `count` messages of `method` went to the client.
    pub fn sent(&self, method: &Method, count: u64) {
        if count > 0 {
            method.sent.inc_by(count);
        }
    }

    /// A call of `method` ended with `code` after `seconds`.
    pub fn handled(&self, method: &Method, code: Code, seconds: f64) {
        let index = (code as usize).min(CODE_NAMES.len() - 1);
        method.handled[index]
            .get_or_init(|| {
                let [rpc_type, service, name] =
                    method_labels(method.service, method.method, method.rpc_type);
                self.handled.get_or_create_owned(&[
                    rpc_type,
                    service,
                    name,
                    ("grpc_code", CODE_NAMES[index]),
                ])
            })
            .inc();
        method.seconds.observe(seconds);
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            self.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status code",
            self.handled.clone(),
        );
        registry.register(
            "grpc_server_msg_received",
            "Messages received from clients",
            self.received.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Messages sent to clients",
            self.sent.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from a call's arrival until its last message (or status) was sent",
            self.seconds.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_the_server_does_not_offer_share_one_label_set() {
        let metrics = GrpcMetrics::default();
        let method = |path| metrics.at(metrics.index(path)).method;
        assert_eq!(method("/iot.jobs.v1.JobsGateway/WatchJobs"), "WatchJobs");
        assert_eq!(method("/evil/probe-1"), "unknown");
        assert_eq!(method("nonsense"), "unknown");
    }

    #[test]
    fn codes_are_named_as_grpc_go_names_them() {
        assert_eq!(CODE_NAMES[Code::Cancelled as usize], "Canceled");
        assert_eq!(
            CODE_NAMES[Code::Unauthenticated as usize],
            "Unauthenticated"
        );
        assert_eq!(
            CODE_NAMES[Code::ResourceExhausted as usize],
            "ResourceExhausted"
        );
    }
}
