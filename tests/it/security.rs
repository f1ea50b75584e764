//! TLS, mTLS, bearer tokens, JWTs and the policy, against the real gateway
//! over real sockets, with certificates and keys made here. Every refusal
//! is checked for its exact code and for costing AWS nothing.

use crate::support;

use std::{path::PathBuf, time::Duration};

use iot_jobs_gateway::{
    edge::server::ServerSettings,
    pb::{self, jobs_gateway_client::JobsGatewayClient},
    security::{auth::AuthSettings, tls::TlsSettings},
};
use support::{
    GatewayOptions, TestGateway,
    certs::{Names, Pki, tls_channel},
    error_info_reason, iot_client,
    process::{GatewayProcess, empty_home},
    python::tools,
    sim::{TestSim, create_fleet_job},
};
use tonic::{Code, Request, transport::Channel};

/// A simulator with jobs `public-1`, `public-2` and `secret-1`.
async fn aws() -> TestSim {
    let sim = TestSim::unlimited().await;
    for job in ["public-1", "public-2", "secret-1"] {
        create_fleet_job(&sim, job).await;
    }
    sim
}

fn aws_calls(sim: &TestSim) -> u64 {
    sim.sim.stats().describe_job_calls
}

/// A gateway in front of `sim` with these TLS and authentication settings.
async fn gateway(sim: &TestSim, tls: Option<TlsSettings>, auth: AuthSettings) -> TestGateway {
    let mut options = GatewayOptions::default();
    options.server = ServerSettings {
        tls,
        auth,
        ..options.server
    };
    TestGateway::aws_with(iot_client(&sim.url), options).await
}

/// TLS with a server certificate from `pki` (and its CA for clients, with
/// `mtls`).
fn served_by(pki: &Pki, mtls: bool) -> TlsSettings {
    let server = pki.server("server");
    TlsSettings {
        cert: server.cert,
        key: server.key,
        client_ca: mtls.then(|| pki.ca_file()),
    }
}

fn describe(job_id: &str) -> pb::DescribeJobRequest {
    pb::DescribeJobRequest {
        job_id: job_id.to_owned(),
        before_substitution: None,
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn metadata(status: &tonic::Status, key: &str) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_details_error_info()?.metadata.get(key).cloned()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn tls_serves_a_rust_client_and_grpcurl_and_refuses_plaintext() {
    let tools = tools().await;
    let dir = empty_home("tls");
    let sim = aws().await;
    let pki = Pki::new(&dir, "gateway");
    let tls = served_by(&pki, false);
    let gw = gateway(&sim, Some(tls), AuthSettings::default()).await;

    let channel = tls_channel(gw.addr, &pki.ca_pem, None).await.unwrap();
    let answer = JobsGatewayClient::new(channel)
        .describe_job(describe("public-1"))
        .await
        .unwrap();
    assert_eq!(answer.get_ref().job.as_ref().unwrap().job_id(), "public-1");

    // A plaintext client gets no answer from a TLS listener.
    let plaintext = Channel::from_shared(format!("http://{}", gw.addr)).unwrap();
    let refused = match plaintext.connect().await {
        Err(_) => true,
        Ok(channel) => JobsGatewayClient::new(channel)
            .describe_job(describe("public-1"))
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext client was answered by a TLS gateway");

    // grpcurl trusts the CA with -cacert; reflection and calls work over TLS.
    let addr = format!("localhost:{}", gw.addr.port());
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();
    let (ok, services, err) = tools.grpcurl(&["-cacert", ca, &addr, "list"]).await;
    assert!(
        ok && services.contains("iot.jobs.v1.JobsGateway"),
        "{services}{err}"
    );
    let (ok, out, err) = tools
        .grpcurl(&[
            "-cacert",
            ca,
            "-d",
            r#"{"jobId": "public-2"}"#,
            &addr,
            "iot.jobs.v1.JobsGateway/DescribeJob",
        ])
        .await;
    assert!(ok && out.contains(r#""jobId": "public-2""#), "{out}{err}");
    // Without the CA, grpcurl refuses the unknown certificate.
    let (ok, _, err) = tools.grpcurl(&[&addr, "list"]).await;
    assert!(!ok, "grpcurl trusted a private CA it was not given");
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn mtls_admits_a_good_client_certificate_and_refuses_none_expired_and_foreign() {
    let dir = empty_home("mtls");
    let sim = aws().await;
    let pki = Pki::new(&dir, "gateway");
    let foreign = Pki::new(&dir, "foreign");
    let tls = served_by(&pki, true);
    let health_addr = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    let mut options = GatewayOptions::default();
    options.server = ServerSettings {
        tls: Some(tls),
        health_listen: Some(health_addr),
        ..options.server
    };
    let gw = TestGateway::aws_with(iot_client(&sim.url), options).await;

    // Probes that cannot present a certificate (Kubernetes' gRPC probes)
    // use the plaintext health listener, which serves health and nothing else.
    let plain = support::channel(health_addr).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(plain.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "iot.jobs.v1.JobsGateway".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(serving.get_ref().status, 1, "SERVING");
    let not_here = JobsGatewayClient::new(plain)
        .describe_job(describe("public-1"))
        .await
        .unwrap_err();
    assert_eq!(not_here.code(), Code::Unimplemented);

    let good = pki.client("good", Names::Dns("deployer.example.org"), false);
    let channel = tls_channel(gw.addr, &pki.ca_pem, Some(&good))
        .await
        .unwrap();
    JobsGatewayClient::new(channel)
        .describe_job(describe("public-1"))
        .await
        .unwrap();
    let calls = aws_calls(&sim);

    let expired = pki.client("expired", Names::Dns("deployer.example.org"), true);
    let stranger = foreign.client("stranger", Names::Dns("deployer.example.org"), false);
    for (what, identity) in [
        ("no certificate", None),
        ("an expired certificate", Some(&expired)),
        ("a certificate from a foreign CA", Some(&stranger)),
    ] {
        let answered = match tls_channel(gw.addr, &pki.ca_pem, identity).await {
            Err(_) => false,
            Ok(channel) => JobsGatewayClient::new(channel)
                .describe_job(describe("public-2"))
                .await
                .is_ok(),
        };
        assert!(!answered, "a client with {what} was answered");
    }
    assert_eq!(aws_calls(&sim), calls, "refused clients cost AWS calls");
}

#[tokio::test]
async fn the_caller_is_its_spiffe_id_else_its_dns_name_else_its_common_name() {
    let dir = empty_home("identity");
    let sim = aws().await;
    let pki = Pki::new(&dir, "gateway");
    let server = pki.server("server");
    // Only public jobs for everyone: a denial names the caller.
    let policy = write(&dir, "policy.yaml", "default:\n  jobs: [\"public-*\"]\n");
    let tls = TlsSettings {
        cert: server.cert.clone(),
        key: server.key.clone(),
        client_ca: Some(pki.ca_file()),
    };
    let auth = AuthSettings {
        policy: Some(policy),
        ..AuthSettings::default()
    };
    let gw = gateway(&sim, Some(tls), auth).await;
    let calls = aws_calls(&sim);

    let spiffe = "spiffe://example.org/ns/ci/sa/deployer";
    for (stem, names, expected) in [
        ("spiffe", Names::Spiffe(spiffe), spiffe),
        (
            "dns",
            Names::Dns("dashboard.example.org"),
            "dns:dashboard.example.org",
        ),
        (
            "cn",
            Names::CommonName("batch-reporter"),
            "cn:batch-reporter",
        ),
    ] {
        let pair = pki.client(stem, names, false);
        let channel = tls_channel(gw.addr, &pki.ca_pem, Some(&pair))
            .await
            .unwrap();
        let denied = JobsGatewayClient::new(channel)
            .describe_job(describe("secret-1"))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert_eq!(error_info_reason(&denied), "CALLER_NOT_PERMITTED");
        assert_eq!(metadata(&denied, "caller").as_deref(), Some(expected));
        assert_eq!(metadata(&denied, "jobId").as_deref(), Some("secret-1"));
    }
    assert_eq!(aws_calls(&sim), calls, "denials cost AWS calls");
}

#[tokio::test]
async fn a_name_of_one_kind_never_gets_the_grants_of_another() {
    let dir = empty_home("kinds");
    let sim = aws().await;
    let pki = Pki::new(&dir, "kinds");
    let spiffe = "spiffe://example.org/ns/ci/sa/deployer";
    let signer = Signer::new(jsonwebtoken::Algorithm::ES256, "ec-1");
    let jwks = write(
        &dir,
        "jwks.json",
        &serde_json::json!({ "keys": [signer.jwk] }).to_string(),
    );
    let tokens = write(
        &dir,
        "tokens",
        &format!("{} admin\n", support::sha256_hex("admin-token")),
    );
    // Everyone reads public jobs; the SPIFFE caller and the token-file
    // admin read every job.
    let policy = write(
        &dir,
        "policy.yaml",
        &format!(
            "default:\n  jobs: [\"public-*\"]\ncallers:\n  {spiffe}:\n    jobs: [\"*\"]\n  \
             token:admin:\n    jobs: [\"*\"]\n"
        ),
    );
    let (iss, aud) = ("https://issuer.example.org", "iot-jobs-gateway");
    let server = pki.server("server");
    let path = |p: &PathBuf| p.display().to_string();
    let (cert, key, client_ca) = (path(&server.cert), path(&server.key), path(&pki.ca_file()));
    let (tokens, jwks, policy) = (path(&tokens), path(&jwks), path(&policy));
    #[rustfmt::skip]
    let flags = [
        "--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &client_ca,
        "--auth-tokens", &tokens, "--auth-policy", &policy,
        "--jwt-jwks", &jwks, "--jwt-issuer", iss, "--jwt-audience", aud,
    ];

    // The policy of bare names that 0.2.0 read is refused at start, with
    // the names to write instead.
    let bare = write(
        &dir,
        "bare-policy.yaml",
        "default:\n  jobs: [\"public-*\"]\ncallers:\n  admin:\n    jobs: [\"*\"]\n",
    );
    let bare = path(&bare);
    let old_flags = flags.map(|flag| if flag == policy { bare.as_str() } else { flag });
    let refused = support::process::gateway("kinds")
        .args(["serve", "--listen", "127.0.0.1:0", "--region", "us-east-1"])
        .args(["--endpoint-url", &sim.url])
        .args(old_flags)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("callers.admin: caller names say their kind")
            && stderr.contains("`token:admin`")
            && stderr.contains("`jwt:admin`"),
        "{stderr}"
    );

    let gw = GatewayProcess::serve(&sim.url, &flags, "kinds").await;
    let gw_addr: std::net::SocketAddr = gw.addr.parse().unwrap();
    let client = |names, stem| {
        let pair = pki.client(stem, names, false);
        let (addr, ca) = (gw_addr, pki.ca_pem.clone());
        async move { JobsGatewayClient::new(tls_channel(addr, &ca, Some(&pair)).await.unwrap()) }
    };

    // The real holders of the names get their grants.
    let mut deployer = client(Names::Spiffe(spiffe), "deployer").await;
    deployer.describe_job(describe("secret-1")).await.unwrap();
    let mut impostor = client(Names::CommonName(spiffe), "impostor").await;
    impostor
        .describe_job(with_token(describe("secret-1"), "admin-token"))
        .await
        .unwrap();

    // A CN that spells the SPIFFE id, and JWTs whose sub is the SPIFFE id
    // or the token caller's name, are callers of their own kind.
    let calls = aws_calls(&sim);
    let denied = impostor
        .describe_job(describe("secret-1"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert_eq!(
        metadata(&denied, "caller"),
        Some(format!("cn:{spiffe}")),
        "a CN spelling a SPIFFE id"
    );
    for sub in [spiffe, "admin"] {
        let token = signer.token(iss, aud, sub, 600, -10);
        let denied = impostor
            .describe_job(with_token(describe("secret-1"), &token))
            .await
            .unwrap_err();
        assert_eq!(
            denied.code(),
            Code::PermissionDenied,
            "sub {sub}: {denied:?}"
        );
        assert_eq!(metadata(&denied, "caller"), Some(format!("jwt:{sub}")));
    }
    assert_eq!(aws_calls(&sim), calls, "denials cost AWS calls");
}

/// Whether a client trusting only `ca_pem` can call the gateway (why not
/// is printed, for a failing test's output).
async fn answers(gw: &TestGateway, ca_pem: &str) -> bool {
    let channel = match tls_channel(gw.addr, ca_pem, None).await {
        Ok(channel) => channel,
        Err(err) => {
            eprintln!("no TLS connection: {err:?}");
            return false;
        }
    };
    match JobsGatewayClient::new(channel)
        .describe_job(describe("public-1"))
        .await
    {
        Ok(_) => true,
        Err(status) => {
            eprintln!("no answer: {status:?}");
            false
        }
    }
}

/// Waits (at most 10 s) until `check` holds.
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn rotated_certificates_reach_new_connections_and_a_broken_pair_keeps_the_last_good_one() {
    let dir = empty_home("rotation");
    let sim = aws().await;
    let old_ca = Pki::new(&dir, "old");
    let new_ca = Pki::new(&dir, "new");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    old_ca.server("old-server").write_to(&cert, &key);
    let tls = TlsSettings {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: None,
    };
    let gw = gateway(&sim, Some(tls), AuthSettings::default()).await;
    assert!(answers(&gw, &old_ca.ca_pem).await);
    assert!(!answers(&gw, &new_ca.ca_pem).await);

    // A watch stream opened on the old certificate.
    let channel = tls_channel(gw.addr, &old_ca.ca_pem, None).await.unwrap();
    let mut watch = JobsGatewayClient::new(channel)
        .watch_jobs(pb::WatchJobsRequest {
            job_ids: vec!["public-1".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert!(matches!(
        first.event,
        Some(pb::watch_jobs_response::Event::Job(_))
    ));

    // The secret is rewritten in place: new connections get the new pair.
    new_ca.server("new-server").write_to(&cert, &key);
    assert!(
        eventually(|| answers(&gw, &new_ca.ca_pem)).await,
        "new connections still get the old certificate"
    );
    assert!(!answers(&gw, &old_ca.ca_pem).await);

    // The stream opened before the rotation goes on: the job moves on and
    // the stream reports it.
    sim.advance(Duration::from_secs(5));
    let next = tokio::time::timeout(Duration::from_secs(20), watch.message())
        .await
        .expect("the old stream went quiet after the rotation")
        .expect("the old stream broke at the rotation")
        .expect("the old stream ended at the rotation");
    assert!(next.event.is_some());

    // A broken replacement (a key that is not the certificate's) is refused;
    // the last good pair keeps serving.
    let other = old_ca.server("other");
    std::fs::write(&key, &other.key_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        answers(&gw, &new_ca.ca_pem).await,
        "a broken pair replaced the good one"
    );
    std::fs::write(&key, b"not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        answers(&gw, &new_ca.ca_pem).await,
        "an unreadable key replaced the good one"
    );
}

/// A signing key and its public JWK (with `kid`).
struct Signer {
    key: jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
    kid: String,
    jwk: serde_json::Value,
}

impl Signer {
    fn new(alg: jsonwebtoken::Algorithm, kid: &str) -> Self {
        use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
        let (pair, key) = match alg {
            Algorithm::RS256 => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
                let key = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap();
                (pair, key)
            }
            Algorithm::ES256 => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
                (pair, key)
            }
            other => panic!("no test key for {other:?}"),
        };
        drop(pair);
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
        jwk["kid"] = kid.into();
        Self {
            key,
            alg,
            kid: kid.to_owned(),
            jwk,
        }
    }

    /// A token with these claims, `exp`/`nbf` relative to now in seconds.
    fn token(&self, iss: &str, aud: &str, sub: &str, exp: i64, nbf: i64) -> String {
        let now = unix_now();
        let claims = serde_json::json!({
            "iss": iss, "aud": aud, "sub": sub, "exp": now + exp, "nbf": now + nbf, "iat": now,
        });
        self.sign(|_| {}, &claims)
    }

    /// A token of `claims` with a header as `edit` leaves it.
    fn sign(
        &self,
        edit: impl FnOnce(&mut jsonwebtoken::Header),
        claims: &serde_json::Value,
    ) -> String {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        edit(&mut header);
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn tokens_and_jwts_admit_their_callers_and_every_bad_one_gets_its_code_for_free() {
    let dir = empty_home("tokens");
    let sim = aws().await;
    let rsa = Signer::new(jsonwebtoken::Algorithm::RS256, "rsa-1");
    let ec = Signer::new(jsonwebtoken::Algorithm::ES256, "ec-1");
    let unknown = Signer::new(jsonwebtoken::Algorithm::ES256, "ec-1");
    let jwks = serde_json::json!({ "keys": [rsa.jwk, ec.jwk] }).to_string();
    let jwks = write(&dir, "jwks.json", &jwks);
    let tokens = write(
        &dir,
        "tokens",
        &format!(
            "# opaque tokens\n{} pipeline\n",
            support::sha256_hex("pipeline-s3cret")
        ),
    );
    let policy = write(&dir, "policy.yaml", "default:\n  jobs: [\"public-*\"]\n");
    let (iss, aud) = ("https://issuer.example.org", "iot-jobs-gateway");
    let path = |p: &PathBuf| p.display().to_string();
    let (tokens, jwks, policy) = (path(&tokens), path(&jwks), path(&policy));
    #[rustfmt::skip]
    let flags = [
        "--auth-tokens", &tokens, "--auth-policy", &policy,
        "--jwt-jwks", &jwks, "--jwt-issuer", iss, "--jwt-audience", aud,
        "--jwt-max-lifetime", "1h",
    ];
    let gw = GatewayProcess::serve(&sim.url, &flags, "tokens").await;
    let mut client = gw.client().await;
    // Good claims, with `changes` over them.
    let claims = |changes: serde_json::Value| {
        let now = unix_now();
        let mut claims = serde_json::json!({
            "iss": iss, "aud": aud, "sub": "svc", "exp": now + 600, "iat": now,
        });
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    // `typ` as issuers write it is accepted.
    for typ in ["JWT", "at+jwt", "application/at+jwt"] {
        let token = rsa.sign(|h| h.typ = Some(typ.into()), &claims(serde_json::json!({})));
        client
            .describe_job(with_token(describe("public-1"), &token))
            .await
            .unwrap_or_else(|e| panic!("typ {typ}: {e:?}"));
    }

    // Good credentials: the caller is named by the token (seen in a denial).
    for (token, caller) in [
        ("pipeline-s3cret".to_owned(), "token:pipeline"),
        (rsa.token(iss, aud, "svc-rsa", 600, -10), "jwt:svc-rsa"),
        (ec.token(iss, aud, "svc-ec", 600, -10), "jwt:svc-ec"),
    ] {
        client
            .describe_job(with_token(describe("public-1"), &token))
            .await
            .unwrap_or_else(|e| panic!("{caller}: {e:?}"));
        let denied = client
            .describe_job(with_token(describe("secret-1"), &token))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(metadata(&denied, "caller").as_deref(), Some(caller));
    }
    let calls = aws_calls(&sim);

    let forged = {
        let mut parts: Vec<String> = ec
            .token(iss, aud, "svc-ec", 600, -10)
            .split('.')
            .map(str::to_owned)
            .collect();
        parts[2] = rsa
            .token(iss, aud, "svc-ec", 600, -10)
            .split('.')
            .nth(2)
            .unwrap()
            .to_owned();
        parts.join(".")
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no credentials", None, "no credentials"),
        (
            "an unknown token",
            Some("Bearer guess".into()),
            "not one this gateway knows",
        ),
        (
            "a basic header",
            Some("Basic dXNlcjpwdw==".into()),
            "Bearer <token>",
        ),
        (
            "an expired JWT",
            Some(format!("Bearer {}", rsa.token(iss, aud, "x", -120, -600))),
            "expired",
        ),
        (
            "a JWT not valid yet",
            Some(format!("Bearer {}", rsa.token(iss, aud, "x", 1200, 600))),
            "not valid yet",
        ),
        (
            "a JWT of another issuer",
            Some(format!(
                "Bearer {}",
                rsa.token("https://evil", aud, "x", 600, -10)
            )),
            "issuer",
        ),
        (
            "a JWT for another audience",
            Some(format!("Bearer {}", rsa.token(iss, "other", "x", 600, -10))),
            "audience",
        ),
        (
            "a JWT with a bad signature",
            Some(format!("Bearer {forged}")),
            "signature",
        ),
        (
            "a JWT signed by an unknown key",
            Some(format!("Bearer {}", unknown.token(iss, aud, "x", 600, -10))),
            "signature",
        ),
        (
            "a JWT with an unknown key id",
            Some(format!("Bearer {}", {
                let mut s = Signer::new(jsonwebtoken::Algorithm::ES256, "nobody");
                s.kid = "nobody".into();
                s.token(iss, aud, "x", 600, -10)
            })),
            "key id",
        ),
        (
            "a JWT with a malformed header",
            Some("Bearer e30K.e30K.c2ln".into()),
            "header cannot be read",
        ),
        (
            "a JWT with garbage for a header",
            Some("Bearer !!!.e30.c2ln".into()),
            "header cannot be read",
        ),
        (
            "a JWT whose signature is corrupted",
            Some(format!("Bearer {}!", rsa.token(iss, aud, "x", 600, -10))),
            "signature does not verify",
        ),
        (
            "a JWT whose payload is not JSON",
            Some(format!("Bearer {}", {
                let good = rsa.token(iss, aud, "x", 600, -10);
                let parts: Vec<&str> = good.split('.').collect();
                format!("{}.bm90IGpzb24.{}", parts[0], parts[2])
            })),
            "payload cannot be read",
        ),
        (
            "a JWT with a numeric sub",
            Some(format!(
                "Bearer {}",
                rsa.sign(|_| {}, &claims(serde_json::json!({"sub": 42})))
            )),
            "sub claim must be a string",
        ),
        (
            "a JWT whose iss is an array holding the issuer",
            Some(format!(
                "Bearer {}",
                rsa.sign(
                    |_| {},
                    &claims(serde_json::json!({"iss": [iss, "https://evil"]}))
                )
            )),
            "iss claim must be a string",
        ),
        (
            "a JWT with an unknown critical extension",
            Some(format!(
                "Bearer {}",
                rsa.sign(
                    |h| h.crit = Some(vec!["exp".into()]),
                    &claims(serde_json::json!({}))
                )
            )),
            "crit header lists extensions this gateway does not understand: exp",
        ),
        (
            "a JWT of another type (a DPoP proof)",
            Some(format!(
                "Bearer {}",
                rsa.sign(
                    |h| h.typ = Some("dpop+jwt".into()),
                    &claims(serde_json::json!({}))
                )
            )),
            "typ \"dpop+jwt\" is not accepted",
        ),
        (
            "a JWT valid for longer than --jwt-max-lifetime",
            Some(format!(
                "Bearer {}",
                rsa.sign(
                    |_| {},
                    &claims(serde_json::json!({"exp": unix_now() + 7200}))
                )
            )),
            "valid for 7200 s",
        ),
    ];
    for (what, authorization, says) in cases {
        let mut request = Request::new(describe("public-1"));
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        let status = client.describe_job(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert_eq!(
            error_info_reason(&status),
            "CALLER_UNAUTHENTICATED",
            "{what}"
        );
        assert!(
            status.message().contains(says),
            "{what}: {}",
            status.message()
        );
    }
    assert_eq!(aws_calls(&sim), calls, "refused calls cost AWS calls");
}

#[tokio::test]
async fn the_policy_allows_and_denies_rpcs_and_jobs_in_calls_batches_and_watches() {
    let tools = tools().await;
    let dir = empty_home("policy");
    let sim = aws().await;
    let tokens = write(
        &dir,
        "tokens",
        &format!(
            "{} dashboard\n{} admin\n",
            support::sha256_hex("dashboard-token"),
            support::sha256_hex("admin-token")
        ),
    );
    let policy = write(
        &dir,
        "policy.yaml",
        "default:\n  rpcs: []\n\
         callers:\n  \
           token:dashboard:\n    rpcs: [DescribeJob, BatchDescribeJobs, WatchJobs]\n    jobs: [\"public-*\"]\n    max_batch_size: 3\n    max_watch_streams: 1\n  \
           token:admin:\n    rpcs: [\"*\"]\n",
    );
    let auth = AuthSettings {
        tokens: Some(tokens),
        policy: Some(policy.clone()),
        ..AuthSettings::default()
    };
    let gw = gateway(&sim, None, auth).await;
    let mut client = gw.client.clone();
    let calls = aws_calls(&sim);

    // An RPC the caller may not call.
    let batch = |ids: &[&str]| pb::BatchDescribeJobsRequest {
        requests: ids.iter().map(|id| describe(id)).collect(),
    };
    let streamed = |ids: &[&str]| pb::StreamDescribeJobsRequest {
        requests: ids.iter().map(|id| describe(id)).collect(),
    };
    let denied = client
        .stream_describe_jobs(with_token(streamed(&["public-1"]), "dashboard-token"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        metadata(&denied, "rpc").as_deref(),
        Some("StreamDescribeJobs")
    );
    assert!(
        denied.message().contains("dashboard"),
        "{}",
        denied.message()
    );

    // A batch: the denied job fails only its own item.
    let results = client
        .batch_describe_jobs(with_token(
            batch(&["public-1", "secret-1", "public-2"]),
            "dashboard-token",
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    let outcome = |i: usize| results[i].outcome.clone().unwrap();
    assert!(matches!(outcome(0), pb::job_result::Outcome::Response(_)));
    assert!(matches!(outcome(2), pb::job_result::Outcome::Response(_)));
    let pb::job_result::Outcome::Error(err) = outcome(1) else {
        panic!("secret-1 was answered");
    };
    assert_eq!(err.code, Code::PermissionDenied as i32);
    assert_eq!(
        aws_calls(&sim),
        calls + 2,
        "only the permitted jobs reach AWS"
    );

    // The caller's own batch limit.
    let too_big = client
        .batch_describe_jobs(with_token(batch(&["public-1"; 4]), "dashboard-token"))
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument);
    assert!(
        too_big.message().contains("max_batch_size"),
        "{}",
        too_big.message()
    );

    // A watch naming a denied job is refused before anything is polled.
    let watch = |ids: &[&str]| pb::WatchJobsRequest {
        job_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        ..Default::default()
    };
    let refused = client
        .watch_jobs(with_token(
            watch(&["public-1", "secret-1"]),
            "dashboard-token",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    use tonic_types::StatusExt;
    let violations = refused
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "job_ids[1]");
    assert_eq!(
        gw.jobs.watches().pollers(),
        0,
        "a refused watch started a poller"
    );

    // The caller's own cap on watch streams.
    let _open = client
        .watch_jobs(with_token(watch(&["public-2"]), "dashboard-token"))
        .await
        .unwrap();
    let second = client
        .watch_jobs(with_token(watch(&["public-1"]), "dashboard-token"))
        .await
        .unwrap_err();
    assert_eq!(second.code(), Code::ResourceExhausted);
    assert!(
        second.message().contains("max_watch_streams"),
        "{}",
        second.message()
    );

    // Health stays open to probes without credentials.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(support::channel(gw.addr).await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(serving.get_ref().status, 1);

    // Reflection follows the policy: the admin may list, the dashboard may not.
    let addr = gw.addr.to_string();
    let (ok, services, err) = tools
        .grpcurl(&[
            "-plaintext",
            "-H",
            "authorization: Bearer admin-token",
            &addr,
            "list",
        ])
        .await;
    assert!(
        ok && services.contains("iot.jobs.v1.JobsGateway"),
        "{services}{err}"
    );
    let (ok, _, err) = tools
        .grpcurl(&[
            "-plaintext",
            "-H",
            "authorization: Bearer dashboard-token",
            &addr,
            "list",
        ])
        .await;
    assert!(!ok && err.contains("PermissionDenied"), "{err}");

    // The policy is re-read when it changes: the dashboard may now stream.
    let more = std::fs::read_to_string(&policy).unwrap().replace(
        "rpcs: [DescribeJob, BatchDescribeJobs, WatchJobs]",
        "rpcs: [\"*\"]",
    );
    std::fs::write(&policy, more).unwrap();
    let mut allowed = false;
    for _ in 0..50 {
        let attempt = client
            .stream_describe_jobs(with_token(streamed(&["public-1"]), "dashboard-token"))
            .await;
        if attempt.is_ok() {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(allowed, "the changed policy was not re-read");
}

const BIN: &str = env!("CARGO_BIN_EXE_iot-jobs-gateway");

/// The client subcommand `args` with `env` set: exit code, stdout, stderr.
async fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .env_remove("IOT_JOBS_GATEWAY_TOKEN")
        .env_remove("IOT_JOBS_GATEWAY")
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn clients_bring_a_ca_bundle_a_client_certificate_or_a_token() {
    let tools = tools().await;
    let dir = empty_home("clients");
    let sim = aws().await;
    let pki = Pki::new(&dir, "gateway");
    let tls = served_by(&pki, true);
    let gw = gateway(&sim, Some(tls), AuthSettings::default()).await;
    let client = pki.client("cli", Names::Dns("operator.example.org"), false);
    let url = format!("https://localhost:{}", gw.addr.port());
    let (ca, cert, key) = (
        pki.ca_file().display().to_string(),
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );

    // The CLI, as the AWS CLI takes a CA bundle, plus a client certificate.
    let (code, out, err) = cli(
        &[
            "describe-job",
            "--job-id",
            "public-1",
            "--gateway",
            &url,
            "--ca-bundle",
            &ca,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"jobId\": \"public-1\""), "{out}");
    let (code, _, err) = cli(
        &[
            "describe-job",
            "--job-id",
            "public-1",
            "--gateway",
            &url,
            "--ca-bundle",
            &ca,
        ],
        &[],
    )
    .await;
    assert_ne!(code, 0, "answered without a client certificate: {err}");

    // grpcurl with -cacert, -cert and -key, as the README shows.
    let addr = format!("localhost:{}", gw.addr.port());
    let (ok, out, err) = tools
        .grpcurl(&[
            "-cacert",
            &ca,
            "-cert",
            &cert,
            "-key",
            &key,
            "-d",
            r#"{"jobId": "public-2"}"#,
            &addr,
            "iot.jobs.v1.JobsGateway/DescribeJob",
        ])
        .await;
    assert!(ok && out.contains(r#""jobId": "public-2""#), "{out}{err}");
    let (ok, _, _) = tools.grpcurl(&["-cacert", &ca, &addr, "list"]).await;
    assert!(!ok, "grpcurl was answered without a client certificate");

    // A token from the environment, on a gateway that takes tokens.
    let tokens = write(
        &dir,
        "tokens",
        &format!("{} operator\n", support::sha256_hex("operator-token")),
    );
    let auth = AuthSettings {
        tokens: Some(tokens),
        ..AuthSettings::default()
    };
    let gw = gateway(&sim, None, auth).await;
    let addr = gw.addr.to_string();
    let args = ["describe-job", "--job-id", "public-1", "--gateway", &addr];
    let (code, out, err) = cli(&args, &[("IOT_JOBS_GATEWAY_TOKEN", "operator-token")]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"jobId\": \"public-1\""), "{out}");
    let (code, _, err) = cli(&args, &[]).await;
    assert_eq!(code, 254, "{err}");
    assert!(err.contains("CALLER_UNAUTHENTICATED"), "{err}");
    let (ok, out, err) = tools
        .grpcurl(&[
            "-plaintext",
            "-H",
            "authorization: Bearer operator-token",
            "-d",
            r#"{"jobId": "public-2"}"#,
            &addr,
            "iot.jobs.v1.JobsGateway/DescribeJob",
        ])
        .await;
    assert!(ok && out.contains(r#""jobId": "public-2""#), "{out}{err}");
}

#[tokio::test]
async fn a_caller_at_its_policys_max_waiting_is_turned_away_while_others_still_wait() {
    let dir = empty_home("max-waiting");
    let sim = aws().await;
    for job in ["public-3", "public-4", "public-5"] {
        create_fleet_job(&sim, job).await;
    }
    let tokens = write(
        &dir,
        "tokens",
        &format!(
            "{} dashboard\n{} pipeline\n",
            support::sha256_hex("dashboard-token"),
            support::sha256_hex("pipeline-token")
        ),
    );
    let policy = write(
        &dir,
        "policy.yaml",
        "callers:\n  token:dashboard:\n    max_waiting: 1\n",
    );
    let mut options = GatewayOptions::default();
    options.jobs.limiter.rate = 2.0;
    options.jobs.limiter.burst = 1;
    options.server.auth = AuthSettings {
        tokens: Some(tokens),
        policy: Some(policy),
        ..AuthSettings::default()
    };
    let gw = TestGateway::aws_with(iot_client(&sim.url), options).await;
    let ask = |job: &'static str, token: &'static str| {
        let mut client = gw.client.clone();
        tokio::spawn(async move { client.describe_job(with_token(describe(job), token)).await })
    };
    // The dashboard takes the one token and leaves one call waiting.
    let first = ask("public-1", "dashboard-token");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = ask("public-2", "dashboard-token");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Its next call would be its second waiting: turned away at once.
    let started = std::time::Instant::now();
    let refused = gw
        .client
        .clone()
        .describe_job(with_token(describe("public-3"), "dashboard-token"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(300), "it waited");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(error_info_reason(&refused), "RATE_LIMITED");
    assert!(
        refused.message().contains("max_waiting"),
        "{}",
        refused.message()
    );
    // Another caller still waits for its turn and is answered.
    let other = ask("public-4", "pipeline-token");
    for call in [first, second, other] {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn log_lines_name_the_caller_and_refusals_say_why() {
    let dir = empty_home("audit");
    let sim = aws().await;
    let tokens = write(
        &dir,
        "tokens",
        &format!("{} pipeline\n", support::sha256_hex("pipeline-token")),
    );
    let tokens = tokens.display().to_string();
    let gw =
        support::process::GatewayProcess::serve(&sim.url, &["--auth-tokens", &tokens], "audit")
            .await;
    let mut client = gw.client().await;
    client
        .describe_job(with_token(describe("public-1"), "pipeline-token"))
        .await
        .unwrap();
    let refused = client
        .describe_job(with_token(describe("public-1"), "stolen-token"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut seen = (false, false);
    for _ in 0..50 {
        let logs = gw.logs.lock().unwrap().clone();
        seen.0 = logs.iter().any(|l| {
            l["message"] == "call finished"
                && l["method"] == "DescribeJob"
                && l["caller"] == "token:pipeline"
        });
        seen.1 = logs.iter().any(|l| {
            l["message"] == "call refused"
                && l["code"] == "Unauthenticated"
                && l["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("not one this gateway knows"))
        });
        if seen == (true, true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        (true, true),
        "(call line with its caller, refusal with its reason)"
    );
    // The presented token never reaches the log.
    let logs = gw.logs.lock().unwrap().clone();
    assert!(
        !serde_json::to_string(&logs)
            .unwrap()
            .contains("stolen-token"),
        "a token was logged"
    );
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// The log lines `gw` wrote after the first `from`.
fn lines_since(gw: &GatewayProcess, from: usize) -> Vec<serde_json::Value> {
    gw.logs.lock().unwrap()[from..].to_vec()
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What an anonymous client can no longer do: hold memory with streams
/// that never end. The server advertises 200 streams per connection and
/// refuses the rest; the 200 it took end when their request does not come.
#[tokio::test]
async fn ten_thousand_streams_on_one_connection_are_refused_past_the_bound_in_bounded_memory() {
    let tools = tools().await;
    let sim = aws().await;
    let flags = [
        "--request-message-timeout",
        "3s",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let gw = GatewayProcess::serve(&sim.url, &flags, "streams-flood").await;
    let mut client = gw.client().await;
    client.describe_job(describe("public-1")).await.unwrap();
    let (before, logged) = (rss(gw.pid()), gw.logs.lock().unwrap().len());

    let flood = tools.flood(&["streams", &gw.addr, "10000", "5"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = rss(gw.pid());
    // A normal caller on its own connection is answered meanwhile.
    let mut call = Request::new(describe("public-2"));
    call.set_timeout(Duration::from_secs(2));
    client.describe_job(call).await.unwrap();
    let seen = support::python::flooded(flood).await;

    assert_eq!(seen["settings"]["MAX_CONCURRENT_STREAMS"], 200, "{seen}");
    assert_eq!(seen["sent"], 10_000, "{seen}");
    assert_eq!(seen["refused"], 9_800, "streams past the bound: {seen}");
    assert_eq!(
        seen["codes"]["4"], 200,
        "the streams it took end with DEADLINE_EXCEEDED: {seen}"
    );
    let grown = during.saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "10,000 streams grew the gateway by {} MiB (limit 32 MiB)",
        grown >> 20
    );
    // Every one is counted; a few are logged.
    let metrics = support::metrics::Scrape::of(tools, gw.metrics_addr.as_deref().unwrap()).await;
    let labels = [("grpc_method", "Check"), ("grpc_code", "DeadlineExceeded")];
    assert_eq!(metrics.value("grpc_server_handled_total", &labels), 200.0);
    let lines = lines_since(&gw, logged);
    let refused = lines
        .iter()
        .filter(|l| l["message"] == "call refused")
        .count();
    assert!(refused <= 10, "{refused} refusal lines for one flood");
    assert!(
        lines.len() <= 30,
        "{} lines for one flood: {lines:#?}",
        lines.len()
    );
}

/// Connections that never speak are closed by the preface limit, those
/// past the cap are reset at once, and a caller already connected keeps
/// being answered, even with only 256 file descriptors.
#[tokio::test]
async fn silent_connections_are_closed_and_normal_callers_answered_under_a_low_file_limit() {
    let tools = tools().await;
    let dir = empty_home("silent");
    let sim = aws().await;
    let pki = Pki::new(&dir, "silent");
    let server = pki.server("server");
    let health = format!("127.0.0.1:{}", free_port());
    let (cert, key) = (
        server.cert.display().to_string(),
        server.key.display().to_string(),
    );
    let flags = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--health-listen",
        &health,
        "--metrics-listen",
        "127.0.0.1:0",
        "--connection-preface-timeout",
        "3s",
    ];
    // 256 files: at most 128 connections on --listen, 32 on each probe port.
    let gw = GatewayProcess::serve_with_file_limit(&sim.url, &flags, 256, "silent").await;
    let addr: std::net::SocketAddr = gw.addr.parse().unwrap();
    let mut caller = JobsGatewayClient::new(tls_channel(addr, &pki.ca_pem, None).await.unwrap());
    caller.describe_job(describe("public-1")).await.unwrap();
    let logged = gw.logs.lock().unwrap().len();

    let tls_flood = tools.flood(&["silent", &gw.addr, "300", "7", "tls"]);
    let plain_flood = tools.flood(&["silent", &health, "60", "7"]);
    let metrics_addr = gw.metrics_addr.clone().unwrap();
    let metrics_flood = tools.flood(&["silent", &metrics_addr, "40", "7"]);
    // Each call needs AWS (a socket of its own): the cap leaves it files.
    for job in ["public-2", "secret-1", "public-2", "secret-1", "public-2"] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut call = Request::new(describe(job));
        call.set_timeout(Duration::from_secs(2));
        let started = std::time::Instant::now();
        caller
            .describe_job(call)
            .await
            .unwrap_or_else(|e| panic!("a caller went unanswered during the flood: {e:?}"));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let (tls, plain, scrapers) = (
        support::python::flooded(tls_flood).await,
        support::python::flooded(plain_flood).await,
        support::python::flooded(metrics_flood).await,
    );

    // TLS: past the cap the connection is reset before its handshake; the
    // rest are closed by the preface limit, in their handshake or after it.
    let (opened, failed) = (
        tls["opened"].as_u64().unwrap(),
        tls["failed"].as_u64().unwrap(),
    );
    assert_eq!(opened + failed, 300, "{tls}");
    assert!(
        opened > 0,
        "no TLS connection got through its handshake: {tls}"
    );
    assert_eq!(
        tls["closed"], tls["opened"],
        "silent TLS connections left open: {tls}"
    );
    // Plaintext on the health port: 32 taken and closed in time, the rest
    // reset at once (a busy machine's listen backlog may refuse one or two
    // before the gateway sees them: `failed`).
    let count = |flood: &serde_json::Value, key| flood[key].as_u64().unwrap();
    let at_cap = |flood: &serde_json::Value, total| {
        assert_eq!(
            count(flood, "opened") + count(flood, "failed"),
            total,
            "{flood}"
        );
        assert_eq!(count(flood, "still_open"), 0, "{flood}");
        assert_eq!(
            count(flood, "closed") - count(flood, "closed_at_once"),
            32,
            "32 held until the preface limit: {flood}"
        );
        assert!(flood["closed_last_s"].as_f64().unwrap() < 5.0, "{flood}");
        // Reset by the gateway: every connection past the 32, less those
        // the client saw fail; a connection the gateway took and reset at
        // once may also reach the client as a failure, so the gateway's
        // count lies between the two.
        let failed = count(flood, "failed");
        (total - 32 - failed, total - 32)
    };
    let plain_reset = at_cap(&plain, 60);
    // The same on the metrics port, where the first bytes are a request line.
    let scrapers_reset = at_cap(&scrapers, 40);

    let metrics = support::metrics::Scrape::of(tools, gw.metrics_addr.as_deref().unwrap()).await;
    let refused = |listener| {
        metrics.value(
            "iot_jobs_gateway_connections_refused_total",
            &[("listener", listener)],
        )
    };
    let timed_out = |listener| {
        metrics.value(
            "iot_jobs_gateway_connections_timed_out_total",
            &[("listener", listener)],
        )
    };
    assert!(
        refused("grpc") >= 150.0,
        "reset at the cap of 128: {}",
        refused("grpc")
    );
    assert_eq!(refused("grpc") + timed_out("grpc"), 300.0);
    for (listener, (least, most)) in [("health", plain_reset), ("metrics", scrapers_reset)] {
        let reset = refused(listener);
        assert!(
            (least as f64..=most as f64).contains(&reset),
            "{listener}: {reset} reset, expected {least} to {most}"
        );
        assert_eq!(timed_out(listener), 32.0, "{listener}");
    }
    // A new caller gets in once the silent ones are gone.
    let mut newcomer = JobsGatewayClient::new(tls_channel(addr, &pki.ca_pem, None).await.unwrap());
    newcomer.describe_job(describe("public-1")).await.unwrap();

    let lines = lines_since(&gw, logged);
    assert!(
        !lines.iter().any(|l| l["level"] == "WARN"),
        "warnings: {lines:#?}"
    );
    let about_connections = lines
        .iter()
        .filter(|l| l["target"] == "iot_jobs_gateway::security::connections")
        .count();
    // Ten a kind (reset at the cap, silent) and listener per interval.
    assert!(
        about_connections <= 60,
        "{about_connections} lines about 400 connections"
    );
}

/// Rapid resets, abandoned streams and health checks for unknown services
/// write a bounded number of lines, whoever sends them.
#[tokio::test]
async fn anonymous_floods_write_at_most_the_bounded_lines() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let tools = tools().await;
    let sim = aws().await;
    let gw = GatewayProcess::serve(&sim.url, &["--refusal-log-interval", "1m"], "log-floods").await;
    let logged = gw.logs.lock().unwrap().len();

    let seen = support::python::flooded(tools.flood(&["reset", &gw.addr, "50", "100"])).await;
    assert_eq!(seen["reset_streams"], 5_000, "{seen}");
    let mut health = HealthClient::new(support::channel(gw.addr.parse().unwrap()).await);
    for _ in 0..200 {
        let unknown = HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        };
        let status = health.check(unknown).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    // The gateway still answers.
    gw.client()
        .await
        .describe_job(describe("public-1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let lines = lines_since(&gw, logged);
    let count =
        |what: &dyn Fn(&serde_json::Value) -> bool| lines.iter().filter(|l| what(l)).count();
    let warnings = count(&|l| l["level"] == "WARN");
    assert!(warnings <= 10, "{warnings} warnings: {lines:#?}");
    let went_away = count(&|l| l["message"] == "caller went away; upstream work dropped");
    assert!(went_away <= 10, "{went_away} lines for abandoned calls");
    let health_lines = count(&|l| l["method"] == "Check");
    assert_eq!(
        health_lines, 0,
        "health checks logged above debug: {lines:#?}"
    );
    assert!(lines.len() <= 40, "{} lines: {lines:#?}", lines.len());
}
