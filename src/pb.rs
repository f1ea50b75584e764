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
