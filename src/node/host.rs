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

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a Linux 6.x `/proc/meminfo` (this machine's, with swap added).
    const MEMINFO_TEXT: &str = "\
MemTotal:       24683792 kB
MemFree:        21910312 kB
MemAvailable:   23732268 kB
Buffers:            5272 kB
Cached:          2003608 kB
SwapCached:            0 kB
Active:           535720 kB
Inactive:        2074440 kB
Unevictable:       13880 kB
Mlocked:           11288 kB
SwapTotal:       2097148 kB
SwapFree:        1048572 kB
Zswap:                 0 kB
Dirty:            342500 kB
VmallocTotal:   34359738367 kB
Percpu:              768 kB
HugePages_Total:       0
HugePages_Free:        0
Hugepagesize:       2048 kB
DirectMap1G:    25165824 kB
";

    /// The shape of `/proc/stat` on a two-core machine.
    const STAT_TEXT: &str = "\
cpu  66330 0 6965 88386 369 0 35 54 0 0
cpu0 32923 0 3153 44919 70 0 4 25 0 0
cpu1 33407 0 3811 43467 298 0 31 28 0 0
intr 471643 0 0 0 0 0 0 0 0 0
ctxt 371223
btime 1796419904
processes 13152
procs_running 5
procs_blocked 0
softirq 160851 0 30232 4 2948 18508 0 175 37231 0 71753
";

    #[test]
    fn meminfo_gives_memory_and_swap_in_bytes() {
        let (mem, swap) = parse_meminfo(MEMINFO_TEXT).unwrap();
        assert_eq!(
            mem,
            Usage {
                total: 24_683_792 * 1024,
                used: (24_683_792 - 23_732_268) * 1024,
            }
        );
        assert_eq!(
            swap,
            Usage {
                total: 2_097_148 * 1024,
                used: (2_097_148 - 1_048_572) * 1024,
            }
        );
    }

    #[test]
    fn meminfo_without_mem_available_counts_free_buffers_and_cache() {
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n";
        let (mem, swap) = parse_meminfo(old).unwrap();
        assert_eq!(
            mem,
            Usage {
                total: 1000 * 1024,
                used: 600 * 1024,
            }
        );
        assert_eq!(swap, Usage::default());
    }

    #[test]
    fn meminfo_without_swap_lines_has_no_swap() {
        let (mem, swap) = parse_meminfo("MemTotal: 8 kB\nMemAvailable: 2 kB\n").unwrap();
        assert_eq!(
            mem,
            Usage {
                total: 8192,
                used: 6144,
            }
        );
        assert_eq!(swap, Usage::default());
    }

    #[test]
    fn meminfo_used_never_exceeds_total() {
        let (mem, swap) =
            parse_meminfo("MemTotal: 8 kB\nMemAvailable: 9 kB\nSwapTotal: 1 kB\nSwapFree: 2 kB\n")
                .unwrap();
        assert_eq!(mem.used, 0);
        assert_eq!(swap.used, 0);
    }

    #[test]
    fn malformed_meminfo_is_an_error() {
        for (text, want) in [
            ("", "/proc/meminfo: no MemTotal"),
            ("garbage\nmore garbage", "/proc/meminfo: no MemTotal"),
            (
                "MemTotal: 8 kB\nSwapTotal: 0 kB\n",
                "/proc/meminfo: no MemAvailable",
            ),
            (
                "MemTotal: lots kB\nMemAvailable: 1 kB\n",
                "/proc/meminfo: malformed line \"MemTotal: lots kB\"",
            ),
            (
                "MemTotal: 8 MB\nMemAvailable: 1 kB\n",
                "/proc/meminfo: malformed line \"MemTotal: 8 MB\"",
            ),
            (
                "MemTotal: 8 kB extra\nMemAvailable: 1 kB\n",
                "/proc/meminfo: malformed line \"MemTotal: 8 kB extra\"",
            ),
            (
                "MemTotal:\nMemAvailable: 1 kB\n",
                "/proc/meminfo: malformed line \"MemTotal:\"",
            ),
            (
                "MemTotal: -8 kB\nMemAvailable: 1 kB\n",
                "/proc/meminfo: malformed line \"MemTotal: -8 kB\"",
            ),
            (
                "MemTotal: 18446744073709551615 kB\nMemAvailable: 1 kB\n",
                "/proc/meminfo: malformed line \"MemTotal: 18446744073709551615 kB\"",
            ),
        ] {
            let error = parse_meminfo(text).unwrap_err();
            assert_eq!(error.to_string(), want, "{text:?}");
        }
        // A malformed line of a figure not used does not matter.
        assert!(parse_meminfo("MemTotal: 8 kB\nMemAvailable: 1 kB\nZswap: ?\n").is_ok());
    }

    #[test]
    fn the_aggregate_cpu_line_is_read() {
        let times = parse_cpu_line(STAT_TEXT).unwrap();
        assert_eq!(
            times,
            CpuTimes {
                user: 66330,
                nice: 0,
                system: 6965,
                idle: 88386,
                iowait: 369,
                irq: 0,
                softirq: 35,
                steal: 54,
            }
        );
        assert_eq!(times.total(), 66330 + 6965 + 88386 + 369 + 35 + 54);
        assert_eq!(times.idle_total(), 88386 + 369);
        // Just the line, and a short line of an old kernel.
        assert_eq!(
            parse_cpu_line("cpu  66330 0 6965 88386 369 0 35 54 0 0").unwrap(),
            times
        );
        let old = parse_cpu_line("cpu 1 2 3 4\n").unwrap();
        assert_eq!(
            old,
            CpuTimes {
                user: 1,
                nice: 2,
                system: 3,
                idle: 4,
                ..CpuTimes::default()
            }
        );
    }

    #[test]
    fn the_per_core_lines_are_not_the_aggregate() {
        let times = parse_cpu_line("cpu0 1 0 1 1\ncpu 10 0 10 10\n").unwrap();
        assert_eq!(times.user, 10);
    }

    #[test]
    fn malformed_stat_is_an_error() {
        for (text, want) in [
            ("", "/proc/stat: no cpu line"),
            ("cpu0 1 2 3 4\nintr 5\n", "/proc/stat: no cpu line"),
            ("cpu 1 2 3\n", "/proc/stat: malformed line \"cpu 1 2 3\""),
            (
                "cpu 1 2 x 4\n",
                "/proc/stat: malformed line \"cpu 1 2 x 4\"",
            ),
            (
                "cpu -1 2 3 4\n",
                "/proc/stat: malformed line \"cpu -1 2 3 4\"",
            ),
        ] {
            let error = parse_cpu_line(text).unwrap_err();
            assert_eq!(error.to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn malformed_lines_are_cut_in_errors() {
        let long = format!("cpu {}x", "1 ".repeat(100));
        let HostError::Malformed { line, .. } = parse_cpu_line(&long).unwrap_err() else {
            panic!("not malformed");
        };
        assert_eq!(line.chars().count(), 80);
        assert!(long.starts_with(&line));
    }

    #[test]
    fn busy_share_counts_all_but_idle_and_iowait() {
        let earlier = CpuTimes {
            user: 100,
            system: 50,
            idle: 800,
            iowait: 50,
            ..CpuTimes::default()
        };
        let later = CpuTimes {
            user: 160,
            nice: 10,
            system: 70,
            idle: 880,
            iowait: 70,
            irq: 5,
            softirq: 3,
            steal: 2,
        };
        // 200 ticks passed, 100 of them idle or waiting.
        assert_eq!(later.busy_percent_since(&earlier), 50.0);
        assert_eq!(earlier.busy_percent_since(&earlier), 0.0, "no time passed");
        // Since boot.
        assert_eq!(
            earlier.busy_percent_since(&CpuTimes::default()),
            150.0 * 100.0 / 1000.0
        );
        let all_busy = CpuTimes {
            user: 300,
            ..earlier
        };
        assert_eq!(all_busy.busy_percent_since(&earlier), 100.0);
        let all_idle = CpuTimes {
            idle: 1000,
            ..earlier
        };
        assert_eq!(all_idle.busy_percent_since(&earlier), 0.0);
    }

    #[test]
    fn counters_going_backwards_stay_in_range() {
        let earlier = CpuTimes {
            user: 100,
            idle: 100,
            iowait: 500,
            ..CpuTimes::default()
        };
        // iowait went backwards by more than the time that passed.
        let later = CpuTimes {
            user: 150,
            idle: 150,
            iowait: 400,
            ..CpuTimes::default()
        };
        assert_eq!(later.busy_percent_since(&earlier), 0.0);
        let later = CpuTimes {
            user: 200,
            idle: 150,
            iowait: 480,
            ..CpuTimes::default()
        };
        let busy = later.busy_percent_since(&earlier);
        assert!((0.0..=100.0).contains(&busy), "{busy}");
        // An earlier sample later than this one: no time passed.
        assert_eq!(earlier.busy_percent_since(&later), 0.0);
    }

    #[test]
    fn status_serializes_as_the_panel_wants() {
        let status = HostStatus {
            cpu: 12.5,
            mem: Usage { total: 8, used: 4 },
            swap: Usage { total: 0, used: 0 },
            disk: Usage {
                total: 1 << 40,
                used: 1 << 39,
            },
        };
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            r#"{"cpu":12.5,"mem":{"total":8,"used":4},"swap":{"total":0,"used":0},"disk":{"total":1099511627776,"used":549755813888}}"#
        );
    }

    #[test]
    fn this_machine_is_sampled() {
        let mut sampler = HostSampler::new();
        for _ in 0..2 {
            let status = sampler.sample().unwrap();
            assert!(status.mem.total > 0, "{status:?}");
            assert!(status.mem.used <= status.mem.total, "{status:?}");
            assert!(status.swap.used <= status.swap.total, "{status:?}");
            assert!(status.disk.total > 0, "{status:?}");
            assert!(status.disk.used <= status.disk.total, "{status:?}");
            assert!((0.0..=100.0).contains(&status.cpu), "{status:?}");
        }
        assert!(sampler.last.is_some());
    }

    #[test]
    fn disk_usage_of_a_missing_path_is_an_error() {
        let error = disk_usage("/no/such/path/here").unwrap_err();
        assert!(matches!(error, HostError::Statvfs { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("statvfs /no/such/path/here: "),
            "{error}"
        );
    }
}
