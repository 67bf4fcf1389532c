//! What the harness reads off the machine and the process: CPU time, resident memory, load,
//! and a description of the machine for the report.

use std::time::Duration;

use serde::Serialize;

/// CPU time (user + system) this process has used so far, all threads together. Every node
/// of a benchmark cluster runs in this process, so differences of this are the CPU time of
/// the whole cluster (and of the harness's clients, which do little).
pub fn cpu_time() -> Duration {
    usage().cpu
}

/// What `getrusage(RUSAGE_SELF)` reports: all threads of the process, live or ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// User + system CPU time.
    pub cpu: Duration,
    /// Context switches because a thread waited (for a lock, a channel, I/O): each one is a
    /// hand-over between threads or a sleep.
    pub voluntary_switches: u64,
    /// Context switches because a thread's time slice ran out or a higher-priority thread
    /// woke: a sign of more runnable threads than cores.
    pub involuntary_switches: u64,
}

/// The process's resource usage so far.
pub fn usage() -> Usage {
    // SAFETY: `getrusage` writes into the `rusage` we hand it and reads nothing else; an
    // all-zero `rusage` is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusively borrowed `rusage`.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if status != 0 {
        // RUSAGE_SELF with a valid pointer cannot fail (EINVAL/EFAULT only); report nothing
        // rather than stop a benchmark.
        return Usage::default();
    }
    Usage {
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        voluntary_switches: u64::try_from(usage.ru_nvcsw).unwrap_or(0),
        involuntary_switches: u64::try_from(usage.ru_nivcsw).unwrap_or(0),
    }
}

fn timeval(value: libc::timeval) -> Duration {
    let seconds = u64::try_from(value.tv_sec).unwrap_or(0);
    let micros = u64::try_from(value.tv_usec).unwrap_or(0);
    Duration::from_secs(seconds) + Duration::from_micros(micros)
}

/// The process's resident memory, from `/proc/self/status`, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Resident {
    /// `VmRSS`: everything resident (anonymous, file-backed and shared pages).
    pub rss_kib: u64,
    /// `RssAnon`: heap and stacks: what grows if state is never released.
    pub anon_kib: u64,
    /// `RssFile`: mapped files, such as LMDB's memory map, and the binary itself.
    pub file_kib: u64,
}

/// Reads the process's resident memory; `None` where `/proc` is not available.
pub fn resident() -> Option<Resident> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Resident {
        rss_kib: field("VmRSS:")?,
        anon_kib: field("RssAnon:").unwrap_or(0),
        file_kib: field("RssFile:").unwrap_or(0),
    })
}

/// The 1-, 5- and 15-minute load averages, from `/proc/loadavg`.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

/// The machine's CPU time so far, all cores, from the `cpu` line of `/proc/stat`, in ticks:
/// `(stolen, wanted)`. Stolen is time a virtual machine's CPUs had work but the host ran
/// something else (another guest); wanted is the time they had work: user, nice, system,
/// interrupts and stolen (not idle, not waiting for I/O). `None` where `/proc/stat` cannot
/// be read.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    ticks_of(&text)
}

/// The `(stolen, wanted)` ticks of a `/proc/stat` text's `cpu` line.
fn ticks_of(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|line| line.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, stolen] = fields[..] else {
        return None;
    };
    let wanted = [user, nice, system, irq, softirq, stolen]
        .into_iter()
        .try_fold(0u64, u64::checked_add)?;
    Some((stolen, wanted))
}

/// Of the time the machine's CPUs had work between two [`cpu_ticks`] readings, the share
/// the host gave to others; `None` if either reading is missing or nothing ran.
pub fn stolen_share(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((stolen_before, wanted_before), (stolen_after, wanted_after)) = (before?, after?);
    let wanted = wanted_after
        .checked_sub(wanted_before)
        .filter(|wanted| *wanted > 0)?;
    Some(stolen_after.saturating_sub(stolen_before) as f64 / wanted as f64)
}

/// How many CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The machine a report was measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs available to the process.
    pub cores: usize,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// `MemTotal` from `/proc/meminfo`, in MiB.
    pub memory_mib: u64,
    /// Host name.
    pub hostname: String,
    /// The load averages (1, 5, 15 minutes) when the run started: other work on the machine
    /// that shares its cores with the benchmark.
    pub load_average_at_start: Option<[f64; 3]>,
    /// The commit the harness was built from: `SYNEVI_BENCH_COMMIT` if set (a build from a
    /// clean snapshot), else what `git` says about the working directory.
    pub git_commit: Option<String>,
    /// Whether the working tree had uncommitted changes (other engineers' work in progress,
    /// for example), if `git` could tell.
    pub git_dirty: Option<bool>,
    /// The harness's global allocator: `mimalloc`, or `system` without the default
    /// features.
    pub allocator: &'static str,
}

impl Machine {
    /// Reads the machine's description. Fields that cannot be read say "unknown".
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split_once(':'))
            .map_or_else(
                || "unknown".to_string(),
                |(_, model)| model.trim().to_string(),
            );
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_string(), |text| text.trim().to_string());
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
                let kib: u64 = line["MemTotal:".len()..]
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(kib / 1024)
            })
            .unwrap_or(0);
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "unknown".to_string(), |text| text.trim().to_string());
        let git = |args: &[&str]| -> Option<String> {
            let output = std::process::Command::new("git").args(args).output().ok()?;
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        };
        // A run of a build from a snapshot (`git archive`) has no repository to ask: the
        // commit is passed in.
        let commit_given = std::env::var("SYNEVI_BENCH_COMMIT").ok();
        Machine {
            cpu_model,
            cores: cores(),
            kernel,
            memory_mib,
            hostname,
            load_average_at_start: load_average(),
            git_dirty: match commit_given {
                Some(_) => Some(false),
                None => git(&["status", "--porcelain", "--untracked-files=no"])
                    .map(|status| !status.is_empty()),
            },
            git_commit: commit_given.or_else(|| git(&["rev-parse", "--short=12", "HEAD"])),
            allocator: crate::ALLOCATOR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stolen_time_is_read_off_the_cpu_line() {
        let text = "cpu  100 0 50 800 10 0 20 30 0 0\ncpu0 50 0 25 400 5 0 10 15 0 0\n";
        // Idle (800) and I/O wait (10) are not time the CPUs had work.
        assert_eq!(ticks_of(text), Some((30, 200)));
        assert_eq!(ticks_of("cpu0 1 2 3\n"), None);
        assert_eq!(ticks_of("cpu  1 2 x 4 5 6 7 8\n"), None);
        let huge = format!("cpu  {} 0 1 0 0 0 0 0\n", u64::MAX);
        assert_eq!(ticks_of(&huge), None, "a sum past u64 is no reading");
        let share = stolen_share(Some((20, 1000)), Some((70, 1500)));
        assert_eq!(share, Some(0.1));
        assert_eq!(stolen_share(Some((20, 1000)), Some((20, 1000))), None);
        assert_eq!(stolen_share(None, Some((20, 1000))), None);
    }

    #[test]
    fn cpu_time_advances_with_work() {
        let before = cpu_time();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_time() >= before);
    }

    #[test]
    fn resident_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let resident = resident().expect("/proc/self/status");
            assert!(resident.rss_kib > 0);
        }
    }
}
