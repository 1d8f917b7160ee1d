//! Readings from /proc: CPU time of a thread or a process, resident memory, the
//! CPUs this process (or another) may run on, sockets in TIME_WAIT, and what the
//! machine is (CPU model, kernel).

use std::time::Duration;

/// Clock ticks per second in /proc/*/stat (USER_HZ, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// CPU time of the calling thread (precise, from schedstat when available).
pub fn this_thread_cpu() -> Option<Duration> {
    cpu_of("/proc/thread-self")
}

/// The calling thread's id as the kernel knows it (for [`thread_cpu`]).
pub fn this_thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// CPU time of thread `tid` of this process.
pub fn thread_cpu(tid: u32) -> Option<Duration> {
    cpu_of(&format!("/proc/self/task/{tid}"))
}

/// CPU time of this process's threads whose name starts with `prefix` (an
/// in-process server's executors); `None` if no such thread is running.
pub fn threads_cpu(prefix: &str) -> Option<Duration> {
    let mut total = None;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.starts_with(prefix) {
            if let Some(cpu) = cpu_of(&dir.display().to_string()) {
                total = Some(total.unwrap_or(Duration::ZERO) + cpu);
            }
        }
    }
    total
}

/// CPU time (user + system, all threads) of process `pid`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// VmRSS of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The CPUs this process may run on, ascending.
pub fn allowed_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    cpus
}

/// The CPUs process `pid` may run on, as the kernel lists them ("0", "0-3,6").
pub fn cpus_allowed_list(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
}

/// TCP sockets in TIME_WAIT on this machine (`tw` in /proc/net/sockstat; it
/// counts IPv4 and IPv6).
/// Descriptors this process has open.
pub fn own_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

pub fn time_wait() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = sockstat.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let mut words = tcp.split_whitespace();
    while let Some(word) = words.next() {
        if word == "tw" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// The first CPU's model name from /proc/cpuinfo.
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
}

/// The kernel's release.
pub fn kernel() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .ok()
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn cpu_of(dir: &str) -> Option<Duration> {
    // schedstat: "<ns on cpu> <ns waiting> <timeslices>"
    std::fs::read_to_string(format!("{dir}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .or_else(|| stat_ticks(&format!("{dir}/stat")))
}

fn stat_ticks(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// CPU use between two readings over `wall`, in percent of one CPU.
pub fn percent(before: Option<Duration>, after: Option<Duration>, wall: Duration) -> Option<f64> {
    let used = after?.checked_sub(before?)?;
    (wall > Duration::ZERO).then(|| used.as_secs_f64() / wall.as_secs_f64() * 100.0)
}
