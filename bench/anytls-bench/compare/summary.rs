//! From the runs of a comparison to its table: the median of every figure for
//! each side, B/A, the servers' CPU use, and the printed table.

use std::fmt::Write as _;

use serde::Serialize;

use super::{CaseResult, Run};
use crate::report::format_value;

/// One figure of one side over the rounds.
#[derive(Serialize)]
pub struct SideSummary {
    /// "A" or "B".
    pub side: &'static str,
    /// Median over the rounds that produced the figure.
    pub median: Option<f64>,
    /// Each round's figure (`None`: the run failed or lacked it).
    pub raw: Vec<Option<f64>>,
    /// Median server CPU, percent of one CPU, over the whole run.
    pub server_cpu_percent: Option<f64>,
    /// Median server CPU-seconds per GB of payload (bulk cases only).
    pub server_cpu_s_per_gb: Option<f64>,
    /// Median generator CPU, percent of its CPUs.
    pub generator_cpu_percent: Option<f64>,
    /// Errors over all rounds.
    pub errors: u64,
    /// Runs without a figure.
    pub failed_runs: usize,
}

/// One line of the table.
#[derive(Serialize)]
pub struct Row {
    /// The case's name.
    pub case: &'static str,
    /// The figure (with its unit); empty for a skipped case.
    pub figure: &'static str,
    /// Whether a larger figure is the better one.
    pub higher_is_better: bool,
    /// A, then B if it ran.
    pub sides: Vec<SideSummary>,
    /// B's median over A's.
    pub b_over_a: Option<f64>,
    /// B's CPU-seconds per GB over A's (bulk cases).
    pub cpu_s_per_gb_b_over_a: Option<f64>,
    /// Why the case did not run.
    pub skipped: Option<String>,
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn ratio(b: Option<f64>, a: Option<f64>) -> Option<f64> {
    match (b, a) {
        (Some(b), Some(a)) if a != 0.0 => Some(b / a),
        _ => None,
    }
}

/// The table's rows: one per figure of every case (one for a skipped case).
pub fn rows(results: &[CaseResult], sides: &[&'static str]) -> Vec<Row> {
    let mut rows = Vec::new();
    for result in results {
        if let Some(why) = &result.skipped {
            rows.push(Row {
                case: result.case.name,
                figure: "",
                higher_is_better: true,
                sides: Vec::new(),
                b_over_a: None,
                cpu_s_per_gb_b_over_a: None,
                skipped: Some(why.clone()),
            });
            continue;
        }
        for (index, metric) in result.case.metrics.iter().enumerate() {
            let summaries: Vec<SideSummary> = sides
                .iter()
                .map(|&side| {
                    let runs: Vec<&Run> = result.runs.iter().filter(|r| r.side == side).collect();
                    let raw: Vec<Option<f64>> = runs
                        .iter()
                        .map(|r| r.figures.get(index).and_then(|f| f.value))
                        .collect();
                    SideSummary {
                        side,
                        median: median(raw.iter().flatten().copied()),
                        failed_runs: raw.iter().filter(|v| v.is_none()).count(),
                        raw,
                        server_cpu_percent: median(
                            runs.iter().filter_map(|r| r.server_cpu_percent),
                        ),
                        server_cpu_s_per_gb: median(
                            runs.iter().filter_map(|r| r.server_cpu_s_per_gb),
                        ),
                        generator_cpu_percent: median(
                            runs.iter().filter_map(|r| r.generator_cpu_percent),
                        ),
                        errors: runs.iter().map(|r| r.errors).sum(),
                    }
                })
                .collect();
            let (a, b) = (summaries.first(), summaries.get(1));
            rows.push(Row {
                case: result.case.name,
                figure: metric.label,
                higher_is_better: metric.higher_is_better,
                b_over_a: ratio(b.and_then(|s| s.median), a.and_then(|s| s.median)),
                cpu_s_per_gb_b_over_a: ratio(
                    b.and_then(|s| s.server_cpu_s_per_gb),
                    a.and_then(|s| s.server_cpu_s_per_gb),
                ),
                sides: summaries,
                skipped: None,
            });
        }
    }
    rows
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), format_value)
}

/// The printed table: `legend` lines, the rows, what each case is (`glossary`:
/// name, title), then `notes`.
pub fn table(
    legend: &[String],
    rows: &[Row],
    glossary: &[(&str, &str)],
    notes: &[String],
) -> String {
    let mut out = String::new();
    for line in legend {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);
    let header = format!(
        "{:<14} {:<18} {:>10} {:>10} {:>6} {:>7} {:>7} {:>10} {:>10}",
        "scenario", "figure", "A", "B", "B/A", "CPU% A", "CPU% B", "CPU-s/GB A", "CPU-s/GB B"
    );
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{}", "-".repeat(header.len()));
    for row in rows {
        if let Some(why) = &row.skipped {
            let _ = writeln!(out, "{:<14} skipped: {why}", row.case);
            continue;
        }
        let side = |i: usize| row.sides.get(i);
        let _ = writeln!(
            out,
            "{:<14} {:<18} {:>10} {:>10} {:>6} {:>7} {:>7} {:>10} {:>10}",
            row.case,
            row.figure,
            cell(side(0).and_then(|s| s.median)),
            cell(side(1).and_then(|s| s.median)),
            row.b_over_a
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
            cell(side(0).and_then(|s| s.server_cpu_percent).map(f64::round)),
            cell(side(1).and_then(|s| s.server_cpu_percent).map(f64::round)),
            cell(side(0).and_then(|s| s.server_cpu_s_per_gb)),
            cell(side(1).and_then(|s| s.server_cpu_s_per_gb)),
        );
    }
    let _ = writeln!(out);
    for (name, title) in glossary {
        let _ = writeln!(out, "{name:<14} {title}");
    }
    let _ = writeln!(
        out,
        "B/A above 1: B's figure is larger (better for /s figures, worse for us, KiB, CPU % and CPU-s/GB)"
    );
    if !notes.is_empty() {
        let _ = writeln!(out);
        for note in notes {
            let _ = writeln!(out, "note: {note}");
        }
    }
    out
}
