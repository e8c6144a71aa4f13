//! Results: one JSON line per (target, scenario) run appended to a file, and
//! the markdown table that puts the two targets side by side
//! (`connmix-bench table`). Owns formatting; measures nothing.

use crate::stats::Summary;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// One number of a run. `value: None` is "n/a" (the note says why).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    pub label: String,
    pub value: Option<f64>,
    /// `/s`, `ms`, `KiB`, `MiB`, `cores`, `count`.
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Everything one scenario run against one target produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub target: String,
    pub scenario: String,
    pub connections: u64,
    pub metrics: Vec<Metric>,
    pub notes: Vec<String>,
    /// Numbers other runs may need (e.g. `half_rate`).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl RunResult {
    pub fn new(target: &str, scenario: &str, connections: u64) -> Self {
        Self {
            target: target.into(),
            scenario: scenario.into(),
            connections,
            ..Default::default()
        }
    }

    pub fn metric(&mut self, key: &str, label: &str, value: Option<f64>, unit: &str) {
        self.metrics.push(Metric {
            key: key.into(),
            label: label.into(),
            value,
            unit: unit.into(),
            note: None,
        });
    }

    /// A metric that could not be measured, with the reason.
    pub fn na(&mut self, key: &str, label: &str, unit: &str, why: &str) {
        self.metrics.push(Metric {
            key: key.into(),
            label: label.into(),
            value: None,
            unit: unit.into(),
            note: Some(why.into()),
        });
    }

    /// p50, p99 and p99.9 rows of a latency summary.
    pub fn latency(&mut self, key: &str, label: &str, s: &Summary) {
        let v = |x: f64| (s.count > 0).then_some(x);
        self.metric(
            &format!("{key}.p50"),
            &format!("{label} p50"),
            v(s.p50_ms),
            "ms",
        );
        self.metric(
            &format!("{key}.p99"),
            &format!("{label} p99"),
            v(s.p99_ms),
            "ms",
        );
        self.metric(
            &format!("{key}.p999"),
            &format!("{label} p99.9"),
            v(s.p999_ms),
            "ms",
        );
    }

    pub fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        eprintln!("  note: {n}");
        self.notes.push(n);
    }

    /// Prints the run and appends it to `out` (if given).
    pub fn finish(&self, out: Option<&Path>) -> anyhow::Result<()> {
        eprintln!(
            "== {} / {} ({} connections)",
            self.target, self.scenario, self.connections
        );
        for m in &self.metrics {
            eprintln!("  {:<60} {}", m.label, cell(m));
        }
        if let Some(p) = out {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?;
            writeln!(f, "{}", serde_json::to_string(self)?)?;
        }
        Ok(())
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A value with its unit, as a table cell.
pub fn format_value(v: f64, unit: &str) -> String {
    match unit {
        "/s" => format!("{}/s", thousands(v)),
        "ms" if v < 1.0 => format!("{v:.3} ms"),
        "ms" if v < 100.0 => format!("{v:.2} ms"),
        "ms" => format!("{v:.0} ms"),
        "KiB" => format!("{v:.1} KiB"),
        "MiB" => format!("{v:.0} MiB"),
        "cores" => format!("{v:.2}"),
        "count" => thousands(v),
        u => format!("{v:.2} {u}"),
    }
}

fn cell(m: &Metric) -> String {
    match (m.value, &m.note) {
        (Some(v), _) => format_value(v, &m.unit),
        (None, Some(n)) => format!("n/a ({n})"),
        (None, None) => "n/a".into(),
    }
}

/// Reads a results file.
pub fn load(path: &Path) -> anyhow::Result<Vec<RunResult>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// The markdown table: metric | connmix | socket.io | ratio, rows in the
/// order they were first measured. With several runs (one slice per results
/// file) each cell is the median over the runs, and with `spread` the range
/// follows it.
pub fn table(runs: &[Vec<RunResult>], spread: bool) -> String {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in runs.iter().flatten() {
        for m in &r.metrics {
            if !keys.iter().any(|(k, _)| k == &m.key) {
                keys.push((m.key.clone(), m.label.clone()));
            }
        }
    }
    // The metric of one run; the latest wins if a scenario was re-run into
    // the same file.
    let find = |run: &[RunResult], target: &str, key: &str| -> Option<Metric> {
        run.iter()
            .rev()
            .filter(|r| r.target == target)
            .flat_map(|r| r.metrics.iter())
            .find(|m| m.key == key)
            .cloned()
    };
    let cell_of = |target: &str, key: &str| -> (String, Option<f64>) {
        let found: Vec<Metric> = runs.iter().filter_map(|r| find(r, target, key)).collect();
        let Some(first) = found.first() else {
            return ("not run".into(), None);
        };
        let mut vals: Vec<f64> = found.iter().filter_map(|m| m.value).collect();
        if vals.is_empty() {
            return (cell(first), None);
        }
        vals.sort_by(f64::total_cmp);
        let med = if vals.len() % 2 == 1 {
            vals[vals.len() / 2]
        } else {
            (vals[vals.len() / 2 - 1] + vals[vals.len() / 2]) / 2.0
        };
        let mut text = format_value(med, &first.unit);
        if spread && vals.len() > 1 {
            let lo = format_value(vals[0], &first.unit);
            let hi = format_value(vals[vals.len() - 1], &first.unit);
            text = format!("{text} ({lo} – {hi})");
        }
        (text, Some(med))
    };
    // connmix's own Socket.IO server, when it was run: a column and its
    // ratio to socket.io as well.
    let with_sio = runs.iter().flatten().any(|r| r.target == "connmix-sio");
    let mut out = String::from("| metric | connmix | socket.io | ratio |");
    out.push_str(if with_sio {
        " connmix Socket.IO | ratio |\n|---|---:|---:|---:|---:|---:|\n"
    } else {
        "\n|---|---:|---:|---:|\n"
    });
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y != 0.0 => format!("{:.2}×", x / y),
        _ => "–".into(),
    };
    for (key, label) in keys {
        let (a, av) = cell_of("connmix", &key);
        let (b, bv) = cell_of("socketio", &key);
        out.push_str(&format!("| {label} | {a} | {b} | {} |", ratio(av, bv)));
        if with_sio {
            let (c, cv) = cell_of("connmix-sio", &key);
            out.push_str(&format!(" {c} | {} |", ratio(cv, bv)));
        }
        out.push('\n');
    }
    out
}

/// The notes of every run, for under the table.
pub fn notes(results: &[RunResult]) -> String {
    let mut out = String::new();
    for r in results {
        for n in &r.notes {
            out.push_str(&format!("- {} / {}: {n}\n", r.target, r.scenario));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_value(1234567.4, "/s"), "1,234,567/s");
        assert_eq!(format_value(0.1234, "ms"), "0.123 ms");
        assert_eq!(format_value(12.345, "ms"), "12.35 ms");
        assert_eq!(thousands(999.0), "999");
    }

    #[test]
    fn table_pairs_targets_and_computes_ratio() {
        let mut a = RunResult::new("connmix", "x", 1);
        a.metric("k", "thing", Some(4.0), "count");
        let mut b = RunResult::new("socketio", "x", 1);
        b.metric("k", "thing", Some(2.0), "count");
        b.na("w", "other", "/s", "no API");
        let t = table(&[vec![a.clone(), b.clone()]], false);
        assert!(t.contains("| thing | 4 | 2 | 2.00× |"), "{t}");
        assert!(t.contains("| other | not run | n/a (no API) | – |"), "{t}");
        let mut a2 = a.clone();
        a2.metrics[0].value = Some(8.0);
        let mut a3 = a;
        a3.metrics[0].value = Some(6.0);
        let t = table(&[vec![a2, b.clone()], vec![a3, b.clone()], vec![b]], true);
        assert!(
            t.contains("| thing | 7 (6 – 8) | 2 (2 – 2) | 3.50× |"),
            "{t}"
        );
    }
}
