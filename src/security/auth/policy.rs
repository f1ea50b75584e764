//! Who may do what: the policy file (`--auth-policy`, YAML).
//!
//! ```yaml
//! default:                 # callers the policy does not name
//!   rpcs: [DescribeJob]    # RPC names, or "*"; "Reflection" for grpcurl's listing
//!   jobs: ["public-*"]     # job id globs (* and ?); absent: every job
//!   things: ["lab-*"]      # thing name globs, for the executions RPCs; absent: every thing
//! callers:                 # named by kind: spiffe://, dns:, cn:, token:, jwt:
//!   spiffe://example.org/ns/ci/sa/deployer:
//!     rpcs: ["*"]
//!     weight: 4            # share of the AWS budget while calls wait
//!   token:dashboard:
//!     rpcs: [DescribeJob, BatchDescribeJobs, WatchJobs]
//!     jobs: ["firmware-*"]
//!     max_waiting: 20      # its calls waiting for AWS tokens at once
//!     max_watch_streams: 5 # its open WatchJobs streams, on this replica
//!     max_batch_size: 100  # items in one batch
//! ```
//!
//! A named caller's missing fields are the `default` entry's; the default's
//! missing fields allow everything, with weight 1 and the gateway's own caps.
//! Without a policy file every caller may call everything. Health is always
//! open (probes carry no credentials).

use std::collections::HashMap;

use serde::Deserialize;

use crate::{pb::rpc, security::auth::identity};

/// The RPCs a policy can name: the contract's, and server reflection.
pub const RPCS: [&str; rpc::ALL.len() + 1] = {
    let mut all = ["Reflection"; rpc::ALL.len() + 1];
    let mut i = 0;
    while i < rpc::ALL.len() {
        all[i] = rpc::ALL[i];
        i += 1;
    }
    all
};

/// What one caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// The RPCs it may call (indices into [`RPCS`]).
    rpcs: [bool; RPCS.len()],
    /// The jobs it may read; `None`: every job.
    jobs: Option<Vec<String>>,
    /// The things whose executions it may read; `None`: every thing.
    things: Option<Vec<String>>,
    /// Its weight when callers wait for AWS tokens.
    pub weight: u32,
    /// Its calls that may wait for AWS tokens at once.
    pub max_waiting: Option<usize>,
    /// Its open watch streams.
    pub max_watch_streams: Option<usize>,
    /// Items in one of its batches.
    pub max_batch_size: Option<usize>,
}

impl Default for Grants {
    /// Everything, weight 1, the gateway's caps.
    fn default() -> Self {
        Self {
            rpcs: [true; RPCS.len()],
            jobs: None,
            things: None,
            weight: 1,
            max_waiting: None,
            max_watch_streams: None,
            max_batch_size: None,
        }
    }
}

impl Grants {
    /// Whether it may call `rpc` (a name from [`RPCS`]).
    pub fn may_call(&self, rpc: &str) -> bool {
        RPCS.iter()
            .position(|r| *r == rpc)
            .is_some_and(|i| self.rpcs[i])
    }

    /// Whether it may read job `job_id`.
    pub fn may_read(&self, job_id: &str) -> bool {
        matches_any(self.jobs.as_deref(), job_id)
    }

    /// Whether it may read the executions on thing `thing_name`.
    pub fn may_read_thing(&self, thing_name: &str) -> bool {
        matches_any(self.things.as_deref(), thing_name)
    }

    /// Whether it may read every job and every thing (no globs narrow it).
    pub fn reads_everything(&self) -> bool {
        self.jobs.is_none() && self.things.is_none()
    }
}

/// Whether `name` matches one of `globs` (`None`: everything matches).
fn matches_any(globs: Option<&[String]>, name: &str) -> bool {
    globs.is_none_or(|globs| globs.iter().any(|glob| matches_glob(glob, name)))
}

/// The policy: grants per caller name, and the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    default: std::sync::Arc<Grants>,
    callers: HashMap<String, std::sync::Arc<Grants>>,
}

impl Policy {
    /// Parses a policy file.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file: File =
            serde_yaml::from_slice(bytes).map_err(|e| format!("is not a valid policy: {e}"))?;
        let default = file
            .default
            .unwrap_or_default()
            .over(&Grants::default())
            .map_err(|e| format!("default: {e}"))?;
        let mut callers = HashMap::new();
        for (name, entry) in file.callers.unwrap_or_default() {
            check_caller_name(&name)?;
            let grants = entry
                .over(&default)
                .map_err(|e| format!("callers.{name}: {e}"))?;
            callers.insert(name, std::sync::Arc::new(grants));
        }
        Ok(Self {
            default: std::sync::Arc::new(default),
            callers,
        })
    }

    /// What `caller` may do.
    pub fn grants(&self, caller: &str) -> std::sync::Arc<Grants> {
        self.callers.get(caller).unwrap_or(&self.default).clone()
    }

    /// What callers the policy does not name may do.
    pub fn default_grants(&self) -> std::sync::Arc<Grants> {
        self.default.clone()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default: Option<Entry>,
    callers: Option<HashMap<String, Entry>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    rpcs: Option<Vec<String>>,
    jobs: Option<Vec<String>>,
    things: Option<Vec<String>>,
    weight: Option<u32>,
    max_waiting: Option<usize>,
    max_watch_streams: Option<usize>,
    max_batch_size: Option<usize>,
}

impl Entry {
    /// These grants, the rest taken from `base`.
    fn over(self, base: &Grants) -> Result<Grants, String> {
        let rpcs = match self.rpcs {
            None => base.rpcs,
            Some(names) => {
                let mut rpcs = [false; RPCS.len()];
                for name in &names {
                    if name == "*" {
                        rpcs = [true; RPCS.len()];
                    } else {
                        let i = RPCS.iter().position(|r| r == name).ok_or_else(|| {
                            format!("unknown RPC {name:?}; known: {}, or \"*\"", RPCS.join(", "))
                        })?;
                        rpcs[i] = true;
                    }
                }
                rpcs
            }
        };
        let jobs = globs(
            self.jobs,
            &base.jobs,
            "job",
            "job id characters (letters, digits, '-', '_')",
            &['-', '_'],
        )?;
        let things = globs(
            self.things,
            &base.things,
            "thing",
            "thing name characters (letters, digits, ':', '-', '_')",
            &[':', '-', '_'],
        )?;
        let positive = |what: &str, n: Option<usize>| match n {
            Some(0) => Err(format!("{what} must be at least 1")),
            _ => Ok(()),
        };
        positive("max_waiting", self.max_waiting)?;
        positive("max_watch_streams", self.max_watch_streams)?;
        positive("max_batch_size", self.max_batch_size)?;
        if self.weight == Some(0) {
            return Err("weight must be at least 1".to_owned());
        }
        Ok(Grants {
            rpcs,
            jobs,
            things,
            weight: self.weight.unwrap_or(base.weight),
            max_waiting: self.max_waiting.or(base.max_waiting),
            max_watch_streams: self.max_watch_streams.or(base.max_watch_streams),
            max_batch_size: self.max_batch_size.or(base.max_batch_size),
        })
    }
}

/// An entry's globs of one kind (`None`: `base`'s; `"*"` among them:
/// everything), each checked to use only the names' characters, `*` and `?`.
fn globs(
    entry: Option<Vec<String>>,
    base: &Option<Vec<String>>,
    kind: &str,
    characters: &str,
    extra: &[char],
) -> Result<Option<Vec<String>>, String> {
    let Some(globs) = entry else {
        return Ok(base.clone());
    };
    if globs.iter().any(|g| g == "*") {
        return Ok(None);
    }
    for glob in &globs {
        let ok = !glob.is_empty()
            && glob
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c) || matches!(c, '*' | '?'));
        if !ok {
            return Err(format!(
                "{kind} pattern {glob:?}: use {characters} with * and ?"
            ));
        }
    }
    Ok(Some(globs))
}

/// Refuses a caller name that does not say its kind: the form up to
/// 0.2.0, when names of every kind shared one namespace.
fn check_caller_name(name: &str) -> Result<(), String> {
    let bare = match identity::kind_of(name) {
        Some(prefix) if name.len() > prefix.len() => return Ok(()),
        Some(_) => {
            return Err(format!(
                "callers.{name}: the caller name is empty after its kind"
            ));
        }
        None => name,
    };
    Err(format!(
        "callers.{bare}: caller names say their kind (after 0.2.0): `spiffe://…` (a certificate's \
         SPIFFE ID), `dns:{bare}` (its DNS SAN), `cn:{bare}` (its CN), `token:{bare}` (the tokens \
         file) or `jwt:{bare}` (a JWT's sub); rename the entry to the kind of credential that \
         caller presents"
    ))
}

/// Whether `text` matches `glob` (`*`: any run of characters, `?`: one).
fn matches_glob(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut gi, mut ti) = (0, 0);
    // Where the last * was, and the text position it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == t[ti]) {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ti));
            gi += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_prefixes_suffixes_and_single_characters() {
        assert!(matches_glob("firmware-*", "firmware-2-4"));
        assert!(matches_glob("firmware-*", "firmware-"));
        assert!(!matches_glob("firmware-*", "firmwar"));
        assert!(matches_glob("*-canary", "rollout-7-canary"));
        assert!(matches_glob("job-?", "job-7"));
        assert!(!matches_glob("job-?", "job-77"));
        assert!(matches_glob("a*b*c", "a-x-b-y-c"));
        assert!(!matches_glob("a*b*c", "a-x-c-y-b"));
        assert!(matches_glob("exact", "exact"));
        assert!(!matches_glob("exact", "exactly"));
    }

    #[test]
    fn named_callers_inherit_what_they_do_not_say_from_the_default() {
        let policy = Policy::parse(
            br#"
default:
  rpcs: [DescribeJob]
  jobs: ["public-*"]
  max_watch_streams: 3
callers:
  spiffe://example.org/deployer:
    rpcs: ["*"]
    jobs: ["*"]
    weight: 4
  token:dashboard:
    rpcs: [DescribeJob, WatchJobs]
"#,
        )
        .unwrap();
        let stranger = policy.grants("someone-else");
        for other_kind in [
            "dashboard",
            "jwt:dashboard",
            "cn:spiffe://example.org/deployer",
        ] {
            assert_eq!(policy.grants(other_kind), stranger, "{other_kind}");
        }
        assert!(stranger.may_call("DescribeJob"));
        assert!(!stranger.may_call("WatchJobs"));
        assert!(stranger.may_read("public-1") && !stranger.may_read("secret-1"));
        let deployer = policy.grants("spiffe://example.org/deployer");
        assert!(deployer.may_call("Reflection") && deployer.may_read("secret-1"));
        assert_eq!((deployer.weight, deployer.max_watch_streams), (4, Some(3)));
        let dashboard = policy.grants("token:dashboard");
        assert!(dashboard.may_call("WatchJobs") && !dashboard.may_call("BatchDescribeJobs"));
        assert!(
            !dashboard.may_read("secret-1"),
            "jobs come from the default"
        );
    }

    #[test]
    fn mistakes_in_the_policy_are_named() {
        let err = Policy::parse(b"default:\n  rpcs: [DescribeJobs]\n").unwrap_err();
        assert!(err.contains("unknown RPC \"DescribeJobs\""), "{err}");
        let err = Policy::parse(b"callers:\n  cn:x:\n    jobs: [\"a/b\"]\n").unwrap_err();
        assert!(
            err.contains("callers.cn:x") && err.contains("\"a/b\""),
            "{err}"
        );
        let err = Policy::parse(b"callers:\n  cn:x:\n    wieght: 2\n").unwrap_err();
        assert!(err.contains("wieght"), "{err}");
        let err = Policy::parse(b"default:\n  weight: 0\n").unwrap_err();
        assert!(err.contains("weight"), "{err}");
    }

    #[test]
    fn a_policy_of_bare_caller_names_is_refused_with_the_names_to_write() {
        let err = Policy::parse(b"callers:\n  dashboard:\n    weight: 2\n").unwrap_err();
        for kind in [
            "token:dashboard",
            "jwt:dashboard",
            "cn:dashboard",
            "dns:dashboard",
        ] {
            assert!(err.contains(kind), "{kind}: {err}");
        }
        let err = Policy::parse(b"callers:\n  \"token:\":\n    weight: 2\n").unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn no_policy_allows_everything() {
        let grants = Policy::default().grants("anyone");
        assert!(RPCS.iter().all(|rpc| grants.may_call(rpc)));
        assert!(grants.may_read("anything"));
    }
}
