//! Cache hits on several servers side by side: rounds interleaved, so the
//! machine's noise falls on all alike; calls/s and CPU per call of each,
//! and the first server against each of the others, per round and as
//! medians (scenarios 13 and 19).

use crate::{
    Error,
    procs::{Proc, median},
    protection::{Question, closed_loop},
};

/// Callers in closed loop on each server.
pub(crate) const CONCURRENCY: usize = 32;

/// A server under load and what it measured, round by round.
pub(crate) struct Measured {
    pub(crate) name: &'static str,
    pub(crate) server: Proc,
    pub(crate) per_sec: Vec<f64>,
    pub(crate) cpu_us: Vec<f64>,
}

impl Measured {
    /// The median, over the rounds, of this server's calls/s against `other`'s.
    pub(crate) fn ratio_to(&self, other: &Measured) -> f64 {
        median(&mut ratios(&self.per_sec, &other.per_sec))
    }

    /// The same for CPU per call.
    pub(crate) fn cpu_ratio_to(&self, other: &Measured) -> f64 {
        median(&mut ratios(&self.cpu_us, &other.cpu_us))
    }
}

fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a / b).collect()
}

/// `rounds` rounds of `question` on each of `servers` in turn for
/// `seconds` each; prints the Markdown table.
pub(crate) async fn interleaved(
    servers: Vec<(&'static str, Proc)>,
    question: &Question,
    rounds: usize,
    seconds: u64,
) -> Result<Vec<Measured>, Error> {
    let mut measured: Vec<Measured> = servers
        .into_iter()
        .map(|(name, server)| Measured {
            name,
            server,
            per_sec: Vec::new(),
            cpu_us: Vec::new(),
        })
        .collect();
    let names: Vec<&str> = measured.iter().map(|m| m.name).collect();
    let (first, others) = (names[0], &names[1..]);
    print!("| round |");
    for name in &names {
        print!(" {name} calls/s |");
    }
    for name in &names {
        print!(" {name} CPU/call |");
    }
    for other in others {
        print!(" {first}/{other} | CPU {first}/{other} |");
    }
    println!();
    println!("|---|{}", "---|".repeat(names.len() * 2 + others.len() * 2));
    for round in 1..=rounds {
        for m in &mut measured {
            let load = closed_loop(&m.server, question, CONCURRENCY, seconds).await?;
            if load.errors > 0 {
                println!("(round {round}: {} {} errors)", load.errors, m.name);
            }
            m.per_sec.push(load.per_sec);
            m.cpu_us.push(load.cpu_us_per_call);
        }
        let at = |v: &[f64]| v[round - 1];
        print_row(&round.to_string(), &measured, at);
    }
    print_row("**median**", &measured, |v| median(&mut v.to_vec()));
    Ok(measured)
}

/// One table row: calls/s and CPU per call of each server, then the first
/// against each other server; `pick` chooses the round (or the median).
fn print_row(label: &str, measured: &[Measured], pick: impl Fn(&[f64]) -> f64) {
    let first = &measured[0];
    print!("| {label} |");
    for m in measured {
        print!(" {:.0} |", pick(&m.per_sec));
    }
    for m in measured {
        print!(" {:.1} µs |", pick(&m.cpu_us));
    }
    for m in &measured[1..] {
        // Ratios per round; for the median row, the median of the ratios.
        print!(
            " {:.3} | {:.2} |",
            pick(&ratios(&first.per_sec, &m.per_sec)),
            pick(&ratios(&first.cpu_us, &m.cpu_us))
        );
    }
    println!();
}
