//! A network namespace per worker, joined to the host by a veth pair, so
//! that every worker reaches the services over a link of its own, as a
//! separate host would.
//!
//! Worker `i` lives in namespace `birdsong-<pid>-w<i>`; its end of the pair
//! (`veth0` inside) has 10.203.`i`.2/30 and the host's end
//! (`bs<pid>h<i>`) 10.203.`i`.1/30. Nothing is routed: the worker only talks
//! to the host-side address, where the bench's forwarder listens. A delay can
//! be put on both ends with `tc netem` when the kernel has it. Dropping
//! [`Links`] deletes the namespaces (which takes the pairs with them);
//! namespaces left by a killed run are deleted at the next start.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

/// The block the run's links are numbered from: 10.203.`i`.0/30 per worker.
const BLOCK: &str = "10.203.0.0/16";

/// How many links one run may create (one /30 per third octet).
pub const MAX_LINKS: usize = 256;

const NAME_PREFIX: &str = "birdsong-";

/// One worker's namespace and link.
#[derive(Debug, Clone)]
pub struct Link {
    pub namespace: String,
    pub host_device: String,
    /// The host's end: where the worker finds the services.
    pub host_address: Ipv4Addr,
    /// The worker's end.
    pub worker_address: Ipv4Addr,
}

/// The run's namespaces, deleted on drop.
pub struct Links {
    pub links: Vec<Link>,
    /// Whether `tc netem` delays the links (false: no delay asked, or the
    /// kernel has no netem and the forwarder delays instead).
    pub netem: bool,
}

impl Links {
    /// Creates `count` namespaces and links; with a `delay`, tries to put a
    /// netem qdisc with that delay on both ends of every link.
    pub fn create(count: usize, delay: Option<Duration>) -> anyhow::Result<Links> {
        if count > MAX_LINKS {
            bail!("at most {MAX_LINKS} network namespaces per run, not {count}");
        }
        remove_stale();
        let used = output("ip", &["-o", "-4", "addr", "show", "to", BLOCK])?;
        if !used.trim().is_empty() {
            bail!(
                "addresses in {BLOCK} are already in use on this machine, and the simulated \
                 hosts are numbered from it:\n{used}"
            );
        }
        let mut links = Links {
            links: Vec::with_capacity(count),
            netem: false,
        };
        let pid = std::process::id();
        for i in 0..count {
            let octet = u8::try_from(i).context("too many links")?;
            let link = Link {
                namespace: format!("{NAME_PREFIX}{pid}-w{i}"),
                host_device: format!("bs{pid}h{i}"),
                host_address: Ipv4Addr::new(10, 203, octet, 1),
                worker_address: Ipv4Addr::new(10, 203, octet, 2),
            };
            run("ip", &["netns", "add", &link.namespace])?;
            // Pushed before it is complete, so that a failure below still
            // deletes what was made.
            links.links.push(link.clone());
            let ns = link.namespace.as_str();
            let host = link.host_device.as_str();
            run(
                "ip",
                &[
                    "link", "add", host, "type", "veth", "peer", "name", "veth0", "netns", ns,
                ],
            )?;
            run(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}/30", link.host_address),
                    "dev",
                    host,
                ],
            )?;
            run("ip", &["link", "set", host, "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{}/30", link.worker_address),
                    "dev",
                    "veth0",
                ],
            )?;
            run("ip", &["-n", ns, "link", "set", "veth0", "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            if let Some(delay) = delay.filter(|d| !d.is_zero()) {
                let usec = format!("{}us", delay.as_micros());
                let host_side = ["qdisc", "add", "dev", host, "root", "netem", "delay", &usec];
                if i == 0 {
                    match run("tc", &host_side) {
                        Ok(()) => links.netem = true,
                        // No netem in this kernel (CONFIG_NET_SCH_NETEM): the
                        // forwarder delays instead, for every link.
                        Err(e) if format!("{e:#}").contains("qdisc kind is unknown") => {}
                        Err(e) => return Err(e),
                    }
                } else if links.netem {
                    run("tc", &host_side)?;
                }
                if links.netem {
                    run(
                        "tc",
                        &[
                            "-n", ns, "qdisc", "add", "dev", "veth0", "root", "netem", "delay",
                            &usec,
                        ],
                    )?;
                }
            }
        }
        Ok(links)
    }

    /// A command that runs `program` inside link `index`'s namespace (`ip
    /// netns exec` replaces itself with the program: same pid, no extra
    /// process).
    pub fn command(&self, index: usize, program: &std::path::Path) -> anyhow::Result<Command> {
        let link = self
            .links
            .get(index)
            .with_context(|| format!("no network namespace for worker {index}"))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &link.namespace])
            .arg(program);
        Ok(command)
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        for link in &self.links {
            remove(&link.namespace, &link.host_device);
        }
    }
}

/// Deletes a namespace (its veth end goes with it, and with it the peer).
fn remove(namespace: &str, host_device: &str) {
    if let Err(e) = run("ip", &["netns", "del", namespace]) {
        eprintln!("could not delete network namespace {namespace}: {e:#}");
    }
    // Gone already unless the namespace was never joined to it.
    let _ = Command::new("ip")
        .args(["link", "del", host_device])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Deletes the namespaces of earlier runs whose bench process is gone.
fn remove_stale() {
    let Ok(list) = output("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some((pid, index)) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split_once("-w"))
        else {
            continue;
        };
        if pid.parse::<u32>().is_err() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove(name, &format!("bs{pid}h{index}"));
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    output(program, args).map(|_| ())
}

fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (iproute2)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
