//! The demo fleet: realistic jobs that together use every field of the
//! DescribeJob mirror, created through the same CreateJob path AWS tools use.

use serde_json::{Value, json};

use super::{
    Simulator,
    job::Outcome,
    schedule::{DAY, format as schedule_time},
};

/// The firmware rollout that progresses and completes within a minute or so.
pub const ROLLOUT: &str = "firmware-rollout-2-4";
/// A CONTINUOUS job that never completes on its own.
pub const CONTINUOUS: &str = "fleet-telemetry-agent";
/// A job waiting for its start time, with maintenance windows.
pub const SCHEDULED: &str = "maintenance-window-update";
/// A job that was force-canceled.
pub const CANCELED: &str = "sensor-calibration-v1";
/// A job built from a managed template with document parameters.
pub const TEMPLATED: &str = "cert-rotation-2026";

/// The rollout's thing whose execution fails (its fourth: the first
/// group's fourth thing while groups have at least four).
pub const FAILING_THING: &str = "gateways-eu-4";

/// Creates the demo jobs; returns their ids.
pub fn demo_fleet(sim: &Simulator) -> Vec<&'static str> {
    let now = sim.now();
    let jobs: [(&str, Value); 5] = [
        (
            ROLLOUT,
            json!({
                "targets": [sim.arn("thinggroup", "gateways-eu"), sim.arn("thinggroup", "gateways-us")],
                "documentSource": "https://s3.amazonaws.com/fleet-firmware/2.4.0/job.json",
                "description": "Firmware 2.4.0 for edge gateways",
                "targetSelection": "SNAPSHOT",
                "presignedUrlConfig": {"roleArn": sim.arn("role", "iot-jobs-s3").replace(":iot:", ":iam:"), "expiresInSec": 3600},
                "jobExecutionsRolloutConfig": {"maximumPerMinute": 60, "exponentialRate": {
                    "baseRatePerMinute": 10, "incrementFactor": 1.5,
                    "rateIncreaseCriteria": {"numberOfNotifiedThings": 5, "numberOfSucceededThings": 3}}},
                "abortConfig": {"criteriaList": [{"failureType": "FAILED", "action": "CANCEL",
                    "thresholdPercentage": 30.0, "minNumberOfExecutedThings": 10}]},
                "timeoutConfig": {"inProgressTimeoutInMinutes": 30},
                "jobExecutionsRetryConfig": {"criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 2}]},
                "destinationPackageVersions": [sim.arn("package", "gateway-firmware/version/2.4.0")],
            }),
        ),
        (
            CONTINUOUS,
            json!({
                "targets": [sim.arn("thinggroup", "all-sensors")],
                "documentSource": "https://s3.amazonaws.com/fleet-agents/telemetry/job.json",
                "description": "Keep the telemetry agent installed on every sensor",
                "targetSelection": "CONTINUOUS",
            }),
        ),
        (
            SCHEDULED,
            json!({
                "targets": [sim.arn("thinggroup", "store-displays")],
                "documentSource": "https://s3.amazonaws.com/fleet-firmware/displays/job.json",
                "description": "Display firmware, rolled out in store maintenance windows",
                "schedulingConfig": {
                    "startTime": schedule_time(now + 7 * DAY),
                    "endTime": schedule_time(now + 37 * DAY),
                    "endBehavior": "STOP_ROLLOUT",
                    "maintenanceWindows": [{"startTime": "cron(0 2 ? * SUN *)", "durationInMinutes": 120}],
                },
            }),
        ),
        (
            CANCELED,
            json!({
                "targets": [sim.arn("thing", "sensor-0042"), sim.arn("thing", "sensor-0043")],
                "documentSource": "https://s3.amazonaws.com/fleet-config/calibration/v1.json",
                "description": "Sensor calibration v1",
            }),
        ),
        (
            TEMPLATED,
            json!({
                "targets": [sim.arn("thinggroup", "greengrass-cores")],
                "documentSource": "https://s3.amazonaws.com/fleet-certs/${aws:iot:parameter:certificateSet}/rotate.json",
                "description": "Rotate device certificates from the managed template",
                "jobTemplateArn": sim.arn("jobtemplate", "AWS-Run-Command:1.0"),
                "documentParameters": {"certificateSet": "2026-q4", "command": "rotate-certs"},
                "namespaceId": "AWS",
            }),
        ),
    ];
    for (id, body) in &jobs {
        // The demo bodies are fixed and valid, and the simulator starts empty.
        if let Err(err) = sim.create_job(id, body) {
            tracing::warn!(job_id = id, ?err, "demo job not created");
        }
    }
    // Some things fail, reject or time out, so every counter moves.
    let _ = sim.update_job(ROLLOUT, |job| {
        for (i, e) in job.executions.iter_mut().enumerate() {
            e.outcome = match i {
                3 => Outcome::Failed,
                7 => Outcome::Rejected,
                11 => Outcome::TimedOut,
                _ => Outcome::Succeeded,
            };
        }
        if let Some(e) = job.executions.get_mut(15) {
            e.removed_at = Some(e.starts_at - 500);
        }
    });
    let _ = sim.cancel_job(
        CANCELED,
        true,
        &json!({"reasonCode": "CALIBRATION_DRIFT", "comment": "Readings drifted on the first devices"}),
    );
    jobs.iter().map(|(id, _)| *id).collect()
}

/// Creates `count` IN_PROGRESS snapshot jobs named `load-000000`,
/// `load-000001`, ... shaped like a real firmware rollout, for load tests and
/// benchmarks. Returns how many were created.
pub fn synthetic_fleet(sim: &Simulator, count: usize) -> usize {
    let mut created = 0;
    for i in 0..count {
        let id = synthetic_job_id(i);
        let body = json!({
            "targets": [sim.arn("thinggroup", &format!("site-{}", i % 500))],
            "documentSource": format!("https://s3.amazonaws.com/fleet-firmware/{id}/job.json"),
            "description": "Firmware rollout generated for load testing",
            "targetSelection": "SNAPSHOT",
            "presignedUrlConfig": {"roleArn": sim.arn("role", "iot-jobs-s3").replace(":iot:", ":iam:"), "expiresInSec": 3600},
            "jobExecutionsRolloutConfig": {"maximumPerMinute": 60},
            "abortConfig": {"criteriaList": [{"failureType": "FAILED", "action": "CANCEL",
                "thresholdPercentage": 30.0, "minNumberOfExecutedThings": 10}]},
            "timeoutConfig": {"inProgressTimeoutInMinutes": 30},
        });
        if sim.create_job(&id, &body).is_ok() {
            created += 1;
        }
    }
    created
}

/// The id of synthetic job `i`.
pub fn synthetic_job_id(i: usize) -> String {
    format!("load-{i:06}")
}
