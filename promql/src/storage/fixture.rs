//! Recorded data as fixtures: files of samples loaded into a [`MemoryStore`].
//!
//! Four formats are read:
//!
//! - **OpenMetrics** text, as written for `promtool tsdb create-blocks-from openmetrics`
//!   (and by `gen_istio.py`);
//! - the classic **Prometheus text** format, with millisecond timestamps on every sample
//!   (a `/metrics` page saved with timestamps);
//! - **promqltest** scripts: the samples of every `load` block (`clear` and `eval`
//!   commands are ignored);
//! - **Prometheus HTTP API JSON**: the answer of `/api/v1/query_range`, or of
//!   `/api/v1/query` for a range selector (`resultType` `matrix`), or an instant
//!   vector (one sample per series).
//!
//! A fixture is loaded into a fresh store first and merged into the caller's store only
//! when all of it loaded, so a failed load changes nothing. Every sample counts against
//! a limit (the engine's sample limit), checked while reading.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::de::{self, IgnoredAny, Visitor};
use serde::Deserialize;

use super::exposition::{parse_go_float, scan_series_end, Dialect, ExpositionParser, LoadError};
use super::MemoryStore;
use crate::promqltest::script::{parse_script, Command};
use crate::value::Timestamp;
use crate::Labels;

/// JSON bytes allowed per sample of the limit: a JSON fixture larger than
/// `max_samples × JSON_BYTES_PER_SAMPLE + JSON_SLACK_BYTES` is refused before reading.
const JSON_BYTES_PER_SAMPLE: u64 = 20;
const JSON_SLACK_BYTES: u64 = 1 << 20;
/// The read buffer of [`load_fixture`], and how much of a file format detection sees.
const HEAD_BYTES: usize = 256 << 10;

/// The format of a fixture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FixtureFormat {
    /// OpenMetrics 1.0 text: float-second timestamps, ends with `# EOF`.
    OpenMetrics,
    /// The classic Prometheus text format, with integer millisecond timestamps.
    PrometheusText,
    /// A promqltest script: the samples of its `load` blocks.
    PromqlTest,
    /// A Prometheus HTTP API response (`matrix` or `vector` result).
    PrometheusJson,
}

impl FixtureFormat {
    /// A short name for messages: `OpenMetrics`, `Prometheus text`, `promqltest`,
    /// `Prometheus API JSON`.
    pub fn name(self) -> &'static str {
        match self {
            FixtureFormat::OpenMetrics => "OpenMetrics",
            FixtureFormat::PrometheusText => "Prometheus text",
            FixtureFormat::PromqlTest => "promqltest",
            FixtureFormat::PrometheusJson => "Prometheus API JSON",
        }
    }
}

impl fmt::Display for FixtureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a fixture load added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadStats {
    /// The format read.
    pub format: FixtureFormat,
    /// Distinct series in the fixture.
    pub series: usize,
    /// Distinct samples in the fixture (a series' second sample at one time replaces
    /// the first).
    pub samples: usize,
    /// Bytes read.
    pub bytes: u64,
    /// The earliest sample time, if any.
    pub min_time: Option<Timestamp>,
    /// The latest sample time, if any.
    pub max_time: Option<Timestamp>,
}

/// Guesses the format of a fixture from its first bytes (a few KiB are plenty):
///
/// - a JSON object with `"status"` or `"data"` keys: Prometheus API JSON;
/// - a `load <duration>`, `eval instant|range …` or `clear` line: promqltest;
/// - a `# EOF` line, or OpenMetrics-only signs (`# UNIT`, the OpenMetrics-only types,
///   float-second timestamps, exemplars, a `# TYPE x counter` family with `x_total`
///   samples) and no classic-only ones (`untyped`, blank lines, millisecond epoch
///   timestamps): OpenMetrics;
/// - any other text: the classic Prometheus text format.
///
/// `None` for empty input, binary data, and JSON that is not an API response.
///
/// ```
/// use promql::storage::{detect_format, FixtureFormat};
/// let om = b"# TYPE up gauge\nup{job=\"a\"} 1 1700000000.123\n";
/// assert_eq!(detect_format(om), Some(FixtureFormat::OpenMetrics));
/// assert_eq!(detect_format(b"up{job=\"a\"} 1 1700000000123\n"), Some(FixtureFormat::PrometheusText));
/// assert_eq!(detect_format(b"load 5m\n  up 1+1x10\n"), Some(FixtureFormat::PromqlTest));
/// let json = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
/// assert_eq!(detect_format(json), Some(FixtureFormat::PrometheusJson));
/// ```
pub fn detect_format(head: &[u8]) -> Option<FixtureFormat> {
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let text = match std::str::from_utf8(head) {
        Ok(s) => s,
        // Cut in the middle of a character.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
        Err(_) => return None,
    };
    if text.contains('\0') {
        return None;
    }
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return None;
    }
    if looks_like_json_object(trimmed) {
        let api = trimmed.contains("\"status\"") || trimmed.contains("\"data\"");
        return api.then_some(FixtureFormat::PrometheusJson);
    }
    // Whole lines only: the last one may be cut short.
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => text,
    };
    let (mut om, mut classic) = (false, false);
    let mut counter_family: Option<&str> = None;
    for raw in whole.lines() {
        let line = raw.trim();
        if is_promqltest_command(line) {
            return Some(FixtureFormat::PromqlTest);
        }
        if line.is_empty() {
            classic = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            if raw == "# EOF" {
                return Some(FixtureFormat::OpenMetrics);
            }
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                ["UNIT", ..] => om = true,
                ["TYPE", name, kind] => match *kind {
                    "gaugehistogram" | "info" | "stateset" | "unknown" => om = true,
                    "untyped" => classic = true,
                    "counter" => counter_family = Some(name),
                    _ => {}
                },
                _ => {}
            }
            continue;
        }
        let Some(end) = scan_series_end(line.as_bytes(), 0, false) else { continue };
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        if counter_family.is_some_and(|f| line[..name_end].strip_suffix("_total") == Some(f)) {
            om = true;
        }
        let mut rest = line[end..].split_whitespace().skip(1);
        match rest.next() {
            Some("#") => om = true,
            Some(ts) if ts.contains(['.', 'e', 'E']) => om = true,
            // Milliseconds since the epoch.
            Some(ts) if ts.parse::<i64>().is_ok_and(|t| t >= 100_000_000_000) => classic = true,
            _ => {}
        }
    }
    Some(if om && !classic { FixtureFormat::OpenMetrics } else { FixtureFormat::PrometheusText })
}

/// `{` followed by a `"key":` or `}`.
fn looks_like_json_object(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('{') else { return false };
    let rest = rest.trim_start();
    if rest.starts_with('}') {
        return true;
    }
    let b = rest.as_bytes();
    if b.first() != Some(&b'"') {
        return false;
    }
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return rest[i + 1..].trim_start().starts_with(':'),
            _ => i += 1,
        }
    }
    false
}

/// A promqltest command line: `load 5m`, `load_with_nhcb 1m`, `eval instant …`,
/// `eval_fail range …`, `clear`.
fn is_promqltest_command(line: &str) -> bool {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("load" | "load_with_nhcb"), Some(step)) => {
            step.starts_with(|c: char| c.is_ascii_digit()) && step.parse::<f64>().is_err()
        }
        (Some(w), Some("instant" | "range")) => w == "eval" || w.starts_with("eval_"),
        (Some("clear"), None) => true,
        _ => false,
    }
}

/// Loads a fixture file into `store`: detects the format when `format` is `None`,
/// streams the file (JSON and promqltest scripts are read whole; a JSON file larger
/// than about 20 bytes per allowed sample is refused unread), loads it into a fresh
/// store, and merges that into `store` only when the whole file loaded. More than
/// `max_samples` samples is an error, as is a text sample without a timestamp.
///
/// ```
/// use promql::storage::{load_fixture, FixtureFormat, MemoryStore};
/// let dir = std::env::temp_dir().join(format!("promql-doc-load-fixture-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("up.om");
/// std::fs::write(&path, "# TYPE up gauge\nup{job=\"api\"} 1 1700000000.000\nup{job=\"api\"} 0 1700000015.000\n# EOF\n")
///     .unwrap();
///
/// let mut store = MemoryStore::new();
/// let stats = load_fixture(&path, None, &mut store, 1_000_000).unwrap();
/// assert_eq!(stats.format, FixtureFormat::OpenMetrics);
/// assert_eq!((stats.series, stats.samples), (1, 2));
/// assert_eq!(stats.max_time, Some(1_700_000_015_000));
/// assert_eq!(store.sample_count(), 2);
///
/// let err = load_fixture(&path, None, &mut store, 1).unwrap_err();
/// assert!(err.to_string().ends_with("line 3: fixture has more than 1 samples (the engine's sample limit); \
///                                    load a smaller fixture or raise the limit"), "{err}");
/// assert_eq!(store.sample_count(), 2);
/// # std::fs::remove_dir_all(&dir).ok();
/// ```
pub fn load_fixture(
    path: &Path,
    format: Option<FixtureFormat>,
    store: &mut MemoryStore,
    max_samples: usize,
) -> Result<LoadStats, LoadError> {
    load_fixture_with_progress(path, format, store, max_samples, |_| {})
}

/// [`load_fixture`], calling `on_read` with the number of bytes of each read as the
/// file is consumed (for a progress bar): the calls add up to the bytes loaded.
///
/// ```
/// use promql::storage::{load_fixture_with_progress, MemoryStore};
/// let dir = std::env::temp_dir().join(format!("promql-doc-progress-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("up.prom");
/// std::fs::write(&path, "up{job=\"api\"} 1 1700000000000\n").unwrap();
///
/// let mut store = MemoryStore::new();
/// let mut read = 0;
/// let stats = load_fixture_with_progress(&path, None, &mut store, 100, |n| read += n).unwrap();
/// assert_eq!(read, stats.bytes);
/// # std::fs::remove_dir_all(&dir).ok();
/// ```
pub fn load_fixture_with_progress(
    path: &Path,
    format: Option<FixtureFormat>,
    store: &mut MemoryStore,
    max_samples: usize,
    on_read: impl FnMut(u64),
) -> Result<LoadStats, LoadError> {
    let at = |e: LoadError| e.with_file(path);
    let file =
        File::open(path).map_err(|e| at(LoadError::new(0, format!("cannot open the fixture: {e}"))))?;
    let size =
        file.metadata().map_err(|e| at(LoadError::new(0, format!("cannot read the fixture: {e}"))))?.len();
    let mut reader = BufReader::with_capacity(HEAD_BYTES, file);
    let format = match format {
        Some(f) => f,
        None => {
            let head = reader.fill_buf().map_err(|e| at(LoadError::new(0, format!("read error: {e}"))))?;
            match detect_file_format(path, head, size) {
                Some(f) => f,
                None => {
                    return Err(at(LoadError::new(
                        0,
                        "cannot tell the fixture format (expected OpenMetrics, Prometheus text, \
                         a promqltest script or Prometheus API JSON); name the format explicitly",
                    )))
                }
            }
        }
    };
    if format == FixtureFormat::PrometheusJson && size > json_limit(max_samples) {
        return Err(at(json_too_large(size, max_samples)));
    }
    load_reader(ProgressReader { inner: reader, on_read }, format, store, max_samples).map_err(at)
}

/// Loads a fixture of a known format from any reader (see [`load_fixture`]): into a
/// fresh store, merged into `store` only when all of it loaded.
///
/// ```
/// use promql::storage::{load_reader, FixtureFormat, MemoryStore};
/// let text = "# A saved /metrics page, with timestamps.\nup{job=\"api\"} 1 1700000000000\n";
/// let mut store = MemoryStore::new();
/// let stats = load_reader(text.as_bytes(), FixtureFormat::PrometheusText, &mut store, 100).unwrap();
/// assert_eq!((stats.series, stats.samples, stats.bytes), (1, 1, text.len() as u64));
/// ```
pub fn load_reader<R: BufRead>(
    reader: R,
    format: FixtureFormat,
    store: &mut MemoryStore,
    max_samples: usize,
) -> Result<LoadStats, LoadError> {
    let mut reader = CountingReader { inner: reader, bytes: 0 };
    let mut loader =
        Loader { store: MemoryStore::new(), max_samples, seen: 0, min_time: None, max_time: None };
    match format {
        FixtureFormat::OpenMetrics => loader.exposition(&mut reader, Dialect::OpenMetrics)?,
        FixtureFormat::PrometheusText => loader.exposition(&mut reader, Dialect::PrometheusText)?,
        FixtureFormat::PromqlTest => {
            let mut text = String::new();
            reader.read_to_string(&mut text).map_err(|e| read_error(&e))?;
            loader.promqltest(&text)?;
        }
        FixtureFormat::PrometheusJson => {
            let limit = json_limit(max_samples);
            let mut json = Vec::new();
            (&mut reader).take(limit.saturating_add(1)).read_to_end(&mut json).map_err(|e| read_error(&e))?;
            if json.len() as u64 > limit {
                return Err(json_too_large(json.len() as u64, max_samples));
            }
            loader.json(&json)?;
        }
    }
    let stats = LoadStats {
        format,
        series: loader.store.series_count(),
        samples: loader.store.sample_count(),
        bytes: reader.bytes,
        min_time: loader.min_time,
        max_time: loader.max_time,
    };
    if store.series_count() == 0 {
        *store = loader.store;
    } else {
        store.merge(&loader.store);
    }
    Ok(stats)
}

fn json_limit(max_samples: usize) -> u64 {
    (max_samples as u64).saturating_mul(JSON_BYTES_PER_SAMPLE).saturating_add(JSON_SLACK_BYTES)
}

fn json_too_large(size: u64, max_samples: usize) -> LoadError {
    LoadError::new(
        0,
        format!(
            "JSON fixture of {size} bytes is too large for the limit of {max_samples} samples \
             (at most {} bytes are read); load a smaller fixture or raise the limit",
            json_limit(max_samples)
        ),
    )
}

fn read_error(e: &io::Error) -> LoadError {
    match e.kind() {
        io::ErrorKind::InvalidData => LoadError::new(0, "the fixture is not valid UTF-8"),
        _ => LoadError::new(0, format!("read error: {e}")),
    }
}

/// Whether the file's last non-blank line is `# EOF`.
/// The format of the file at `path` from its first bytes `head` and its `size`: like
/// [`detect_format`], and a file that starts like the classic text format but ends with
/// `# EOF` is OpenMetrics.
pub fn detect_file_format(path: &Path, head: &[u8], size: u64) -> Option<FixtureFormat> {
    match detect_format(head) {
        Some(FixtureFormat::PrometheusText) if ends_with_eof_marker(path, size) => {
            Some(FixtureFormat::OpenMetrics)
        }
        other => other,
    }
}

fn ends_with_eof_marker(path: &Path, size: u64) -> bool {
    let Ok(mut f) = File::open(path) else { return false };
    if f.seek(SeekFrom::Start(size.saturating_sub(64))).is_err() {
        return false;
    }
    let mut tail = Vec::with_capacity(64);
    if f.read_to_end(&mut tail).is_err() {
        return false;
    }
    let end = tail.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(0, |i| i + 1);
    let tail = &tail[..end];
    tail == b"# EOF" || tail.ends_with(b"\n# EOF")
}

/// A reader that counts the bytes consumed.
struct CountingReader<R> {
    inner: R,
    bytes: u64,
}

impl<R: BufRead> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.bytes += amt as u64;
        self.inner.consume(amt);
    }
}

/// A reader that reports the bytes consumed, for [`load_fixture_with_progress`].
struct ProgressReader<R, F> {
    inner: R,
    on_read: F,
}

impl<R: BufRead, F: FnMut(u64)> Read for ProgressReader<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_read)(n as u64);
        Ok(n)
    }
}

impl<R: BufRead, F: FnMut(u64)> BufRead for ProgressReader<R, F> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        (self.on_read)(amt as u64);
    }
}

/// The fresh store a fixture is loaded into, and the sample limit.
struct Loader {
    store: MemoryStore,
    max_samples: usize,
    seen: usize,
    min_time: Option<Timestamp>,
    max_time: Option<Timestamp>,
}

impl Loader {
    fn add(&mut self, line: usize, labels: &Labels, t: Timestamp, v: f64) -> Result<(), LoadError> {
        self.seen += 1;
        if self.seen > self.max_samples {
            return Err(LoadError::new(
                line,
                format!(
                    "fixture has more than {} samples (the engine's sample limit); \
                     load a smaller fixture or raise the limit",
                    self.max_samples
                ),
            ));
        }
        self.store.append(labels, t, v);
        self.min_time = Some(self.min_time.map_or(t, |m| m.min(t)));
        self.max_time = Some(self.max_time.map_or(t, |m| m.max(t)));
        Ok(())
    }

    fn exposition<R: BufRead>(&mut self, reader: R, dialect: Dialect) -> Result<(), LoadError> {
        let mut parser = ExpositionParser::new(reader, dialect);
        while let Some(sample) = parser.next() {
            let sample = sample?;
            let line = parser.line_number();
            let Some(t) = sample.timestamp_ms else {
                return Err(LoadError::new(
                    line,
                    format!(
                        "sample of {} has no timestamp; every sample of a fixture needs one{}",
                        sample.labels.metric_string(),
                        match dialect {
                            Dialect::OpenMetrics => " (seconds since the epoch)",
                            Dialect::PrometheusText => " (milliseconds since the epoch)",
                        }
                    ),
                ));
            };
            self.add(line, &sample.labels, t, sample.value)?;
        }
        Ok(())
    }

    fn promqltest(&mut self, text: &str) -> Result<(), LoadError> {
        let script = parse_script(text).map_err(|e| LoadError::new(e.line, e.message))?;
        for command in &script.commands {
            let Command::Load { series, .. } = command else { continue };
            for s in series {
                if s.has_histograms {
                    return Err(LoadError::new(
                        s.line,
                        format!("native histograms are not supported (series {})", s.labels.metric_string()),
                    ));
                }
                for p in &s.points {
                    self.add(s.line, &s.labels, p.t, p.v)?;
                }
            }
        }
        Ok(())
    }

    fn json(&mut self, json: &[u8]) -> Result<(), LoadError> {
        let head: ApiHead = serde_json::from_slice(json).map_err(|e| json_error(&e))?;
        match head.status.as_str() {
            "success" => {}
            "error" => {
                let kind = head.error_type.map(|t| format!("{t}: ")).unwrap_or_default();
                let message = head.error.unwrap_or_else(|| "no message".into());
                return Err(LoadError::new(
                    0,
                    format!("the fixture is an error response of the Prometheus API: {kind}{message}"),
                ));
            }
            other => {
                return Err(LoadError::new(0, format!("expected \"status\": \"success\", got {other:?}")));
            }
        }
        let Some(data) = head.data else {
            return Err(LoadError::new(0, "expected a \"data\" object in the response"));
        };
        let vector = match data.result_type.as_str() {
            "matrix" => false,
            "vector" => true,
            other => {
                return Err(LoadError::new(
                    0,
                    format!("expected a matrix or vector result, got resultType {other:?}"),
                ))
            }
        };
        let body: ApiBody = serde_json::from_slice(json).map_err(|e| json_error(&e))?;
        for (i, s) in body.data.result.into_iter().enumerate() {
            let labels = Labels::from_pairs(&s.metric);
            if s.histograms.is_some() || s.histogram.is_some() {
                return Err(LoadError::new(
                    0,
                    format!("native histograms are not supported (result {i}: {})", labels.metric_string()),
                ));
            }
            if vector {
                let Some((JsonTime(t), JsonFloat(v))) = s.value else {
                    return Err(LoadError::new(
                        0,
                        format!("result {i}: expected a \"value\" in a vector result"),
                    ));
                };
                self.add(0, &labels, t, v)?;
            } else {
                for (JsonTime(t), JsonFloat(v)) in s.values {
                    self.add(0, &labels, t, v)?;
                }
            }
        }
        Ok(())
    }
}

/// A JSON syntax or type error at its line.
fn json_error(e: &serde_json::Error) -> LoadError {
    let mut message = e.to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    LoadError::new(e.line(), format!("invalid Prometheus API JSON: {message} (column {})", e.column()))
}

/// The envelope of an API response.
#[derive(Deserialize)]
struct ApiHead {
    status: String,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<ApiHeadData>,
}

#[derive(Deserialize)]
struct ApiHeadData {
    #[serde(rename = "resultType")]
    result_type: String,
}

#[derive(Deserialize)]
struct ApiBody {
    data: ApiData,
}

#[derive(Deserialize)]
struct ApiData {
    result: Vec<ApiSeries>,
}

#[derive(Deserialize)]
struct ApiSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(JsonTime, JsonFloat)>,
    #[serde(default)]
    value: Option<(JsonTime, JsonFloat)>,
    #[serde(default)]
    histograms: Option<IgnoredAny>,
    #[serde(default)]
    histogram: Option<IgnoredAny>,
}

/// An API timestamp: float seconds (a number, or a string), in milliseconds.
struct JsonTime(Timestamp);

/// An API sample value: a string like `"1.5"`, `"NaN"`, `"+Inf"` (or a number).
struct JsonFloat(f64);

impl<'de> Deserialize<'de> for JsonTime {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = d.deserialize_any(NumberVisitor("timestamp"))?;
        if !secs.is_finite() {
            return Err(de::Error::custom(format!("invalid timestamp {secs}")));
        }
        Ok(JsonTime((secs * 1000.0).round() as Timestamp))
    }
}

impl<'de> Deserialize<'de> for JsonFloat {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberVisitor("sample value")).map(JsonFloat)
    }
}

/// A float from a JSON number or a string holding one (Go syntax).
struct NumberVisitor(&'static str);

impl Visitor<'_> for NumberVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} (a number or a string like \"1.5\")", self.0)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        parse_go_float(v).map_err(|why| E::custom(format!("invalid {} {v:?}: {why}", self.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::MatchOp;
    use crate::storage::LabelMatcher;
    use crate::storage::{SampleSource, Selection};
    use std::path::PathBuf;

    /// A fresh directory for one test.
    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("promql-fixture-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Everything in a store, as text.
    fn dump(store: &MemoryStore) -> Vec<String> {
        let all = store.select(&Selection { matchers: &[], start: i64::MIN, end: i64::MAX }).unwrap();
        let mut out: Vec<String> = all
            .iter()
            .map(|s| {
                let pts: Vec<String> = s.points.iter().map(|p| format!("{}@{}", p.v, p.t)).collect();
                format!("{} {}", s.labels, pts.join(" "))
            })
            .collect();
        out.sort();
        out
    }

    fn seeded_store() -> MemoryStore {
        let mut store = MemoryStore::new();
        store.append(&Labels::from_pairs([("__name__", "existing")]), 5, 1.0);
        store
    }

    const OM: &str = "# HELP istio_requests Total requests.\n\
                      # TYPE istio_requests counter\n\
                      istio_requests_total{code=\"200\"} 1 1700000000.123\n\
                      istio_requests_total{code=\"200\"} 4 1700000015.123\n\
                      # TYPE d histogram\n\
                      d_bucket{le=\"1\"} 1 1700000000.5\n\
                      d_bucket{le=\"+Inf\"} 2 1700000000.5\n\
                      d_count 2 1700000000.5\n\
                      d_sum 3 1700000000.5\n\
                      # EOF\n";

    #[test]
    fn detection() {
        use FixtureFormat::*;
        let cases: [(&[u8], Option<FixtureFormat>); 16] = [
            (b"", None),
            (b"  \n\n", None),
            (b"\x00\x01binary", None),
            (b"\xff\xfe", None),
            (br#"{"a": 1}"#, None),
            (br#"  {"status":"error","errorType":"bad_data","error":"x"}"#, Some(PrometheusJson)),
            (br#"{ "data" : {"resultType":"vector","result":[]}, "status":"success"}"#, Some(PrometheusJson)),
            (b"# a test\nload 5m\n  up 1 2 3\n\neval instant at 5m up\n", Some(PromqlTest)),
            (b"clear\n", Some(PromqlTest)),
            (b"eval_fail range from 0 to 5m step 1m foo\n", Some(PromqlTest)),
            (b"up 1\n# EOF\n", Some(OpenMetrics)),
            (b"# TYPE c counter\nc_total 1 1700000000.123\n", Some(OpenMetrics)),
            (b"# TYPE c counter\nc_total 1 17\n", Some(OpenMetrics)),
            (b"# TYPE c_total counter\nc_total 1 1700000000123\n", Some(PrometheusText)),
            (b"load 15\n{\"a.b\"} 2\n# TYPE x untyped\nx 1 1.5\n", Some(PrometheusText)),
            (b"x{a=\"}\"} 1 # {t=\"1\"} 1\n", Some(OpenMetrics)),
        ];
        for (head, want) in cases {
            assert_eq!(detect_format(head), want, "{:?}", String::from_utf8_lossy(head));
        }
        // The last, possibly cut, line does not count.
        assert_eq!(detect_format(b"a 1 1700000000123\nb 1 17000"), Some(PrometheusText));
    }

    #[test]
    fn load_openmetrics_and_text() {
        let dir = test_dir("om");
        let path = write(&dir, "a.om", OM);
        let mut store = MemoryStore::new();
        let stats = load_fixture(&path, None, &mut store, 100).unwrap();
        assert_eq!(
            stats,
            LoadStats {
                format: FixtureFormat::OpenMetrics,
                series: 5,
                samples: 6,
                bytes: OM.len() as u64,
                min_time: Some(1_700_000_000_123),
                max_time: Some(1_700_000_015_123),
            }
        );
        let m = [LabelMatcher::new("le", MatchOp::Equal, "1").unwrap()];
        let got = store.select(&Selection { matchers: &m, start: 0, end: i64::MAX }).unwrap();
        assert_eq!(got[0].labels.to_string(), r#"{__name__="d_bucket", le="1"}"#);

        // The same data in the classic format, loaded on top: same series, same samples.
        let text = "istio_requests_total{code=\"200\"} 1 1700000000123\n\n\
                    istio_requests_total{code=\"200\"} 4 1700000015123\n";
        let path = write(&dir, "a.prom", text);
        let stats = load_fixture(&path, None, &mut store, 100).unwrap();
        assert_eq!((stats.format, stats.series, stats.samples), (FixtureFormat::PrometheusText, 1, 2));
        assert_eq!((store.series_count(), store.sample_count()), (5, 6));

        // An OpenMetrics file whose head looks like the classic format: the final # EOF decides.
        let mut long: String = (0..20_000).map(|i| format!("up{{i=\"{i}\"}} 1 17\n")).collect();
        assert!(long.len() > HEAD_BYTES);
        assert_eq!(detect_format(long.as_bytes()), Some(FixtureFormat::PrometheusText));
        long.push_str("# EOF\n");
        let path = write(&dir, "b.txt", &long);
        let stats = load_fixture(&path, None, &mut store, 100_000).unwrap();
        assert_eq!((stats.format, stats.samples), (FixtureFormat::OpenMetrics, 20_000));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn sample_limit_and_failed_loads_leave_the_store_unchanged() {
        let dir = test_dir("limit");
        let path = write(&dir, "a.om", OM);
        let mut store = seeded_store();
        let before = dump(&store);
        let e = load_fixture(&path, None, &mut store, 5).unwrap_err();
        assert_eq!(e.line, 9);
        assert_eq!(e.file.as_deref(), Some(path.as_path()));
        assert_eq!(
            e.to_string(),
            format!(
                "{}: line 9: fixture has more than 5 samples (the engine's sample limit); \
                 load a smaller fixture or raise the limit",
                path.display()
            )
        );
        assert_eq!(dump(&store), before);
        assert_eq!(load_fixture(&path, None, &mut store, 6).unwrap().samples, 6);
        assert_eq!(store.sample_count(), 7);

        // A syntax error on the last line.
        let mut store = seeded_store();
        let bad = OM.replace("# EOF\n", "d_sum{ 1 2\n# EOF\n");
        let path = write(&dir, "bad.om", &bad);
        let e = load_fixture(&path, Some(FixtureFormat::OpenMetrics), &mut store, 100).unwrap_err();
        assert_eq!(e.line, 10, "{e}");
        assert_eq!(dump(&store), before);

        // A sample without a timestamp.
        let path = write(&dir, "nots.prom", "a 1 1000\nb 2\n");
        let e = load_fixture(&path, None, &mut store, 100).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("sample of b has no timestamp"), "{e}");
        assert_eq!(dump(&store), before);

        // No # EOF.
        let path = write(&dir, "noeof.om", &OM.replace("# EOF\n", ""));
        let e = load_fixture(&path, Some(FixtureFormat::OpenMetrics), &mut store, 100).unwrap_err();
        assert!(e.message.contains("does not end with # EOF"), "{e}");
        assert_eq!(dump(&store), before);

        let e = load_fixture(&dir.join("missing.om"), None, &mut store, 100).unwrap_err();
        assert!(e.to_string().contains("missing.om: cannot open the fixture"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn promqltest_scripts() {
        let script = "# comment\nload 1m\n  up{job=\"a\"} 1+1x2\n  down _ stale 3\n\n\
                      eval instant at 1m up\n  up{job=\"a\"} 2\n\nclear\n\nload 5m\n  other 7\n";
        let mut store = seeded_store();
        let stats = load_reader(script.as_bytes(), FixtureFormat::PromqlTest, &mut store, 100).unwrap();
        assert_eq!((stats.series, stats.samples), (3, 6));
        let d = dump(&store);
        assert_eq!(d[0], r#"{__name__="down"} NaN@60000 3@120000"#);
        assert_eq!(d[3], r#"{__name__="up", job="a"} 1@0 2@60000 3@120000"#);
        let m = [LabelMatcher::new("__name__", MatchOp::Equal, "down").unwrap()];
        let down = store.select(&Selection { matchers: &m, start: 0, end: i64::MAX }).unwrap();
        assert!(crate::value::is_stale_marker(down[0].points[0].v));

        let hist = "load 1m\n  a 1\n  b {{schema:0 sum:1 count:1}}\n";
        let mut store = seeded_store();
        let e = load_reader(hist.as_bytes(), FixtureFormat::PromqlTest, &mut store, 100).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("line 3: native histograms are not supported"), "{e}");
        assert_eq!(store.series_count(), 1);

        let e = load_reader("load 1m\n  a 0+1x10\n".as_bytes(), FixtureFormat::PromqlTest, &mut store, 5)
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.starts_with("fixture has more than 5 samples"));
        let e = load_reader("load x\n".as_bytes(), FixtureFormat::PromqlTest, &mut store, 5).unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn prometheus_api_json() {
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","job":"a"},"values":[[1700000000.123,"1"],[1700000015.123,"NaN"]]},
            {"metric":{},"values":[[1700000000,"+Inf"]]}]}}"#;
        let mut store = seeded_store();
        let stats = load_reader(matrix.as_bytes(), FixtureFormat::PrometheusJson, &mut store, 100).unwrap();
        assert_eq!((stats.series, stats.samples, stats.min_time), (2, 3, Some(1_700_000_000_000)));
        assert_eq!(
            dump(&store),
            [
                r#"{__name__="existing"} 1@5"#,
                r#"{__name__="up", job="a"} 1@1700000000123 NaN@1700000015123"#,
                "{} inf@1700000000000",
            ]
        );

        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up"},"value":[1700000000.5,"2.5"]}]},"warnings":["w"]}"#;
        let mut store = MemoryStore::new();
        let stats = load_reader(vector.as_bytes(), FixtureFormat::PrometheusJson, &mut store, 100).unwrap();
        assert_eq!((stats.samples, stats.max_time), (1, Some(1_700_000_000_500)));

        let error = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\""}"#;
        let e = load_reader(error.as_bytes(), FixtureFormat::PrometheusJson, &mut store, 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the fixture is an error response of the Prometheus API: bad_data: invalid parameter \"query\""
        );
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#;
        let e = load_reader(scalar.as_bytes(), FixtureFormat::PrometheusJson, &mut store, 100).unwrap_err();
        assert!(e.message.contains("expected a matrix or vector result"), "{e}");
        let bad = "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[\n\
                   {\"metric\":{},\"values\":[[1,\"x\"]]}]}}";
        let e = load_reader(bad.as_bytes(), FixtureFormat::PrometheusJson, &mut store, 100).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("invalid sample value \"x\""), "{e}");
        let hist = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"h"},"histograms":[[1,{"count":"1","sum":"1","buckets":[]}]]}]}}"#;
        let e = load_reader(hist.as_bytes(), FixtureFormat::PrometheusJson, &mut store, 100).unwrap_err();
        assert!(e.message.contains("native histograms are not supported"), "{e}");
        let e = load_reader(matrix.as_bytes(), FixtureFormat::PrometheusJson, &mut store, 2).unwrap_err();
        assert!(e.message.starts_with("fixture has more than 2 samples"), "{e}");
        assert_eq!(store.sample_count(), 1);

        // Too large to read for the limit: refused before parsing.
        let dir = test_dir("json");
        let big = format!("{}{}", matrix, " ".repeat(JSON_SLACK_BYTES as usize + 100));
        let path = write(&dir, "big.json", &big);
        let e = load_fixture(&path, None, &mut store, 1).unwrap_err();
        assert!(e.message.contains("too large for the limit of 1 samples"), "{e}");
        let e = load_reader(big.as_bytes(), FixtureFormat::PrometheusJson, &mut store, 1).unwrap_err();
        assert!(e.message.contains("too large"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The generator of the side-by-side tools, loaded as Prometheus would backfill it.
    #[test]
    fn gen_istio_fixture_matches_its_meta() {
        // Not skipped when something is missing: scripts/test provides python3.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/gen_istio.py");
        assert!(script.exists(), "{} not found", script.display());
        let dir = test_dir("istio");
        let out = dir.join("istio.om");
        let status = std::process::Command::new("python3")
            .arg(&script)
            .args(["-W", "4", "-P", "2", "-M", "20", "-S", "15", "--seed", "1", "-o"])
            .arg(&out)
            .stderr(std::process::Stdio::null())
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "python3 {} failed: {status:?}",
            script.display()
        );
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("istio.om.meta.json")).unwrap()).unwrap();
        let mut store = MemoryStore::new();
        let stats = load_fixture(&out, None, &mut store, 10_000_000).unwrap();
        assert_eq!(stats.format, FixtureFormat::OpenMetrics);
        assert_eq!(stats.series as u64, meta["series"].as_u64().unwrap());
        assert_eq!(stats.samples as u64, meta["samples"].as_u64().unwrap());
        assert_eq!(stats.bytes, meta["bytes"].as_u64().unwrap());
        let (start, end) = (meta["start"].as_i64().unwrap() * 1000, meta["end"].as_i64().unwrap() * 1000);
        assert!(stats.min_time.unwrap() > start && stats.max_time.unwrap() < end);
        // Buckets keep their le spelling.
        let m = [
            LabelMatcher::new("__name__", MatchOp::Equal, "istio_request_duration_milliseconds_bucket")
                .unwrap(),
            LabelMatcher::new("le", MatchOp::Equal, "1").unwrap(),
        ];
        assert!(!store.select(&Selection { matchers: &m, start, end }).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
