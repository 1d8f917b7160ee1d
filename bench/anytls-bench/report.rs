//! Results of a scenario: parameters, figures, latency percentiles and errors;
//! printed as a table and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::stats::{ErrorCount, Tally};

/// One scenario's results.
#[derive(Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// What it ran with, in the order given.
    #[serde(serialize_with = "ordered_map")]
    pub parameters: Vec<(String, Value)>,
    /// Figures, headline first.
    pub results: Vec<Figure>,
    /// Latency percentiles in microseconds, by name.
    pub latency_us: BTreeMap<String, Percentiles>,
    /// Successful operations.
    pub ok: u64,
    /// Operations cut off by the end of the run.
    pub cancelled: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, ErrorCount>,
    /// Anything worth knowing about the run (a CPU shared by two roles, ...).
    pub notes: Vec<String>,
    /// Whether anything succeeded.
    pub succeeded: bool,
}

/// A named number with its unit.
#[derive(Serialize)]
pub struct Figure {
    /// What it is.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit ("" for plain counts).
    pub unit: String,
}

/// Latency summary, microseconds.
#[derive(Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// Largest sample.
    pub max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

fn ordered_map<S: Serializer>(pairs: &[(String, Value)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

impl Report {
    /// A report for `scenario` with the counts, errors and latencies of `tally`.
    pub fn new(scenario: &str, tally: &Tally) -> Report {
        Report {
            scenario: scenario.to_owned(),
            parameters: Vec::new(),
            results: Vec::new(),
            latency_us: tally
                .latency
                .iter()
                .filter(|(_, h)| !h.is_empty())
                .map(|(name, h)| ((*name).to_owned(), Percentiles::of(h)))
                .collect(),
            ok: tally.ok,
            cancelled: tally.cancelled,
            errors: tally
                .errors
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            notes: Vec::new(),
            succeeded: tally.ok > 0,
        }
    }

    /// Adds a parameter.
    pub fn param(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.parameters.push((name.to_owned(), value.into()));
        self
    }

    /// Adds a figure.
    pub fn figure(&mut self, name: &str, value: f64, unit: &str) -> &mut Self {
        self.results.push(Figure {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
        });
        self
    }

    /// Adds a figure if there is one.
    pub fn figure_opt(&mut self, name: &str, value: Option<f64>, unit: &str) -> &mut Self {
        if let Some(value) = value {
            self.figure(name, value, unit);
        }
        self
    }

    /// Adds a note.
    pub fn note(&mut self, text: impl Into<String>) -> &mut Self {
        self.notes.push(text.into());
        self
    }
}

/// A figure for a table: no decimals for whole numbers, one from 100 up, else two.
pub fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn format_param(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The final table: one block of rows per scenario.
pub fn table(header: &str, reports: &[Report]) -> String {
    const W: usize = 12;
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<W$} {:<30} {:>14}  unit",
        "scenario", "result", "value"
    );
    let _ = writeln!(out, "{}", "-".repeat(W + 1 + 30 + 1 + 14 + 2 + 10));
    for report in reports {
        let params: Vec<String> = report
            .parameters
            .iter()
            .map(|(k, v)| format!("{k}={}", format_param(v)))
            .collect();
        let _ = writeln!(
            out,
            "{:<W$} parameters: {}",
            report.scenario,
            params.join(" ")
        );
        let mut row = |name: &str, value: String, unit: &str| {
            let _ = writeln!(out, "{:<W$} {name:<30} {value:>14}  {unit}", "");
        };
        for f in &report.results {
            row(&f.name, format_value(f.value), &f.unit);
        }
        for (name, p) in &report.latency_us {
            for (q, v) in [
                ("p50", p.p50),
                ("p90", p.p90),
                ("p99", p.p99),
                ("p99.9", p.p99_9),
            ] {
                row(&format!("{name} {q}"), v.to_string(), "us");
            }
        }
        let errors: u64 = report.errors.values().map(|e| e.count).sum();
        row("errors", errors.to_string(), "");
        for (kind, e) in &report.errors {
            row(&format!("  {kind}"), e.count.to_string(), &e.example);
        }
        if report.cancelled > 0 {
            row("cut off at the end", report.cancelled.to_string(), "");
        }
        for note in &report.notes {
            let _ = writeln!(out, "{:<W$} note: {note}", "");
        }
        if !report.succeeded {
            let _ = writeln!(out, "{:<W$} NOTHING SUCCEEDED", "");
        }
    }
    out
}

/// Writes every report and the run's context as one JSON document.
pub fn write_json(path: &Path, context: Value, reports: &[Report]) -> io::Result<()> {
    let doc = serde_json::json!({
        "tool": "anytls-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "context": context,
        "scenarios": reports,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(io::Error::other)?;
    std::fs::write(path, text + "\n")
}
