//! Query results as CSV: one row per sample or point, for spreadsheets and scripts.

use std::collections::BTreeSet;
use std::io::Write;

use promql::value::{Timestamp, Value};

use crate::output::{format_time, format_value};
use promql::{Labels, METRIC_NAME};

/// Writes a value as CSV: `timestamp,value,<labels…>` with one row per sample or point,
/// RFC 3339 timestamps and Prometheus' spelling of special values.
pub fn write_csv(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let names = label_names(value);
    let mut header = vec!["timestamp", "value"];
    header.extend(names.iter().map(String::as_str));
    w.write_record(&header)?;
    let mut row = |t: Timestamp, v: String, labels: Option<&Labels>| -> std::io::Result<()> {
        let mut record = Vec::with_capacity(2 + names.len());
        record.push(format_time(t));
        record.push(v);
        for name in &names {
            record.push(labels.and_then(|l| l.get(name)).unwrap_or_default().to_owned());
        }
        Ok(w.write_record(&record)?)
    };
    match value {
        Value::Scalar { t, v } => row(*t, format_value(*v), None)?,
        Value::String { t, v } => row(*t, v.clone(), None)?,
        Value::Vector(samples) => {
            for s in samples {
                row(s.t, format_value(s.v), Some(&s.labels))?;
            }
        }
        Value::Matrix(series) => {
            for s in series {
                for p in &s.points {
                    row(p.t, format_value(p.v), Some(&s.labels))?;
                }
            }
        }
    }
    w.flush()
}

/// The union of label names, sorted, `__name__` first.
fn label_names(value: &Value) -> Vec<String> {
    let mut names = BTreeSet::new();
    let mut add = |labels: &Labels| {
        for l in labels.iter() {
            if !names.contains(&*l.name) {
                names.insert(l.name.to_string());
            }
        }
    };
    match value {
        Value::Scalar { .. } | Value::String { .. } => {}
        Value::Vector(samples) => samples.iter().for_each(|s| add(&s.labels)),
        Value::Matrix(series) => series.iter().for_each(|s| add(&s.labels)),
    }
    let has_name = names.remove(METRIC_NAME);
    let mut out = Vec::with_capacity(names.len() + 1);
    if has_name {
        out.push(METRIC_NAME.to_owned());
    }
    out.extend(names);
    out
}

#[cfg(test)]
mod tests {
    use promql::value::{Point, Sample, Series};

    use super::*;

    fn csv_of(value: &Value) -> String {
        let mut out = Vec::new();
        write_csv(&mut out, value).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn matrix_rows_with_label_union_and_name_first() {
        let value = Value::Matrix(vec![
            Series {
                labels: Labels::from_pairs([("__name__", "up"), ("job", "api"), ("Zone", "a")]),
                points: vec![Point { t: 1_700_000_000_000, v: 1.0 }, Point { t: 1_700_000_015_500, v: 0.5 }],
            },
            Series {
                labels: Labels::from_pairs([("instance", "h:9090"), ("job", "db")]),
                points: vec![Point { t: 0, v: f64::NAN }],
            },
        ]);
        assert_eq!(
            csv_of(&value),
            "timestamp,value,__name__,Zone,instance,job\n\
             2023-11-14T22:13:20.000Z,1,up,a,,api\n\
             2023-11-14T22:13:35.500Z,0.5,up,a,,api\n\
             1970-01-01T00:00:00.000Z,NaN,,,h:9090,db\n"
        );
    }

    #[test]
    fn vector_quotes_fields_that_need_it() {
        let value = Value::Vector(vec![
            Sample {
                labels: Labels::from_pairs([("path", "/a,b"), ("msg", "say \"hi\"\nbye")]),
                t: 1_000,
                v: f64::INFINITY,
            },
            Sample { labels: Labels::from_pairs([("path", "/")]), t: 2_000, v: -2.5e-7 },
        ]);
        assert_eq!(
            csv_of(&value),
            "timestamp,value,msg,path\n\
             1970-01-01T00:00:01.000Z,+Inf,\"say \"\"hi\"\"\nbye\",\"/a,b\"\n\
             1970-01-01T00:00:02.000Z,-0.00000025,,/\n"
        );
        // What a CSV reader gets back.
        let text = csv_of(&value);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(&rows[0][2], "say \"hi\"\nbye");
        assert_eq!(&rows[0][3], "/a,b");
    }

    #[test]
    fn scalar_string_and_empty_results() {
        assert_eq!(
            csv_of(&Value::Scalar { t: 1_500, v: -f64::INFINITY }),
            "timestamp,value\n1970-01-01T00:00:01.500Z,-Inf\n"
        );
        assert_eq!(
            csv_of(&Value::String { t: 0, v: "a,b".into() }),
            "timestamp,value\n1970-01-01T00:00:00.000Z,\"a,b\"\n"
        );
        assert_eq!(csv_of(&Value::Vector(vec![])), "timestamp,value\n");
        assert_eq!(csv_of(&Value::Matrix(vec![])), "timestamp,value\n");
    }
}
