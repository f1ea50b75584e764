//! The executions commands beside the real AWS CLI (v1 from PyPI), both
//! reading the simulator: `describe-job-execution`,
//! `list-job-executions-for-job` and `list-job-executions-for-thing` print
//! the same bytes in JSON, text and table, page the same way (every page by
//! default, `--page-size`, `--max-items` with a `NextToken` that
//! `--starting-token` continues, on either CLI, `--no-paginate`), take the
//! same input documents and skeletons, and refuse the same mistakes.

use crate::{
    cli::{golden, iot, ours},
    support,
};

use std::time::Duration;

use iot_jobs_gateway::simulator::SimConfig;
use serde_json::Value;
use support::{
    TestGateway,
    python::tools,
    sim::{TestSim, create_fleet_job},
};

/// A 12-thing rollout, every execution finished (so nothing changes
/// between the two CLIs' calls), and a gateway in front of it.
async fn finished_rollout() -> (TestSim, TestGateway) {
    let sim = TestSim::start(SimConfig {
        describe_rate_limit: None,
        group_size: 12,
        ..Default::default()
    })
    .await;
    create_fleet_job(&sim, "rollout").await;
    create_fleet_job(&sim, "hotfix").await;
    sim.advance(Duration::from_secs(3600));
    let gw = TestGateway::aws(&sim.url).await;
    (sim, gw)
}

/// Runs `args` on both CLIs; asserts both succeed with the same output.
async fn same(sim: &TestSim, gw: &TestGateway, args: &[&str]) -> String {
    let theirs = tools().await.aws_cli(&sim.url, &iot(args)).await;
    let mine = ours(gw, args).await;
    assert_eq!(
        (theirs.code, mine.code),
        (0, 0),
        "{args:?}: {} / {}",
        theirs.stderr,
        mine.stderr
    );
    assert_eq!(
        mine.stdout, theirs.stdout,
        "{args:?}: ours (left) vs the AWS CLI (right)"
    );
    mine.stdout
}

#[tokio::test]
async fn executions_print_what_the_aws_cli_prints_in_every_format() {
    let (sim, gw) = finished_rollout().await;
    for format in ["json", "text", "table"] {
        let output = ["--output", format];
        let execution = same(
            &sim,
            &gw,
            &[
                &["describe-job-execution", "--job-id", "rollout"][..],
                &["--thing-name", "fleet-3"],
                &output,
            ]
            .concat(),
        )
        .await;
        golden(&format!("describe-job-execution.{format}"), &execution);
        let listing = same(
            &sim,
            &gw,
            &[
                &["list-job-executions-for-job", "--job-id", "rollout"][..],
                &output,
            ]
            .concat(),
        )
        .await;
        golden(&format!("list-job-executions-for-job.{format}"), &listing);
        same(
            &sim,
            &gw,
            &[
                &["list-job-executions-for-thing", "--thing-name", "fleet-3"][..],
                &output,
            ]
            .concat(),
        )
        .await;
        // Nothing to list: `[]` in JSON, the bare title in a table.
        same(
            &sim,
            &gw,
            &[
                &["list-job-executions-for-thing", "--thing-name", "nobody"][..],
                &output,
            ]
            .concat(),
        )
        .await;
    }
    for args in [
        &[
            "list-job-executions-for-job",
            "--job-id",
            "rollout",
            "--status",
            "SUCCEEDED",
        ][..],
        &[
            "list-job-executions-for-job",
            "--job-id",
            "rollout",
            "--status",
            "FAILED",
        ],
        &[
            "list-job-executions-for-thing",
            "--thing-name",
            "fleet-2",
            "--job-id",
            "hotfix",
        ],
        &[
            "list-job-executions-for-job",
            "--job-id",
            "rollout",
            "--query",
            "executionSummaries[].jobExecutionSummary.status",
        ],
        &[
            "list-job-executions-for-job",
            "--job-id",
            "rollout",
            "--output",
            "text",
            "--query",
            "executionSummaries[].thingArn",
        ],
        &[
            "describe-job-execution",
            "--cli-input-json",
            r#"{"jobId": "rollout", "thingName": "fleet-1", "executionNumber": 1}"#,
        ],
    ] {
        same(&sim, &gw, args).await;
    }

    // YAML (AWS CLI v2 only): the same data as the JSON.
    let tools = tools().await;
    let yaml = ours(
        &gw,
        &[
            "list-job-executions-for-job",
            "--job-id",
            "rollout",
            "--output",
            "yaml",
        ],
    )
    .await;
    assert_eq!(yaml.code, 0, "{}", yaml.stderr);
    let json = ours(&gw, &["list-job-executions-for-job", "--job-id", "rollout"]).await;
    let from_yaml = tools.yaml_to_json(&yaml.stdout);
    let from_json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(from_yaml, from_json);
}

/// `list-job-executions-for-job --job-id rollout` and `extra`.
fn listing<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [
        &["list-job-executions-for-job", "--job-id", "rollout"][..],
        extra,
    ]
    .concat()
}

#[tokio::test]
async fn listings_page_as_the_aws_cli_pages_them() {
    let (sim, gw) = finished_rollout().await;
    // Every page, 5 at a time: three AWS calls for each CLI.
    let before = sim.sim.stats().list_job_executions_for_job_calls;
    same(&sim, &gw, &listing(&["--page-size", "5"])).await;
    let calls = sim.sim.stats().list_job_executions_for_job_calls - before;
    assert_eq!(calls, 3 + 3, "three pages for each CLI");
    for format in ["text", "table"] {
        same(
            &sim,
            &gw,
            &listing(&["--page-size", "5", "--output", format]),
        )
        .await;
    }

    // --max-items inside a page and on a page boundary, then continued
    // with the AWS CLI's token on both CLIs, and with ours on the AWS CLI.
    for (max_items, page_size) in [("7", "5"), ("5", "5"), ("2", "3")] {
        let first = same(
            &sim,
            &gw,
            &listing(&["--max-items", max_items, "--page-size", page_size]),
        )
        .await;
        let first: Value = serde_json::from_str(&first).unwrap();
        let token = first["NextToken"].as_str().expect("a NextToken").to_owned();
        let rest = same(
            &sim,
            &gw,
            &listing(&["--starting-token", &token, "--page-size", page_size]),
        )
        .await;
        let rest: Value = serde_json::from_str(&rest).unwrap();
        let all = first["executionSummaries"].as_array().unwrap().len()
            + rest["executionSummaries"].as_array().unwrap().len();
        assert_eq!(all, 12, "--max-items {max_items}, then the rest");
        assert!(rest.get("NextToken").is_none());
        same(
            &sim,
            &gw,
            &listing(&[
                "--max-items",
                max_items,
                "--page-size",
                page_size,
                "--output",
                "text",
            ]),
        )
        .await;
    }

    // One call: AWS's page and its own nextToken.
    let once = same(
        &sim,
        &gw,
        &listing(&["--no-paginate", "--max-results", "4"]),
    )
    .await;
    let once: Value = serde_json::from_str(&once).unwrap();
    let token = once["nextToken"].as_str().unwrap().to_owned();
    same(
        &sim,
        &gw,
        &listing(&["--next-token", &token, "--max-results", "4"]),
    )
    .await;
    same(
        &sim,
        &gw,
        &[
            "list-job-executions-for-thing",
            "--thing-name",
            "fleet-1",
            "--max-items",
            "1",
        ],
    )
    .await;
}

#[tokio::test]
async fn inputs_skeletons_and_mistakes_are_the_aws_clis() {
    let (sim, gw) = finished_rollout().await;
    let tools = tools().await;
    // Skeletons: the AWS CLI v1 picks an enum value at random for status.
    let status_line = |text: &str| {
        text.lines()
            .map(|l| {
                if l.trim_start().starts_with("\"status\"") {
                    "    \"status\": <enum>,".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for command in [
        "describe-job-execution",
        "list-job-executions-for-job",
        "list-job-executions-for-thing",
    ] {
        let args = [command, "--generate-cli-skeleton"];
        let theirs = tools.aws_cli(&sim.url, &iot(&args)).await;
        let mine = ours(&gw, &args).await;
        assert_eq!((theirs.code, mine.code), (0, 0));
        assert_eq!(
            status_line(&mine.stdout),
            status_line(&theirs.stdout),
            "{command}"
        );
        // The skeleton reads back as input (and the call is then refused
        // by the job id rule: an empty id).
        let yaml = ours(&gw, &[command, "--generate-cli-skeleton", "yaml-input"]).await;
        assert_eq!(yaml.code, 0);
        let back = ours(&gw, &[command, "--cli-input-yaml", &yaml.stdout]).await;
        assert_eq!(back.code, 252, "{command}: {}", back.stderr);
    }

    let before = sim.sim.stats();
    // Parameter mistakes: the AWS CLI's words, exit 252 (v1: 255), no call.
    for args in [
        &[
            "describe-job-execution",
            "--cli-input-json",
            r#"{"jobId": "rollout", "thingName": "fleet-1", "bogus": 1}"#,
        ][..],
        &[
            "describe-job-execution",
            "--cli-input-json",
            r#"{"jobId": "rollout", "thingName": "fleet-1", "executionNumber": "1"}"#,
        ],
    ] {
        let theirs = tools.aws_cli(&sim.url, &iot(args)).await;
        let mine = ours(&gw, args).await;
        assert_eq!((theirs.code, mine.code), (255, 252), "{args:?}");
        let said = theirs.stderr.trim();
        assert!(
            mine.stderr.contains(said),
            "{args:?}: {} vs {said}",
            mine.stderr
        );
    }
    for args in [
        &[
            "describe-job-execution",
            "--job-id",
            "rollout",
            "--thing-name",
            "bad thing!",
        ][..],
        &["describe-job-execution", "--job-id", "rollout"],
        &[
            "list-job-executions-for-job",
            "--job-id",
            "rollout",
            "--status",
            "DONE",
        ],
        &[
            "list-job-executions-for-thing",
            "--thing-name",
            "fleet-1",
            "--namespace-id",
            "a b",
        ],
    ] {
        let mine = ours(&gw, args).await;
        assert_eq!(mine.code, 252, "{args:?}: {}", mine.stderr);
        assert!(!mine.stderr.is_empty());
    }
    // Paging options that cannot go together: the AWS CLI's message.
    let args = [
        "list-job-executions-for-job",
        "--job-id",
        "rollout",
        "--no-paginate",
        "--max-items",
        "2",
    ];
    let theirs = tools.aws_cli(&sim.url, &iot(&args)).await;
    let mine = ours(&gw, &args).await;
    assert_eq!((theirs.code, mine.code), (255, 255));
    assert!(
        mine.stderr.contains(theirs.stderr.trim()),
        "{}",
        mine.stderr
    );
    assert_eq!(sim.sim.stats(), before, "no mistake reached AWS");

    // AWS's answers: a missing execution is the service's error (254).
    let args = [
        "describe-job-execution",
        "--job-id",
        "rollout",
        "--thing-name",
        "nobody",
    ];
    let theirs = tools.aws_cli(&sim.url, &iot(&args)).await;
    let mine = ours(&gw, &args).await;
    assert_eq!((theirs.code, mine.code), (255, 254));
    let says = "An error occurred (ResourceNotFoundException) when calling the \
                DescribeJobExecution operation";
    assert!(
        theirs.stderr.contains(says) && mine.stderr.contains(says),
        "{}",
        mine.stderr
    );
}
