//! Scenario 12: what TLS with client certificates costs a cache hit, and
//! how many new TLS connections a second the gateway takes.
//!
//! Certificates are made with the `openssl` command (a CA, a server
//! certificate for 127.0.0.1 and localhost, a client certificate). Four
//! servers run side by side: the gateway with mTLS, a bare tonic server
//! with the same mTLS (tonic's own TLS), and both in plaintext.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use iot_jobs_gateway::{
    pb::jobs_gateway_client::JobsGatewayClient, simulator::seed::synthetic_job_id,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::{
    Error,
    procs::*,
    protection::{Answer, Load, Question, bare_server_for, closed_loop_on},
};

/// The PEM files of one run.
pub(crate) struct Pems {
    dir: PathBuf,
    ca: String,
    client_cert: String,
    client_key: String,
}

impl Pems {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The gateway's flags for mTLS with these files.
    fn gateway_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("server.pem"),
            "--tls-key".into(),
            self.path("server.key"),
            "--tls-client-ca".into(),
            self.path("ca.pem"),
        ]
    }

    /// A client TLS configuration trusting the CA and presenting the
    /// client certificate.
    fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.client_cert, &self.client_key))
            .domain_name("localhost")
    }
}

/// Makes a CA, a server and a client certificate (P-256) with `openssl`.
pub(crate) fn make_pems(dir: &Path) -> Result<Pems, Error> {
    std::fs::create_dir_all(dir)?;
    let run = |args: &[&str]| -> Result<(), Error> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("cannot run openssl ({e}); install the openssl package"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(())
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(key);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=loadgen CA",
    ]);
    run(&ca)?;
    for (name, san) in [
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ("client", "subjectAltName=DNS:loadgen-client"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), format!("{san}\n"))?;
        let (keyout, csr) = (format!("{name}.key"), format!("{name}.csr"));
        let subject = format!("/CN={name}");
        let mut req = vec!["req"];
        req.extend(key);
        req.extend(["-keyout", &keyout, "-out", &csr, "-subj", &subject]);
        run(&req)?;
        let (out, ext) = (format!("{name}.pem"), format!("{name}.ext"));
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &out,
            "-days",
            "2",
            "-extfile",
            &ext,
        ])?;
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    Ok(Pems {
        dir: dir.to_owned(),
        ca: read("ca.pem")?,
        client_cert: read("client.pem")?,
        client_key: read("client.key")?,
    })
}

/// `n` mTLS channels to `port`.
async fn tls_channels(
    port: u16,
    pems: &Pems,
    n: usize,
) -> Result<Vec<JobsGatewayClient<Channel>>, Error> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(JobsGatewayClient::new(tls_channel(port, pems).await?));
    }
    Ok(out)
}

async fn tls_channel(port: u16, pems: &Pems) -> Result<Channel, Error> {
    Ok(Channel::from_shared(format!("https://127.0.0.1:{port}"))?
        .tcp_nodelay(true)
        .tls_config(pems.client())?
        .connect()
        .await?)
}

pub(crate) async fn tls(rounds: usize, seconds: u64) -> Result<(), Error> {
    at_least_one("--rounds", rounds as u64)?;
    at_least_one("--seconds", seconds)?;
    let pems = make_pems(&sibling("loadgen-logs").join("tls"))?;
    let sim = simulator(10, 10).await?;
    let id = Question::job(&synthetic_job_id(3));
    let gw_tls = gateway_named(
        &sim,
        &[&["--cache-ttl", "1h"][..], &refs(&pems.gateway_flags())].concat(),
        "gateway-tls",
    )
    .await?;
    let gw_plain = gateway_named(&sim, &["--cache-ttl", "1h"], "gateway-plain").await?;
    // Warm both caches; the same answer is what the bare servers return.
    let mut warm = tls_channels(gw_tls.port, &pems, 1).await?.remove(0);
    let response: Answer = id.ask(&mut warm, Duration::from_secs(10)).await?;
    id.ask(
        &mut channels(gw_plain.port, 1).await?.remove(0),
        Duration::from_secs(10),
    )
    .await?;
    let bare_tls = bare_server_for(&response, Some(&pems.dir)).await?;
    let bare_plain = bare_server_for(&response, None).await?;

    println!(
        "## 12. TLS with client certificates: cache hits and handshakes, 32 concurrent callers, {seconds} s per round\n"
    );
    println!(
        "The gateway with mTLS (`--tls-cert`, `--tls-key`, `--tls-client-ca`; P-256 certificates) \
         beside a bare tonic server with the same mTLS (tonic's own `ServerTlsConfig`), and both \
         in plaintext. Rounds alternate between the four servers.\n"
    );
    println!(
        "| round | gateway mTLS calls/s | CPU/call | bare mTLS calls/s | CPU/call | gateway plaintext calls/s | CPU/call | bare plaintext calls/s | CPU/call | gateway mTLS / bare mTLS | (CPU/call) | gateway mTLS / gateway plaintext | (CPU/call) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let (mut vs_bare, mut vs_bare_cpu, mut vs_plain, mut vs_plain_cpu) =
        (vec![], vec![], vec![], vec![]);
    let mut p = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let g = closed_loop_on(
            &gw_tls,
            tls_channels(gw_tls.port, &pems, 4).await?,
            &id,
            32,
            seconds,
        )
        .await?;
        let b = closed_loop_on(
            &bare_tls,
            tls_channels(bare_tls.port, &pems, 4).await?,
            &id,
            32,
            seconds,
        )
        .await?;
        let gp = closed_loop_on(
            &gw_plain,
            channels(gw_plain.port, 4).await?,
            &id,
            32,
            seconds,
        )
        .await?;
        let bp = closed_loop_on(
            &bare_plain,
            channels(bare_plain.port, 4).await?,
            &id,
            32,
            seconds,
        )
        .await?;
        for (what, load) in [
            ("gateway mTLS", &g),
            ("bare mTLS", &b),
            ("gateway", &gp),
            ("bare", &bp),
        ] {
            if load.errors > 0 {
                println!("(round {round}: {} errors on {what})", load.errors);
            }
        }
        vs_bare.push(g.per_sec / b.per_sec);
        vs_bare_cpu.push(g.cpu_us_per_call / b.cpu_us_per_call);
        vs_plain.push(g.per_sec / gp.per_sec);
        vs_plain_cpu.push(g.cpu_us_per_call / gp.cpu_us_per_call);
        p.0.push(g.p50.as_secs_f64() * 1e3);
        p.1.push(b.p50.as_secs_f64() * 1e3);
        p.2.push(g.p99.as_secs_f64() * 1e3);
        p.3.push(b.p99.as_secs_f64() * 1e3);
        let row = |l: &Load| format!("{:.0} | {:.1} µs", l.per_sec, l.cpu_us_per_call);
        println!(
            "| {round} | {} | {} | {} | {} | {:.3} | {:.2} | {:.3} | {:.2} |",
            row(&g),
            row(&b),
            row(&gp),
            row(&bp),
            g.per_sec / b.per_sec,
            g.cpu_us_per_call / b.cpu_us_per_call,
            g.per_sec / gp.per_sec,
            g.cpu_us_per_call / gp.cpu_us_per_call,
        );
    }
    let ratio = median(&mut vs_bare);
    println!(
        "| **median** | | | | | | | | | **{ratio:.3}** | **{:.2}** | **{:.3}** | **{:.2}** |\n",
        median(&mut vs_bare_cpu),
        median(&mut vs_plain),
        median(&mut vs_plain_cpu),
    );
    println!(
        "Median latency over TLS: gateway p50 {:.2} ms / p99 {:.2} ms, bare p50 {:.2} ms / p99 {:.2} ms.\n",
        median(&mut p.0),
        median(&mut p.2),
        median(&mut p.1),
        median(&mut p.3),
    );
    println!(
        "Target: gateway mTLS / bare mTLS >= 0.85. Result: {}\n",
        verdict(ratio >= 0.85)
    );

    println!("### New mTLS connections per second\n");
    println!(
        "8 clients each connect (TCP, TLS 1.3 handshake with client certificate, HTTP/2), make one \
         cache-hit DescribeJob and close, for {seconds} s; CPU per connection from /proc.\n"
    );
    println!("| server | connections/s | CPU per connection |");
    println!("|---|---|---|");
    for (what, server) in [("gateway", &gw_tls), ("bare tonic", &bare_tls)] {
        let (per_sec, cpu_us) = handshakes(server, &pems, &id, seconds).await?;
        println!("| {what} | {per_sec:.0} | {:.0} µs |", cpu_us);
    }
    println!();
    Ok(())
}

/// New connections a second to `server`, each making one call, and the
/// server's CPU per connection.
async fn handshakes(
    server: &Proc,
    pems: &Pems,
    question: &Question,
    seconds: u64,
) -> Result<(f64, f64), Error> {
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (port, tls, question) = (server.port, pems.client(), question.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < end {
                    let Ok(endpoint) = Channel::from_shared(format!("https://127.0.0.1:{port}"))
                    else {
                        break;
                    };
                    let Ok(endpoint) = endpoint.tls_config(tls.clone()) else {
                        break;
                    };
                    let Ok(channel) = endpoint.connect().await else {
                        continue;
                    };
                    let answered = question
                        .ask(&mut JobsGatewayClient::new(channel), Duration::from_secs(5))
                        .await
                        .is_ok();
                    done += u64::from(answered);
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    Ok((total as f64 / elapsed, cpu * 1e6 / total.max(1) as f64))
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
