//! The records [`padding::shape`] builds for a payload from a packet's steps, checked
//! for the padding target: their total within the bound a scheme can ask for, the
//! payload whole and in order, the padding only zeroed Waste frames.

use rand::rngs::SmallRng;
use rand::Rng;

use anytls::proto::frame::{self, Command, HEADER_LEN, MAX_DATA_LEN};
use anytls::proto::padding::{self, Step};

use crate::alloc::{alloc_within, measure_aside, CaseStats};
use crate::checks::ensure;

/// Shapes a payload with `steps` when the records it can make are small enough to build
/// here, and checks them; the bound itself is asserted whatever its size.
pub(super) fn check(
    steps: &[Step],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<&'static str, String> {
    let payload_len = match rng.gen_range(0..10) {
        0 => 0,
        1 => 1,
        2 => MAX_DATA_LEN,
        3 => 70_000,
        4..=6 => rng.gen_range(0..2_000),
        _ => rng.gen_range(0..20_000),
    };
    // Each size makes at most one record: a split of the payload, the payload's end
    // with a Waste frame filling it to the size, or a Waste frame of the size (capped
    // to a frame's data) on its own. What is left after the list goes as it is.
    let bound = payload_len
        + steps
            .iter()
            .map(|s| match *s {
                Step::Size(size) => size.min(MAX_DATA_LEN) + HEADER_LEN,
                Step::Check => 0,
            })
            .sum::<usize>();
    stats.shape_bound = stats.shape_bound.max(bound);
    if bound > 16 << 20 {
        return Ok("too-big-to-build");
    }
    let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8 + 1).collect();
    let (records, peak) = measure_aside(|| padding::shape(&payload, steps));
    alloc_within(
        "shape",
        peak,
        2 * bound + 64 * (steps.len() + 2) + 1024,
        payload_len,
    )?;
    let total: usize = records.iter().map(Vec::len).sum();
    ensure!(total <= bound, "shape: {total} bytes, bound {bound}");
    ensure!(
        records.len() <= steps.len() + 1,
        "shape: {} records for {} steps",
        records.len(),
        steps.len()
    );
    let joined = records.concat();
    ensure!(joined.len() >= payload_len, "shape: payload lost");
    ensure!(
        joined[..payload_len] == payload[..],
        "shape: payload bytes changed or reordered"
    );
    let mut rest = &joined[payload_len..];
    while let Some(f) = frame::decode(rest) {
        ensure!(
            f.cmd == Command::Waste,
            "shape: {:?} frame in the padding",
            f.cmd
        );
        ensure!(f.data.iter().all(|&b| b == 0), "shape: Waste data not zero");
        rest = &rest[f.wire_len()..];
    }
    ensure!(
        rest.is_empty(),
        "shape: {} bytes after the payload are not Waste frames",
        rest.len()
    );
    Ok(if payload_len == 0 {
        "padding-only"
    } else {
        "built"
    })
}
