//! Simulated hosts: each worker process as if it ran on a machine of its own.
//!
//! This machine has 2 cores, so N workers on it say more about the machine
//! than about the software. Giving every worker its own CPU quota
//! ([`cgroup`]) turns one machine into N small hosts of a known size, and
//! optionally a network namespace per worker ([`netns`]) puts each of them
//! behind a link of its own with a delay, reaching the services through the
//! bench's [`Forwarder`] as over a network. The services (PostgreSQL,
//! RabbitMQ, the S3 server, the producer) keep what the quotas leave of the
//! machine; the report says how much that is.
//!
//! Everything made here is removed when [`Hosts`] is dropped, on error paths
//! too; the worker processes must be stopped first.

pub mod cgroup;
pub mod netns;

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use birdsong_common::Config;

use crate::endpoint;
use crate::forward::{Forwarder, Route};
use cgroup::{CpuGroups, Hierarchy, Throttling};
use netns::Links;

/// Below this many cores left over for the services, the producer and the
/// bench, the report warns that they, not the workers, may set the pace.
pub const SERVICES_MIN_CORES: f64 = 0.5;

/// What every simulated host is made of. The default simulates nothing:
/// workers share the machine as plain processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostSpec {
    /// CPU cores each worker may use (e.g. 0.1), enforced by a cgroup.
    pub cpu_quota: Option<f64>,
    /// Each worker in its own network namespace behind a veth pair.
    pub netns: bool,
    /// One-way delay added in each direction of every worker's link (so a
    /// round trip takes twice this); only with `netns`.
    pub delay: Duration,
}

impl HostSpec {
    pub fn simulates(&self) -> bool {
        self.cpu_quota.is_some() || self.netns
    }

    /// Cores left for everything but the workers with `workers` of them.
    pub fn cores_left(&self, cores: usize, workers: usize) -> Option<f64> {
        self.cpu_quota.map(|q| cores as f64 - workers as f64 * q)
    }

    /// Plain sentences saying what a run with these hosts simulates, with a
    /// warning for every worker count that leaves the services too little.
    /// `made_by` names how they are made, from [`Hosts::made_by`].
    pub fn describe(&self, cores: usize, workers: &[usize], made_by: &MadeBy) -> String {
        if !self.simulates() {
            return format!(
                "No simulated hosts: the workers are plain processes sharing the machine's \
                 {cores} cores with the services, the producer and the bench."
            );
        }
        let mut out = String::from("Simulated hosts: ");
        match self.cpu_quota {
            Some(q) => out.push_str(&format!(
                "each worker process is capped at {q} of a core (CFS quota {} µs per {} µs \
                 period, {}",
                (q * cgroup::PERIOD_US as f64).round(),
                cgroup::PERIOD_US,
                made_by.cpu.as_deref().unwrap_or("a cgroup per worker")
            )),
            None => out.push_str("no CPU quota per worker (workers share the machine's cores"),
        }
        out.push_str(
            "); PostgreSQL, RabbitMQ, the S3 server, the producer and the bench \
             are not capped and share what is left.",
        );
        if self.netns {
            out.push_str(
                " Each worker runs in its own network namespace joined to the host by a \
                 veth pair, and reaches the services through the bench's TCP forwarder on \
                 its link's host-side address",
            );
            if self.delay.is_zero() {
                out.push_str(" with no added delay.");
            } else {
                out.push_str(&format!(
                    ", with {} added in each direction (round trip {}) by {}.",
                    fmt_duration(self.delay),
                    fmt_duration(2 * self.delay),
                    made_by.delay.unwrap_or("the forwarder")
                ));
            }
        }
        out.push_str(&format!(" The machine has {cores} cores."));
        if self.cpu_quota.is_some() {
            let left: Vec<String> = workers
                .iter()
                .filter_map(|&w| {
                    self.cores_left(cores, w)
                        .map(|l| format!("{w} worker(s): {l:.2}"))
                })
                .collect();
            out.push_str(&format!(
                " Cores left for the services, producer and bench (cores − workers × \
                 quota): {}.",
                left.join("; ")
            ));
            for &w in workers {
                if let Some(left) = self.cores_left(cores, w)
                    && left < SERVICES_MIN_CORES
                {
                    out.push_str(&format!(
                        "\n\n**Warning:** with {w} workers only {left:.2} cores are left for \
                         the services, the producer and the bench (under {SERVICES_MIN_CORES}): \
                         they, not the workers, may set the pace of that run."
                    ));
                }
            }
        }
        out
    }
}

/// How a run's hosts were made, for the report.
#[derive(Debug, Clone, Default)]
pub struct MadeBy {
    /// The cgroup hierarchy and file the quota is written to.
    pub cpu: Option<String>,
    /// What adds the link delay.
    pub delay: Option<&'static str>,
}

/// `2ms`, `500us`, `1.5ms`, `1s`: the delay syntax of `--delay`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 2ms"))?;
    let seconds = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        _ => return Err(format!("{text:?}: the unit must be s, ms or us")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn fmt_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1000) {
        format!("{} ms", us / 1000)
    } else {
        format!("{:.3} ms", us as f64 / 1000.0)
    }
}

/// The simulated hosts of one run. Fields drop in order: connections first,
/// then the links, then the CPU groups.
pub struct Hosts {
    forwarder: Option<Forwarder>,
    links: Option<Links>,
    cpu: Option<CpuGroups>,
    /// Per worker: the variables that point it at its forwarder.
    env: Vec<Vec<(String, String)>>,
    delay_by: Option<&'static str>,
}

impl Hosts {
    /// Makes `workers` hosts per `spec` for the services `config` names.
    pub fn create(spec: &HostSpec, workers: usize, config: &Config) -> anyhow::Result<Hosts> {
        if !spec.netns && !spec.delay.is_zero() {
            bail!("a delay needs a network namespace per worker (--netns)");
        }
        let mut hosts = Hosts {
            forwarder: None,
            links: None,
            cpu: None,
            env: vec![Vec::new(); workers],
            delay_by: None,
        };
        if let Some(quota) = spec.cpu_quota {
            let hierarchy = Hierarchy::detect()?;
            hosts.cpu = Some(
                CpuGroups::create(hierarchy, workers, quota)
                    .context("creating a CPU cgroup per worker")?,
            );
        }
        if spec.netns {
            let delay = Some(spec.delay).filter(|d| !d.is_zero());
            let links =
                Links::create(workers, delay).context("creating a network namespace per worker")?;
            let forwarder_delay = if links.netem || delay.is_none() {
                Duration::ZERO
            } else {
                spec.delay
            };
            if delay.is_some() {
                hosts.delay_by = Some(if links.netem {
                    "tc netem on both ends of each veth pair"
                } else {
                    "the bench's forwarder (this kernel has no netem qdisc)"
                });
            }
            let services = [
                ("BIRDSONG_DATABASE_URL", config.database.url.as_str()),
                ("BIRDSONG_AMQP_URL", config.queues.amqp_url.as_str()),
                ("BIRDSONG_S3_ENDPOINT", config.s3.endpoint.as_str()),
            ];
            let mut routes = Vec::new();
            for (i, link) in links.links.iter().enumerate() {
                for (name, url) in services {
                    let target = endpoint::host_port(url, endpoint::default_port(url))?;
                    let listen = SocketAddr::V4(SocketAddrV4::new(link.host_address, 0));
                    let route = Route::bind(listen, &target)?;
                    let address = route.local_addr()?.to_string();
                    hosts.env[i].push((name.to_string(), endpoint::with_address(url, &address)?));
                    routes.push(route);
                }
            }
            hosts.links = Some(links);
            hosts.forwarder = Some(Forwarder::start(routes, forwarder_delay)?);
        }
        Ok(hosts)
    }

    /// The command that starts `program` as worker `index` with the run's
    /// variables `vars`: inside its namespace and CPU group when the run has
    /// them, and then with the service URLs pointing at its link.
    pub fn command(
        &self,
        index: usize,
        program: &Path,
        vars: &HashMap<String, String>,
    ) -> anyhow::Result<Command> {
        let mut command = match &self.links {
            Some(links) => links.command(index, program)?,
            None => Command::new(program),
        };
        command.envs(vars);
        if let Some(overrides) = self.env.get(index) {
            command.envs(overrides.iter().map(|(k, v)| (k, v)));
        }
        if let Some(cpu) = &self.cpu {
            cpu.enter_on_spawn(index, &mut command)?;
        }
        Ok(command)
    }

    /// Throttling summed over the workers' CPU groups.
    pub fn throttling(&self) -> Option<Throttling> {
        self.cpu.as_ref().map(CpuGroups::throttling)
    }

    /// How these hosts were made.
    pub fn made_by(&self) -> MadeBy {
        MadeBy {
            cpu: self.cpu.as_ref().map(|c| c.hierarchy().describe()),
            delay: self.delay_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_in_the_usual_units() {
        assert_eq!(parse_duration("2ms"), Ok(Duration::from_millis(2)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1ms").is_err());
    }

    #[test]
    fn the_default_simulates_nothing() {
        let spec = HostSpec::default();
        assert!(!spec.simulates());
        assert_eq!(spec.cores_left(2, 4), None);
        assert!(
            spec.describe(2, &[1, 2], &MadeBy::default())
                .starts_with("No simulated hosts")
        );
    }

    #[test]
    fn the_report_says_what_is_left_and_warns() {
        let spec = HostSpec {
            cpu_quota: Some(0.1),
            netns: true,
            delay: Duration::from_millis(2),
        };
        let made_by = MadeBy {
            cpu: Some("cgroup v1".into()),
            delay: Some("tc netem"),
        };
        let text = spec.describe(2, &[1, 16], &made_by);
        assert!(text.contains("0.1 of a core"), "{text}");
        assert!(
            text.contains("2 ms added in each direction (round trip 4 ms)"),
            "{text}"
        );
        assert!(text.contains("1 worker(s): 1.90"), "{text}");
        assert!(text.contains("16 worker(s): 0.40"), "{text}");
        assert!(
            text.contains("with 16 workers only 0.40 cores are left"),
            "{text}"
        );
        assert!(!text.contains("with 1 workers only"), "{text}");
    }
}
