//! The real `grpcurl` (v1.8.6, reflection v1alpha only) against the
//! gateway, as an operator debugging it would use it.

use crate::support;

use support::{
    REGION, TestGateway, create_rich_job,
    fake_aws::{FakeAws, Reply, full_job},
    iot_client,
    python::{json_differences, tools},
};

#[tokio::test]
async fn lists_and_describes_the_service_through_reflection() {
    let tools = tools().await;
    let fake = FakeAws::start().await;
    let gw = TestGateway::aws(&fake.url).await;
    let addr = gw.addr.to_string();

    let (ok, services, err) = tools.grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(ok, "{err}");
    for service in ["iot.jobs.v1.JobsGateway", "grpc.health.v1.Health"] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} not listed:\n{services}"
        );
    }

    let (ok, rpc, err) = tools
        .grpcurl(&["-plaintext", &addr, "describe", "iot.jobs.v1.JobsGateway"])
        .await;
    assert!(ok, "{err}");
    assert!(
        rpc.contains("rpc DescribeJob ( .iot.jobs.v1.DescribeJobRequest ) returns ( .iot.jobs.v1.DescribeJobResponse )"),
        "{rpc}"
    );

    let (ok, job, err) = tools
        .grpcurl(&["-plaintext", &addr, "describe", "iot.jobs.v1.Job"])
        .await;
    assert!(ok, "{err}");
    for needle in [
        "job_arn",
        "JobProcessDetails job_process_details",
        "IN_PROGRESS",
        "google.protobuf.Timestamp created_at",
    ] {
        assert!(job.contains(needle), "{needle} missing:\n{job}");
    }
    assert_eq!(fake.calls(), 0);
}

#[tokio::test]
async fn a_json_call_prints_what_boto3_reads_from_moto() {
    let tools = tools().await;
    let moto = tools.moto();
    create_rich_job(&iot_client(&moto.url), "ota-7").await;
    let gw = TestGateway::aws(&moto.url).await;
    let addr = gw.addr.to_string();

    let (ok, out, err) = tools
        .grpcurl(&[
            "-plaintext",
            "-d",
            r#"{"jobId": "ota-7"}"#,
            &addr,
            "iot.jobs.v1.JobsGateway/DescribeJob",
        ])
        .await;
    assert!(ok, "{err}");

    let printed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        printed["job"]["jobArn"],
        format!("arn:aws:iot:{REGION}:123456789012:job/ota-7")
    );
    assert_eq!(printed["job"]["targetSelection"], "SNAPSHOT");
    assert_eq!(
        printed["job"]["schedulingConfig"]["endBehavior"],
        "STOP_ROLLOUT"
    );
    assert_eq!(
        printed["job"]["jobProcessDetails"]["numberOfQueuedThings"],
        1
    );
    let reference = tools.boto3_describe(&moto.url, REGION, "ota-7");
    assert_eq!(json_differences(&printed, &reference), Vec::<String>::new());
}

#[tokio::test]
async fn errors_and_health_are_readable_from_grpcurl() {
    let tools = tools().await;
    let fake = FakeAws::start().await;
    let gw = TestGateway::aws(&fake.url).await;
    let addr = gw.addr.to_string();

    let (ok, _, err) = tools
        .grpcurl(&[
            "-plaintext",
            "-d",
            r#"{"jobId": "no/slashes"}"#,
            &addr,
            "iot.jobs.v1.JobsGateway/DescribeJob",
        ])
        .await;
    assert!(!ok);
    assert!(err.contains("Code: InvalidArgument"), "{err}");
    assert!(err.contains("contains '/' at position 3"), "{err}");
    assert!(
        err.contains(r#""field":"job_id""#),
        "BadRequest is readable: {err}"
    );
    assert!(!err.contains("is not recognized"), "{err}");

    let (ok, _, err) = tools
        .grpcurl(&[
            "-plaintext",
            "-d",
            r#"{"jobId": "missing"}"#,
            &addr,
            "iot.jobs.v1.JobsGateway/DescribeJob",
        ])
        .await;
    assert!(!ok);
    assert!(err.contains("Code: NotFound"), "{err}");
    assert!(
        err.contains(r#""reason":"JOB_NOT_FOUND""#),
        "ErrorInfo is readable: {err}"
    );
    assert!(
        err.contains(r#""awsErrorCode":"ResourceNotFoundException""#),
        "{err}"
    );

    let (ok, out, err) = tools
        .grpcurl(&[
            "-plaintext",
            "-d",
            r#"{"service": "iot.jobs.v1.JobsGateway"}"#,
            &addr,
            "grpc.health.v1.Health/Check",
        ])
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("\"status\": \"SERVING\""), "{out}");
    assert_eq!(fake.calls(), 1, "only the NotFound call reached AWS");
}

/// grpcurl 1.8 only speaks v1alpha; newer tools (grpcurl 1.9, Postman,
/// grpcui) use reflection v1, so it is checked with a plain client.
#[tokio::test]
async fn reflection_v1_lists_and_resolves_the_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let fake = FakeAws::start().await;
    let gw = TestGateway::aws(&fake.url).await;
    let mut reflection = ServerReflectionClient::new(support::channel(gw.addr).await);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("iot.jobs.v1.JobsGateway".into()),
    ]
    .map(|m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });

    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();

    let listed = answers.message().await.unwrap().unwrap().message_response;
    let Some(MessageResponse::ListServicesResponse(list)) = listed else {
        panic!("expected a service list, got {listed:?}")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"iot.jobs.v1.JobsGateway"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    let file = answers.message().await.unwrap().unwrap().message_response;
    let Some(MessageResponse::FileDescriptorResponse(files)) = file else {
        panic!("expected a file descriptor, got {file:?}")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn a_batch_from_grpcurl_prints_each_item_with_readable_error_details() {
    let tools = tools().await;
    let fake = FakeAws::start().await;
    fake.reply("ota-1", Reply::Job(full_job("ota-1")));
    let gw = TestGateway::aws(&fake.url).await;
    let addr = gw.addr.to_string();

    let (ok, out, err) = tools
        .grpcurl(&[
            "-plaintext",
            "-d",
            r#"{"requests": [{"jobId": "ota-1"}, {"jobId": "ghost"}]}"#,
            &addr,
            "iot.jobs.v1.JobsGateway/BatchDescribeJobs",
        ])
        .await;
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(
        results[0]["index"], 0,
        "the first item's index is printed too"
    );
    assert_eq!(results[0]["jobId"], "ota-1");
    assert_eq!(results[0]["response"]["job"]["jobId"], "ota-1");
    assert_eq!(results[0]["cache"]["source"], "MISS");
    // The second item's google.rpc.Status, details decoded by type.
    assert_eq!(results[1]["index"], 1);
    assert_eq!(results[1]["error"]["code"], 5);
    let details = &results[1]["error"]["details"][0];
    assert_eq!(details["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
    assert_eq!(details["reason"], "JOB_NOT_FOUND");
}
