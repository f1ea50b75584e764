//! A small, honest reader of the Dockerfile: stages, and in each its
//! instructions, with comments dropped and `\` continuations joined. It
//! understands what the image's run needs and nothing more: the exec (JSON
//! array) form of ENTRYPOINT and CMD, `ENV key=value …`, EXPOSE and USER,
//! and fails loudly on any other form of those rather than guess.

use std::path::Path;

/// One `FROM …` stage and its instructions, in order.
pub struct Stage {
    /// The base image, as written after FROM (without `AS name`).
    pub from: String,
    /// The stage's name, from `AS name`.
    pub name: Option<String>,
    /// (instruction in upper case, the rest of the line).
    pub instructions: Vec<(String, String)>,
}

/// The Dockerfile's stages, the last of which is the image.
pub struct Dockerfile {
    pub stages: Vec<Stage>,
}

/// What the final stage says about running the image.
pub struct Image {
    pub base: String,
    /// ENTRYPOINT, exec form.
    pub entrypoint: Vec<String>,
    /// CMD, exec form.
    pub cmd: Vec<String>,
    /// ENV settings, in order.
    pub env: Vec<(String, String)>,
    pub expose: Vec<u16>,
    pub user: Option<String>,
    /// Where COPY instructions put files (their last argument).
    pub copied_to: Vec<String>,
}

impl Dockerfile {
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Self {
        let mut stages: Vec<Stage> = Vec::new();
        for line in logical_lines(text) {
            let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let (word, rest) = (word.to_ascii_uppercase(), rest.trim().to_owned());
            if word == "FROM" {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                let (from, name) = match parts.as_slice() {
                    [from] => (*from, None),
                    [from, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (*from, Some((*name).to_owned()))
                    }
                    _ => panic!("FROM with options is not understood: FROM {rest}"),
                };
                stages.push(Stage {
                    from: from.to_owned(),
                    name,
                    instructions: Vec::new(),
                });
                continue;
            }
            let stage = stages
                .last_mut()
                .unwrap_or_else(|| panic!("{word} before the first FROM"));
            stage.instructions.push((word, rest));
        }
        assert!(!stages.is_empty(), "the Dockerfile has no FROM");
        Self { stages }
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no stage named {name}"))
    }

    /// The image: what its final stage says. ENTRYPOINT and CMD must be in
    /// the exec form: the shell form would make `/bin/sh` PID 1 (so SIGTERM
    /// would not reach the gateway), and a distroless base has no shell.
    pub fn image(&self) -> Image {
        let stage = self.stages.last().expect("at least one stage");
        let mut image = Image {
            base: stage.from.clone(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            expose: Vec::new(),
            user: None,
            copied_to: Vec::new(),
        };
        for (word, rest) in &stage.instructions {
            match word.as_str() {
                "ENTRYPOINT" => image.entrypoint = exec_form(word, rest),
                "CMD" => image.cmd = exec_form(word, rest),
                "ENV" => image.env.extend(env_pairs(rest)),
                "EXPOSE" => image.expose.extend(rest.split_whitespace().map(|p| {
                    p.trim_end_matches("/tcp")
                        .parse::<u16>()
                        .unwrap_or_else(|_| panic!("EXPOSE {p}: not a TCP port"))
                })),
                "USER" => image.user = Some(rest.clone()),
                "COPY" => image.copied_to.push(
                    rest.split_whitespace()
                        .last()
                        .unwrap_or_else(|| panic!("COPY without a destination"))
                        .to_owned(),
                ),
                _ => {}
            }
        }
        image
    }
}

impl Stage {
    /// The rest of every `word` instruction of the stage.
    pub fn all(&self, word: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(w, _)| w == word)
            .map(|(_, rest)| rest.as_str())
            .collect()
    }
}

impl Image {
    /// The value ENV gives `key` (the last one, as Docker does).
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Instructions one per item: comments and blank lines dropped, lines
/// ending in `\` joined with the next. (A `# syntax=` parser directive is a
/// comment here too.)
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current).trim().to_owned());
            }
        }
    }
    assert!(
        current.is_empty(),
        "the Dockerfile ends inside a continuation"
    );
    lines
}

/// `["a", "b"]`: a JSON array of strings, as Docker reads the exec form.
fn exec_form(word: &str, rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|_| panic!("{word} {rest}: not the exec form (a JSON array of strings)"))
}

/// `key=value key2="a value"`: the ENV form with `=` (the legacy `ENV key
/// value` form is refused). Values may be double-quoted; `\` escapes the
/// next character inside quotes.
fn env_pairs(rest: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = rest.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => word.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    assert!(!quoted, "ENV {rest}: an unclosed quote");
    if !word.is_empty() {
        words.push(word);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((key, value)) if !key.is_empty() => (key.to_owned(), value.to_owned()),
            _ => panic!("ENV {rest}: only the key=value form is understood"),
        })
        .collect()
}

#[test]
fn reads_stages_continuations_exec_forms_and_env() {
    let file = Dockerfile::parse(
        "# syntax=docker/dockerfile:1\n\
         FROM rust:1 AS build\n\
         RUN cargo build \\\n  --release\n\
         \n\
         FROM base:nonroot\n\
         # a comment\n\
         COPY --from=build /a /usr/local/bin/a\n\
         ENV A=1 \\\n    B=\"two words\"\n\
         ENV A=3\n\
         EXPOSE 1 2/tcp\n\
         USER nonroot\n\
         ENTRYPOINT [\"/usr/local/bin/a\", \"-v\"]\n\
         CMD [\"serve\"]\n",
    );
    assert_eq!(file.stages.len(), 2);
    assert_eq!(file.stage("build").all("RUN"), ["cargo build  --release"]);
    let image = file.image();
    assert_eq!(image.base, "base:nonroot");
    assert_eq!(image.entrypoint, ["/usr/local/bin/a", "-v"]);
    assert_eq!(image.cmd, ["serve"]);
    assert_eq!(image.env("A"), Some("3"));
    assert_eq!(image.env("B"), Some("two words"));
    assert_eq!(image.expose, [1, 2]);
    assert_eq!(image.user.as_deref(), Some("nonroot"));
    assert_eq!(image.copied_to, ["/usr/local/bin/a"]);
}

#[test]
#[should_panic(expected = "not the exec form")]
fn refuses_the_shell_form() {
    Dockerfile::parse("FROM a\nCMD serve\n").image();
}

#[test]
#[should_panic(expected = "only the key=value form")]
fn refuses_the_legacy_env_form() {
    Dockerfile::parse("FROM a\nENV KEY value\n").image();
}
