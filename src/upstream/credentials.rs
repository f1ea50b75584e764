//! The start-up check of AWS credentials: a named profile that is not
//! defined, or no credentials anywhere in aws-config's default chain, stops
//! `serve` with the reason; a credentials source that fails or does not
//! answer in time only warns, since the SDK tries again on every call.

use std::{
    borrow::Cow,
    error::Error as StdError,
    time::{Duration, SystemTime},
};

use aws_config::{SdkConfig, meta::ProviderChainError};
use aws_credential_types::{
    Credentials,
    credential_feature::AwsCredentialFeature,
    provider::{ProvideCredentials, error::CredentialsError},
};
use aws_runtime::env_config::file::EnvConfigFiles;
use aws_types::os_shim_internal::{Env, Fs};

/// How long `serve` waits for credentials before it starts anyway. An
/// instance role or IRSA answers well within this on a healthy network, and
/// it leaves each source room for its own defaults (instance metadata: 1 s
/// to connect and 1 s to read per attempt; the container endpoint: 2 s to
/// connect). Longer would only delay a gateway whose way to AWS is broken:
/// its calls keep asking the SDK for credentials anyway, and a start held up
/// here fails the orchestrator's startup probes for nothing.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Credentials from ~/.aws/credentials or ~/.aws/config.
const SHARED_PROFILE: &str = "shared profile";

/// Names the profile flag in messages.
const PROFILE_FLAG: &str = "--profile / GATEWAY_PROFILE";

/// How to give the gateway credentials, for the message that says it has none.
const HOW_TO_PROVIDE: &str = "give the gateway credentials with AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY, a profile in ~/.aws/credentials or ~/.aws/config named by \
     --profile (GATEWAY_PROFILE) or AWS_PROFILE, or an IAM role (EKS IRSA or Pod Identity, \
     ECS task role, EC2 instance profile)";

/// AWS credentials that cannot work, whatever the network does.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsFault {
    /// A profile was named, but neither shared file defines it.
    #[error(
        "the AWS profile {profile:?} named by {named_by} is not defined in {files} ({defined})"
    )]
    MissingProfile {
        /// The name as given.
        profile: String,
        /// The flag or environment variable that named it.
        named_by: &'static str,
        /// The files that were read.
        files: String,
        /// The profiles those files do define, or that they define none.
        defined: String,
    },
    /// A profile was named, but the shared files cannot be read.
    #[error("cannot read the AWS profile {profile:?} named by {named_by}: {reason}")]
    UnreadableProfiles {
        /// The name as given.
        profile: String,
        /// The flag or environment variable that named it.
        named_by: &'static str,
        /// What aws-config said.
        reason: String,
    },
    /// Every source in the default chain came up empty.
    #[error("no AWS credentials found (tried {tried}); {HOW_TO_PROVIDE}")]
    NoCredentials {
        /// Each source and why it had none.
        tried: String,
    },
    /// A source is configured in a way that cannot work (a syntax error in
    /// ~/.aws/config, a role with no source, a loop of source profiles).
    #[error("the AWS credentials are misconfigured: {0}")]
    Misconfigured(String),
}

/// Refuses a profile named by `--profile` or `AWS_PROFILE` that neither
/// shared file defines. aws-config itself would pass over it quietly and
/// use the next source in the chain (an instance role, say), or none.
/// `default` is exempt, as in aws-config and the AWS CLI: a missing default
/// profile means "no profile".
pub async fn check_profile(flag: Option<&str>, env: &Env, fs: &Fs) -> Result<(), CredentialsFault> {
    let Some((profile, named_by)) = named_profile(flag, env) else {
        return Ok(());
    };
    if profile == "default" {
        return Ok(());
    }
    let files = EnvConfigFiles::default();
    let selected = Some(Cow::Owned(profile.clone()));
    let profiles = aws_config::profile::load(fs, env, &files, selected)
        .await
        .map_err(|e| CredentialsFault::UnreadableProfiles {
            profile: profile.clone(),
            named_by,
            reason: super::error_chain(&e),
        })?;
    if profiles.get_profile(&profile).is_some() {
        return Ok(());
    }
    let mut names: Vec<&str> = profiles.profiles().collect();
    names.sort_unstable();
    let defined = if names.is_empty() {
        "no profiles are defined there".to_owned()
    } else {
        format!("the profiles defined there: {}", names.join(", "))
    };
    Err(CredentialsFault::MissingProfile {
        profile,
        named_by,
        files: shared_files(env),
        defined,
    })
}

/// The profile `--profile` or else `AWS_PROFILE` names, and which did.
fn named_profile(flag: Option<&str>, env: &Env) -> Option<(String, &'static str)> {
    match (flag, env.get("AWS_PROFILE")) {
        (Some(profile), _) => Some((profile.to_owned(), PROFILE_FLAG)),
        (None, Ok(profile)) if !profile.is_empty() => Some((profile, "AWS_PROFILE")),
        (None, _) => None,
    }
}

/// The shared config and credentials files as aws-config finds them.
fn shared_files(env: &Env) -> String {
    let home = env.get("HOME").ok();
    let path = |var: &str, default: &str| {
        let path = env.get(var).unwrap_or_else(|_| default.to_owned());
        match (path.strip_prefix("~/"), &home) {
            (Some(rest), Some(home)) => format!("{}/{rest}", home.trim_end_matches('/')),
            _ => path,
        }
    };
    format!(
        "{} or {}",
        path("AWS_CONFIG_FILE", "~/.aws/config"),
        path("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    )
}

/// What the check found, short of a fault.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// Credentials are at hand.
    Found {
        /// Where they came from, in words (no key material).
        source: &'static str,
        /// When they expire, if they do.
        expiry: Option<SystemTime>,
    },
    /// None yet, for a reason that may pass: the gateway starts anyway.
    Unconfirmed(String),
}

/// Resolves the SDK's credentials once, within [`CHECK_TIMEOUT`], and logs
/// where they came from (`flag`: the `--profile` given, if any). Resolving
/// here does not fill the SDK's identity cache; the first call resolves
/// again.
pub async fn check(sdk: &SdkConfig, flag: Option<&str>) -> Result<(), CredentialsFault> {
    let Some(provider) = sdk.credentials_provider() else {
        return Err(CredentialsFault::NoCredentials {
            tried: "no source: the SDK config has no credentials provider".into(),
        });
    };
    let profile = named_profile(flag, &Env::real()).map_or_else(|| "default".to_owned(), |p| p.0);
    let resolved = tokio::time::timeout(CHECK_TIMEOUT, provider.provide_credentials()).await;
    let checked = match resolved {
        Ok(result) => classify(result, &profile)?,
        Err(_elapsed) => Checked::Unconfirmed(format!(
            "no answer from the credentials source within {}s (is STS, the container \
             credentials endpoint or EC2 instance metadata unreachable? Off EC2, \
             AWS_EC2_METADATA_DISABLED=true stops the SDK from waiting on instance metadata)",
            CHECK_TIMEOUT.as_secs()
        )),
    };
    match checked {
        Checked::Found { source, expiry } => {
            let expires_in = expiry
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .map(|left| humantime::format_duration(Duration::from_secs(left.as_secs())));
            let profile = (source == SHARED_PROFILE).then_some(profile);
            tracing::info!(
                source,
                profile,
                expires_in = expires_in.map(tracing::field::display),
                "AWS credentials found"
            );
        }
        Checked::Unconfirmed(reason) => tracing::warn!(
            %reason,
            "AWS credentials could not be loaded at start; starting anyway, and each AWS call \
             tries again (until then calls fail with UNAUTHENTICATED)"
        ),
    }
    Ok(())
}

/// Sorts what the credentials provider answered into a fault (exit), or
/// something to start with; `profile` is the shared profile the chain read.
pub fn classify(
    result: Result<Credentials, CredentialsError>,
    profile: &str,
) -> Result<Checked, CredentialsFault> {
    match result {
        Ok(credentials) => Ok(Checked::Found {
            source: source_of(&credentials),
            expiry: credentials.expiry(),
        }),
        Err(e @ CredentialsError::CredentialsNotLoaded(_)) => {
            Err(CredentialsFault::NoCredentials {
                tried: tried(&e, profile),
            })
        }
        Err(e @ CredentialsError::InvalidConfiguration(_)) => {
            Err(CredentialsFault::Misconfigured(super::error_chain(&e)))
        }
        // ProviderTimedOut, ProviderError (STS or instance metadata failing,
        // an unreadable file) and Unhandled (what the container endpoint's
        // connection failures arrive as) may pass.
        Err(e) => Ok(Checked::Unconfirmed(super::error_chain(&e))),
    }
}

/// The sources the default chain tried and why each had nothing.
fn tried(err: &CredentialsError, profile: &str) -> String {
    let Some(chain) = err
        .source()
        .and_then(|s| s.downcast_ref::<ProviderChainError<CredentialsError>>())
    else {
        return format!("aws-config's default chain: {}", super::error_chain(err));
    };
    let attempts: Vec<String> = chain
        .attempts()
        .iter()
        .map(|attempt| {
            let name = match attempt.name() {
                "Environment" => "environment variables (AWS_ACCESS_KEY_ID)".into(),
                "Profile" => format!("{SHARED_PROFILE} {profile:?}"),
                "WebIdentityToken" => "web identity token (EKS IRSA)".into(),
                "EcsContainer" => "container credentials endpoint (ECS, EKS Pod Identity)".into(),
                "Ec2InstanceMetadata" => "EC2 instance metadata".into(),
                other => other.to_owned(),
            };
            match attempt.error().source() {
                Some(why) => format!("{name}: {}", super::error_chain(why)),
                None => format!("{name}: no credentials there"),
            }
        })
        .collect();
    attempts.join("; ")
}

/// Where credentials came from, from the features aws-config records on
/// them as they pass through its providers: the last is the outermost (a
/// profile whose role was assumed says "shared profile").
fn source_of(credentials: &Credentials) -> &'static str {
    let features = credentials.get_property::<Vec<AwsCredentialFeature>>();
    match features.and_then(|f| f.last()) {
        Some(AwsCredentialFeature::CredentialsEnvVars) => "environment variables",
        Some(AwsCredentialFeature::CredentialsProfile) => SHARED_PROFILE,
        Some(AwsCredentialFeature::CredentialsProfileProcess)
        | Some(AwsCredentialFeature::CredentialsProcess) => "credential_process",
        Some(AwsCredentialFeature::CredentialsStsAssumeRole) => "assumed role (STS)",
        Some(AwsCredentialFeature::CredentialsProfileStsWebIdToken)
        | Some(AwsCredentialFeature::CredentialsStsAssumeRoleWebId)
        | Some(AwsCredentialFeature::CredentialsEnvVarsStsWebIdToken) => {
            "web identity token (EKS IRSA)"
        }
        Some(AwsCredentialFeature::CredentialsHttp) => {
            "container credentials endpoint (ECS, EKS Pod Identity)"
        }
        Some(AwsCredentialFeature::CredentialsImds) => "EC2 instance metadata (instance role)",
        Some(AwsCredentialFeature::CredentialsSso)
        | Some(AwsCredentialFeature::CredentialsProfileSso) => "IAM Identity Center (SSO)",
        _ => "aws-config's default chain",
    }
}

#[cfg(test)]
mod tests {
    use aws_config::meta::credentials::CredentialsProviderChain;
    use aws_credential_types::credential_fn::provide_credentials_fn;

    use super::*;

    /// A home with `[profile dev]` in the config and `[prod]` in the
    /// credentials file.
    fn home() -> Fs {
        Fs::from_slice(&[
            ("/home/u/.aws/config", "[profile dev]\nregion = eu-west-1\n"),
            (
                "/home/u/.aws/credentials",
                "[prod]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = x\n",
            ),
        ])
    }

    async fn profile_check(flag: Option<&str>, env: &[(&str, &str)]) -> Result<(), String> {
        let mut vars = vec![("HOME", "/home/u")];
        vars.extend_from_slice(env);
        check_profile(flag, &Env::from_slice(&vars), &home())
            .await
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_profile_that_is_not_defined_is_named_with_the_files_and_the_profiles_there() {
        let err = profile_check(Some("prdo"), &[]).await.unwrap_err();
        assert_eq!(
            err,
            "the AWS profile \"prdo\" named by --profile / GATEWAY_PROFILE is not defined in \
             /home/u/.aws/config or /home/u/.aws/credentials (the profiles defined there: dev, prod)"
        );
        let err = profile_check(None, &[("AWS_PROFILE", "staging")]).await;
        assert!(
            err.unwrap_err()
                .contains("\"staging\" named by AWS_PROFILE")
        );
        let moved = [("AWS_CONFIG_FILE", "/etc/aws/config")];
        let err = profile_check(Some("x"), &moved).await.unwrap_err();
        assert!(
            err.contains("in /etc/aws/config or /home/u/.aws/credentials"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn profiles_from_either_file_pass_and_so_does_no_profile_or_default() {
        assert_eq!(profile_check(Some("dev"), &[]).await, Ok(()));
        assert_eq!(profile_check(Some("prod"), &[]).await, Ok(()));
        assert_eq!(profile_check(None, &[("AWS_PROFILE", "dev")]).await, Ok(()));
        assert_eq!(profile_check(None, &[]).await, Ok(()));
        assert_eq!(profile_check(Some("default"), &[]).await, Ok(()));
        // The flag wins over AWS_PROFILE, as in aws-config.
        let flag_wins = profile_check(Some("prod"), &[("AWS_PROFILE", "nope")]).await;
        assert_eq!(flag_wins, Ok(()));
    }

    #[tokio::test]
    async fn an_empty_chain_is_a_fault_naming_each_source_and_how_to_fix_it() {
        let not_here = |why: &'static str| {
            provide_credentials_fn(move || async move { Err(CredentialsError::not_loaded(why)) })
        };
        let chain = CredentialsProviderChain::first_try("Environment", not_here("not set"))
            .or_else("Profile", not_here("no profiles"))
            .or_else("Ec2InstanceMetadata", not_here("IMDS disabled"));
        let fault = classify(chain.provide_credentials().await, "dev").unwrap_err();
        assert!(matches!(fault, CredentialsFault::NoCredentials { .. }));
        let message = fault.to_string();
        for needle in [
            "environment variables (AWS_ACCESS_KEY_ID): not set",
            "shared profile \"dev\": no profiles",
            "EC2 instance metadata: IMDS disabled",
            "AWS_SECRET_ACCESS_KEY",
            "--profile",
            "IRSA",
            "instance profile",
        ] {
            assert!(message.contains(needle), "{needle:?} not in {message}");
        }
        assert!(!message.contains('\n'), "one line: {message}");
    }

    #[test]
    fn misconfiguration_is_a_fault_and_failures_that_may_pass_are_not() {
        let misconfigured = CredentialsError::invalid_configuration("profile loop");
        let fault = classify(Err(misconfigured), "default").unwrap_err();
        assert!(fault.to_string().contains("profile loop"), "{fault}");
        for passing in [
            CredentialsError::provider_timed_out(Duration::from_secs(5)),
            CredentialsError::provider_error("STS: connection refused"),
            CredentialsError::unhandled("dispatch failure"),
        ] {
            let checked = classify(Err(passing), "default").unwrap();
            assert!(matches!(checked, Checked::Unconfirmed(_)), "{checked:?}");
        }
    }

    #[test]
    fn the_source_is_read_from_the_features_aws_config_records() {
        let mut credentials = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        credentials
            .get_property_mut_or_default::<Vec<AwsCredentialFeature>>()
            .push(AwsCredentialFeature::CredentialsEnvVars);
        assert_eq!(
            classify(Ok(credentials), "default").unwrap(),
            Checked::Found {
                source: "environment variables",
                expiry: None
            }
        );
        assert_eq!(
            source_of(&Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "test"
            )),
            "aws-config's default chain"
        );
    }
}
