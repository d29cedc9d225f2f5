//! A streaming parser of the text formats samples are exposed in: the classic
//! Prometheus text format (what `/metrics` endpoints serve as `text/plain`) and
//! OpenMetrics 1.0 text (what `promtool tsdb create-blocks-from openmetrics` backfills).
//!
//! The rules are those of Prometheus' own parsers (`model/textparse`), dialect by
//! dialect:
//!
//! | | OpenMetrics | Prometheus text |
//! |---|---|---|
//! | separators | exactly one space | any run of spaces and tabs |
//! | timestamps | float seconds (`1700000000.123`), kept as `int64(t × 1000)` like Go does | integer milliseconds |
//! | comments | only `# HELP`, `# TYPE`, `# UNIT`, `# EOF` | any `#` line; `# HELP`, `# TYPE` checked |
//! | blank lines | an error | skipped |
//! | end | `# EOF`, then nothing | end of input |
//! | types | counter, gauge, histogram, gaugehistogram, summary, info, stateset, unknown | counter, gauge, histogram, summary, untyped |
//! | exemplars (` # {…} v [t]`) | checked, then ignored | an error |
//!
//! Histograms and summaries are plain float series, exactly as Prometheus ingests
//! them (`x_bucket{le="…"}`, `x_count`, `x_sum`, `x{quantile="…"}`); `le` and
//! `quantile` values are kept verbatim (`le="1"` stays `"1"`). An OpenMetrics counter
//! family `x` has samples named `x_total` (and `x_created`), which are kept under
//! those names. `_created` series are loaded as ordinary series, as `promtool` and a
//! default Prometheus scrape do; [`ExpositionParser::skip_created_series`] drops them
//! the way Prometheus does with `--enable-feature=created-timestamp-zero-ingestion`.
//!
//! Label values take the escapes `\\`, `\"` and `\n`; any other backslash pair is kept
//! as written (as in Prometheus). Labels with empty values are dropped, a repeated
//! label name is an error. Metric and label names may be quoted UTF-8 strings:
//! `{"my.metric", "my.label"="v"} 1`. A NaN value is stored as Prometheus' normal NaN,
//! never as a staleness marker.
//!
//! The parser reads line by line from any [`BufRead`] (a file, an HTTP body, a byte
//! slice), reuses its buffers, and remembers the label sets of recent lines, so that a
//! line repeating a series costs no allocation.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::BufRead;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::labels::{Label, Labels, METRIC_NAME};
use crate::value::Timestamp;

/// The NaN Prometheus stores for a NaN sample value (`value.NormalNaN`).
const NORMAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;
/// Label sets remembered by their text; the cache is emptied when it is full.
const SERIES_CACHE_LIMIT: usize = 4096;
/// Distinct label strings shared between parsed label sets; emptied when full.
const STRING_POOL_LIMIT: usize = 1 << 16;

/// A fixture or exposition that cannot be loaded: where, and what was expected.
///
/// `line` is 1-based; 0 means the error is not tied to one line (a file that cannot be
/// opened, a JSON document that is too large).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", location(.file, *.line))]
pub struct LoadError {
    /// The file, when known.
    pub file: Option<PathBuf>,
    /// 1-based line, or 0.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn location(file: &Option<PathBuf>, line: usize) -> String {
    match (file, line) {
        (Some(f), 0) => format!("{}: ", f.display()),
        (Some(f), n) => format!("{}: line {n}: ", f.display()),
        (None, 0) => String::new(),
        (None, n) => format!("line {n}: "),
    }
}

impl LoadError {
    /// An error at a 1-based line (0: not tied to a line).
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        LoadError { file: None, line, message: message.into() }
    }

    /// The same error, naming the file it is in.
    pub fn with_file(mut self, path: impl AsRef<Path>) -> Self {
        self.file = Some(path.as_ref().to_path_buf());
        self
    }
}

/// Which text format a parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OpenMetrics 1.0 text (`application/openmetrics-text`): float-second timestamps,
    /// single spaces, and a final `# EOF`.
    OpenMetrics,
    /// The classic Prometheus text format (`text/plain; version=0.0.4`): integer
    /// millisecond timestamps, free spacing, `#` comments.
    PrometheusText,
}

impl Dialect {
    /// The dialect of an HTTP `Content-Type`, as Prometheus picks its parser:
    /// `application/openmetrics-text` is OpenMetrics, anything else the classic text
    /// format.
    ///
    /// ```
    /// use promql::storage::exposition::Dialect;
    /// let om = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    /// assert_eq!(Dialect::from_content_type(om), Dialect::OpenMetrics);
    /// assert_eq!(Dialect::from_content_type("text/plain; version=0.0.4"), Dialect::PrometheusText);
    /// ```
    pub fn from_content_type(content_type: &str) -> Dialect {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            Dialect::OpenMetrics
        } else {
            Dialect::PrometheusText
        }
    }
}

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSample {
    /// The series, metric name included. Consecutive samples of one series share
    /// the same (cheaply cloned) label set.
    pub labels: Labels,
    /// The sample's own timestamp in milliseconds, when the line has one.
    pub timestamp_ms: Option<Timestamp>,
    /// The value.
    pub value: f64,
}

/// The metric type of the last `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    Stateset,
    Unknown,
}

impl MetricType {
    fn parse(text: &[u8], dialect: Dialect) -> Option<MetricType> {
        let t = match (text, dialect) {
            (b"counter", _) => MetricType::Counter,
            (b"gauge", _) => MetricType::Gauge,
            (b"histogram", _) => MetricType::Histogram,
            (b"summary", _) => MetricType::Summary,
            (b"untyped", Dialect::PrometheusText) => MetricType::Unknown,
            (b"gaugehistogram", Dialect::OpenMetrics) => MetricType::GaugeHistogram,
            (b"info", Dialect::OpenMetrics) => MetricType::Info,
            (b"stateset", Dialect::OpenMetrics) => MetricType::Stateset,
            (b"unknown", Dialect::OpenMetrics) => MetricType::Unknown,
            _ => return None,
        };
        Some(t)
    }

    /// The types whose families have `_created` samples.
    fn has_created(self) -> bool {
        matches!(self, MetricType::Counter | MetricType::Summary | MetricType::Histogram)
    }
}

/// A streaming parser of a text exposition: an iterator of its samples.
///
/// After the first error the iterator ends. [`line_number`](Self::line_number) is the
/// line of the sample (or error) last returned.
///
/// ```
/// use promql::storage::exposition::{Dialect, ExpositionParser};
/// let text = "# HELP http_requests Requests served.\n\
///             ## TYPE http_requests counter\n\
///             http_requests_total{code=\"200\"} 1027 1700000000.5 # {trace_id=\"a1\"} 1\n\
///             http_requests_total{code=\"500\"} 3 1700000000.5\n\
///             ## EOF\n";
/// let samples = ExpositionParser::new(text.as_bytes(), Dialect::OpenMetrics)
///     .collect::<Result<Vec<_>, _>>()
///     .unwrap();
/// assert_eq!(samples.len(), 2);
/// assert_eq!(samples[0].labels.to_string(), r#"{__name__="http_requests_total", code="200"}"#);
/// assert_eq!(samples[0].timestamp_ms, Some(1_700_000_000_500));
/// assert_eq!(samples[1].value, 3.0);
///
/// let err = ExpositionParser::new("up{job=\"api} 1\n".as_bytes(), Dialect::PrometheusText)
///     .next()
///     .unwrap()
///     .unwrap_err();
/// assert_eq!(err.line, 1);
/// assert!(err.to_string().starts_with("line 1: unterminated label value"), "{err}");
/// ```
#[derive(Debug)]
pub struct ExpositionParser<R> {
    reader: R,
    dialect: Dialect,
    skip_created: bool,
    buf: Vec<u8>,
    line_no: usize,
    finished: bool,
    seen_eof: bool,
    mtype: MetricType,
    cache: SeriesCache,
    builder: LabelBuilder,
}

impl<R: BufRead> ExpositionParser<R> {
    /// A parser of `reader` in the given dialect.
    pub fn new(reader: R, dialect: Dialect) -> Self {
        ExpositionParser {
            reader,
            dialect,
            skip_created: false,
            buf: Vec::with_capacity(512),
            line_no: 0,
            finished: false,
            seen_eof: false,
            mtype: MetricType::Unknown,
            cache: SeriesCache::default(),
            builder: LabelBuilder::default(),
        }
    }

    /// Whether to drop the `_created` samples of OpenMetrics counter, summary and
    /// histogram families (default: keep them, as `promtool` and Prometheus without
    /// the `created-timestamp-zero-ingestion` feature do).
    pub fn skip_created_series(mut self, skip: bool) -> Self {
        self.skip_created = skip;
        self
    }

    /// The dialect read.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// How many lines have been read: the line of the last sample or error returned.
    pub fn line_number(&self) -> usize {
        self.line_no
    }

    fn fail(&mut self, line: usize, message: String) -> Option<Result<ParsedSample, LoadError>> {
        self.finished = true;
        Some(Err(LoadError::new(line, message)))
    }

    /// Parses one line (without its line break): a sample, or `None` for metadata.
    fn parse_line(&mut self, line: &[u8]) -> Result<Option<ParsedSample>, String> {
        match self.dialect {
            Dialect::OpenMetrics => match line.first() {
                None => Err("expected a sample or a '# ' line, got an empty line \
                             (OpenMetrics allows no blank lines)"
                    .into()),
                Some(b'#') => self.om_comment(line).map(|()| None),
                Some(_) => self.sample(line, 0),
            },
            Dialect::PrometheusText => {
                let start = skip_ws(line, 0);
                match line.get(start) {
                    None => Ok(None),
                    Some(b'#') => self.text_comment(&line[start + 1..]).map(|()| None),
                    Some(_) => self.sample(line, start),
                }
            }
        }
    }

    /// An OpenMetrics `#` line.
    fn om_comment(&mut self, line: &[u8]) -> Result<(), String> {
        let Some(rest) = line.strip_prefix(b"# ") else {
            return Err(format!(
                "expected '# HELP', '# TYPE', '# UNIT' or '# EOF', got {}",
                quote_bytes(line)
            ));
        };
        if rest == b"EOF" {
            self.seen_eof = true;
            return Ok(());
        }
        let (kind, rest) = if let Some(r) = rest.strip_prefix(b"HELP ") {
            ("HELP", r)
        } else if let Some(r) = rest.strip_prefix(b"TYPE ") {
            ("TYPE", r)
        } else if let Some(r) = rest.strip_prefix(b"UNIT ") {
            ("UNIT", r)
        } else {
            return Err(format!(
                "expected HELP, TYPE, UNIT or EOF after '# ' (OpenMetrics has no other comments), got {}",
                quote_bytes(line)
            ));
        };
        let Some(name_end) = metadata_name_end(rest) else {
            return Err(format!("expected a metric name after '# {kind} ', found {}", found(rest, 0)));
        };
        let Some(text) = rest[name_end..].strip_prefix(b" ") else {
            return Err(format!(
                "expected a space and the {} after the metric name, found {}",
                kind.to_ascii_lowercase(),
                found(rest, name_end)
            ));
        };
        self.metadata(kind, unquote_name(&rest[..name_end]), text)
    }

    /// A classic-text `#` line (after the `#`): `HELP`, `TYPE`, or a comment.
    fn text_comment(&mut self, rest: &[u8]) -> Result<(), String> {
        let ws = skip_ws(rest, 0);
        if ws == 0 {
            return Ok(());
        }
        let rest = &rest[ws..];
        let kind = match rest.get(..4) {
            Some(b"HELP") => "HELP",
            Some(b"TYPE") => "TYPE",
            _ => return Ok(()),
        };
        let after = skip_ws(rest, 4);
        if after == 4 {
            return Ok(()); // `# HELPER …`: a comment.
        }
        let rest = &rest[after..];
        let Some(name_end) = metadata_name_end(rest) else {
            return Err(format!("expected a metric name after '# {kind} ', found {}", found(rest, 0)));
        };
        // Prometheus takes the rest of the line minus its first character.
        let text = rest.get(name_end + 1..).unwrap_or(b"");
        self.metadata(kind, unquote_name(&rest[..name_end]), text)
    }

    fn metadata(&mut self, kind: &str, name: &[u8], text: &[u8]) -> Result<(), String> {
        match kind {
            "TYPE" => match MetricType::parse(text, self.dialect) {
                Some(t) => self.mtype = t,
                None => {
                    let expected = match self.dialect {
                        Dialect::OpenMetrics => {
                            "counter, gauge, histogram, gaugehistogram, summary, info, stateset or unknown"
                        }
                        Dialect::PrometheusText => "counter, gauge, histogram, summary or untyped",
                    };
                    return Err(format!("invalid metric type {}: expected {expected}", quote_bytes(text)));
                }
            },
            "HELP" => {
                if std::str::from_utf8(text).is_err() {
                    return Err("HELP text is not valid UTF-8".into());
                }
            }
            _ => {
                // UNIT: a non-empty unit must be the `_unit` suffix of the name.
                let ok = text.is_empty()
                    || (name.len() > text.len()
                        && name.ends_with(text)
                        && name[name.len() - text.len() - 1] == b'_');
                if !ok {
                    return Err(format!(
                        "unit {} is not a suffix of metric {} (expected the name to end in _<unit>)",
                        quote_bytes(text),
                        quote_bytes(name)
                    ));
                }
            }
        }
        Ok(())
    }

    /// A sample line whose series starts at `start`.
    fn sample(&mut self, line: &[u8], start: usize) -> Result<Option<ParsedSample>, String> {
        let om = self.dialect == Dialect::OpenMetrics;
        let (labels, end) = self.series(line, start, om)?;
        let (value, timestamp_ms) = if om { self.om_tail(line, end)? } else { text_tail(line, end)? };
        if om
            && self.skip_created
            && self.mtype.has_created()
            && labels.metric_name().is_some_and(|n| n.ends_with("_created"))
        {
            return Ok(None);
        }
        Ok(Some(ParsedSample { labels, timestamp_ms, value }))
    }

    /// The label set of the series starting at `start`, and where it ends.
    fn series(&mut self, line: &[u8], start: usize, om: bool) -> Result<(Labels, usize), String> {
        if let Some(labels) = self.cache.repeats_last(line, start, om) {
            return Ok((labels, start + self.cache.last_key.len()));
        }
        if let Some(end) = scan_series_end(line, start, om) {
            if let Some(labels) = self.cache.map.get(&line[start..end]) {
                let labels = labels.clone();
                self.cache.remember_last(&line[start..end], &labels);
                return Ok((labels, end));
            }
        }
        let (labels, end) = self.builder.series(line, start, om)?;
        self.cache.insert(&line[start..end], &labels);
        Ok((labels, end))
    }

    /// The OpenMetrics end of a sample line: ` value[ timestamp][ # {exemplar} v[ t]]`.
    fn om_tail(&mut self, line: &[u8], end: usize) -> Result<(f64, Option<Timestamp>), String> {
        if line.get(end) != Some(&b' ') {
            return Err(format!(
                "expected a space and the value after the series, found {}",
                found(line, end)
            ));
        }
        let (vtok, rest) = split_token(&line[end + 1..]);
        if vtok.is_empty() {
            return Err(format!("expected a value after the series, found {}", found(line, end + 1)));
        }
        let value = parse_value(vtok)?;
        if rest.is_empty() {
            return Ok((value, None));
        }
        if rest.starts_with(b" # {") {
            self.exemplar(line, line.len() - rest.len() + 3)?;
            return Ok((value, None));
        }
        let (ttok, rest) = split_token(&rest[1..]);
        if ttok.is_empty() {
            return Err(format!(
                "expected a timestamp or an exemplar (' # {{…}} value') after the value, found {}",
                found(line, line.len() - rest.len())
            ));
        }
        let ts = parse_om_timestamp(ttok)?;
        if rest.starts_with(b" # {") {
            self.exemplar(line, line.len() - rest.len() + 3)?;
        } else if !rest.is_empty() {
            return Err(format!(
                "expected the end of the line or an exemplar (' # {{…}} value') after the timestamp, found {}",
                found(line, line.len() - rest.len())
            ));
        }
        Ok((value, Some(ts)))
    }

    /// Checks (and ignores) an exemplar whose label set starts at `line[pos] == b'{'`.
    fn exemplar(&mut self, line: &[u8], pos: usize) -> Result<(), String> {
        let end =
            self.builder.label_block(line, pos, true, true, false).map_err(|e| format!("exemplar: {e}"))?;
        if line.get(end) != Some(&b' ') {
            return Err(format!(
                "expected a space and the exemplar value after its labels, found {}",
                found(line, end)
            ));
        }
        let (vtok, rest) = split_token(&line[end + 1..]);
        if vtok.is_empty() {
            return Err(format!("expected the exemplar value, found {}", found(line, end + 1)));
        }
        parse_value(vtok).map_err(|e| format!("exemplar: {e}"))?;
        if rest.is_empty() {
            return Ok(());
        }
        let (ttok, rest) = split_token(&rest[1..]);
        if ttok.is_empty() {
            return Err(format!(
                "expected the exemplar timestamp or the end of the line, found {}",
                found(line, line.len() - rest.len())
            ));
        }
        parse_om_timestamp(ttok).map_err(|e| format!("exemplar: {e}"))?;
        if !rest.is_empty() {
            return Err(format!(
                "expected the end of the line after the exemplar timestamp, found {}",
                found(line, line.len() - rest.len())
            ));
        }
        Ok(())
    }
}

impl<R: BufRead> Iterator for ExpositionParser<R> {
    type Item = Result<ParsedSample, LoadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        loop {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Err(e) => return self.fail(self.line_no + 1, format!("read error: {e}")),
                Ok(0) => {
                    self.finished = true;
                    if self.dialect == Dialect::OpenMetrics && !self.seen_eof {
                        return self.fail(self.line_no.max(1), "data does not end with # EOF".into());
                    }
                    return None;
                }
                Ok(_) => {}
            }
            self.line_no += 1;
            if self.seen_eof {
                return self.fail(self.line_no, "unexpected data after # EOF".into());
            }
            let mut line = std::mem::take(&mut self.buf);
            let len = line.len() - usize::from(line.last() == Some(&b'\n'));
            let parsed = self.parse_line(&line[..len]);
            line.clear();
            self.buf = line;
            match parsed {
                Ok(Some(sample)) => return Some(Ok(sample)),
                Ok(None) => continue,
                Err(message) => return self.fail(self.line_no, message),
            }
        }
    }
}

/// Label sets of recent series, by the exact text of their name and label block.
#[derive(Debug, Default)]
struct SeriesCache {
    /// The text of the previous sample line's series, when `last` is set.
    last_key: Vec<u8>,
    last: Option<Labels>,
    map: HashMap<Box<[u8]>, Labels, BuildHasherDefault<FxHasher>>,
}

impl SeriesCache {
    /// The previous line's labels, if `line` starts with the same series text.
    fn repeats_last(&self, line: &[u8], start: usize, om: bool) -> Option<Labels> {
        let labels = self.last.as_ref()?;
        let key = &self.last_key[..];
        let end = start + key.len();
        if line.get(start..end)? != key {
            return None;
        }
        let ok = if om {
            // The key is a whole series; a space must follow it.
            line.get(end) == Some(&b' ')
        } else if key.last() == Some(&b'}') {
            true
        } else {
            // A bare name: it must not continue, nor be followed by a label block.
            !line.get(end).is_some_and(|&c| is_name_char(c)) && line.get(skip_ws(line, end)) != Some(&b'{')
        };
        ok.then(|| labels.clone())
    }

    fn remember_last(&mut self, key: &[u8], labels: &Labels) {
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.last = Some(labels.clone());
    }

    fn insert(&mut self, key: &[u8], labels: &Labels) {
        if self.map.len() >= SERIES_CACHE_LIMIT {
            self.map.clear();
        }
        self.map.insert(key.into(), labels.clone());
        self.remember_last(key, labels);
    }
}

/// FxHash (rustc's hasher): a fast hash of the series text for the cache.
#[derive(Debug, Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Builds label sets from series text, with reused buffers and shared strings.
#[derive(Debug, Default)]
struct LabelBuilder {
    /// Unescaped names and values.
    scratch: String,
    /// (name, value) ranges in `scratch`.
    spans: Vec<(Range<usize>, Range<usize>)>,
    order: Vec<usize>,
    pool: HashSet<Arc<str>>,
}

impl LabelBuilder {
    /// Parses the series starting at `start`: its labels and where it ends.
    fn series(&mut self, line: &[u8], start: usize, om: bool) -> Result<(Labels, usize), String> {
        self.scratch.clear();
        self.spans.clear();
        let mut end;
        let mut has_name = false;
        if line.get(start).is_some_and(|&c| is_name_start(c)) {
            end = name_end(line, start);
            // A bare metric name is ASCII.
            let name = std::str::from_utf8(&line[start..end]).map_err(|_| "invalid metric name")?;
            self.push_label(METRIC_NAME, name, false);
            has_name = true;
            let after = if om { end } else { skip_ws(line, end) };
            if line.get(after) == Some(&b'{') {
                end = self.label_block(line, after, om, false, true)?;
            }
        } else if line.get(start) == Some(&b'{') {
            end = self.label_block(line, start, om, false, false)?;
        } else {
            return Err(format!("expected a metric name or '{{', found {}", found(line, start)));
        }
        let named = has_name || self.spans.iter().any(|(n, _)| &self.scratch[n.clone()] == METRIC_NAME);
        if !named {
            return Err("metric name not set: expected a name before '{' or a quoted name inside it".into());
        }
        Ok((self.build()?, end))
    }

    /// Adds `name=value` to the scratch label list.
    fn push_label(&mut self, name: &str, value: &str, unescape: bool) {
        let n0 = self.scratch.len();
        self.scratch.push_str(name);
        let n1 = self.scratch.len();
        if unescape {
            push_unescaped(&mut self.scratch, value);
        } else {
            self.scratch.push_str(value);
        }
        self.spans.push((n0..n1, n1..self.scratch.len()));
    }

    /// Parses a label block `{…}` starting at `line[pos] == b'{'` into the scratch list;
    /// returns the index after the `}`. `name_set`: the metric name came before the
    /// braces. In an exemplar, a quoted metric name is not allowed.
    fn label_block(
        &mut self,
        line: &[u8],
        pos: usize,
        om: bool,
        exemplar: bool,
        mut name_set: bool,
    ) -> Result<usize, String> {
        let mut i = pos + 1;
        loop {
            if !om {
                i = skip_ws(line, i);
            }
            // A label name, or a quoted metric name.
            let (name_range, quoted) = match line.get(i) {
                Some(b'}') => return Ok(i + 1),
                Some(b'"') => {
                    let close = quoted_end(line, i).ok_or_else(|| {
                        format!(
                            "unterminated quoted name: expected a closing '\"' in {}",
                            quote_bytes(&line[i..])
                        )
                    })?;
                    (i + 1..close - 1, true)
                }
                Some(&c) if is_label_start(c) => {
                    let mut j = i + 1;
                    while line.get(j).is_some_and(|&c| is_label_char(c)) {
                        j += 1;
                    }
                    (i..j, false)
                }
                _ => return Err(format!("expected a label name or '}}', found {}", found(line, i))),
            };
            i = if quoted { name_range.end + 1 } else { name_range.end };
            let raw_name = utf8(&line[name_range], "label name")?;
            if !om {
                i = skip_ws(line, i);
            }
            if quoted && matches!(line.get(i), Some(b',' | b'}')) && !exemplar {
                // `{"metric.name", …}`.
                if name_set {
                    return Err("metric name already set: expected one metric name".into());
                }
                name_set = true;
                if raw_name.is_empty() {
                    return Err("empty metric name".into());
                }
                self.push_label(METRIC_NAME, "", false);
                let last = self.spans.len() - 1;
                let v0 = self.scratch.len();
                push_unescaped(&mut self.scratch, raw_name);
                self.spans[last].1 = v0..self.scratch.len();
                if line.get(i) == Some(&b',') {
                    i += 1;
                }
                continue;
            }
            if line.get(i) != Some(&b'=') {
                return Err(format!("expected '=' after label name {raw_name:?}, found {}", found(line, i)));
            }
            i += 1;
            if !om {
                i = skip_ws(line, i);
            }
            if line.get(i) != Some(&b'"') {
                return Err(format!(
                    "expected a quoted label value after {raw_name:?}=, found {}",
                    found(line, i)
                ));
            }
            let close = quoted_end(line, i).ok_or_else(|| {
                format!("unterminated label value of {raw_name:?}: expected a closing '\"'")
            })?;
            let raw_value = utf8(&line[i + 1..close - 1], "label value")?;
            let n0 = self.scratch.len();
            if quoted {
                push_unescaped(&mut self.scratch, raw_name);
            } else {
                self.scratch.push_str(raw_name);
            }
            let n1 = self.scratch.len();
            if n0 == n1 {
                return Err("empty label name".into());
            }
            push_unescaped(&mut self.scratch, raw_value);
            self.spans.push((n0..n1, n1..self.scratch.len()));
            i = close;
            if om {
                match line.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {}
                    _ => {
                        return Err(format!(
                            "expected ',' or '}}' after the value of {raw_name:?}, found {}",
                            found(line, i)
                        ))
                    }
                }
            } else {
                // The classic format also accepts label pairs separated by spaces only.
                i = skip_ws(line, i);
                if line.get(i) == Some(&b',') {
                    i += 1;
                }
            }
        }
    }

    /// The label set of the scratch list: sorted, without empty values, no name twice.
    fn build(&mut self) -> Result<Labels, String> {
        let scratch = &self.scratch;
        let spans = &self.spans;
        self.order.clear();
        self.order.extend(0..spans.len());
        self.order.sort_unstable_by(|&a, &b| scratch[spans[a].0.clone()].cmp(&scratch[spans[b].0.clone()]));
        for w in self.order.windows(2) {
            let name = &scratch[spans[w[0]].0.clone()];
            if name == &scratch[spans[w[1]].0.clone()] {
                return Err(format!("duplicate label name {name:?}"));
            }
        }
        let mut labels = Vec::with_capacity(spans.len());
        for &k in &self.order {
            let (n, v) = &spans[k];
            if v.is_empty() {
                continue;
            }
            let name = intern(&mut self.pool, &scratch[n.clone()]);
            let value = intern(&mut self.pool, &scratch[v.clone()]);
            labels.push(Label { name, value });
        }
        Ok(Labels::from_interned(labels))
    }
}

/// The pooled copy of `s`.
fn intern(pool: &mut HashSet<Arc<str>>, s: &str) -> Arc<str> {
    if let Some(a) = pool.get(s) {
        return a.clone();
    }
    if pool.len() >= STRING_POOL_LIMIT {
        pool.clear();
    }
    let a: Arc<str> = Arc::from(s);
    pool.insert(a.clone());
    a
}

/// Appends `raw` with Prometheus' label escapes (`\\`, `\"`, `\n`) resolved; other
/// backslash pairs are kept.
fn push_unescaped(out: &mut String, raw: &str) {
    if !raw.contains('\\') {
        out.push_str(raw);
        return;
    }
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
}

/// Where the series (name and label block) starting at `start` ends, found without
/// parsing it; `None` when it does not end on the line (the parser says why).
pub(crate) fn scan_series_end(line: &[u8], start: usize, om: bool) -> Option<usize> {
    let mut i = start;
    if is_name_start(*line.get(i)?) {
        let end = name_end(line, i);
        i = if om { end } else { skip_ws(line, end) };
        if line.get(i) != Some(&b'{') {
            return Some(end);
        }
    } else if line[i] != b'{' {
        return None;
    }
    i += 1;
    loop {
        match line.get(i)? {
            b'"' => i = quoted_end(line, i)?,
            b'}' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The index after the closing quote of the string opening at `line[open]`.
fn quoted_end(line: &[u8], open: usize) -> Option<usize> {
    let mut j = open + 1;
    loop {
        match line.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// The end of a metric name in a `# HELP`/`# TYPE`/`# UNIT` line: plain or quoted.
fn metadata_name_end(rest: &[u8]) -> Option<usize> {
    match rest.first()? {
        b'"' => quoted_end(rest, 0),
        &c if is_name_start(c) => Some(name_end(rest, 0)),
        _ => None,
    }
}

/// A metadata metric name without its quotes (escapes stay, as in Prometheus).
fn unquote_name(name: &[u8]) -> &[u8] {
    match name {
        [b'"', inner @ .., b'"'] => inner,
        _ => name,
    }
}

/// The classic-text end of a sample line: `value [timestamp]`, free spacing.
fn text_tail(line: &[u8], end: usize) -> Result<(f64, Option<Timestamp>), String> {
    let mut i = skip_ws(line, end);
    let v0 = i;
    while line.get(i).is_some_and(|&c| !matches!(c, b' ' | b'\t' | b'{')) {
        i += 1;
    }
    if i == v0 {
        return Err(format!("expected a value after the series, found {}", found(line, i)));
    }
    let value = parse_value(&line[v0..i])?;
    i = skip_ws(line, i);
    if i == line.len() {
        return Ok((value, None));
    }
    let t0 = i;
    while line.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if i == t0 {
        return Err(format!(
            "expected a timestamp (integer milliseconds) or the end of the line after the value, found {}",
            found(line, i)
        ));
    }
    // Digits only: the text is ASCII.
    let digits = std::str::from_utf8(&line[t0..i]).unwrap_or("");
    let ts = digits
        .parse::<i64>()
        .map_err(|_| format!("timestamp {digits} is out of range (expected integer milliseconds)"))?;
    let rest = skip_ws(line, i);
    if rest != line.len() {
        return Err(format!("expected the end of the line after the timestamp, found {}", found(line, rest)));
    }
    Ok((value, Some(ts)))
}

/// A sample value, with Go's `strconv.ParseFloat` syntax as Prometheus accepts it.
fn parse_value(tok: &[u8]) -> Result<f64, String> {
    let s = std::str::from_utf8(tok).map_err(|_| format!("invalid value {}", quote_bytes(tok)))?;
    parse_go_float(s).map_err(|why| format!("invalid value {s:?}: {why}"))
}

/// An OpenMetrics timestamp: float seconds, to milliseconds as Prometheus does
/// (`int64(t * 1000)`, truncating).
fn parse_om_timestamp(tok: &[u8]) -> Result<Timestamp, String> {
    let s = std::str::from_utf8(tok).map_err(|_| format!("invalid timestamp {}", quote_bytes(tok)))?;
    match parse_go_float(s) {
        Ok(t) if t.is_finite() => Ok((t * 1000.0) as Timestamp),
        Ok(_) => Err(format!("invalid timestamp {s:?}: expected a finite number of seconds")),
        Err(why) => Err(format!("invalid timestamp {s:?}: {why} (seconds since the epoch)")),
    }
}

/// Parses a float the way Go's `strconv.ParseFloat` does (decimal forms, `Inf`,
/// `Infinity`, `NaN` in any case), without hexadecimal or `_` (Prometheus refuses
/// them). Out-of-range numbers are errors; NaN is Prometheus' normal NaN.
pub(crate) fn parse_go_float(s: &str) -> Result<f64, &'static str> {
    const EXPECTED: &str = "expected a number (like 1, -2.5e3, NaN, +Inf)";
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) if v.is_nan() => {
            if s.starts_with(['+', '-']) {
                Err(EXPECTED)
            } else {
                Ok(f64::from_bits(NORMAL_NAN_BITS))
            }
        }
        Ok(v) => {
            let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
            if unsigned.starts_with(['i', 'I']) {
                Ok(v)
            } else {
                Err("number out of range")
            }
        }
        Err(_) => Err(EXPECTED),
    }
}

/// The token up to the next space, and the rest (empty or starting with the space).
fn split_token(b: &[u8]) -> (&[u8], &[u8]) {
    let n = b.iter().position(|&c| c == b' ').unwrap_or(b.len());
    b.split_at(n)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

fn name_end(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|&c| is_name_char(c)) {
        i += 1;
    }
    i
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(b).map_err(|_| format!("{what} is not valid UTF-8: {}", quote_bytes(b)))
}

/// What is at `line[i]`, for messages.
fn found(line: &[u8], i: usize) -> String {
    match line.get(i..) {
        None | Some([]) => "the end of the line".into(),
        Some(rest) => {
            let s = String::from_utf8_lossy(&rest[..rest.len().min(4)]);
            match s.chars().next() {
                Some(c) => format!("{c:?}"),
                None => "the end of the line".into(),
            }
        }
    }
}

/// Bytes as a quoted string for messages, shortened.
fn quote_bytes(b: &[u8]) -> String {
    const MAX: usize = 80;
    let s = String::from_utf8_lossy(&b[..b.len().min(MAX)]);
    if b.len() > MAX {
        format!("{:?}…", s)
    } else {
        format!("{s:?}")
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::OpenMetrics => "OpenMetrics",
            Dialect::PrometheusText => "Prometheus text",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, dialect: Dialect) -> Result<Vec<ParsedSample>, LoadError> {
        ExpositionParser::new(text.as_bytes(), dialect).collect()
    }

    fn om(text: &str) -> Vec<ParsedSample> {
        parse(text, Dialect::OpenMetrics).unwrap()
    }

    fn prom(text: &str) -> Vec<ParsedSample> {
        parse(text, Dialect::PrometheusText).unwrap()
    }

    fn om_err(text: &str) -> LoadError {
        parse(text, Dialect::OpenMetrics).unwrap_err()
    }

    fn prom_err(text: &str) -> LoadError {
        parse(text, Dialect::PrometheusText).unwrap_err()
    }

    fn strings(samples: &[ParsedSample]) -> Vec<String> {
        samples
            .iter()
            .map(|s| match s.timestamp_ms {
                Some(t) => format!("{} {} @{t}", s.labels, s.value),
                None => format!("{} {}", s.labels, s.value),
            })
            .collect()
    }

    #[test]
    fn label_value_escapes() {
        let s = prom("m{a=\"x\\\\y\",b=\"q\\\"q\",c=\"l1\\nl2\",d=\"t\\tz\"} 1\n");
        let l = &s[0].labels;
        assert_eq!(l.get("a"), Some("x\\y"));
        assert_eq!(l.get("b"), Some("q\"q"));
        assert_eq!(l.get("c"), Some("l1\nl2"));
        // Other escapes stay as written, as in Prometheus.
        assert_eq!(l.get("d"), Some("t\\tz"));
        let s = om("m{a=\"\\\\n\"} 1\n# EOF\n");
        assert_eq!(s[0].labels.get("a"), Some("\\n"));
    }

    #[test]
    fn all_types_openmetrics() {
        let text = "\
# TYPE a counter
# HELP a Help with \\n escapes and UTF-8 ✓.
# UNIT a_seconds seconds
a_total 1 1.5
a_created 1700000000 1.5
# TYPE g gauge
g 2 1.5
# TYPE h histogram
h_bucket{le=\"1\"} 1 1.5
h_bucket{le=\"+Inf\"} 2 1.5
h_count 2 1.5
h_sum 3.5 1.5
# TYPE gh gaugehistogram
gh_bucket{le=\"1.0\"} 1 1.5
gh_gcount 1 1.5
gh_gsum 1 1.5
# TYPE s summary
s{quantile=\"0.99\"} 7 1.5
s_count 1 1.5
s_sum 7 1.5
# TYPE i info
i_info{version=\"1.2\"} 1 1.5
# TYPE st stateset
st{st=\"a\"} 1 1.5
st{st=\"b\"} 0 1.5
# TYPE u unknown
u 5 1.5
# EOF
";
        let names: Vec<String> =
            om(text).iter().map(|s| s.labels.metric_name().unwrap_or("").to_owned()).collect();
        assert_eq!(
            names,
            [
                "a_total",
                "a_created",
                "g",
                "h_bucket",
                "h_bucket",
                "h_count",
                "h_sum",
                "gh_bucket",
                "gh_gcount",
                "gh_gsum",
                "s",
                "s_count",
                "s_sum",
                "i_info",
                "st",
                "st",
                "u"
            ]
        );
        let e = om_err("# TYPE a untyped\n# EOF\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("invalid metric type \"untyped\""), "{e}");
    }

    #[test]
    fn all_types_prometheus_text() {
        let text = "\
# HELP a Requests.
# TYPE a_total counter
a_total 1
# TYPE g gauge
g 2
# TYPE h histogram
h_bucket{le=\"0.5\"} 1
h_bucket{le=\"+Inf\"} 2
h_count 2
h_sum 3
# TYPE s summary
s{quantile=\"0.5\"} 1
s_sum 1
s_count 1
# TYPE u untyped
u 1
# EOF is a comment here, as are these:
#TYPE x nonsense
# other
";
        assert_eq!(prom(text).len(), 10);
        for bad in ["gaugehistogram", "info", "stateset", "unknown", "counter "] {
            let e = prom_err(&format!("# TYPE x {bad}\n"));
            assert!(e.message.contains("invalid metric type"), "{bad}: {e}");
        }
    }

    #[test]
    fn openmetrics_counter_total_and_created() {
        let text = "# TYPE c counter\nc_total 3 10.000\nc_created 5 10.000\n\
                    # TYPE g gauge\ng_created 1 10.000\n# EOF\n";
        let s = om(text);
        assert_eq!(
            strings(&s),
            [
                r#"{__name__="c_total"} 3 @10000"#,
                r#"{__name__="c_created"} 5 @10000"#,
                r#"{__name__="g_created"} 1 @10000"#
            ]
        );
        let skipped: Vec<_> = ExpositionParser::new(text.as_bytes(), Dialect::OpenMetrics)
            .skip_created_series(true)
            .collect::<Result<_, _>>()
            .unwrap();
        // Only for counter, summary and histogram families.
        assert_eq!(
            strings(&skipped),
            [r#"{__name__="c_total"} 3 @10000"#, r#"{__name__="g_created"} 1 @10000"#]
        );
    }

    #[test]
    fn histogram_and_summary_series_keep_le_and_quantile_verbatim() {
        let text = "# TYPE d histogram\n\
                    d_bucket{a=\"x\",le=\"1\"} 1 1.001\n\
                    d_bucket{a=\"x\",le=\"2.50\"} 2 1.001\n\
                    d_bucket{a=\"x\",le=\"+Inf\"} 3 1.001\n\
                    d_count{a=\"x\"} 3 1.001\n\
                    d_sum{a=\"x\"} 4.25 1.001\n\
                    d_bucket{a=\"x\",le=\"1\"} 2 16.001\n\
                    # TYPE q summary\n\
                    q{quantile=\"0.9\"} 1.5 1.001\n\
                    # EOF\n";
        let s = om(text);
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].labels.get("le"), Some("1"));
        assert_eq!(s[1].labels.get("le"), Some("2.50"));
        assert_eq!(s[2].labels.get("le"), Some("+Inf"));
        assert_eq!(s[3].labels.to_string(), r#"{__name__="d_count", a="x"}"#);
        assert_eq!(s[6].labels.get("quantile"), Some("0.9"));
        // A repeated series gets the same label set, from the cache.
        assert_eq!(s[0].labels, s[5].labels);
        assert_eq!(s[5].timestamp_ms, Some(16_001));
        assert_eq!(s[4].value, 4.25);
    }

    #[test]
    fn openmetrics_timestamps_truncate_like_go() {
        // Prometheus keeps int64(t * 1000): 1.001 s is 1000.9999999999999 ms, hence 1000.
        // Epoch-sized timestamps with three decimals are exact.
        let s = om("a 1 1.001
a 1 1704067201.001
# EOF
");
        assert_eq!(s[0].timestamp_ms, Some(1000));
        assert_eq!(s[1].timestamp_ms, Some(1_704_067_201_001));
    }

    #[test]
    fn exemplars_are_checked_and_ignored() {
        let s = om("# TYPE c counter\n\
                    c_total 1 # {trace_id=\"abc\"} 0.5\n\
                    c_total 2 5 # {trace_id=\"abc\",\"span.id\"=\"x\"} 0.5 4.5\n\
                    c_total 3 6 # {} 1\n\
                    # EOF\n");
        assert_eq!(
            strings(&s),
            [
                r#"{__name__="c_total"} 1"#,
                r#"{__name__="c_total"} 2 @5000"#,
                r#"{__name__="c_total"} 3 @6000"#
            ]
        );
        let e = om_err("c_total 1 # {a=\"b\"}\n# EOF\n");
        assert!(e.message.contains("exemplar value"), "{e}");
        let e = om_err("c_total 1 # {a=\"b\"} x\n# EOF\n");
        assert!(e.message.contains("exemplar: invalid value \"x\""), "{e}");
        let e = om_err("c_total 1 # {\"name\"} 1\n# EOF\n");
        assert!(e.message.contains("exemplar: expected '='"), "{e}");
        let e = om_err("c_total 1 1 # {a=\"b\"} 1 NaN\n# EOF\n");
        assert!(e.message.contains("exemplar: invalid timestamp"), "{e}");
        // The classic text format has no exemplars.
        let e = prom_err("c_total 1 # {a=\"b\"} 1\n");
        assert!(e.message.contains("expected a timestamp (integer milliseconds)"), "{e}");
    }

    #[test]
    fn timestamps_of_both_dialects() {
        let s = om("a 1 1700000000.123\na 2 1700000015\na 3 -1.5\na 4 1.5e3\na 5\n# EOF\n");
        let ts: Vec<_> = s.iter().map(|s| s.timestamp_ms).collect();
        assert_eq!(
            ts,
            [Some(1_700_000_000_123), Some(1_700_000_015_000), Some(-1500), Some(1_500_000), None]
        );
        let s = prom("a 1 1700000000123\na 2\n  a\t3 \t 42 \n");
        let ts: Vec<_> = s.iter().map(|s| s.timestamp_ms).collect();
        assert_eq!(ts, [Some(1_700_000_000_123), None, Some(42)]);
        assert_eq!(s[2].value, 3.0);
        for bad in ["a 1 NaN\n# EOF\n", "a 1 +Inf\n# EOF\n", "a 1 x\n# EOF\n"] {
            assert!(om_err(bad).message.contains("invalid timestamp"), "{bad}");
        }
        assert!(prom_err("a 1 1.5\n").message.contains("expected the end of the line after the timestamp"));
        assert!(prom_err("a 1 -5\n").message.contains("expected a timestamp"));
        assert!(prom_err("a 1 99999999999999999999\n").message.contains("out of range"));
    }

    #[test]
    fn values_follow_go_float_syntax() {
        let s = prom("a NaN\na +Inf\na -Inf\na inf\na -infinity\na 1e3\na .5\na 1.\na -0\na 0.1e-2\n");
        let v: Vec<f64> = s.iter().map(|s| s.value).collect();
        assert_eq!(v[0].to_bits(), NORMAL_NAN_BITS);
        assert!(!crate::value::is_stale_marker(v[0]));
        assert_eq!(
            &v[1..],
            [f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY, 1e3, 0.5, 1.0, -0.0, 0.001]
        );
        for bad in ["0x1p3", "1_000", "+NaN", "1e400", "one", "1,5", "0x10"] {
            let e = prom_err(&format!("a {bad}\n"));
            assert!(e.message.starts_with(&format!("invalid value {bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn quoted_utf8_names() {
        let s = prom("{\"my.metric\", \"my.label\"=\"v\", b=\"c\"} 1\n# TYPE \"other.metric\" gauge\n{\"other.metric\"} 2\n");
        assert_eq!(s[0].labels.to_string(), r#"{__name__="my.metric", b="c", my.label="v"}"#);
        assert_eq!(s[1].labels.metric_name(), Some("other.metric"));
        let s =
            om("# TYPE \"a.b\" gauge\n{\"a.b\",c=\"d\"} 1\n{c=\"d\",\"a.b\"} 2\nx{\"ü\"=\"1\"} 3\n# EOF\n");
        assert_eq!(s[0].labels, s[1].labels);
        assert_eq!(s[2].labels.get("ü"), Some("1"));
        assert!(om_err("{c=\"d\"} 1\n# EOF\n").message.contains("metric name not set"));
        assert!(om_err("{\"a\",\"b\"} 1\n# EOF\n").message.contains("metric name already set"));
        assert!(prom_err("x{\"a\"} 1\n").message.contains("metric name already set"));
        assert!(prom_err("x{__name__=\"y\"} 1\n").message.contains("duplicate label name \"__name__\""));
    }

    #[test]
    fn spacing_rules() {
        // The classic format allows spaces and tabs between tokens, and even no comma.
        let s = prom("x { a = \"1\" , b=\"2\" c=\"3\", } 1\n\n\t\nx{} 2\n");
        assert_eq!(s[0].labels.to_string(), r#"{__name__="x", a="1", b="2", c="3"}"#);
        assert_eq!(s[1].labels.to_string(), r#"{__name__="x"}"#);
        // OpenMetrics allows none of it.
        for bad in
            ["x {a=\"1\"} 1", "x{a=\"1\", b=\"2\"} 1", "x  1", "x 1 ", "x\t1", "", "x{a=\"1\" b=\"2\"} 1"]
        {
            let e = om_err(&format!("{bad}\n# EOF\n"));
            assert_eq!(e.line, 1, "{bad}: {e}");
        }
        // Empty label values are dropped.
        assert_eq!(prom("x{a=\"\"} 1\n")[0].labels.to_string(), r#"{__name__="x"}"#);
    }

    #[test]
    fn eof_rules() {
        assert_eq!(om("a 1\n# EOF").len(), 1);
        let e = om_err("a 1\n# EOF\nb 2\n");
        assert_eq!((e.line, e.message.as_str()), (3, "unexpected data after # EOF"));
        let e = om_err("a 1\n# EOF\n\n");
        assert_eq!(e.message, "unexpected data after # EOF");
        let e = om_err("a 1\nb 2\n");
        assert_eq!(e.message, "data does not end with # EOF");
        assert_eq!(e.to_string(), "line 2: data does not end with # EOF");
        assert!(om_err("").message.contains("does not end with # EOF"));
        assert!(om_err("# comment\n# EOF\n").message.contains("no other comments"));
        assert!(om_err("#EOF\n").message.contains("expected '# HELP'"));
    }

    #[test]
    fn unit_must_be_a_suffix() {
        assert_eq!(om("# UNIT a_seconds seconds\n# UNIT b \n# EOF\n").len(), 0);
        let e = om_err("# TYPE x gauge\n# UNIT x_bytes seconds\n# EOF\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("not a suffix"), "{e}");
    }

    #[test]
    fn malformed_lines_name_the_line_and_what_was_expected() {
        let cases: [(&str, usize, &str); 12] = [
            ("a 1\nb\n", 2, "expected a value after the series"),
            ("a 1\nb{x=\"1\"}\n", 2, "expected a value after the series"),
            ("a 1\n\nb 1.2.3\n", 3, "invalid value \"1.2.3\""),
            ("c{a=\"b} 1\n", 1, "unterminated label value of \"a\""),
            ("c{a=\"b\",a=\"c\"} 1\n", 1, "duplicate label name \"a\""),
            ("c{a} 1\n", 1, "expected '=' after label name \"a\""),
            ("c{a=b} 1\n", 1, "expected a quoted label value"),
            ("c{1=\"b\"} 1\n", 1, "expected a label name or '}'"),
            ("c{a=\"b\"\n", 1, "expected a label name or '}'"),
            ("1c 1\n", 1, "expected a metric name or '{'"),
            ("# TYPE\n# TYPE 1x gauge\n", 2, "expected a metric name after '# TYPE '"),
            ("c{a=\"\\xff\"} 1\n", 0, ""),
        ];
        for (text, line, msg) in cases {
            if line == 0 {
                continue;
            }
            let e = prom_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(msg), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")));
        }
        let e = om_err("c{a=\"b\"x} 1\n# EOF\n");
        assert!(e.message.contains("expected ',' or '}' after the value of \"a\""), "{e}");
        let bad_utf8 = b"c{a=\"\xff\"} 1\n";
        let e = ExpositionParser::new(&bad_utf8[..], Dialect::PrometheusText).next().unwrap().unwrap_err();
        assert!(e.message.contains("label value is not valid UTF-8"), "{e}");
        assert_eq!(
            e.clone().with_file("/tmp/x.prom").to_string(),
            format!("/tmp/x.prom: line 1: {}", e.message)
        );
    }

    #[test]
    fn iteration_stops_after_an_error() {
        let mut p = ExpositionParser::new("a 1\nb x\nc 3\n".as_bytes(), Dialect::PrometheusText);
        assert!(p.next().unwrap().is_ok());
        assert!(p.next().unwrap().is_err());
        assert_eq!(p.line_number(), 2);
        assert!(p.next().is_none());
    }

    #[test]
    fn cache_does_not_confuse_prefixes() {
        // Same text prefix, different series.
        let s = prom("ab 1\nab{x=\"1\"} 2\nab {x=\"1\"} 3\nabc 4\nab 5\nab\t6\n{\"ab\"} 7\n");
        let l: Vec<String> = s.iter().map(|s| s.labels.to_string()).collect();
        assert_eq!(
            l,
            [
                r#"{__name__="ab"}"#,
                r#"{__name__="ab", x="1"}"#,
                r#"{__name__="ab", x="1"}"#,
                r#"{__name__="abc"}"#,
                r#"{__name__="ab"}"#,
                r#"{__name__="ab"}"#,
                r#"{__name__="ab"}"#
            ]
        );
        let s = om("ab 1\nab{x=\"1\"} 2\nab 3\n# EOF\n");
        assert_eq!(s[0].labels, s[2].labels);
        assert_ne!(s[0].labels, s[1].labels);
        // Many distinct series, then the first again (the cache is bounded).
        let mut text = String::new();
        for i in 0..(SERIES_CACHE_LIMIT + 10) {
            text.push_str(&format!("m{{i=\"{i}\"}} {i}\n"));
        }
        text.push_str("m{i=\"0\"} 0\n");
        let s = prom(&text);
        assert_eq!(s.len(), SERIES_CACHE_LIMIT + 11);
        assert_eq!(s[0].labels, s[SERIES_CACHE_LIMIT + 10].labels);
    }

    #[test]
    fn content_type() {
        assert_eq!(Dialect::from_content_type("Application/OpenMetrics-Text"), Dialect::OpenMetrics);
        assert_eq!(Dialect::from_content_type(""), Dialect::PrometheusText);
    }
}
