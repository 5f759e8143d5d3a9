//! `run.memory_limit = auto` (the default): a budget sized to where the worker runs. Inside a
//! container with a memory limit (Docker `--memory`, a Kubernetes limit) it is three quarters
//! of that limit, the operator's rule for Jobs: the quarter left covers what the budget does
//! not count, and the worker's peak (within the budget + 25 %) stays inside the container. On a
//! machine without one it is 60 % of the machine's memory, so the peak stays within three
//! quarters of it and the rest of the machine keeps room (DuckDB takes 80 %, Polars all).

use std::path::{Path, PathBuf};

/// Share of the machine's memory when no cgroup limits the process.
const MACHINE_SHARE: (u64, u64) = (3, 5);
/// The smallest budget `auto` picks on a machine without a container limit: below it a run
/// spends its time spilling.
const FLOOR: u64 = 256 << 20;
/// When neither the cgroup nor the machine can be read (not Linux, no /proc).
const FALLBACK: u64 = 1 << 30;

/// A memory budget and how it was chosen, for the summary and `plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBudget {
    pub bytes: u64,
    /// E.g. `auto: 3/4 of the container's memory limit of 2.0 GiB`.
    pub chosen: String,
}

/// The `auto` budget for this process.
pub fn auto() -> MemoryBudget {
    let machine = machine_memory();
    choose(cgroup_limit(machine), machine)
}

/// The rule, on what was found: the cgroup limit if any (a limit at or above the machine's
/// memory limits nothing), else the machine's memory.
pub fn choose(cgroup: Option<u64>, machine: Option<u64>) -> MemoryBudget {
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    let share = |b: u64, (num, den): (u64, u64)| b / den * num;
    match (cgroup, machine) {
        (Some(limit), machine) if machine.is_none_or(|m| limit < m) => {
            // No floor here: a larger budget would take the worker's peak past the limit, and
            // the container would be killed.
            let (num, den) = lakeload_types::CONTAINER_MEMORY_SHARE;
            MemoryBudget {
                bytes: share(limit, (num, den)).max(1024),
                chosen: format!(
                    "auto: {num}/{den} of the container's memory limit of {}",
                    gib(limit)
                ),
            }
        }
        (_, Some(total)) => MemoryBudget {
            bytes: share(total, MACHINE_SHARE).max(FLOOR),
            chosen: format!("auto: 60 % of this machine's {} of memory", gib(total)),
        },
        (_, None) => MemoryBudget {
            bytes: FALLBACK,
            chosen: "auto: 1 GiB (the machine's memory could not be read)".into(),
        },
    }
}

/// `MemTotal` of /proc/meminfo.
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The tightest memory limit of this process's cgroup and its ancestors (cgroup v2
/// `memory.max`, v1 `memory.limit_in_bytes`); `None` when there is none below the machine's
/// memory.
fn cgroup_limit(machine: Option<u64>) -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let root = Path::new("/sys/fs/cgroup");
    let mut files: Vec<PathBuf> = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next().unwrap_or("/"));
        let (base, file) = match controllers {
            Some("") => (root.to_path_buf(), "memory.max"),
            Some(c) if c.split(',').any(|c| c == "memory") => (root.join("memory"), "memory.limit_in_bytes"),
            _ => continue,
        };
        // The cgroup's own folder and its ancestors: a limit set on a parent binds too. In a
        // container with its own cgroup namespace the path is `/` and the root file is its own.
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            files.push(dir.join(file));
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse::<u64>().ok())
        .filter(|limit| machine.is_none_or(|m| *limit < m))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_container_limit_gives_three_quarters_of_it() {
        let b = choose(Some(2 * GIB), Some(24 * GIB));
        assert_eq!(b.bytes, 3 * GIB / 2);
        assert!(
            b.chosen.contains("container's memory limit of 2.0 GiB"),
            "{}",
            b.chosen
        );
        // A tiny container: three quarters of it, not the floor it could not hold.
        assert_eq!(choose(Some(128 << 20), Some(24 * GIB)).bytes, 96 << 20);
    }

    #[test]
    fn without_a_limit_the_machine_gives_sixty_percent_with_a_floor() {
        let b = choose(None, Some(24 * GIB));
        assert_eq!(b.bytes, 24 * GIB / 5 * 3);
        assert!(
            b.chosen.contains("60 % of this machine's 24.0 GiB"),
            "{}",
            b.chosen
        );
        // A cgroup "limit" at or above the machine's memory limits nothing.
        assert_eq!(choose(Some(64 * GIB), Some(24 * GIB)), b);
        assert_eq!(choose(None, Some(GIB / 4)).bytes, FLOOR);
        assert_eq!(choose(None, None).bytes, FALLBACK);
    }

    #[test]
    fn this_process_gets_a_budget_it_can_hold() {
        let b = auto();
        let machine = machine_memory().expect("Linux has /proc/meminfo");
        assert!(b.bytes >= 1024 && b.bytes < machine, "{b:?}");
    }
}
