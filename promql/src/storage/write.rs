//! Writing a store as an OpenMetrics fixture: the input of `promtool tsdb
//! create-blocks-from openmetrics`, so one file feeds this engine and a Prometheus.

use std::io::{self, Write};

use super::MemoryStore;
use crate::eval::kernels::go_format_float;
use crate::labels::METRIC_NAME;
use crate::value::{is_stale_marker, Point};

/// Writes every series of `store` in OpenMetrics text: series grouped by metric name
/// (families must be contiguous), samples in time order with millisecond timestamps,
/// then `# EOF`. Staleness markers are left out: the format cannot express them.
///
/// ```
/// use promql::{storage::{write_openmetrics, MemoryStore}, Labels};
/// let mut store = MemoryStore::new();
/// store.append(&Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]), 1_500, 1.0);
/// let mut out = Vec::new();
/// write_openmetrics(&store, &mut out).unwrap();
/// assert_eq!(String::from_utf8(out).unwrap(), "up{job=\"a\\\"b\"} 1 1.500\n# EOF\n");
/// ```
pub fn write_openmetrics(store: &MemoryStore, out: &mut impl Write) -> io::Result<()> {
    let mut series: Vec<_> = store.series().collect();
    series.sort_by(|a, b| a.0.cmp(b.0));
    let mut line = String::new();
    for (labels, points) in series {
        line.clear();
        line.push_str(labels.metric_name().unwrap_or(""));
        let rest: Vec<_> = labels.iter().filter(|l| &*l.name != METRIC_NAME).collect();
        if !rest.is_empty() {
            line.push('{');
            for (i, l) in rest.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(&l.name);
                line.push_str("=\"");
                for c in l.value.chars() {
                    match c {
                        '\\' => line.push_str("\\\\"),
                        '"' => line.push_str("\\\""),
                        '\n' => line.push_str("\\n"),
                        c => line.push(c),
                    }
                }
                line.push('"');
            }
            line.push('}');
        }
        for &Point { t, v } in points {
            if is_stale_marker(v) {
                continue;
            }
            let sign = if t < 0 { "-" } else { "" };
            let abs = t.unsigned_abs();
            writeln!(out, "{line} {} {sign}{}.{:03}", go_format_float(v), abs / 1000, abs % 1000)?;
        }
    }
    writeln!(out, "# EOF")
}
