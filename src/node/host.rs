//! The node's load, for the panel's `status` call.
//!
//! Xboard's UniProxy `POST status` takes
//! `{"cpu": 0..100, "mem": {"total", "used"}, "swap": {...}, "disk": {...}}`, the
//! sizes as integers in bytes; [`HostStatus`] serializes to exactly that. The
//! parsers ([`parse_meminfo`], [`parse_cpu_line`],
//! [`CpuTimes::busy_percent_since`]) are pure; [`HostSampler::sample`] reads
//! `/proc/meminfo`, `/proc/stat` and the disk usage of `/` (blocking file reads
//! and a `statvfs`), so it belongs on a control thread, never on an executor.

use std::io;

use serde::Serialize;
use thiserror::Error;

/// The file the memory figures come from.
const MEMINFO: &str = "/proc/meminfo";
/// The file the CPU times come from.
const STAT: &str = "/proc/stat";
/// The filesystem whose usage is the node's disk.
const DISK: &str = "/";

/// What the panel's `status` call carries.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct HostStatus {
    /// The share of CPU time spent busy, 0 to 100, since the last sample (since
    /// boot for the first).
    pub cpu: f64,
    /// Memory: `MemTotal`, and `MemTotal - MemAvailable` in use.
    pub mem: Usage,
    /// Swap: `SwapTotal`, and `SwapTotal - SwapFree` in use.
    pub swap: Usage,
    /// The filesystem of `/`: its size, and the blocks not free.
    pub disk: Usage,
}

/// A total and the part of it in use, in bytes.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes in all.
    pub total: u64,
    /// Bytes in use, at most `total`.
    pub used: u64,
}

/// Why the host's load could not be read.
#[derive(Debug, Error)]
pub enum HostError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: &'static str,
        /// What reading it returned.
        #[source]
        source: io::Error,
    },
    /// A figure the file must have is not there.
    #[error("{file}: no {field}")]
    Missing {
        /// The file.
        file: &'static str,
        /// The figure.
        field: &'static str,
    },
    /// A line holding a figure needed could not be read.
    #[error("{file}: malformed line {line:?}")]
    Malformed {
        /// The file.
        file: &'static str,
        /// The line, cut to 80 characters.
        line: String,
    },
    /// `statvfs` failed.
    #[error("statvfs {path}: {source}")]
    Statvfs {
        /// The path asked about.
        path: &'static str,
        /// What `statvfs` returned.
        #[source]
        source: nix::Error,
    },
}

fn malformed(file: &'static str, line: &str) -> HostError {
    HostError::Malformed {
        file,
        line: line.chars().take(80).collect(),
    }
}

/// Memory and swap from the text of `/proc/meminfo` (figures in kB there, in
/// bytes here): `(mem, swap)`. Without `MemAvailable` (kernels before 3.14) the
/// memory available is `MemFree + Buffers + Cached`; without the swap lines there
/// is no swap. A needed line whose value is not a number of kB is an error.
pub fn parse_meminfo(text: &str) -> Result<(Usage, Usage), HostError> {
    const KEYS: [&str; 7] = [
        "MemTotal",
        "MemAvailable",
        "MemFree",
        "Buffers",
        "Cached",
        "SwapTotal",
        "SwapFree",
    ];
    let mut values: [Option<u64>; 7] = [None; 7];
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(slot) = KEYS.iter().position(|wanted| *wanted == key.trim()) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let bytes = match (words.next(), words.next(), words.next()) {
            (Some(number), None | Some("kB"), None) => number
                .parse::<u64>()
                .ok()
                .and_then(|kb| kb.checked_mul(1024)),
            _ => None,
        };
        values[slot] = Some(bytes.ok_or_else(|| malformed(MEMINFO, line))?);
    }
    let [total, available, free, buffers, cached, swap_total, swap_free] = values;
    let total = total.ok_or(HostError::Missing {
        file: MEMINFO,
        field: "MemTotal",
    })?;
    let available = match (available, free) {
        (Some(available), _) => available,
        (None, Some(free)) => free
            .saturating_add(buffers.unwrap_or(0))
            .saturating_add(cached.unwrap_or(0)),
        (None, None) => {
            return Err(HostError::Missing {
                file: MEMINFO,
                field: "MemAvailable",
            })
        }
    };
    let swap_total = swap_total.unwrap_or(0);
    let mem = Usage {
        total,
        used: total.saturating_sub(available),
    };
    let swap = Usage {
        total: swap_total,
        used: swap_total.saturating_sub(swap_free.unwrap_or(swap_total)),
    };
    Ok((mem, swap))
}

/// The CPU times of the aggregate `cpu` line of `/proc/stat`, in clock ticks.
/// (`guest` and `guest_nice` are already in `user` and `nice`, so they are not
/// kept.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Normal processes in user mode.
    pub user: u64,
    /// Niced processes in user mode.
    pub nice: u64,
    /// The kernel.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Idle, waiting for I/O.
    pub iowait: u64,
    /// Servicing interrupts.
    pub irq: u64,
    /// Servicing softirqs.
    pub softirq: u64,
    /// Taken by the hypervisor for other guests.
    pub steal: u64,
}

impl CpuTimes {
    /// All the time counted.
    pub fn total(&self) -> u64 {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        ]
        .iter()
        .fold(0u64, |sum, ticks| sum.saturating_add(*ticks))
    }

    /// The time idle, waiting for I/O included.
    pub fn idle_total(&self) -> u64 {
        self.idle.saturating_add(self.iowait)
    }

    /// The share of the time between `earlier` and `self` spent busy (not idle,
    /// not waiting for I/O), 0 to 100; 0 when no time passed. A counter that went
    /// backwards (iowait can, on some kernels) counts as not moving.
    pub fn busy_percent_since(&self, earlier: &CpuTimes) -> f64 {
        let elapsed = self.total().saturating_sub(earlier.total());
        if elapsed == 0 {
            return 0.0;
        }
        let idle = self.idle_total().saturating_sub(earlier.idle_total());
        let busy = elapsed.saturating_sub(idle);
        (busy as f64 * 100.0 / elapsed as f64).clamp(0.0, 100.0)
    }
}

/// The CPU times of the first line of `text` whose first word is `cpu` (the text
/// of `/proc/stat`, or just that line). At least user, nice, system and idle must
/// be there; later fields a kernel lacks are 0, fields past steal are ignored.
pub fn parse_cpu_line(text: &str) -> Result<CpuTimes, HostError> {
    let line = text
        .lines()
        .find(|line| line.split_whitespace().next() == Some("cpu"))
        .ok_or(HostError::Missing {
            file: STAT,
            field: "cpu line",
        })?;
    let mut fields = [0u64; 8];
    let mut count = 0;
    for word in line.split_whitespace().skip(1) {
        let ticks = word.parse::<u64>().map_err(|_| malformed(STAT, line))?;
        if let Some(field) = fields.get_mut(count) {
            *field = ticks;
        }
        count += 1;
    }
    if count < 4 {
        return Err(malformed(STAT, line));
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = fields;
    Ok(CpuTimes {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
    })
}

/// The size of the filesystem holding `path` and the part of it not free, in
/// bytes (as `df` counts "Used": blocks minus free blocks).
pub fn disk_usage(path: &'static str) -> Result<Usage, HostError> {
    let stats =
        nix::sys::statvfs::statvfs(path).map_err(|source| HostError::Statvfs { path, source })?;
    // fsblkcnt_t and c_ulong are u64 on 64-bit Linux but u32 on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, free, fragment) = (
        u64::from(stats.blocks()),
        u64::from(stats.blocks_free()),
        u64::from(stats.fragment_size()),
    );
    Ok(Usage {
        total: blocks.saturating_mul(fragment),
        used: blocks.saturating_sub(free).saturating_mul(fragment),
    })
}

/// Samples the host's load, keeping the CPU times of the last sample so each
/// sample's `cpu` covers the time since the one before.
#[derive(Debug, Default)]
pub struct HostSampler {
    last: Option<CpuTimes>,
}

impl HostSampler {
    /// A sampler that has not sampled yet.
    pub fn new() -> HostSampler {
        HostSampler::default()
    }

    /// Reads `/proc/meminfo`, `/proc/stat` and the usage of `/`. The first
    /// sample's `cpu` is the busy share since boot. Blocking: call it from a
    /// control thread, not an executor. On an error the last CPU times are kept.
    pub fn sample(&mut self) -> Result<HostStatus, HostError> {
        let (mem, swap) = parse_meminfo(&read(MEMINFO)?)?;
        let now = parse_cpu_line(&read(STAT)?)?;
        let disk = disk_usage(DISK)?;
        let cpu = now.busy_percent_since(&self.last.unwrap_or_default());
        self.last = Some(now);
        Ok(HostStatus {
            cpu,
            mem,
            swap,
            disk,
        })
    }
}

fn read(path: &'static str) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|source| HostError::Read { path, source })
}
