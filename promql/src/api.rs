//! Prometheus' HTTP API JSON for query results: the `data` object of `/api/v1/query`
//! and `/api/v1/query_range` responses.

use serde_json::{json, Map, Number, Value as Json};

use crate::eval::kernels::{go_format_float, write_api_float, write_go_float};
use crate::labels::Labels;
use crate::value::{Point, Sample, Series, Timestamp, Value};

/// A timestamp as the API writes it: seconds, with up to three decimals.
fn time(ms: Timestamp) -> Json {
    if ms % 1000 == 0 {
        Json::Number(Number::from(ms / 1000))
    } else {
        Number::from_f64(ms as f64 / 1000.0).map_or(Json::Null, Json::Number)
    }
}

fn metric(labels: &Labels) -> Json {
    let map: Map<String, Json> =
        labels.iter().map(|l| (l.name.to_string(), Json::String(l.value.to_string()))).collect();
    Json::Object(map)
}

/// A scalar's `[time, "value"]`: the value in plain decimals.
fn point(t: Timestamp, v: f64) -> Json {
    json!([time(t), go_format_float(v)])
}

/// A vector's or matrix's `[time, "value"]`: the value as [`write_api_float`] spells it.
fn sample_point(t: Timestamp, v: f64) -> Json {
    let mut text = String::new();
    write_api_float(&mut text, v);
    json!([time(t), text])
}

/// The `data` object for a value: `{"resultType": …, "result": …}`.
///
/// ```
/// use promql::value::{Sample, Value};
/// use promql::Labels;
/// let v = Value::Vector(vec![Sample { labels: Labels::from_pairs([("job", "api")]), t: 1_500, v: 2.0 }]);
/// assert_eq!(
///     promql::api::data_json(&v).to_string(),
///     r#"{"resultType":"vector","result":[{"metric":{"job":"api"},"value":[1.5,"2"]}]}"#
/// );
/// ```
pub fn data_json(value: &Value) -> Json {
    match value {
        Value::Scalar { t, v } => json!({"resultType": "scalar", "result": point(*t, *v)}),
        Value::String { t, v } => json!({"resultType": "string", "result": [time(*t), v]}),
        Value::Vector(samples) => {
            let result: Vec<Json> = samples
                .iter()
                .map(|s| json!({"metric": metric(&s.labels), "value": sample_point(s.t, s.v)}))
                .collect();
            json!({"resultType": "vector", "result": result})
        }
        Value::Matrix(series) => {
            let result: Vec<Json> = series
                .iter()
                .map(|s| {
                    let values: Vec<Json> = s.points.iter().map(|p| sample_point(p.t, p.v)).collect();
                    json!({"metric": metric(&s.labels), "values": values})
                })
                .collect();
            json!({"resultType": "matrix", "result": result})
        }
    }
}

/// The text of [`data_json`] written straight into `out`, without building a JSON tree:
/// a range query of a few thousand series has hundreds of thousands of points, and a
/// tree would allocate several values per point.
///
/// The text is Prometheus': the same JSON value as `data_json(value)`, with sample
/// timestamps spelt as Prometheus spells them (`1.500`, where the tree has `1.5`).
///
/// ```
/// use promql::value::{Sample, Value};
/// use promql::Labels;
/// let v = Value::Vector(vec![Sample { labels: Labels::from_pairs([("job", "a\"b")]), t: 1_500, v: f64::NAN }]);
/// let mut out = String::new();
/// promql::api::write_data_json(&v, &mut out);
/// assert_eq!(out, r#"{"resultType":"vector","result":[{"metric":{"job":"a\"b"},"value":[1.500,"NaN"]}]}"#);
/// let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
/// assert_eq!(parsed, promql::api::data_json(&v));
/// ```
///
/// Large matrices are written over rayon's pool, a part per core; see
/// [`write_data_json_with`] to keep to the calling thread.
pub fn write_data_json(value: &Value, out: &mut String) {
    write_data_json_with(value, out, true);
}

/// [`write_data_json`], over rayon's pool only if `parallel`: a server answering one
/// query while another keeps the pool busy writes on its own thread, as it evaluated.
///
/// ```
/// use promql::value::{Point, Series, Value};
/// use promql::Labels;
/// let v = Value::Matrix(vec![Series { labels: Labels::from_pairs([("job", "a")]), points: vec![Point { t: 0, v: 1.0 }] }]);
/// let (mut one, mut pool) = (String::new(), String::new());
/// promql::api::write_data_json_with(&v, &mut one, false);
/// promql::api::write_data_json_with(&v, &mut pool, true);
/// assert_eq!(one, pool);
/// assert_eq!(one, r#"{"resultType":"matrix","result":[{"metric":{"job":"a"},"values":[[0,"1"]]}]}"#);
/// ```
pub fn write_data_json_with(value: &Value, out: &mut String, parallel: bool) {
    match value {
        Value::Scalar { t, v } => {
            out.push_str(r#"{"resultType":"scalar","result":"#);
            write_point(out, *t, *v);
            out.push('}');
        }
        Value::String { t, v } => {
            out.push_str(r#"{"resultType":"string","result":["#);
            write_time(out, *t);
            out.push(',');
            write_str(out, v);
            out.push_str("]}");
        }
        Value::Vector(samples) => {
            out.push_str(r#"{"resultType":"vector","result":["#);
            let threads =
                if parallel && samples.len() >= PARALLEL_SAMPLES { crate::eval::cores() } else { 1 };
            // A sample takes about 200 bytes with its labels.
            let size = |samples: &[Sample]| samples.len() * 200;
            write_in_parts(
                out,
                samples,
                threads,
                |_| 1,
                size,
                |out, s| {
                    write_item(out, &s.labels, "value", |out| write_sample(out, s.t, s.v));
                },
            );
            out.push_str("]}");
        }
        Value::Matrix(series) => {
            out.push_str(r#"{"resultType":"matrix","result":["#);
            write_series(out, series, parallel);
            out.push_str("]}");
        }
    }
}

/// How many points a matrix needs before its text is written on two threads or more:
/// about a millisecond of work. Less does not pay for waking the pool's threads, which
/// sleep between queries: from 8,192 points, a served 12k-point answer took longer.
const PARALLEL_POINTS: usize = 32_768;

/// [`PARALLEL_POINTS`] for a vector's samples, each with its labels: about a millisecond
/// of work too (100 ns a sample of six labels, criterion `answer/vector`).
const PARALLEL_SAMPLES: usize = 8_192;

/// `series` as comma-separated `{"metric":…,"values":[…]}` items; large matrices, if
/// `parallel`, in a part per core on rayon's pool, the parts' texts joined in order.
fn write_series(out: &mut String, series: &[Series], parallel: bool) {
    // A point takes 20 to 35 bytes (`[1704067260,"0.03333333333333333"],`): one
    // allocation instead of a dozen doublings, and seldom a copy when it falls short.
    let size = |series: &[Series]| series.iter().map(|s| 64 + 32 * s.points.len()).sum::<usize>();
    let points: usize = series.iter().map(|s| s.points.len()).sum();
    let threads = if parallel && points >= PARALLEL_POINTS { crate::eval::cores() } else { 1 };
    let times = TimeTexts::of(series);
    let write_one = |out: &mut String, s: &Series| write_one_series(out, s, &times);
    write_in_parts(out, series, threads, |s| s.points.len(), size, write_one);
}

/// `items` written by `write_one`, separated by commas: on this thread, or with
/// `threads` of two or more (and two items or more) in a part per thread on rayon's
/// pool, the parts of about equal `weight` and their texts joined in order. `size`
/// guesses the bytes a run of items takes, for one allocation a part.
fn write_in_parts<T: Sync>(
    out: &mut String,
    items: &[T],
    threads: usize,
    weight: impl Fn(&T) -> usize,
    size: impl Fn(&[T]) -> usize + Sync,
    write_one: impl Fn(&mut String, &T) + Sync,
) {
    if threads < 2 || items.len() < 2 {
        out.reserve(size(items));
        write_each(out, items, write_one);
        return;
    }
    let total: usize = items.iter().map(&weight).sum();
    let mut parts: Vec<&[T]> = Vec::with_capacity(threads);
    let (mut begin, mut taken) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        taken += weight(item);
        if taken * threads >= total * (parts.len() + 1) && parts.len() + 1 < threads {
            parts.push(&items[begin..=i]);
            begin = i + 1;
        }
    }
    parts.push(&items[begin..]);
    use rayon::prelude::*;
    let texts: Vec<String> = parts
        .par_iter()
        .map(|part| {
            let mut text = String::with_capacity(size(part));
            write_each(&mut text, *part, &write_one);
            text
        })
        .collect();
    out.reserve(texts.iter().map(String::len).sum::<usize>() + texts.len());
    write_each(out, texts.iter().filter(|t| !t.is_empty()), |out, t| out.push_str(t));
}

fn write_one_series(out: &mut String, s: &Series, times: &TimeTexts<'_>) {
    write_item(out, &s.labels, "values", |out| {
        out.push('[');
        // Times increase along the series and along `times`: one cursor finds them all.
        let mut at = 0;
        write_each(out, &s.points, |out, p| {
            while times.points.get(at).is_some_and(|q| q.t < p.t) {
                at += 1;
            }
            match times.text_of(at, p.t) {
                Some(opening) => {
                    out.push_str(opening);
                    write_api_float(out, p.v);
                    out.push_str("\"]");
                }
                None => write_sample(out, p.t, p.v),
            }
        });
        out.push(']');
    });
}

/// The times of a matrix's longest series as [`write_sample_time`] spells them. The
/// series of a range query's answer share its steps: copying a step's text is cheaper
/// than writing its digits at every point (a fifth of a range answer's writing).
struct TimeTexts<'a> {
    /// The longest series' points, whose times these are.
    points: &'a [Point],
    text: String,
    /// Where the text of `points[i].t` starts in `text`; one more at the end.
    bounds: Vec<usize>,
}

impl<'a> TimeTexts<'a> {
    fn of(series: &'a [Series]) -> Self {
        let longest = series.iter().max_by_key(|s| s.points.len()).map_or(&[][..], |s| &s.points[..]);
        // `[1704067260.123,"`: 17 bytes at most for times of this century.
        let mut text = String::with_capacity(longest.len() * 18);
        let mut bounds = Vec::with_capacity(longest.len() + 1);
        bounds.push(0);
        for p in longest {
            text.push('[');
            write_sample_time(&mut text, p.t);
            text.push_str(",\"");
            bounds.push(text.len());
        }
        TimeTexts { points: longest, text, bounds }
    }

    /// The text of `t` if it is the time at `at`.
    fn text_of(&self, at: usize, t: Timestamp) -> Option<&str> {
        (self.points.get(at).map(|p| p.t) == Some(t))
            .then(|| &self.text[self.bounds[at]..self.bounds[at + 1]])
    }
}

/// `items` written by `f`, separated by commas.
fn write_each<T>(out: &mut String, items: impl IntoIterator<Item = T>, mut f: impl FnMut(&mut String, T)) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        f(out, item);
    }
}

/// `{"metric":{…},"<key>":<body>}`.
fn write_item(out: &mut String, labels: &Labels, key: &str, body: impl FnOnce(&mut String)) {
    out.push_str(r#"{"metric":"#);
    write_metric(out, labels);
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    body(out);
    out.push('}');
}

fn write_str(out: &mut String, s: &str) {
    // Label names and values seldom hold anything to escape: copy those as they are
    // instead of through a string of their own, two a label.
    // The test has no early exit, so that it compiles to SIMD compares: a byte at a
    // time with a branch each was half of writing a vector's label sets.
    if !s.bytes().fold(false, |found, b| found | (b == b'"') | (b == b'\\') | (b < 0x20)) {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // serde_json's escaping; serialising a string cannot fail.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// A scalar's or string's timestamp: seconds as the shortest float (`1.5`).
fn write_time(out: &mut String, ms: Timestamp) {
    if ms % 1000 == 0 {
        out.push_str(itoa::Buffer::new().format(ms / 1000));
    } else {
        write_go_float(out, ms as f64 / 1000.0);
    }
}

/// A sample's timestamp as Prometheus writes vectors and matrices: whole seconds, then
/// all three millisecond digits when there are any (`1.500`, `-0.050`).
fn write_sample_time(out: &mut String, ms: Timestamp) {
    if ms < 0 {
        out.push('-');
    }
    let abs = ms.unsigned_abs();
    let mut buf = itoa::Buffer::new();
    out.push_str(buf.format(abs / 1000));
    let frac = abs % 1000;
    if frac != 0 {
        out.push('.');
        let digits = buf.format(frac + 1000);
        out.push_str(&digits[1..]);
    }
}

/// A scalar's point: its value in plain decimals, as Prometheus writes scalars.
fn write_point(out: &mut String, t: Timestamp, v: f64) {
    write_value(out, t, v, write_time, write_go_float);
}

/// A vector's or matrix's point.
fn write_sample(out: &mut String, t: Timestamp, v: f64) {
    write_value(out, t, v, write_sample_time, write_api_float);
}

/// `[<time>,"<value>"]`.
#[inline(always)]
fn write_value(
    out: &mut String,
    t: Timestamp,
    v: f64,
    time: impl FnOnce(&mut String, Timestamp),
    value: impl FnOnce(&mut String, f64),
) {
    out.push('[');
    time(out, t);
    out.push_str(",\"");
    // Digits, signs, `.`, `e`, `NaN`, `Inf`: nothing to escape.
    value(out, v);
    out.push_str("\"]");
}

fn write_metric(out: &mut String, labels: &Labels) {
    out.push('{');
    write_each(out, labels.iter(), |out, l| {
        write_str(out, &l.name);
        out.push(':');
        write_str(out, &l.value);
    });
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Point, Sample, Series};

    #[test]
    fn values_are_spelt_as_prometheus_spells_them() {
        let text = |v: &Value| {
            let mut out = String::new();
            write_data_json(v, &mut out);
            assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), data_json(v));
            out
        };
        let vector = |v| text(&Value::Vector(vec![Sample { labels: Labels::empty(), t: 0, v }]));
        let matrix = |v| {
            let s = Series { labels: Labels::empty(), points: vec![Point { t: 0, v }] };
            text(&Value::Matrix(vec![s]))
        };
        // Answers of Prometheus 2.42 to `vector(x)` and `x`: samples' values in Go's `e`
        // form below 1e-6 and from 1e21 on, scalars' always in plain decimals.
        for (v, want) in [
            (1e30, "1e+30"),
            (1e21, "1e+21"),
            (9.99e20, "999000000000000000000"),
            (-2e-7, "-2e-07"),
            (1e-6, "0.000001"),
            (5.132953051951532e23, "5.132953051951532e+23"),
            (2.1385062609624583e-9, "2.1385062609624583e-09"),
            (1e-300, "1e-300"),
            (f64::MIN_POSITIVE / 4.0, "5.562684646268003e-309"),
            (-0.0, "-0"),
            (0.0, "0"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(
                vector(v),
                format!(r#"{{"resultType":"vector","result":[{{"metric":{{}},"value":[0,"{want}"]}}]}}"#)
            );
            assert_eq!(
                matrix(v),
                format!(r#"{{"resultType":"matrix","result":[{{"metric":{{}},"values":[[0,"{want}"]]}}]}}"#)
            );
        }
        let scalar = text(&Value::Scalar { t: 0, v: 1e30 });
        assert_eq!(scalar, r#"{"resultType":"scalar","result":[0,"1000000000000000000000000000000"]}"#);
        let scalar = text(&Value::Scalar { t: 0, v: 1e-9 });
        assert_eq!(scalar, r#"{"resultType":"scalar","result":[0,"0.000000001"]}"#);
    }

    #[test]
    fn times_are_spelt_as_prometheus_spells_them() {
        let text = |v: &Value| {
            let mut out = String::new();
            write_data_json(v, &mut out);
            out
        };
        let vector = |t| Value::Vector(vec![Sample { labels: Labels::empty(), t, v: 1.0 }]);
        // Answers of Prometheus 2.42 to `vector(1)` and `1` at these times.
        assert_eq!(
            text(&vector(1_704_070_800_500)),
            r#"{"resultType":"vector","result":[{"metric":{},"value":[1704070800.500,"1"]}]}"#
        );
        assert_eq!(
            text(&vector(-50)),
            r#"{"resultType":"vector","result":[{"metric":{},"value":[-0.050,"1"]}]}"#
        );
        assert_eq!(
            text(&vector(7_000)),
            r#"{"resultType":"vector","result":[{"metric":{},"value":[7,"1"]}]}"#
        );
        assert_eq!(
            text(&Value::Scalar { t: 1_704_070_800_500, v: 1.0 }),
            r#"{"resultType":"scalar","result":[1704070800.5,"1"]}"#
        );
    }

    #[test]
    fn a_vector_written_in_parts_reads_as_one_written_in_one() {
        let samples: Vec<Sample> = (0..2 * PARALLEL_SAMPLES + 7)
            .map(|i| Sample {
                labels: Labels::from_pairs([("pod", format!("p\"{i}").as_str())]),
                t: 5,
                v: i as f64 / 3.0,
            })
            .collect();
        let (mut one, mut parts) = (String::new(), String::new());
        write_data_json_with(&Value::Vector(samples.clone()), &mut one, false);
        write_data_json_with(&Value::Vector(samples), &mut parts, true);
        assert!(one.len() > 100_000);
        assert!(one == parts, "the texts differ");
    }

    #[test]
    fn a_matrix_written_in_parts_reads_as_one_written_in_one() {
        // Series of uneven lengths, some empty, over the points that split the writing;
        // some at times of their own (negative, odd milliseconds), not the steps of the
        // longest series, whose texts the writer copies. The whole is written without
        // those texts.
        let series: Vec<Series> = (0..200)
            .map(|i| Series {
                labels: Labels::from_pairs([("pod", format!("p{i}").as_str())]),
                points: (0..(i * 37) % 1000)
                    .map(|j| {
                        let t = if i % 7 == 3 { j * 1_500 - 700_003 } else { j * 1_500 };
                        Point { t, v: (i * j) as f64 / 7.0 }
                    })
                    .collect(),
            })
            .collect();
        assert!(series.iter().map(|s| s.points.len()).sum::<usize>() >= 2 * PARALLEL_POINTS);
        let mut whole = String::new();
        write_each(&mut whole, &series, |out, s| write_one_series(out, s, &TimeTexts::of(&[])));
        let mut parts = String::new();
        write_series(&mut parts, &series, true);
        assert_eq!(parts, whole);
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        // Every ASCII character alone and between others, and some beyond ASCII: the
        // copy for strings with nothing to escape must not skip one that needs it.
        let mut cases: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        cases.extend((0u8..0x80).map(|b| format!("a{}z", char::from(b))));
        cases.extend(["", "é ü \u{2028} 😀", "plain_label-value:1.5"].map(str::to_owned));
        // And at every place of longer strings, which are tested many bytes at a time.
        for special in ['\0', '\u{1f}', '"', '\\'] {
            cases.extend((0..40).map(|at| (0..40).map(|i| if i == at { special } else { 'x' }).collect()));
        }
        for s in &cases {
            let mut out = String::new();
            write_str(&mut out, s);
            assert_eq!(serde_json::to_string(s).ok(), Some(out), "{s:?}");
        }
    }

    #[test]
    fn writer_equals_tree() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a\"b\\c\n"), ("é", "ü")]);
        let points = vec![
            Point { t: 1_000, v: 1.0 },
            Point { t: 1_500, v: f64::NAN },
            Point { t: -2_001, v: f64::INFINITY },
            Point { t: 3_000, v: -1e-300 },
        ];
        let values = [
            Value::Scalar { t: 1_234, v: 0.1 },
            Value::String { t: 0, v: "x\"y".into() },
            Value::Vector(vec![]),
            Value::Vector(vec![
                Sample { labels: labels.clone(), t: 5, v: f64::NEG_INFINITY },
                Sample { labels: Labels::empty(), t: 6_000, v: 2.5 },
            ]),
            Value::Matrix(vec![
                Series { labels: labels.clone(), points: points.clone() },
                Series { labels: Labels::empty(), points: vec![] },
            ]),
        ];
        for v in &values {
            let mut out = String::new();
            write_data_json(v, &mut out);
            assert_eq!(serde_json::from_str::<Json>(&out).ok(), Some(data_json(v)), "{out}");
        }
    }
}
