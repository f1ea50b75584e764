//! The contract as a product: `buf lint` and `buf breaking` on `proto/`, as
//! a gRPC shop runs them in CI, with the buf CLI pinned in
//! `tests/it/support/buf/` (npm's `@bufbuild/buf`, installed by the tests).
//! A failure prints buf's own message. The checks are also run on edited
//! copies of the contract, to see them fail where they must.

use crate::support;

use std::{
    fs,
    path::{Path, PathBuf},
};

use iot_jobs_gateway::pb;
use prost::Message;
use support::{
    TestGateway,
    sim::{TestSim, create_fleet_job},
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The contract, as users copy it.
fn contract() -> PathBuf {
    Path::new(ROOT).join("proto")
}

/// The released contracts: `proto/releases/<version>.json`, oldest first.
fn releases() -> Vec<(Vec<u64>, PathBuf)> {
    let mut found: Vec<_> = fs::read_dir(contract().join("releases"))
        .expect("proto/releases holds the released contracts")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| (version(path.file_stem().unwrap().to_str().unwrap()), path))
        .collect();
    found.sort();
    found
}

/// `0.2.0` as numbers, for ordering.
fn version(text: &str) -> Vec<u64> {
    text.split('.')
        .map(|part| {
            part.parse()
                .unwrap_or_else(|_| panic!("{text} is not a release version"))
        })
        .collect()
}

/// The outcome of one buf command: success, and what it printed.
struct Checked {
    ok: bool,
    said: String,
}

/// Runs buf with `args` from the repository root.
async fn buf(args: &[&str]) -> Checked {
    buf_in(Path::new(ROOT), args).await
}

/// Runs buf with `args` in `dir`.
async fn buf_in(dir: &Path, args: &[&str]) -> Checked {
    let out = support::node::install("tests/it/support/buf", "buf")
        .await
        .program("buf")
        .args(args)
        .current_dir(dir)
        .env(
            "BUF_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("buf-cache"),
        )
        .output()
        .await
        .expect("buf runs");
    Checked {
        ok: out.status.success(),
        said: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A fresh copy of the contract (its buf.yaml and protos, not the
/// releases) to edit, with `edit` applied to gateway.proto.
fn edited_copy(name: &str, edit: impl FnOnce(String) -> String) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("contract-{name}"));
    let _ = fs::remove_dir_all(&dir);
    support::copy_tree(&contract(), &dir, &["releases"]);
    let gateway = dir.join("iot/jobs/v1/gateway.proto");
    let text = fs::read_to_string(&gateway).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit must change the contract");
    fs::write(&gateway, edited).unwrap();
    dir.to_str().unwrap().to_owned()
}

/// The newest release, as buf's `--against` takes it.
fn last_release() -> String {
    let (_, path) = releases().pop().expect("at least one released contract");
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_contract_passes_buf_lint() {
    let lint = buf(&["lint", "proto"]).await;
    assert!(lint.ok, "buf lint proto:\n{}", lint.said);
}

#[tokio::test]
async fn the_contract_is_laid_out_as_buf_format_writes_it() {
    let format = buf(&["format", "--diff", "--exit-code", "proto"]).await;
    assert!(
        format.ok,
        "buf format --diff proto (fix with `buf format -w proto`):\n{}",
        format.said
    );
}

/// The contract's rules began with 0.2.0: before it, StreamDescribeJobs
/// shared BatchDescribeJobs' request and answered JobResult, and 0.2.0 gave
/// it messages of its own with the same fields. A client of 0.1.0 still
/// works on the wire and in JSON, which is what is checked for it: buf's
/// WIRE_JSON rules, except that an RPC's message may have a new name.
const BEFORE_THE_RULES: (&[u64], &str) = (
    &[0, 2, 0],
    r#"{"version":"v2","breaking":{"use":["WIRE_JSON"],"except":["RPC_SAME_REQUEST_TYPE","RPC_SAME_RESPONSE_TYPE"]}}"#,
);

#[tokio::test]
async fn the_contract_breaks_no_released_contract() {
    let releases = releases();
    let (newest, _) = releases
        .last()
        .expect("no released contract in proto/releases");
    assert_eq!(
        *newest,
        version(env!("CARGO_PKG_VERSION")),
        "the crate's version has no released contract: add proto/releases/{}.json \
         (see the README's contract section)",
        env!("CARGO_PKG_VERSION")
    );
    for (released, image) in &releases {
        let against = format!("releases/{}", image.file_name().unwrap().to_str().unwrap());
        let mut args = vec!["breaking", ".", "--against", &against];
        if released.as_slice() < BEFORE_THE_RULES.0 {
            args.extend(["--config", BEFORE_THE_RULES.1]);
        }
        let breaking = buf_in(&contract(), &args).await;
        assert!(
            breaking.ok,
            "buf {} (in proto/): the contract breaks clients of that release \
             (within iot.jobs.v1 only additions are allowed; see the README's contract section):\n{}",
            args.join(" "),
            breaking.said
        );
    }
}

#[tokio::test]
async fn lint_fails_an_rpc_that_shares_another_s_request() {
    let copy = edited_copy("lint", |text| {
        text.replacen(
            "service JobsGateway {\n",
            "service JobsGateway {\n  // Another way to ask.\n  rpc GetJob(DescribeJobRequest) returns (DescribeJobResponse);\n",
            1,
        )
    });

    let lint = buf(&["lint", &copy]).await;

    assert!(!lint.ok, "buf lint accepted the edit:\n{}", lint.said);
    assert!(
        lint.said
            .contains("is used as the request or response type for multiple RPCs"),
        "{}",
        lint.said
    );
    assert!(
        lint.said.contains("should be named \"GetJobRequest\""),
        "{}",
        lint.said
    );
}

#[tokio::test]
async fn breaking_fails_a_renamed_or_removed_field_and_passes_an_added_one() {
    let against = last_release();

    let renamed = edited_copy("renamed", |text| {
        text.replacen("  bool final = 5;\n", "  bool is_final = 5;\n", 1)
    });
    let breaking = buf(&["breaking", &renamed, "--against", &against]).await;
    assert!(!breaking.ok, "a renamed field passed:\n{}", breaking.said);
    assert!(
        breaking
            .said
            .contains(r#"Field "5" on message "JobEvent" changed name from "final" to "is_final""#),
        "{}",
        breaking.said
    );

    let removed = edited_copy("removed", |text| {
        text.replacen("  uint32 watching = 2;\n", "", 1)
    });
    let breaking = buf(&["breaking", &removed, "--against", &against]).await;
    assert!(!breaking.ok, "a removed field passed:\n{}", breaking.said);
    assert!(
        breaking
            .said
            .contains(r#"Previously present field "2" with name "watching" on message "Heartbeat" was deleted"#),
        "{}",
        breaking.said
    );

    let added = edited_copy("added", |text| {
        text.replacen(
            "  uint32 watching = 2;\n",
            "  uint32 watching = 2;\n  // Jobs of this stream that are final.\n  uint32 finished = 3;\n",
            1,
        )
    });
    let breaking = buf(&["breaking", &added, "--against", &against]).await;
    assert!(breaking.ok, "an added field failed:\n{}", breaking.said);
}

/// buf.yaml excepts the contract from ENUM_VALUE_PREFIX because every enum
/// is nested in its message, which scopes its values: a top-level enum would
/// put unprefixed values in the package's scope.
#[test]
fn every_enum_is_nested_in_the_message_that_uses_it() {
    let set =
        prost_types::FileDescriptorSet::decode(iot_jobs_gateway::pb::FILE_DESCRIPTOR_SET).unwrap();
    let gateway = set
        .file
        .iter()
        .find(|file| file.package() == "iot.jobs.v1")
        .expect("the contract's file");
    let top_level: Vec<_> = gateway.enum_type.iter().map(|e| e.name()).collect();
    assert!(
        top_level.is_empty(),
        "top-level enums {top_level:?}: nest them in their message, or prefix their values and \
         narrow the ENUM_VALUE_PREFIX exception in proto/buf.yaml"
    );
    let nested: usize = gateway
        .message_type
        .iter()
        .map(|message| message.enum_type.len())
        .sum();
    assert!(
        nested >= 8,
        "the contract's enums were not found ({nested})"
    );
}

/// DescribeJobRequest as a client built on a later `v1` sends it: today's
/// two fields and one added later, which this gateway does not know.
#[derive(Clone, PartialEq, Message)]
struct LaterDescribeJobRequest {
    #[prost(string, tag = "1")]
    job_id: String,
    #[prost(bool, optional, tag = "2")]
    before_substitution: Option<bool>,
    #[prost(string, tag = "3")]
    fields_wanted: String,
}

/// DescribeJobResponse as a client built on an earlier `v1` reads it: a
/// few of the job's fields, and a status enum that knew fewer values.
#[derive(Clone, PartialEq, Message)]
struct EarlierDescribeJobResponse {
    #[prost(message, optional, tag = "2")]
    job: Option<EarlierJob>,
}

#[derive(Clone, PartialEq, Message)]
struct EarlierJob {
    #[prost(string, optional, tag = "2")]
    job_id: Option<String>,
    #[prost(enumeration = "EarlierStatus", optional, tag = "4")]
    status: Option<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
enum EarlierStatus {
    Unspecified = 0,
    InProgress = 1,
}

/// The README's promise: a field the gateway does not know is ignored, and
/// a client skips the fields it does not know, within `iot.jobs.v1`.
#[tokio::test]
async fn clients_of_an_earlier_or_later_v1_are_understood() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "firmware-a").await;
    let gw = TestGateway::aws(&sim.url).await;
    let mut grpc = tonic::client::Grpc::new(support::channel(gw.addr).await);
    grpc.ready().await.unwrap();

    let path = || http::uri::PathAndQuery::from_static("/iot.jobs.v1.JobsGateway/DescribeJob");
    let codec =
        tonic_prost::ProstCodec::<LaterDescribeJobRequest, EarlierDescribeJobResponse>::default;
    let later = LaterDescribeJobRequest {
        job_id: "firmware-a".into(),
        before_substitution: None,
        fields_wanted: "status".into(),
    };

    let answer = grpc
        .unary(tonic::Request::new(later.clone()), path(), codec())
        .await
        .expect("the unknown request field is ignored")
        .into_inner();

    let job = answer.job.expect("the job");
    assert_eq!(job.job_id.as_deref(), Some("firmware-a"));
    assert_eq!(job.status, Some(EarlierStatus::InProgress as i32));

    // The job completes: COMPLETED has no name in the earlier enum, and
    // reaches that client as its number.
    sim.advance(std::time::Duration::from_secs(30));
    let mut again = tonic::Request::new(later);
    again
        .metadata_mut()
        .insert("cache-control", "no-cache".parse().unwrap());
    grpc.ready().await.unwrap();
    let answer = grpc
        .unary(again, path(), codec())
        .await
        .unwrap()
        .into_inner();
    let status = answer.job.unwrap().status.unwrap();
    assert_eq!(status, pb::job::Status::Completed as i32);
    assert!(EarlierStatus::try_from(status).is_err(), "no name for it");
}
