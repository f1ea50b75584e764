//! What an example client prints: its lines parsed, and a client run to
//! its end or followed line by line.

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
    time::timeout,
};

/// One line a client printed: its first word, then its `key=value` fields.
#[derive(Debug, Clone)]
pub struct Line {
    pub kind: String,
    fields: BTreeMap<String, String>,
    pub text: String,
}

impl Line {
    pub fn parse(text: &str) -> Self {
        let mut words = text.split(' ');
        let kind = words.next().unwrap_or_default().to_owned();
        let fields = words
            .filter_map(|word| word.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self {
            kind,
            fields,
            text: text.to_owned(),
        }
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.text))
    }
}

/// What a client printed and how it exited.
pub struct Ran {
    pub code: Option<i32>,
    pub lines: Vec<Line>,
    stderr: String,
}

impl Ran {
    pub fn of(&self, kind: &str) -> Vec<&Line> {
        self.lines.iter().filter(|l| l.kind == kind).collect()
    }

    pub fn shown(&self) -> String {
        let out: Vec<&str> = self.lines.iter().map(|l| l.text.as_str()).collect();
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            out.join("\n"),
            self.stderr
        )
    }
}

/// Runs `client` against the gateway at `addr` to its end (at most 60 s).
pub async fn run(mut client: Command, addr: &str, args: &[&str]) -> Ran {
    let out = timeout(
        Duration::from_secs(60),
        client.arg("--target").arg(addr).args(args).output(),
    )
    .await
    .expect("the client finishes within 60 s")
    .expect("the client starts");
    Ran {
        code: out.status.code(),
        lines: String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(Line::parse)
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A client process whose stdout lines arrive one by one; what it writes
/// on stderr is kept for the failure message.
pub struct Following {
    pub child: Child,
    lines: mpsc::UnboundedReceiver<Line>,
    pub seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Following {
    pub fn start(mut command: Command, addr: &str, args: &[&str]) -> Self {
        let mut child = command
            .arg("--target")
            .arg(addr)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("the client starts");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send(Line::parse(&line)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                let mut kept = sink.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The next line, within 30 s.
    pub async fn next(&mut self, waiting_for: &str) -> Line {
        let next = timeout(Duration::from_secs(30), self.lines.recv()).await;
        let Ok(Some(line)) = next else {
            let what = match next {
                Err(_) => "no line within 30 s",
                _ => "the client ended",
            };
            panic!(
                "{what} ({waiting_for}); it printed:\n{:#?}\nstderr:\n{}",
                self.seen,
                self.stderr.lock().unwrap()
            );
        };
        self.seen.push(line.text.clone());
        line
    }
}
