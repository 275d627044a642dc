//! The host check: reads the live machine and compares each setting that
//! matters to a cache with what tuning/README.md recommends. Used by
//! `corecache check-host` and, at start, to warn about a layout that hurts.
//! Read-only, works unprivileged; a missing file (VMs, containers) is
//! "unknown", never an error.

use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Good,
    /// Differs from the recommendation.
    Change,
    /// Could not be read here.
    Unknown,
}

/// One setting of the host.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub current: String,
    pub recommended: String,
    /// Whether it affects the configured cores (false: advice only).
    pub matters: bool,
    pub verdict: Verdict,
    /// The shell command that applies the recommendation, when one is safe.
    pub fix: Option<String>,
}

/// What the host is checked against.
#[derive(Clone, Debug)]
pub struct Layout {
    pub worker_cores: Vec<usize>,
    pub backlog: u32,
    pub max_connections: usize,
    pub io_memory: usize,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|text| text.trim().to_string())
}

fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// A numeric sysctl that should be at least `minimum`.
fn sysctl_at_least(name: &'static str, minimum: u64, matters: bool) -> Check {
    let current = read(&sysctl_path(name));
    let value = current
        .as_deref()
        .and_then(|text| text.split_whitespace().last()?.parse::<u64>().ok());
    Check {
        name,
        current: current.clone().unwrap_or_else(|| "unknown".into()),
        recommended: format!(">= {minimum}"),
        matters,
        verdict: match value {
            None => Verdict::Unknown,
            Some(value) if value >= minimum => Verdict::Good,
            Some(_) => Verdict::Change,
        },
        fix: Some(format!("sysctl -w {name}={minimum}")),
    }
}

/// Parses a CPU list like "0-3,8".
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
                    cpus.extend(first..=last);
                }
            }
            None => cpus.extend(part.parse::<usize>().ok()),
        }
    }
    cpus
}

/// IRQ numbers of the network interfaces (not loopback): from the
/// device's MSI table, or the interface's name in /proc/interrupts.
fn nic_irqs() -> Option<Vec<u32>> {
    let interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| std::path::Path::new(&format!("/sys/class/net/{name}/device")).exists())
        .collect();
    let mut irqs = Vec::new();
    for interface in &interfaces {
        for directory in ["device/msi_irqs", "device/../msi_irqs"] {
            if let Ok(entries) = std::fs::read_dir(format!("/sys/class/net/{interface}/{directory}")) {
                irqs.extend(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u32>().ok()));
            }
        }
    }
    if let Some(table) = read("/proc/interrupts") {
        for line in table.lines() {
            if interfaces.iter().any(|interface| line.contains(interface.as_str()))
                && let Some(number) = line.split(':').next().and_then(|n| n.trim().parse().ok())
            {
                irqs.push(number);
            }
        }
    }
    irqs.sort_unstable();
    irqs.dedup();
    Some(irqs)
}

fn irq_check(workers: &[usize]) -> Check {
    let recommended = "NIC interrupts on CPUs without workers".to_string();
    let Some(irqs) = nic_irqs() else {
        return Check {
            name: "nic irq affinity",
            current: "unknown".into(),
            recommended,
            matters: true,
            verdict: Verdict::Unknown,
            fix: None,
        };
    };
    let mut shared = Vec::new();
    let mut readable = 0;
    for irq in &irqs {
        if let Some(list) = read(&format!("/proc/irq/{irq}/smp_affinity_list")) {
            readable += 1;
            if parse_cpu_list(&list).iter().any(|cpu| workers.contains(cpu)) {
                shared.push(*irq);
            }
        }
    }
    let (current, verdict) = if readable == 0 {
        ("no NIC interrupts found".to_string(), Verdict::Unknown)
    } else if shared.is_empty() {
        (format!("{readable} NIC irqs, none on worker cores"), Verdict::Good)
    } else {
        (
            format!("irqs {shared:?} may run on worker cores {workers:?}"),
            Verdict::Change,
        )
    };
    Check {
        name: "nic irq affinity",
        current,
        recommended,
        matters: true,
        verdict,
        fix: None,
    }
}

fn process_running(name: &str) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .any(|entry| read(&format!("{}/comm", entry.path().display())).as_deref() == Some(name)),
    )
}

fn limit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    // SAFETY: getrlimit fills the struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        (libc::getrlimit(resource, &mut limit) == 0).then_some(limit.rlim_cur)
    }
}

fn limit_check(name: &'static str, value: Option<u64>, minimum: u64, fix: &str) -> Check {
    let show = |v: u64| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    Check {
        name,
        current: value.map_or("unknown".into(), show),
        recommended: format!(">= {minimum}"),
        matters: true,
        verdict: match value {
            None => Verdict::Unknown,
            Some(v) if v >= minimum => Verdict::Good,
            Some(_) => Verdict::Change,
        },
        fix: Some(fix.to_string()),
    }
}

/// Every check, in the order tuning/README.md explains them.
pub fn check_host(layout: &Layout) -> Vec<Check> {
    let mut checks = vec![
        sysctl_at_least("net.core.somaxconn", u64::from(layout.backlog).max(4096), true),
        sysctl_at_least("net.ipv4.tcp_max_syn_backlog", 4096, true),
        sysctl_at_least("net.core.rmem_max", 4 << 20, false),
        sysctl_at_least("net.core.wmem_max", 4 << 20, false),
        sysctl_at_least("net.core.busy_read", 50, false),
        sysctl_at_least("net.core.busy_poll", 50, false),
    ];
    let thp = read("/sys/kernel/mm/transparent_hugepage/enabled");
    let thp_mode = thp
        .as_deref()
        .and_then(|text| Some(text.split('[').nth(1)?.split(']').next()?.to_string()));
    checks.push(Check {
        name: "transparent hugepages",
        current: thp_mode.clone().unwrap_or_else(|| "unknown".into()),
        recommended: "madvise or never".into(),
        matters: true,
        verdict: match thp_mode.as_deref() {
            None => Verdict::Unknown,
            Some("always") => Verdict::Change,
            Some(_) => Verdict::Good,
        },
        fix: Some("echo madvise > /sys/kernel/mm/transparent_hugepage/enabled".into()),
    });
    let governors: Vec<(usize, Option<String>)> = layout
        .worker_cores
        .iter()
        .map(|&cpu| {
            (
                cpu,
                read(&format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")),
            )
        })
        .collect();
    let known: Vec<&(usize, Option<String>)> = governors.iter().filter(|(_, g)| g.is_some()).collect();
    let slow: Vec<usize> = known
        .iter()
        .filter(|(_, g)| g.as_deref() != Some("performance"))
        .map(|(cpu, _)| *cpu)
        .collect();
    checks.push(Check {
        name: "cpu governor (worker cores)",
        current: if known.is_empty() {
            "unknown (no cpufreq)".into()
        } else {
            governors.iter().fold(String::new(), |mut text, (cpu, g)| {
                let _ = write!(text, "cpu{cpu}={} ", g.as_deref().unwrap_or("?"));
                text
            })
        },
        recommended: "performance".into(),
        matters: true,
        verdict: if known.is_empty() {
            Verdict::Unknown
        } else if slow.is_empty() {
            Verdict::Good
        } else {
            Verdict::Change
        },
        fix: (!slow.is_empty()).then(|| {
            slow.iter()
                .map(|cpu| format!("echo performance > /sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"))
                .collect::<Vec<_>>()
                .join(" && ")
        }),
    });
    let irqbalance = process_running("irqbalance");
    checks.push(Check {
        name: "irqbalance",
        current: match irqbalance {
            Some(true) => "running".into(),
            Some(false) => "not running".into(),
            None => "unknown".into(),
        },
        recommended: "not running".into(),
        matters: true,
        verdict: match irqbalance {
            Some(true) => Verdict::Change,
            Some(false) => Verdict::Good,
            None => Verdict::Unknown,
        },
        fix: Some("systemctl stop irqbalance".into()),
    });
    checks.push(irq_check(&layout.worker_cores));
    checks.push(limit_check(
        "open files (RLIMIT_NOFILE)",
        limit(libc::RLIMIT_NOFILE),
        layout.max_connections as u64 + 64,
        "ulimit -n (LimitNOFILE= in corecache.service)",
    ));
    checks.push(limit_check(
        "locked memory (RLIMIT_MEMLOCK)",
        limit(libc::RLIMIT_MEMLOCK),
        (layout.io_memory as u64 + (512 << 10)) * layout.worker_cores.len() as u64,
        "ulimit -l (LimitMEMLOCK= in corecache.service)",
    ));
    // Limits are per process: no sysctl fixes them, the unit does.
    for check in checks.iter_mut().filter(|c| c.name.contains("RLIMIT")) {
        check.fix = None;
    }
    checks
}

/// Ready when nothing that matters for the layout needs a change.
pub fn is_ready(checks: &[Check]) -> bool {
    !checks.iter().any(|check| check.matters && check.verdict == Verdict::Change)
}

/// The check's table, as `corecache check-host` prints it.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:<44} {:<28} {:<8} status",
        "setting", "current", "recommended", "matters"
    );
    for check in checks {
        let status = match check.verdict {
            Verdict::Good => "ok",
            Verdict::Change => "CHANGE",
            Verdict::Unknown => "unknown",
        };
        let matters = if check.matters { "yes" } else { "advice" };
        let _ = writeln!(
            out,
            "{:<32} {:<44} {:<28} {:<8} {status}",
            check.name, check.current, check.recommended, matters
        );
    }
    let _ = writeln!(out, "host ready: {}", if is_ready(checks) { "yes" } else { "no" });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-2,5\n"), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
    }

    #[test]
    fn this_host_is_checked_without_failing() {
        let layout = Layout {
            worker_cores: vec![0],
            backlog: 1024,
            max_connections: 1024,
            io_memory: 1 << 20,
        };
        let checks = check_host(&layout);
        assert!(checks.len() >= 12);
        let table = render(&checks);
        for check in &checks {
            assert!(table.contains(check.name));
        }
        assert!(table.contains("host ready:"));
    }
}
