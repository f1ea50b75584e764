//! Real servers from Debian/Ubuntu packages (`redis-server`, `mosquitto`):
//! found on `PATH` (or in /usr/sbin, /usr/bin), else installed with apt-get
//! as root, else the test fails naming the package. Nothing is skipped.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

/// The path of `binary`, installing `package` first if needed, off the
/// async runtime (a server the test already runs keeps serving).
pub async fn binary(package: &'static str, binary: &'static str) -> PathBuf {
    match tokio::task::spawn_blocking(move || installed(package, binary)).await {
        Ok(path) => path,
        Err(failed) => std::panic::resume_unwind(failed.into_panic()),
    }
}

/// The path of `binary`, installing `package` first if needed (one apt-get
/// at a time across test runs, whatever the package, and waiting for
/// dpkg's own lock when something else on the machine holds it).
fn installed(package: &str, binary: &str) -> PathBuf {
    if let Some(found) = find(binary) {
        return found;
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let lock = File::create(target.join("apt-get.lock")).unwrap();
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock target/apt-get.lock: {e}"));
    if let Some(found) = find(binary) {
        return found;
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    assert!(
        root,
        "{binary} is not installed and the tests cannot install it (not root): \
         install the Debian/Ubuntu package {package} (apt-get install {package})"
    );
    eprintln!("installing {package} with apt-get (first run only)");
    for args in [&["update"][..], &["install", "-y", package]] {
        let status = std::process::Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run apt-get to install {package}: {e}"));
        assert!(
            status.success(),
            "apt-get {args:?} failed ({status}): install the package {package}"
        );
    }
    find(binary)
        .unwrap_or_else(|| panic!("apt-get installed {package}, but no {binary} binary was found"))
}

fn find(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

/// A port the OS says is free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `command` quietly (killed when dropped) and waits up to 5 s for
/// `ready` to say the server answers; `None` if it exited or never did
/// (its port taken, say).
pub async fn spawn_until_ready(
    mut command: Command,
    what: &str,
    mut ready: impl AsyncFnMut() -> bool,
) -> Option<Child> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    for _ in 0..100 {
        if ready().await {
            return Some(child);
        }
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
