//! Printing query results: aligned tables for people, Prometheus API JSON for tools.

use std::io::Write;

use promql::value::Value;

/// Prints `value` to stdout; a closed pipe ends output quietly. Tables are coloured
/// only on a terminal, and never with `NO_COLOR` set.
pub fn print(value: &Value, json: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let mut out = std::io::stdout().lock();
    let colour = out.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let written = if json {
        let mut text = String::new();
        promql::api::write_data_json(value, &mut text);
        writeln!(out, "{text}")
    } else {
        write_table(&mut out, value, colour)
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// ANSI: bold series, cyan values.
const SERIES: (&str, &str) = ("\x1b[1m", "\x1b[0m");
const VALUE: (&str, &str) = ("\x1b[36m", "\x1b[0m");

fn write_table(out: &mut impl Write, value: &Value, colour: bool) -> std::io::Result<()> {
    let paint = |style: (&'static str, &'static str)| if colour { style } else { ("", "") };
    let (s0, s1) = paint(SERIES);
    let (v0, v1) = paint(VALUE);
    match value {
        Value::Scalar { v, .. } => writeln!(out, "{v0}{}{v1}", format_value(*v)),
        Value::String { v, .. } => writeln!(out, "{v}"),
        Value::Vector(samples) => {
            let rows: Vec<(String, String)> =
                samples.iter().map(|s| (s.labels.metric_string(), format_value(s.v))).collect();
            let width = rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
            for (labels, v) in rows {
                writeln!(out, "{s0}{labels:<width$}{s1}  {v0}{v}{v1}")?;
            }
            Ok(())
        }
        Value::Matrix(series) => {
            for s in series {
                writeln!(out, "{s0}{}{s1}", s.labels.metric_string())?;
                for p in &s.points {
                    writeln!(out, "  {}  {v0}{}{v1}", format_time(p.t), format_value(p.v))?;
                }
            }
            Ok(())
        }
    }
}

/// A value as Prometheus spells it: `NaN`, `+Inf`, `-Inf`, shortest decimal otherwise.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// A timestamp as RFC 3339 UTC with milliseconds.
pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}
