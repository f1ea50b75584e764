//! The generated protobuf and gRPC code of the public contract
//! (`proto/iot/jobs/v1/gateway.proto`), behind one door.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("iot.jobs.v1");

/// The encoded file descriptor set of the contract, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("iot_jobs_v1_descriptor");

/// The fully qualified name of the gateway service, as health checks use it.
pub const SERVICE_NAME: &str = "iot.jobs.v1.JobsGateway";

/// The `ErrorInfo.domain` of every error the gateway reports.
pub const ERROR_DOMAIN: &str = "iot-jobs-gateway";

/// The RPCs of [`SERVICE_NAME`], named as in request paths, logs, metrics
/// and the policy.
pub mod rpc {
    /// `DescribeJob`.
    pub const DESCRIBE_JOB: &str = "DescribeJob";
    /// `BatchDescribeJobs`.
    pub const BATCH_DESCRIBE_JOBS: &str = "BatchDescribeJobs";
    /// `StreamDescribeJobs`.
    pub const STREAM_DESCRIBE_JOBS: &str = "StreamDescribeJobs";
    /// `WatchJobs`.
    pub const WATCH_JOBS: &str = "WatchJobs";
    /// `DescribeJobExecution`.
    pub const DESCRIBE_JOB_EXECUTION: &str = "DescribeJobExecution";
    /// `ListJobExecutionsForJob`.
    pub const LIST_JOB_EXECUTIONS_FOR_JOB: &str = "ListJobExecutionsForJob";
    /// `ListJobExecutionsForThing`.
    pub const LIST_JOB_EXECUTIONS_FOR_THING: &str = "ListJobExecutionsForThing";
    /// `BatchDescribeJobExecutions`.
    pub const BATCH_DESCRIBE_JOB_EXECUTIONS: &str = "BatchDescribeJobExecutions";
    /// `StreamJobExecutionsForJob`.
    pub const STREAM_JOB_EXECUTIONS_FOR_JOB: &str = "StreamJobExecutionsForJob";
    /// All of them, in the contract's order.
    pub const ALL: [&str; 9] = [
        DESCRIBE_JOB,
        BATCH_DESCRIBE_JOBS,
        STREAM_DESCRIBE_JOBS,
        WATCH_JOBS,
        DESCRIBE_JOB_EXECUTION,
        LIST_JOB_EXECUTIONS_FOR_JOB,
        LIST_JOB_EXECUTIONS_FOR_THING,
        BATCH_DESCRIBE_JOB_EXECUTIONS,
        STREAM_JOB_EXECUTIONS_FOR_JOB,
    ];
}

/// The gRPC health service the server offers beside the contract.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// The server reflection services: v1, and v1alpha (all grpcurl 1.8 speaks).
pub const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];
