//! The deploy files, checked: the container image's command line (the
//! Dockerfile's ENTRYPOINT, CMD and ENV) run against the simulator, the
//! Kubernetes manifest validated against pinned schemas and consistent with
//! the image, the ServiceMonitor aimed at the Service, and every query of
//! the Grafana dashboard naming only metrics a live gateway serves.
//!
//! No container engine runs here: the image's command line is run with the
//! binary the build stage builds (`--bin iot-jobs-gateway`), which is what
//! the final stage copies to ENTRYPOINT's path.

use crate::support;

mod dockerfile;
mod promql;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use dockerfile::{Dockerfile, Image};
use iot_jobs_gateway::{pb, simulator::seed};
use serde::Deserialize as _;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use support::{
    describe,
    metrics::scrape_text,
    process::{GatewayProcess, exited, gateway, signal},
    python,
    redis::RedisServer,
    sim::TestSim,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Child,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The Kubernetes version the manifest is validated against: one EKS
/// supports, among the schemas the pinned kubernetes-validate ships.
const KUBERNETES_VERSION: &str = "1.34.0";

/// Where the image puts the binary and runs it from.
const BINARY_PATH: &str = "/usr/local/bin/iot-jobs-gateway";

/// The service the manifest's readiness probe asks about.
const PROBED_SERVICE: &str = "iot.jobs.v1.JobsGateway";

/// How long a test waits for the gateway or a stream.
const PATIENCE: Duration = Duration::from_secs(20);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn image() -> Image {
    Dockerfile::read(&repo("Dockerfile")).image()
}

/// The port of a listen address such as `0.0.0.0:9464`.
fn port(address: &str) -> u16 {
    address
        .parse::<SocketAddr>()
        .unwrap_or_else(|_| panic!("{address:?} is not a listen address"))
        .port()
}

// --- The image --------------------------------------------------------------

#[test]
fn the_image_is_the_release_binary_built_with_the_crates_toolchain_run_as_non_root() {
    let file = Dockerfile::read(&repo("Dockerfile"));
    let build = file.stage("build");
    let toolchain = format!("rust:{}-", env!("CARGO_PKG_RUST_VERSION"));
    assert!(
        build.from.starts_with(&toolchain),
        "the build stage uses {}, not the rust-version of Cargo.toml ({toolchain}…)",
        build.from
    );
    let runs = build.all("RUN").join("\n");
    assert!(
        runs.contains("cargo build --release --locked --bin iot-jobs-gateway"),
        "{runs}"
    );
    let image = file.image();
    assert_eq!(image.entrypoint, [BINARY_PATH]);
    assert_eq!(image.cmd, ["serve"]);
    assert!(image.copied_to.iter().any(|to| to == BINARY_PATH));
    assert!(image.base.contains("distroless"), "{}", image.base);
    // distroless' nonroot is uid 65532, what the manifest's runAsUser says.
    assert_eq!(image.user.as_deref(), Some("nonroot:nonroot"));
    assert_eq!(image.env("GATEWAY_LOG_FORMAT"), Some("json"));
    let listened: BTreeSet<u16> = listen_settings(&image)
        .map(|(_, address)| port(address))
        .collect();
    let exposed: BTreeSet<u16> = image.expose.iter().copied().collect();
    assert_eq!(exposed, listened, "EXPOSE and the listen addresses differ");
    assert_eq!(listened, BTreeSet::from([50051, 9464, 8081]));
}

/// The image's `GATEWAY_*_LISTEN` settings.
fn listen_settings(image: &Image) -> impl Iterator<Item = (&str, &str)> {
    image
        .env
        .iter()
        .filter(|(key, _)| key.starts_with("GATEWAY_") && key.ends_with("_LISTEN"))
        .map(|(key, value)| (key.as_str(), value.as_str()))
}

/// The image's command line and environment, run on this machine.
struct ImageRun {
    child: Child,
    grpc: SocketAddr,
    health: SocketAddr,
    /// Where `/metrics` is served, if the gateway logged it.
    metrics: Option<String>,
}

/// Runs the image's ENTRYPOINT and CMD with its ENV, as a container runtime
/// would, plus what a deployment adds: the AWS region, endpoint (here the
/// simulator) and credentials. Only loopback may be used in the tests, so
/// the image's `0.0.0.0` listen addresses become 127.0.0.1: port 0 where
/// the gateway logs the port it got (gRPC, metrics), and for the health
/// listener, which does not, a free port found just before.
async fn run_image(image: &Image, sim: &TestSim, home: &str) -> ImageRun {
    let mut health = None;
    let env: Vec<(String, String)> = image
        .env
        .iter()
        .map(|(key, value)| {
            if !(key.starts_with("GATEWAY_") && key.ends_with("_LISTEN")) {
                return (key.clone(), value.clone());
            }
            assert!(
                value.starts_with("0.0.0.0:"),
                "{key}={value}: a container must listen on every interface"
            );
            let local = if key == "GATEWAY_HEALTH_LISTEN" {
                let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let address = free.local_addr().unwrap();
                health = Some(address);
                address.to_string()
            } else {
                "127.0.0.1:0".to_owned()
            };
            (key.clone(), local)
        })
        .collect();
    let health = health.expect("the image sets GATEWAY_HEALTH_LISTEN");
    let (program, args) = image.entrypoint.split_first().expect("an ENTRYPOINT");
    assert_eq!(program, BINARY_PATH);
    // `gateway` is the built binary with a clean environment (no AWS
    // configuration, no instance metadata).
    let mut child = gateway(home)
        .args(args)
        .args(&image.cmd)
        .envs(env)
        .env("GATEWAY_REGION", support::REGION)
        .env("GATEWAY_ENDPOINT_URL", &sim.url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut metrics = None;
    let grpc = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let entry: Json = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("GATEWAY_LOG_FORMAT=json, yet a log line is: {line}"));
            let address = entry["address"].as_str().map(str::to_owned);
            match entry["message"].as_str() {
                Some("metrics listening") => metrics = address,
                Some("gateway listening") => return address.unwrap().parse().unwrap(),
                _ => {}
            }
        }
        panic!("the gateway exited before listening")
    })
    .await
    .expect("the gateway logs its address");
    // Keep reading, so the pipe never fills.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    ImageRun {
        child,
        grpc,
        health,
        metrics,
    }
}

#[tokio::test]
async fn the_images_command_line_serves_describe_job_and_health_against_the_simulator() {
    let sim = TestSim::unlimited().await;
    seed::demo_fleet(&sim.sim);
    let mut run = run_image(&image(), &sim, "deploy-image").await;

    let mut client =
        pb::jobs_gateway_client::JobsGatewayClient::new(support::channel(run.grpc).await);
    let answer = client
        .describe_job(describe(seed::ROLLOUT, Some(Duration::from_secs(10))))
        .await
        .expect("DescribeJob through the image's command line")
        .into_inner();
    let job = answer.job.expect("a job");
    assert_eq!(job.job_id.as_deref(), Some(seed::ROLLOUT));

    // The port the manifest's probes use answers in plaintext.
    let mut health = HealthClient::new(support::channel(run.health).await);
    for service in ["", PROBED_SERVICE] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("the health port answers")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    // What Kubernetes does to stop the pod.
    signal(&run.child, "TERM");
    assert!(exited(&mut run.child).await.success());
}

#[tokio::test]
async fn the_images_environment_turns_metrics_on() {
    let sim = TestSim::unlimited().await;
    seed::demo_fleet(&sim.sim);
    let run = run_image(&image(), &sim, "deploy-image-metrics").await;
    let metrics = run
        .metrics
        .expect("with the image's GATEWAY_METRICS_LISTEN the gateway logs 'metrics listening'");
    let page = scrape_text(&metrics).await;
    assert!(
        promql::sample_names(&page).contains("grpc_server_started_total"),
        "{page}"
    );
}

// --- Kubernetes -------------------------------------------------------------

/// The documents of a YAML file.
fn documents(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The one document of `kind` in `docs`.
fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let mut found = docs.iter().filter(|d| d["kind"] == kind);
    let doc = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    doc
}

fn text(value: &Yaml) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value:?} is not a string"))
}

fn list(value: &Yaml) -> &[Yaml] {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{value:?} is not a list"))
}

/// The validator's verdict on `manifest`: the resources that passed, or
/// the validator's own messages.
async fn validate(tools: &python::Tools, manifest: &Path) -> Result<Vec<String>, String> {
    let run = tools
        .kubernetes_validate(KUBERNETES_VERSION, manifest)
        .await;
    let lines: Vec<&str> = run.stdout.lines().collect();
    let passed: Vec<String> = lines
        .iter()
        .filter_map(|l| l.split(" passed for resource ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap_or(rest).to_owned())
        .collect();
    // A kind without a schema (a misspelt apiVersion) is only a warning to
    // the validator; here it fails.
    let complaints = lines.iter().any(|l| !l.starts_with("INFO "));
    if run.code != 0 || complaints || !run.stderr.trim().is_empty() {
        return Err(format!("exit {}\n{}{}", run.code, run.stdout, run.stderr));
    }
    Ok(passed)
}

#[tokio::test]
async fn the_kubernetes_manifest_passes_the_pinned_schemas_strictly() {
    let tools = python::tools().await;
    let manifest = repo("deploy/kubernetes.yaml");
    let passed = validate(tools, &manifest)
        .await
        .unwrap_or_else(|message| panic!("deploy/kubernetes.yaml is not valid:\n{message}"));
    let expected: Vec<String> = documents("deploy/kubernetes.yaml")
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                text(&d["kind"]).to_ascii_lowercase(),
                text(&d["metadata"]["name"])
            )
        })
        .collect();
    assert_eq!(passed, expected, "every document is validated");
    for kind in [
        "deployment",
        "service",
        "poddisruptionbudget",
        "serviceaccount",
    ] {
        assert!(
            passed.iter().any(|p| p.starts_with(&format!("{kind}/"))),
            "no {kind} in {passed:?}"
        );
    }

    // Strict: the same manifest with one misspelt field fails, naming it.
    let original = std::fs::read_to_string(&manifest).unwrap();
    let misspelt = original.replacen(
        "terminationGracePeriodSeconds:",
        "terminationGracePeriodSecond:",
        1,
    );
    assert_ne!(misspelt, original);
    let copy = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kubernetes-misspelt.yaml");
    std::fs::write(&copy, misspelt).unwrap();
    let refused = validate(tools, &copy)
        .await
        .expect_err("a misspelt field fails");
    assert!(
        refused.contains("'terminationGracePeriodSecond' was unexpected"),
        "{refused}"
    );
}

/// The Deployment's gateway container.
fn container(deployment: &Yaml) -> &Yaml {
    let containers = list(&deployment["spec"]["template"]["spec"]["containers"]);
    containers
        .iter()
        .find(|c| c["name"] == "gateway")
        .expect("a container named gateway")
}

/// The container port named `name`.
fn container_port(container: &Yaml, name: &str) -> u64 {
    list(&container["ports"])
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn the_manifest_uses_the_ports_the_image_listens_on() {
    let image = image();
    let docs = documents("deploy/kubernetes.yaml");
    let deployment = kind(&docs, "Deployment");
    let gateway = container(deployment);
    for (name, key) in [
        ("grpc", "GATEWAY_LISTEN"),
        ("metrics", "GATEWAY_METRICS_LISTEN"),
        ("health", "GATEWAY_HEALTH_LISTEN"),
    ] {
        let image_port = port(image.env(key).unwrap_or_else(|| panic!("no {key}")));
        assert_eq!(
            container_port(gateway, name),
            u64::from(image_port),
            "{name}"
        );
        // Where the manifest sets the variable too, it agrees with the image.
        if let Some(set) = list(&gateway["env"]).iter().find(|e| e["name"] == key) {
            assert_eq!(port(text(&set["value"])), image_port, "{key}");
        }
    }
    assert_eq!(gateway["args"], Yaml::from(vec!["serve"]));
    let probe = &gateway["readinessProbe"]["grpc"];
    assert_eq!(
        probe["port"].as_u64(),
        Some(container_port(gateway, "health"))
    );
    assert_eq!(text(&probe["service"]), PROBED_SERVICE);
    assert_eq!(
        gateway["securityContext"]["runAsUser"].as_u64(),
        Some(65532)
    );

    let pod = &deployment["spec"]["template"]["metadata"];
    let annotations = &pod["annotations"];
    assert_eq!(text(&annotations["prometheus.io/scrape"]), "true");
    assert_eq!(
        text(&annotations["prometheus.io/port"]),
        container_port(gateway, "metrics").to_string()
    );
    assert_eq!(text(&annotations["prometheus.io/path"]), "/metrics");

    let service = kind(&docs, "Service");
    for name in ["grpc", "metrics"] {
        let port = list(&service["spec"]["ports"])
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("the Service has no {name} port"));
        assert_eq!(text(&port["targetPort"]), name);
    }
    assert_eq!(service["spec"]["selector"], pod["labels"]);

    let budget = kind(&docs, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"].as_u64(), Some(1));
    assert_eq!(
        budget["spec"]["selector"], deployment["spec"]["selector"],
        "the budget covers the Deployment's pods"
    );
    assert!(
        deployment["spec"]["replicas"].as_u64() > Some(1),
        "with one replica a budget of one would block every drain"
    );
    let manifest = std::fs::read_to_string(repo("deploy/kubernetes.yaml")).unwrap();
    assert!(
        manifest.contains("eks.amazonaws.com/role-arn"),
        "the IAM note"
    );
}

#[test]
fn the_service_monitor_scrapes_the_services_metrics_port() {
    let monitors = documents("deploy/servicemonitor.yaml");
    let monitor = kind(&monitors, "ServiceMonitor");
    assert_eq!(text(&monitor["apiVersion"]), "monitoring.coreos.com/v1");
    let docs = documents("deploy/kubernetes.yaml");
    let service = kind(&docs, "Service");

    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("the ServiceMonitor selects by matchLabels");
    assert!(!wanted.is_empty());
    for (label, value) in wanted {
        assert_eq!(
            &service["metadata"]["labels"][label], value,
            "the Service lacks the label {label:?} the ServiceMonitor selects"
        );
    }
    let service_ports: Vec<&str> = list(&service["spec"]["ports"])
        .iter()
        .map(|p| text(&p["name"]))
        .collect();
    let endpoints = list(&monitor["spec"]["endpoints"]);
    assert!(!endpoints.is_empty());
    for endpoint in endpoints {
        let port = text(&endpoint["port"]);
        assert!(
            service_ports.contains(&port),
            "the ServiceMonitor scrapes port {port}, the Service has {service_ports:?}"
        );
        assert_eq!(text(&endpoint["path"]), "/metrics");
    }
}

// --- The Grafana dashboard --------------------------------------------------

fn dashboard() -> Json {
    let text = std::fs::read_to_string(repo("deploy/grafana-dashboard.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, those inside rows included.
fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(panels: &'a Json, into: &mut Vec<&'a Json>) {
        for panel in panels.as_array().into_iter().flatten() {
            into.push(panel);
            walk(&panel["panels"], into);
        }
    }
    let mut all = Vec::new();
    walk(&dashboard["panels"], &mut all);
    all
}

/// (panel title, refId, expr) of every query.
fn queries(dashboard: &Json) -> Vec<(String, String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| {
                    let expr = t["expr"].as_str().unwrap_or("").to_owned();
                    let ref_id = t["refId"].as_str().unwrap_or("?").to_owned();
                    (title.clone(), ref_id, expr)
                })
        })
        .collect()
}

/// The metric named by `label_values(metric, label)` in a variable's query.
fn variable_metric(query: &str) -> Option<String> {
    let inner = query.strip_prefix("label_values(")?.strip_suffix(')')?;
    let (metric, _label) = inner.split_once(',')?;
    Some(metric.trim().to_owned())
}

#[test]
fn the_dashboard_imports_with_a_prometheus_data_source_and_a_query_per_panel() {
    let dashboard = dashboard();
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "the data source is also a variable, for provisioning without import"
    );
    let source = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id"
        );
        let grid = &panel["gridPos"];
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24);
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"], source, "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert_eq!(target["datasource"], source, "{title}");
            let expr = target["expr"].as_str().expect("an expr");
            assert!(!promql::metric_names(expr).is_empty(), "{title}: {expr}");
        }
    }
    // Every metric the issue asks to see is on some panel.
    let shown: BTreeSet<String> = queries(&dashboard)
        .iter()
        .flat_map(|(_, _, expr)| promql::metric_names(expr))
        .collect();
    for metric in [
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "iot_jobs_gateway_aws_attempts_total",
        "iot_jobs_gateway_aws_request_duration_seconds_bucket",
        "iot_jobs_gateway_aws_retries_total",
        "iot_jobs_gateway_rate_limit_per_second",
        "iot_jobs_gateway_rate_limit_waiting",
        "iot_jobs_gateway_rate_limited_total",
        "iot_jobs_gateway_cache_answers_total",
        "iot_jobs_gateway_cache_entries",
        "iot_jobs_gateway_cache_weighted_size_bytes",
        "iot_jobs_gateway_watch_streams",
        "iot_jobs_gateway_watch_pollers",
        "iot_jobs_gateway_watch_polls_total",
        "iot_jobs_gateway_watch_events_sent_total",
        "iot_jobs_gateway_watch_answer_age_seconds_bucket",
        "iot_jobs_gateway_redis_errors_total",
        "iot_jobs_gateway_redis_fallback",
        "iot_jobs_gateway_redis_leases_held",
    ] {
        assert!(shown.contains(metric), "no panel shows {metric}");
    }
}

#[tokio::test]
async fn every_dashboard_query_names_metrics_a_live_gateway_serves() {
    // Redis first (its first install takes a while): with it, the gateway
    // serves the Redis families as a replica in a set does.
    let redis = RedisServer::start().await;
    let sim = TestSim::unlimited().await;
    seed::demo_fleet(&sim.sim);
    let gw = GatewayProcess::serve(
        &sim.url,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--redis-url",
            &redis.url(),
        ],
        "deploy-dashboard",
    )
    .await;
    let metrics = gw
        .metrics_addr
        .clone()
        .expect("with --metrics-listen the gateway logs 'metrics listening'");

    // Calls of every kind, so labelled series exist: OK, NOT_FOUND,
    // INVALID_ARGUMENT, a batch and a watch.
    let mut client = gw.client().await;
    client
        .describe_job(describe(seed::ROLLOUT, None))
        .await
        .expect("OK");
    let missing = client.describe_job(describe("no-such-job", None)).await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);
    let invalid = client.describe_job(describe("", None)).await;
    assert_eq!(invalid.unwrap_err().code(), tonic::Code::InvalidArgument);
    let batch = client
        .batch_describe_jobs(pb::BatchDescribeJobsRequest {
            requests: [seed::ROLLOUT, seed::CONTINUOUS, "no-such-job"]
                .into_iter()
                .map(|id| describe(id, None).into_inner())
                .collect(),
        })
        .await
        .expect("the batch")
        .into_inner();
    assert_eq!(batch.results.len(), 3);
    let mut watch = client
        .watch_jobs(pb::WatchJobsRequest {
            job_ids: vec![seed::ROLLOUT.to_owned()],
            ..Default::default()
        })
        .await
        .expect("the watch starts")
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("a first watch event")
        .expect("no error");
    assert!(first.is_some());

    let page = scrape_text(&metrics).await;
    let served = promql::sample_names(&page);
    let dashboard = dashboard();
    let mut absent = Vec::new();
    for (title, ref_id, expr) in queries(&dashboard) {
        for name in promql::metric_names(&expr) {
            if !served.contains(&name) {
                absent.push(format!("{title} ({ref_id}): {name}"));
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(metric) = variable["definition"].as_str().and_then(variable_metric)
            && !served.contains(&metric)
        {
            absent.push(format!("variable {}: {metric}", variable["name"]));
        }
    }
    assert!(
        absent.is_empty(),
        "dashboard queries name metrics /metrics does not serve:\n{}\n\nserved:\n{}",
        absent.join("\n"),
        served.into_iter().collect::<Vec<_>>().join("\n")
    );
    drop(watch);
}
