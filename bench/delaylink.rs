//! A point-to-point link with a fixed one-way delay, for benchmarks on kernels
//! without `sch_netem`: a TUN device in this network namespace and one in another,
//! with every packet copied across after `DELAY`. (Linux only; needs root.)
//!
//! ```text
//! delaylink HOST_IF NETNS NS_IF DELAY_MS
//! ```
//! The caller assigns addresses and brings both interfaces up once they exist.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Opens `/dev/net/tun` as the TUN interface `name` (no packet information header).
fn open_tun(name: &str) -> std::io::Result<File> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    request.name[..name.len().min(libc::IFNAMSIZ - 1)]
        .copy_from_slice(&name.as_bytes()[..name.len().min(libc::IFNAMSIZ - 1)]);
    // SAFETY: TUNSETIFF reads and writes the `ifreq`-shaped struct we pass, which
    // outlives the call; the fd is a valid open /dev/net/tun.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Moves this thread into the network namespace `/var/run/netns/NAME`.
fn enter_netns(name: &str) -> std::io::Result<()> {
    let ns = File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Copies packets from `from` to `to`, each `delay` after it was read.
fn forward(mut from: File, mut to: File, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = from.read(&mut buf) {
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                return;
            }
        }
    });
    for (due, packet) in rx {
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if to.write_all(&packet).is_err() {
            return;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [host_if, netns, ns_if, delay_ms] = &args[..] else {
        eprintln!("usage: delaylink HOST_IF NETNS NS_IF DELAY_MS");
        std::process::exit(2);
    };
    let delay = Duration::from_millis(delay_ms.parse().expect("DELAY_MS"));
    let host = open_tun(host_if).expect("host TUN");
    // Open the namespace's TUN from a thread that moved into it; fds work anywhere.
    let (netns, ns_if) = (netns.clone(), ns_if.clone());
    let inner = std::thread::spawn(move || {
        enter_netns(&netns).expect("enter netns");
        open_tun(&ns_if).expect("netns TUN")
    })
    .join()
    .expect("netns thread");
    eprintln!("delay link up: {delay:?} each way");
    let host2 = host.try_clone().expect("dup host TUN");
    let inner2 = inner.try_clone().expect("dup netns TUN");
    let there = std::thread::spawn(move || forward(host, inner2, delay));
    forward(inner, host2, delay);
    let _ = there.join();
}
