//! What the kernel says about processes and the machine: resident memory
//! (`/proc/<pid>/status` VmRSS), CPU time (`/proc/<pid>/stat`), the
//! machine's idle time (`/proc/stat`), and this process's open-file limit.
//!
//! It only reads (and raises our own `RLIMIT_NOFILE` soft limit); it never
//! signals or changes another process.

use std::time::Instant;

/// Raises this process's soft open-file limit to the hard limit; returns it.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a stack value we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> std::io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| std::io::Error::other("no VmRSS line"))
}

/// User + system CPU time of `pid` (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> std::io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may contain spaces: state is
    // field 3, utime 14, stime 15.
    let rest = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| std::io::Error::other("bad stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(num(11) + num(12))
}

/// Process ids whose command name starts with `prefix` (e.g. the kernel's
/// `ksoftirqd/N` threads, which run the network receive work that does not
/// fit inline in the sender's system call).
pub fn pids_named(prefix: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with(prefix))
        })
        .collect()
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (idle, total, irq + softirq) jiffies of the whole machine.
fn machine_ticks() -> (u64, u64, u64) {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0, 0);
    };
    let Some(line) = s.lines().next() else {
        return (0, 0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let f = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already counted in user.
    let total = (0..8).map(f).sum();
    (f(3) + f(4), total, f(5) + f(6))
}

/// CPU used by a set of processes between `start` and `stop`.
pub struct CpuMeter {
    pids: Vec<u32>,
    ticks: Vec<u64>,
    machine: (u64, u64, u64),
    t0: Instant,
}

/// Cores used (1.0 = one core fully busy) by each measured process, the
/// share of the whole machine that was busy, and the cores spent in
/// interrupt and softirq context (loopback TCP delivery). With tick-based
/// accounting (no `CONFIG_IRQ_TIME_ACCOUNTING`) softirq time that ran inline
/// in a process's system call is *also* in that process's figure.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub cores: Vec<f64>,
    pub machine_busy: f64,
    pub irq_cores: f64,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            ticks: pids.iter().map(|&p| cpu_ticks(p).unwrap_or(0)).collect(),
            machine: machine_ticks(),
            t0: Instant::now(),
        }
    }

    pub fn stop(&self) -> CpuUse {
        let secs = self.t0.elapsed().as_secs_f64().max(1e-6);
        let tck = clk_tck();
        let cores = self
            .pids
            .iter()
            .zip(&self.ticks)
            .map(|(&p, &t0)| cpu_ticks(p).unwrap_or(t0).saturating_sub(t0) as f64 / tck / secs)
            .collect();
        let (idle1, total1, irq1) = machine_ticks();
        let (idle0, total0, irq0) = self.machine;
        let total = total1.saturating_sub(total0).max(1) as f64;
        let machine_busy = 1.0 - idle1.saturating_sub(idle0) as f64 / total;
        CpuUse {
            cores,
            machine_busy,
            irq_cores: irq1.saturating_sub(irq0) as f64 / tck / secs,
        }
    }
}
