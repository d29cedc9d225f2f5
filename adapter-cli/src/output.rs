//! Printing query results: aligned tables for people, Prometheus API JSON for tools.

use std::io::Write;

use promql::value::Value;

/// Prints `value` to stdout; a closed pipe ends output quietly.
pub fn print(value: &Value, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written =
        if json { writeln!(out, "{}", promql::api::data_json(value)) } else { write_table(&mut out, value) };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn write_table(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    match value {
        Value::Scalar { v, .. } => writeln!(out, "{v}"),
        Value::String { v, .. } => writeln!(out, "{v}"),
        Value::Vector(samples) => {
            let rows: Vec<(String, String)> =
                samples.iter().map(|s| (s.labels.metric_string(), format_value(s.v))).collect();
            let width = rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
            for (labels, v) in rows {
                writeln!(out, "{labels:<width$}  {v}")?;
            }
            Ok(())
        }
        Value::Matrix(series) => {
            for s in series {
                writeln!(out, "{}", s.labels.metric_string())?;
                for p in &s.points {
                    writeln!(out, "  {}  {}", format_time(p.t), format_value(p.v))?;
                }
            }
            Ok(())
        }
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}
