//! A CPU quota per worker process, from the kernel's `cpu` cgroup controller.
//!
//! One machine stands in for N small hosts when every worker gets its own
//! slice of a core: a cgroup per worker whose CFS bandwidth limit is the
//! quota (cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, or cgroup v2
//! `cpu.max`, whichever hierarchy holds the `cpu` controller). A run's groups
//! live under one parent, `birdsong-scale-<pid>`, removed when the
//! [`CpuGroups`] guard is dropped; parents left by a run that was killed
//! (its pid gone) are removed at the next start.
//!
//! A process enters its group before it executes anything: [`CpuGroups::enter_on_spawn`]
//! makes the forked child write itself into `cgroup.procs` before `exec`, so
//! no CPU of the worker is ever spent outside its quota.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// CFS period: the kernel's default, and what Kubernetes uses for CPU limits.
pub const PERIOD_US: u64 = 100_000;

/// The smallest quota the kernel accepts per period (1 ms).
const MIN_QUOTA_US: u64 = 1_000;

const PARENT_PREFIX: &str = "birdsong-scale-";

/// Which cgroup hierarchy holds the `cpu` controller, and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1: a `cgroup` mount with the `cpu` option (alone or with
    /// others, e.g. `cpu,cpuacct`).
    V1(PathBuf),
    /// cgroup v2: the unified `cgroup2` mount, whose `cgroup.controllers`
    /// lists `cpu`.
    V2(PathBuf),
}

impl Hierarchy {
    /// Finds the `cpu` controller in `/proc/mounts`. A v1 `cpu` mount wins:
    /// on a hybrid system the controller can only be bound to one
    /// hierarchy, and the v2 mount then does not offer it.
    pub fn detect() -> anyhow::Result<Hierarchy> {
        let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
        Self::from_mounts(&mounts, |root| {
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
        })
        .context(
            "no cgroup hierarchy offers the cpu controller (neither a cgroup v1 mount with \
             the cpu option nor a cgroup2 mount listing cpu in cgroup.controllers)",
        )
    }

    /// The hierarchy named by a `/proc/mounts` text; `controllers` reads a
    /// v2 mount's `cgroup.controllers`.
    fn from_mounts(mounts: &str, controllers: impl Fn(&Path) -> String) -> Option<Hierarchy> {
        let entries: Vec<(&str, &str, &str)> = mounts
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let _source = f.next()?;
                let target = f.next()?;
                let kind = f.next()?;
                let options = f.next()?;
                Some((target, kind, options))
            })
            .collect();
        let v1 = entries
            .iter()
            .find(|(_, kind, options)| *kind == "cgroup" && options.split(',').any(|o| o == "cpu"));
        if let Some((target, _, _)) = v1 {
            return Some(Hierarchy::V1(PathBuf::from(unescape(target))));
        }
        entries
            .iter()
            .filter(|(_, kind, _)| *kind == "cgroup2")
            .map(|(target, _, _)| PathBuf::from(unescape(target)))
            .find(|root| controllers(root).split_whitespace().any(|c| c == "cpu"))
            .map(Hierarchy::V2)
    }

    fn root(&self) -> &Path {
        match self {
            Hierarchy::V1(p) | Hierarchy::V2(p) => p,
        }
    }

    /// A name for reports: `cgroup v1 (/sys/fs/cgroup/cpu)`.
    pub fn describe(&self) -> String {
        match self {
            Hierarchy::V1(p) => format!("cgroup v1 cpu.cfs_quota_us ({})", p.display()),
            Hierarchy::V2(p) => format!("cgroup v2 cpu.max ({})", p.display()),
        }
    }
}

/// `/proc/mounts` escapes spaces and a few other bytes as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(Ok(v)) = field
                .get(i + 1..i + 4)
                .map(|octal| u8::from_str_radix(octal, 8))
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// CFS bandwidth counters of one group over its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Throttling {
    /// Enforcement periods in which the group was runnable.
    pub periods: u64,
    /// Periods in which it used its whole quota and was stopped.
    pub throttled_periods: u64,
    /// Time its processes were held back, in seconds.
    pub throttled_s: f64,
}

impl std::ops::AddAssign for Throttling {
    fn add_assign(&mut self, other: Throttling) {
        self.periods += other.periods;
        self.throttled_periods += other.throttled_periods;
        self.throttled_s += other.throttled_s;
    }
}

/// Reads `cpu.stat` (v1: `throttled_time` in ns; v2: `throttled_usec`).
fn parse_cpu_stat(text: &str) -> Throttling {
    let mut t = Throttling::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(key), Some(value)) = (f.next(), f.next().and_then(|v| v.parse::<u64>().ok()))
        else {
            continue;
        };
        match key {
            "nr_periods" => t.periods = value,
            "nr_throttled" => t.throttled_periods = value,
            "throttled_time" => t.throttled_s = value as f64 / 1e9,
            "throttled_usec" => t.throttled_s = value as f64 / 1e6,
            _ => {}
        }
    }
    t
}

/// One cgroup per worker with a CPU quota, under one parent for the run.
/// Dropping it removes the groups (their processes must have exited).
pub struct CpuGroups {
    hierarchy: Hierarchy,
    parent: PathBuf,
    groups: Vec<PathBuf>,
}

impl CpuGroups {
    /// Creates `count` groups of `quota` cores each (e.g. 0.1) under
    /// `birdsong-scale-<our pid>`.
    pub fn create(hierarchy: Hierarchy, count: usize, quota: f64) -> anyhow::Result<CpuGroups> {
        let quota_us = quota_us(quota)?;
        remove_stale(hierarchy.root());
        let parent = hierarchy
            .root()
            .join(format!("{PARENT_PREFIX}{}", std::process::id()));
        if let Hierarchy::V2(root) = &hierarchy {
            // Children of the root only get cpu.max if the root hands the
            // controller down.
            enable_cpu_controller(root)?;
        }
        std::fs::create_dir(&parent)
            .with_context(|| format!("creating {} (are we root?)", parent.display()))?;
        let mut groups = CpuGroups {
            hierarchy,
            parent,
            groups: Vec::new(),
        };
        if matches!(groups.hierarchy, Hierarchy::V2(_)) {
            enable_cpu_controller(&groups.parent)?;
        }
        for i in 0..count {
            let dir = groups.parent.join(format!("worker-{i}"));
            std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            groups.groups.push(dir.clone());
            groups.hierarchy.limit(&dir, quota_us)?;
        }
        Ok(groups)
    }

    /// Makes the process `command` starts enter group `index` between fork
    /// and exec, so that everything it runs is inside the quota.
    pub fn enter_on_spawn(&self, index: usize, command: &mut Command) -> anyhow::Result<()> {
        let dir = self
            .groups
            .get(index)
            .with_context(|| format!("no cgroup for worker {index}"))?;
        let procs_path = dir.join("cgroup.procs");
        let procs = File::options()
            .write(true)
            .open(&procs_path)
            .with_context(|| format!("opening {}", procs_path.display()))?;
        // SAFETY: the closure runs in the forked child before exec and only
        // calls write(2) on a descriptor opened above (it is close-on-exec,
        // so it stays open until exec): no allocation, no locks, which is
        // what a child of a multi-threaded parent may do. Writing "0" moves
        // the writing process itself (cgroup v1 and v2 alike).
        unsafe {
            command.pre_exec(move || (&procs).write_all(b"0"));
        }
        Ok(())
    }

    /// The throttling counters summed over all groups.
    pub fn throttling(&self) -> Throttling {
        let mut total = Throttling::default();
        for dir in &self.groups {
            if let Ok(text) = std::fs::read_to_string(dir.join("cpu.stat")) {
                total += parse_cpu_stat(&text);
            }
        }
        total
    }

    /// What the groups are made with, for reports.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }
}

impl Hierarchy {
    /// Writes the quota into one group's files.
    fn limit(&self, dir: &Path, quota_us: u64) -> anyhow::Result<()> {
        let write = |file: &str, value: String| {
            std::fs::write(dir.join(file), value)
                .with_context(|| format!("writing {}", dir.join(file).display()))
        };
        match self {
            Hierarchy::V1(_) => {
                write("cpu.cfs_period_us", PERIOD_US.to_string())?;
                write("cpu.cfs_quota_us", quota_us.to_string())
            }
            Hierarchy::V2(_) => write("cpu.max", format!("{quota_us} {PERIOD_US}")),
        }
    }
}

/// Microseconds per period for `quota` cores.
fn quota_us(quota: f64) -> anyhow::Result<u64> {
    if !quota.is_finite() || quota <= 0.0 {
        bail!("a CPU quota must be a positive number of cores, not {quota}");
    }
    let us = (quota * PERIOD_US as f64).round() as u64;
    if us < MIN_QUOTA_US {
        bail!(
            "a CPU quota of {quota} cores is below the kernel's minimum of {} cores",
            MIN_QUOTA_US as f64 / PERIOD_US as f64
        );
    }
    Ok(us)
}

/// cgroup v2: lets `dir`'s children use the cpu controller.
fn enable_cpu_controller(dir: &Path) -> anyhow::Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control)
        .with_context(|| format!("reading {}", control.display()))?;
    if enabled.split_whitespace().any(|c| c == "cpu") {
        return Ok(());
    }
    std::fs::write(&control, "+cpu").with_context(|| {
        format!(
            "enabling the cpu controller in {} (a cgroup with processes of its own cannot \
             hand controllers down; run as root on the host, not in a container's cgroup)",
            control.display()
        )
    })
}

/// Removes the groups of earlier runs whose bench process is gone.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PARENT_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_tree(&entry.path());
    }
}

/// Removes a parent group and its (empty) child groups; cgroup directories
/// are removed with rmdir, their control files go with them.
fn remove_tree(parent: &Path) {
    if let Ok(children) = std::fs::read_dir(parent) {
        for child in children.flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                remove_group(&child.path());
            }
        }
    }
    remove_group(parent);
}

/// rmdir of one group, retried briefly: a process that was just reaped may
/// still be leaving it.
fn remove_group(dir: &Path) {
    for attempt in 0..20 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if attempt == 19 => {
                eprintln!("could not remove cgroup {}: {e}", dir.display());
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

impl Drop for CpuGroups {
    fn drop(&mut self) {
        for dir in &self.groups {
            remove_group(dir);
        }
        remove_group(&self.parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn a_v1_cpu_mount_wins_and_cpuacct_is_not_cpu() {
        let h = Hierarchy::from_mounts(HYBRID, |_| "cpu memory".into());
        assert_eq!(h, Some(Hierarchy::V1("/sys/fs/cgroup/cpu".into())));
        let combined = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n";
        assert_eq!(
            Hierarchy::from_mounts(combined, |_| String::new()),
            Some(Hierarchy::V1("/sys/fs/cgroup/cpu,cpuacct".into()))
        );
        let only_acct = "cgroup /sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\n";
        assert_eq!(Hierarchy::from_mounts(only_acct, |_| String::new()), None);
    }

    #[test]
    fn v2_needs_cpu_in_its_controllers() {
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            Hierarchy::from_mounts(unified, |_| "cpuset cpu io memory pids".into()),
            Some(Hierarchy::V2("/sys/fs/cgroup".into()))
        );
        assert_eq!(Hierarchy::from_mounts(unified, |_| "hugetlb".into()), None);
        // The hybrid layout's v2 mount without v1 cpu: only if it offers cpu.
        let no_v1 = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(Hierarchy::from_mounts(no_v1, |_| "hugetlb".into()), None);
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape("/sys/fs/cgroup/cpu"), "/sys/fs/cgroup/cpu");
    }

    #[test]
    fn quotas_are_whole_microseconds_per_period() {
        assert_eq!(quota_us(0.1).ok(), Some(10_000));
        assert_eq!(quota_us(1.5).ok(), Some(150_000));
        assert!(quota_us(0.0).is_err());
        assert!(quota_us(0.001).is_err());
        assert!(quota_us(f64::NAN).is_err());
    }

    #[test]
    fn both_cpu_stat_layouts_are_read() {
        let v1 = "nr_periods 120\nnr_throttled 100\nthrottled_time 9000000000\n";
        assert_eq!(
            parse_cpu_stat(v1),
            Throttling {
                periods: 120,
                throttled_periods: 100,
                throttled_s: 9.0
            }
        );
        let v2 = "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 10\nnr_throttled 4\nthrottled_usec 250000\n";
        assert_eq!(
            parse_cpu_stat(v2),
            Throttling {
                periods: 10,
                throttled_periods: 4,
                throttled_s: 0.25
            }
        );
    }

    /// Needs root and a cpu controller; says so and passes where there is
    /// none (CI containers), since the rest of the module is tested above.
    #[test]
    fn a_spawned_process_starts_inside_its_group() -> anyhow::Result<()> {
        let Ok(hierarchy) = Hierarchy::detect() else {
            eprintln!("skipped: no cgroup cpu controller here");
            return Ok(());
        };
        let groups = match CpuGroups::create(hierarchy, 2, 0.5) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("skipped: cannot create cgroups here ({e:#})");
                return Ok(());
            }
        };
        let parent = groups.parent.clone();
        let mut command = Command::new("cat");
        command.arg("/proc/self/cgroup");
        groups.enter_on_spawn(1, &mut command)?;
        let out = command.output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let expected = format!("/{PARENT_PREFIX}{}/worker-1", std::process::id());
        assert!(text.contains(&expected), "{text}");
        drop(groups);
        assert!(!parent.exists(), "{} was left behind", parent.display());
        Ok(())
    }

    #[test]
    fn v2_limits_are_written_as_cpu_max() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        Hierarchy::V2(dir.path().into()).limit(dir.path(), 10_000)?;
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cpu.max"))?,
            "10000 100000"
        );
        Hierarchy::V1(dir.path().into()).limit(dir.path(), 10_000)?;
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cpu.cfs_quota_us"))?,
            "10000"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cpu.cfs_period_us"))?,
            "100000"
        );
        // The controller is handed down when it is not already.
        let control = dir.path().join("cgroup.subtree_control");
        std::fs::write(&control, "")?;
        enable_cpu_controller(dir.path())?;
        assert_eq!(std::fs::read_to_string(&control)?, "+cpu");
        std::fs::write(&control, "cpu memory\n")?;
        enable_cpu_controller(dir.path())?;
        assert_eq!(std::fs::read_to_string(&control)?, "cpu memory\n");
        Ok(())
    }
}
