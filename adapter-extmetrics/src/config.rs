//! Where queries come from: the static config file (`--config FILE`) and kube-metrics-adapter
//! HPA annotations ([`annotations`]), both compiled into [`MetricQuery`] entries of a
//! [`Registry`].
//!
//! # Config file
//!
//! ```yaml
//! # Optional defaults for every metric (values shown are the built-in defaults).
//! defaults:
//!   interval: 15s          # evaluation interval, 100ms..24h (Go duration syntax: 500ms, 15s, 1m30s, 2h)
//!   backend: default       # name of a backend below; "default" is --prometheus-server
//!   onEmpty: error         # empty result:        error | zero | last-good
//!   onNaN: error           # NaN or ±Inf value:   error | zero | last-good
//!   onError: error         # backend failure:     error | zero | last-good
//!   lastGoodMaxAge: 2m     # how old a last-good value may be before `error` applies
//!   reduce: sum            # several series: sum | max | min | avg | error | each
//!
//! # Optional named backends. "default" exists implicitly (Prometheus at --prometheus-server)
//! # and may be redefined.
//! backends:
//!   mesh:
//!     prometheus:
//!       url: http://prometheus.istio-system:9090
//!       bearerTokenFile: /var/run/secrets/prom/token   # optional
//!       basicAuth: {username: hpa, passwordFile: /etc/prom/password}   # optional
//!       caFile: /etc/prom/ca.crt                       # optional
//!       timeout: 5s                                    # optional, default 10s
//!   pods:
//!     local: {}            # evaluate locally over samples scraped from annotated pods
//!                          # (optional: scrapeInterval: 15s, retention: 10m)
//!   mirror:
//!     local:
//!       url: http://prometheus:9090   # evaluate locally over samples fetched from this API
//!                                     # (bearerTokenFile, basicAuth, caFile, timeout as above)
//!   demo:
//!     fixture:
//!       file: examples/istio.om       # evaluate locally over a recorded file
//!       at: end                       # now (default) | end: the file's newest sample
//!
//! metrics:
//!   - namespace: test                 # the HPA's namespace, or "*" for any namespace
//!     name: prometheus-query          # the HPA's external metric name (matched case-insensitively)
//!     selector:                       # labels the HPA selector matches; returned as metricLabels
//!       query-name: processed-requests-per-second
//!     query: |
//!       scalar(sum(rate(istio_requests_total{destination_workload="podinfo"}[1m])))
//!     # every key of `defaults` may be overridden per metric, plus:
//!     window: 1m                      # optional `window` reported to the HPA (whole seconds)
//!     backend: mesh
//!     onError: last-good
//! ```
//!
//! Unknown keys are errors. Every error names the file, line and column and the YAML path
//! (`metrics[0].query`); an invalid PromQL query also shows the query with a caret under the
//! culprit. All problems of a file are reported at once.
//!
//! ```
//! use adapter_extmetrics::config::{Config, Fallback, Reduce};
//!
//! let cfg = Config::from_yaml_str("example.yaml", r#"
//! metrics:
//!   - namespace: test
//!     name: prometheus-query
//!     selector: {query-name: rps}
//!     query: sum(rate(istio_requests_total[1m]))
//!     reduce: max
//! "#).unwrap();
//! let q = &cfg.metrics[0];
//! assert_eq!(q.interval.as_secs(), 15);
//! assert_eq!(q.reduce, Reduce::Max);
//! assert_eq!(q.policies.on_error, Fallback::Error);
//!
//! let err = Config::from_yaml_str("bad.yaml", "metrics:\n  - namespace: test\n    name: m\n    query: sum(x\n").unwrap_err();
//! assert!(err.to_string().starts_with("bad.yaml:4:12: metrics[0].query: invalid PromQL query"), "{err}");
//! ```

pub mod annotations;
pub mod manifests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::selector::{validate_label_key, validate_label_value, Selector};

/// Default evaluation interval: the HPA's sync period.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Default maximum age of a `last-good` value.
pub const DEFAULT_LAST_GOOD_MAX_AGE: Duration = Duration::from_secs(120);
/// Default Prometheus request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Evaluation intervals accepted: shorter would hammer the backend, longer is no
/// autoscaling (and overflows timers).
pub const INTERVAL_BOUNDS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(24 * 3600);

/// The error for an interval (the field `what`) outside [`INTERVAL_BOUNDS`].
pub fn interval_bounds_message(what: &str) -> String {
    format!("{what} must be between 100ms and 24h")
}

/// Default scrape interval of pods (`local` backend without url).
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(15);
/// Default history kept of scraped pods.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);
/// Name of the implicit backend (`--prometheus-server`).
pub const DEFAULT_BACKEND: &str = "default";

/// What to answer when a query gives no usable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// Fail the request (`Status` 503): the HPA keeps its current scale.
    Error,
    /// Report 0.
    Zero,
    /// Report the last good value while it is younger than `max_age`, then fail.
    LastGood {
        /// How old the last good value may be.
        max_age: Duration,
    },
}

/// Per-metric answers to the three kinds of missing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policies {
    /// The query returned no series.
    pub on_empty: Fallback,
    /// The value is NaN or ±Inf.
    pub on_nan: Fallback,
    /// The backend failed (unreachable, timeout, bad answer).
    pub on_error: Fallback,
}

impl Default for Policies {
    fn default() -> Self {
        Policies { on_empty: Fallback::Error, on_nan: Fallback::Error, on_error: Fallback::Error }
    }
}

/// How several series of a vector result become the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Reduce {
    /// One item with the sum (what the HPA computes anyway).
    #[default]
    Sum,
    /// One item with the largest value.
    Max,
    /// One item with the smallest value.
    Min,
    /// One item with the mean.
    Avg,
    /// More than one series is an error (handled by `onError`).
    Error,
    /// One item per series, labelled with the series' labels.
    Each,
}

impl Reduce {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sum" => Reduce::Sum,
            "max" => Reduce::Max,
            "min" => Reduce::Min,
            "avg" => Reduce::Avg,
            "error" => Reduce::Error,
            "each" => Reduce::Each,
            _ => return None,
        })
    }
}

/// Where a query is evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Forward the PromQL to a Prometheus-compatible `/api/v1/query`.
    Prometheus(PrometheusBackend),
    /// Evaluate with the embedded engine.
    Local {
        /// Fetch samples from this Prometheus-compatible API (with its credentials);
        /// `None` scrapes the pods annotated `prometheus.io/scrape: "true"`, found
        /// through the Kubernetes API.
        api: Option<PrometheusBackend>,
        /// Pod scraping: time between scrapes (`scrapeInterval`, default 15s).
        scrape_interval: Duration,
        /// Pod scraping: history kept (`retention`, default 10m; the longest range a
        /// query reads must fit).
        retention: Duration,
    },
    /// Evaluate with the embedded engine over a fixture file (OpenMetrics, Prometheus
    /// text, promqltest `load` or API JSON), loaded once at start: demos and tests.
    Fixture {
        /// The file.
        file: String,
        /// When queries are evaluated.
        at: FixtureTime,
    },
}

/// The evaluation time of a fixture backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FixtureTime {
    /// The wall clock, like the other backends (the fixture must hold recent samples).
    #[default]
    Now,
    /// The newest sample of the file: a recording answers as at the moment it ended.
    End,
}

/// A Prometheus-compatible HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrometheusBackend {
    /// Base URL; `None` means the `--prometheus-server` flag.
    pub url: Option<String>,
    /// File holding a bearer token.
    pub bearer_token_file: Option<String>,
    /// Basic authentication: user name and the file holding the password.
    pub basic_auth: Option<BasicAuth>,
    /// CA bundle to verify the server.
    pub ca_file: Option<String>,
    /// Request timeout.
    pub timeout: Duration,
}

/// Basic authentication credentials; the password stays in its file (a mounted Secret).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// File holding the password (a trailing newline is ignored).
    pub password_file: String,
}

impl Backend {
    /// The implicit `default` backend: Prometheus at `--prometheus-server`.
    pub fn default_prometheus() -> Self {
        Backend::Prometheus(PrometheusBackend {
            url: None,
            bearer_token_file: None,
            basic_auth: None,
            ca_file: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Prometheus at `url` with default settings.
    pub fn prometheus_url(url: &str) -> Self {
        Backend::Prometheus(PrometheusBackend { url: Some(url.to_owned()), ..prom_defaults() })
    }
}

fn prom_defaults() -> PrometheusBackend {
    PrometheusBackend {
        url: None,
        bearer_token_file: None,
        basic_auth: None,
        ca_file: None,
        timeout: DEFAULT_TIMEOUT,
    }
}

/// Which namespaces an entry serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamespaceMatch {
    /// Every namespace (`"*"`).
    Any,
    /// One namespace.
    Exact(String),
}

impl NamespaceMatch {
    /// As messages and metric labels show it: the name, or `*` for every namespace.
    pub fn as_str(&self) -> &str {
        match self {
            NamespaceMatch::Any => "*",
            NamespaceMatch::Exact(n) => n,
        }
    }

    /// Whether `ns` is served.
    pub fn matches(&self, ns: &str) -> bool {
        match self {
            NamespaceMatch::Any => true,
            NamespaceMatch::Exact(n) => n == ns,
        }
    }
}

/// Where an entry was defined, for error messages and the debug endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A config file entry.
    ConfigFile {
        /// The file.
        file: String,
        /// 1-based line of the entry.
        line: usize,
    },
    /// An HPA annotation.
    Annotation {
        /// The HPA's namespace.
        namespace: String,
        /// The HPA's name.
        hpa: String,
        /// The annotation key holding the query.
        key: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::ConfigFile { file, line } => write!(f, "{file}:{line}"),
            Origin::Annotation { namespace, hpa, key } => write!(f, "HPA {namespace}/{hpa} annotation {key}"),
        }
    }
}

/// One query of the registry: which requests it answers and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricQuery {
    /// Namespaces served.
    pub namespace: NamespaceMatch,
    /// Metric name as configured (requests match it case-insensitively).
    pub metric_name: String,
    /// Labels a request's selector is matched against; returned as `metricLabels`.
    pub labels: BTreeMap<String, String>,
    /// The PromQL query (validated with `promql::parse`).
    pub query: String,
    /// Evaluation interval.
    pub interval: Duration,
    /// `window` reported to the HPA, if any.
    pub window: Option<Duration>,
    /// Backend name (`default`, a config name, or the annotation's server URL).
    pub backend_name: String,
    /// The resolved backend.
    pub backend: Backend,
    /// Missing-data policies.
    pub policies: Policies,
    /// Multi-series reduction.
    pub reduce: Reduce,
    /// Where it was defined.
    pub origin: Origin,
}

impl MetricQuery {
    /// The labels as `k=v,k=v`, as messages and metric labels show them.
    pub fn labels_text(&self) -> String {
        self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }

    /// Whether both collect the same thing the same way: equal but for where they are
    /// defined.
    pub fn same_work(&self, other: &MetricQuery) -> bool {
        // Every field but `origin`, named so that a new field has to be placed here.
        let MetricQuery {
            namespace,
            metric_name,
            labels,
            query,
            interval,
            window,
            backend_name,
            backend,
            policies,
            reduce,
            origin: _,
        } = self;
        *namespace == other.namespace
            && *metric_name == other.metric_name
            && *labels == other.labels
            && *query == other.query
            && *interval == other.interval
            && *window == other.window
            && *backend_name == other.backend_name
            && *backend == other.backend
            && *policies == other.policies
            && *reduce == other.reduce
    }

    /// Whether this entry answers `GET .../namespaces/{namespace}/{metric}?labelSelector=…`.
    pub fn serves(&self, namespace: &str, metric: &str, selector: &Selector) -> bool {
        self.namespace.matches(namespace)
            && self.metric_name.eq_ignore_ascii_case(metric)
            && selector.matches(&self.labels)
    }
}

/// A set of queries answering requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    entries: Vec<MetricQuery>,
}

impl Registry {
    /// A registry over `entries`.
    pub fn new(entries: Vec<MetricQuery>) -> Self {
        Registry { entries }
    }

    /// All entries.
    pub fn entries(&self) -> &[MetricQuery] {
        &self.entries
    }

    /// Lowercased metric names, sorted, for discovery.
    pub fn metric_names(&self) -> BTreeSet<String> {
        self.entries.iter().map(|e| e.metric_name.to_ascii_lowercase()).collect()
    }

    /// Whether any entry has this metric name (case-insensitive), in any namespace.
    pub fn knows_metric(&self, metric: &str) -> bool {
        self.entries.iter().any(|e| e.metric_name.eq_ignore_ascii_case(metric))
    }

    /// The entries answering a request.
    pub fn find(&self, namespace: &str, metric: &str, selector: &Selector) -> Vec<&MetricQuery> {
        self.entries.iter().filter(|e| e.serves(namespace, metric, selector)).collect()
    }
}

/// Defaults applied to every metric of a config file (and to annotations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Evaluation interval.
    pub interval: Duration,
    /// Backend name.
    pub backend: String,
    /// Missing-data policies.
    pub policies: Policies,
    /// Multi-series reduction.
    pub reduce: Reduce,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            interval: DEFAULT_INTERVAL,
            backend: DEFAULT_BACKEND.to_owned(),
            policies: Policies::default(),
            reduce: Reduce::Sum,
        }
    }
}

/// A loaded, validated config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Defaults after applying the file's `defaults:`.
    pub defaults: Defaults,
    /// Named backends, including `default`.
    pub backends: BTreeMap<String, Backend>,
    /// The queries, in file order.
    pub metrics: Vec<MetricQuery>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file name as given.
    pub file: String,
    /// 1-based line (0 if unknown).
    pub line: usize,
    /// 1-based column (0 if unknown).
    pub column: usize,
    /// YAML path such as `metrics[2].query` (empty for syntax errors).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// For an invalid query, the parser's error (rendered with a caret under the culprit).
    pub query_error: Option<promql::ParseError>,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        write_query_error(f, self.query_error.as_ref())
    }
}

/// `: <parse error>` after a message, the query and caret lines indented below it.
pub(crate) fn write_query_error(f: &mut impl fmt::Write, e: Option<&promql::ParseError>) -> fmt::Result {
    let Some(e) = e else { return Ok(()) };
    let rendered = format!("{e:#}");
    let mut lines = rendered.lines();
    if let Some(first) = lines.next() {
        write!(f, ": {first}")?;
    }
    for l in lines {
        write!(f, "\n    {l}")?;
    }
    Ok(())
}

/// Why a config file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config file: {source}")]
    Io {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid; every problem found.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The problems (empty for I/O errors).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Invalid(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    defaults: RawPolicyFields,
    #[serde(default)]
    backends: BTreeMap<String, RawBackend>,
    #[serde(default)]
    metrics: Vec<RawMetric>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicyFields {
    interval: Option<String>,
    backend: Option<String>,
    on_empty: Option<String>,
    #[serde(rename = "onNaN")]
    on_nan: Option<String>,
    on_error: Option<String>,
    last_good_max_age: Option<String>,
    reduce: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBackend {
    prometheus: Option<RawPrometheus>,
    local: Option<RawLocal>,
    fixture: Option<RawFixture>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFixture {
    file: String,
    at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPrometheus {
    url: String,
    bearer_token_file: Option<String>,
    basic_auth: Option<RawBasicAuth>,
    ca_file: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBasicAuth {
    username: String,
    password_file: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLocal {
    url: Option<String>,
    bearer_token_file: Option<String>,
    basic_auth: Option<RawBasicAuth>,
    ca_file: Option<String>,
    timeout: Option<String>,
    scrape_interval: Option<String>,
    retention: Option<String>,
}

/// The policy keys are repeated here rather than `#[serde(flatten)]`ed from
/// [`RawPolicyFields`]: serde cannot deny unknown fields through a flatten, and unknown
/// keys must be errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetric {
    namespace: String,
    name: String,
    #[serde(default)]
    selector: BTreeMap<String, String>,
    query: String,
    window: Option<String>,
    interval: Option<String>,
    backend: Option<String>,
    on_empty: Option<String>,
    #[serde(rename = "onNaN")]
    on_nan: Option<String>,
    on_error: Option<String>,
    last_good_max_age: Option<String>,
    reduce: Option<String>,
}

impl RawMetric {
    fn policy_fields(&self) -> RawPolicyFields {
        RawPolicyFields {
            interval: self.interval.clone(),
            backend: self.backend.clone(),
            on_empty: self.on_empty.clone(),
            on_nan: self.on_nan.clone(),
            on_error: self.on_error.clone(),
            last_good_max_age: self.last_good_max_age.clone(),
            reduce: self.reduce.clone(),
        }
    }
}

/// A path segment for [`locate`].
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

struct Collector<'a> {
    file: &'a str,
    text: &'a str,
    issues: Vec<ConfigIssue>,
}

impl Collector<'_> {
    fn issue(&mut self, path: &[Seg<'_>], message: String, query_error: Option<promql::ParseError>) {
        let (mut line, mut column, index) = locate(self.text, path).unwrap_or((0, 0, 0));
        // For a literal block scalar (`query: |`), point at the file line holding the culprit.
        if let Some(e) = &query_error {
            if self.text.get(index..).is_some_and(|t| t.starts_with('|')) {
                let (qline, qcol) = e.line_col();
                if let Some(file_line) = self.text.lines().nth(line + qline - 1) {
                    let indent = file_line.len() - file_line.trim_start().len();
                    line += qline;
                    column = indent + qcol;
                }
            }
        }
        self.issues.push(ConfigIssue {
            file: self.file.to_owned(),
            line,
            column,
            path: render_path(path),
            message,
            query_error,
        });
    }
}

fn render_path(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Line and column (1-based) and byte offset of the YAML value at `path`, found by
/// deserialising the text again with a seed that fails exactly there.
fn locate(text: &str, path: &[Seg<'_>]) -> Option<(usize, usize, usize)> {
    let de = serde_norway::Deserializer::from_str(text);
    match (PathSeed { path }).deserialize(de) {
        Ok(()) => None,
        Err(e) => e.location().map(|l| (l.line(), l.column(), l.index())),
    }
}

struct PathSeed<'a, 'p> {
    path: &'p [Seg<'a>],
}

struct Nothing;

impl<'de> Visitor<'de> for Nothing {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nothing (locating a value)")
    }
}

impl<'de> DeserializeSeed<'de> for PathSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.first() {
            None => d.deserialize_any(Nothing),
            Some(_) => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for PathSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or sequence")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (first, rest) = match self.path.split_first() {
            Some((Seg::Key(k), rest)) => (*k, rest),
            _ => return Err(de::Error::custom("not found")),
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == first {
                return map.next_value_seed(PathSeed { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom("not found"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (index, rest) = match self.path.split_first() {
            Some((Seg::Index(i), rest)) => (*i, rest),
            _ => return Err(de::Error::custom("not found")),
        };
        for _ in 0..index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom("not found"));
            }
        }
        seq.next_element_seed(PathSeed { path: rest })?;
        Err(de::Error::custom("not found"))
    }
}

/// Parses a Go duration (`300ms`, `15s`, `1m30s`, `2h`, `1.5h`; units `ns us µs ms s m h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?} (expected e.g. 15s, 1m30s, 500ms)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(err());
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(err());
        }
        let value: f64 = num.parse().map_err(|_| err())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| err())
}

fn parse_fallback(s: &str, max_age: Duration) -> Option<Fallback> {
    Some(match s {
        "error" => Fallback::Error,
        "zero" => Fallback::Zero,
        "last-good" => Fallback::LastGood { max_age },
        _ => return None,
    })
}

/// Applies `raw` over `base`, reporting bad values under `path`.
fn apply_fields(c: &mut Collector<'_>, path: &[Seg<'_>], base: &Defaults, raw: &RawPolicyFields) -> Defaults {
    let mut out = base.clone();
    let at = |k: &'static str| -> Vec<Seg<'_>> {
        let mut p = path.to_vec();
        p.push(Seg::Key(k));
        p
    };
    if let Some(s) = &raw.interval {
        match parse_duration(s) {
            Ok(d) if INTERVAL_BOUNDS.contains(&d) => out.interval = d,
            Ok(_) => c.issue(&at("interval"), interval_bounds_message("interval"), None),
            Err(e) => c.issue(&at("interval"), e, None),
        }
    }
    if let Some(b) = &raw.backend {
        out.backend = b.clone();
    }
    let mut max_age = [base.policies.on_empty, base.policies.on_nan, base.policies.on_error]
        .into_iter()
        .find_map(|f| match f {
            Fallback::LastGood { max_age } => Some(max_age),
            _ => None,
        })
        .unwrap_or(DEFAULT_LAST_GOOD_MAX_AGE);
    if let Some(s) = &raw.last_good_max_age {
        match parse_duration(s) {
            Ok(d) if !d.is_zero() => max_age = d,
            Ok(_) => c.issue(&at("lastGoodMaxAge"), "lastGoodMaxAge must be positive".to_owned(), None),
            Err(e) => c.issue(&at("lastGoodMaxAge"), e, None),
        }
    }
    let fields: [(&'static str, &Option<String>, Fallback); 3] = [
        ("onEmpty", &raw.on_empty, base.policies.on_empty),
        ("onNaN", &raw.on_nan, base.policies.on_nan),
        ("onError", &raw.on_error, base.policies.on_error),
    ];
    let mut resolved = [Fallback::Error; 3];
    for (i, (name, value, inherited)) in fields.into_iter().enumerate() {
        resolved[i] = match value {
            Some(s) => parse_fallback(s, max_age).unwrap_or_else(|| {
                c.issue(&at(name), format!("unknown policy {s:?} (expected error, zero or last-good)"), None);
                inherited
            }),
            None => match inherited {
                Fallback::LastGood { .. } if raw.last_good_max_age.is_some() => {
                    Fallback::LastGood { max_age }
                }
                other => other,
            },
        };
    }
    out.policies = Policies { on_empty: resolved[0], on_nan: resolved[1], on_error: resolved[2] };
    if let Some(s) = &raw.reduce {
        match Reduce::parse(s) {
            Some(r) => out.reduce = r,
            None => c.issue(
                &at("reduce"),
                format!("unknown reduce {s:?} (expected sum, max, min, avg, error or each)"),
                None,
            ),
        }
    }
    out
}

/// The credentials and timeout of a Prometheus API, as written.
#[derive(Clone, Copy)]
struct ApiFields<'a> {
    bearer_token_file: &'a Option<String>,
    basic_auth: &'a Option<RawBasicAuth>,
    ca_file: &'a Option<String>,
    timeout: &'a Option<String>,
}

impl ApiFields<'_> {
    fn any(&self) -> bool {
        self.bearer_token_file.is_some()
            || self.basic_auth.is_some()
            || self.ca_file.is_some()
            || self.timeout.is_some()
    }
}

/// A Prometheus API of a `prometheus` or `local` backend, checked.
fn api_backend(
    c: &mut Collector<'_>,
    path: &[Seg<'_>],
    kind: &str,
    url: &str,
    f: ApiFields<'_>,
) -> PrometheusBackend {
    if !valid_url(url) {
        c.issue(path, format!("{kind} url {url:?} must be an http:// or https:// URL"), None);
    }
    let timeout = match f.timeout.as_deref().map(parse_duration) {
        None => DEFAULT_TIMEOUT,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            c.issue(path, "timeout must be positive".to_owned(), None);
            DEFAULT_TIMEOUT
        }
        Some(Err(e)) => {
            c.issue(path, e, None);
            DEFAULT_TIMEOUT
        }
    };
    PrometheusBackend {
        url: Some(url.to_owned()),
        bearer_token_file: f.bearer_token_file.clone(),
        basic_auth: f
            .basic_auth
            .as_ref()
            .map(|b| BasicAuth { username: b.username.clone(), password_file: b.password_file.clone() }),
        ca_file: f.ca_file.clone(),
        timeout,
    }
}

fn valid_url(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://"))
        && u.split("://").nth(1).is_some_and(|h| !h.is_empty())
}

/// Checks a metric name as a URL path segment of the API.
pub(crate) fn validate_metric_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("metric name must not be empty".to_owned());
    }
    if name == "." || name == ".." {
        return Err(format!("metric name {name:?} is not a valid path segment"));
    }
    if let Some(c) =
        name.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '%' | '?' | '#'))
    {
        return Err(format!("metric name {name:?} must not contain {c:?}"));
    }
    Ok(())
}

fn validate_namespace(ns: &str) -> Result<(), String> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "namespace {ns:?} must be \"*\" or a lowercase RFC 1123 label (a-z, 0-9, '-', at most 63)"
        ))
    }
}

/// Validates a PromQL query, returning the parser's error.
pub(crate) fn check_query(query: &str) -> Result<(), promql::ParseError> {
    promql::parse(query).map(|_| ())
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io { file: file.clone(), source })?;
        Config::from_yaml_str(&file, &text)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn from_yaml_str(file: &str, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_norway::from_str(text).map_err(|e| {
                let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                ConfigError::Invalid(vec![ConfigIssue {
                    file: file.to_owned(),
                    line,
                    column,
                    path: String::new(),
                    message: e.to_string().split(" at line ").next().unwrap_or_default().to_owned(),
                    query_error: None,
                }])
            })?
        };
        let mut c = Collector { file, text, issues: Vec::new() };

        let defaults = apply_fields(&mut c, &[Seg::Key("defaults")], &Defaults::default(), &raw.defaults);

        let mut backends = BTreeMap::from([(DEFAULT_BACKEND.to_owned(), Backend::default_prometheus())]);
        for (name, b) in &raw.backends {
            let path = [Seg::Key("backends"), Seg::Key(name)];
            let kinds = [b.prometheus.is_some(), b.local.is_some(), b.fixture.is_some()];
            if kinds.iter().filter(|&&k| k).count() != 1 {
                c.issue(
                    &path,
                    "a backend needs exactly one of `prometheus`, `local` or `fixture`".to_owned(),
                    None,
                );
                continue;
            }
            let backend = match (&b.prometheus, &b.local, &b.fixture) {
                (_, _, Some(f)) => {
                    let at = match f.at.as_deref() {
                        None | Some("now") => FixtureTime::Now,
                        Some("end") => FixtureTime::End,
                        Some(other) => {
                            c.issue(
                                &path,
                                format!("fixture `at` must be `now` or `end`, not {other:?}"),
                                None,
                            );
                            FixtureTime::Now
                        }
                    };
                    Backend::Fixture { file: f.file.clone(), at }
                }
                (None, None, None) => continue,
                (Some(p), _, _) => Backend::Prometheus(api_backend(
                    &mut c,
                    &path,
                    "prometheus",
                    &p.url,
                    ApiFields {
                        bearer_token_file: &p.bearer_token_file,
                        basic_auth: &p.basic_auth,
                        ca_file: &p.ca_file,
                        timeout: &p.timeout,
                    },
                )),
                (None, Some(l), _) => {
                    let fields = ApiFields {
                        bearer_token_file: &l.bearer_token_file,
                        basic_auth: &l.basic_auth,
                        ca_file: &l.ca_file,
                        timeout: &l.timeout,
                    };
                    let api = match &l.url {
                        Some(u) => Some(api_backend(&mut c, &path, "local", u, fields)),
                        None => {
                            if fields.any() {
                                c.issue(
                                    &path,
                                    "bearerTokenFile, basicAuth, caFile and timeout need a url".to_owned(),
                                    None,
                                );
                            }
                            None
                        }
                    };
                    let mut duration = |value: &Option<String>, what: &str, default: Duration| match value
                        .as_deref()
                        .map(parse_duration)
                    {
                        None => default,
                        Some(Ok(d)) if !d.is_zero() => d,
                        Some(Ok(_)) => {
                            c.issue(&path, format!("{what} must be positive"), None);
                            default
                        }
                        Some(Err(e)) => {
                            c.issue(&path, format!("{what}: {e}"), None);
                            default
                        }
                    };
                    let scrape_interval =
                        duration(&l.scrape_interval, "scrapeInterval", DEFAULT_SCRAPE_INTERVAL);
                    let retention = duration(&l.retention, "retention", DEFAULT_RETENTION);
                    if !INTERVAL_BOUNDS.contains(&scrape_interval) {
                        c.issue(&path, interval_bounds_message("scrapeInterval"), None);
                    }
                    Backend::Local { api, scrape_interval, retention }
                }
            };
            backends.insert(name.clone(), backend);
        }
        if !backends.contains_key(&defaults.backend) {
            c.issue(
                &[Seg::Key("defaults"), Seg::Key("backend")],
                format!("unknown backend {:?}", defaults.backend),
                None,
            );
        }

        let mut metrics = Vec::new();
        let mut seen: BTreeMap<(String, String, BTreeMap<String, String>), usize> = BTreeMap::new();
        for (i, m) in raw.metrics.iter().enumerate() {
            let base = [Seg::Key("metrics"), Seg::Index(i)];
            let at = |k: &'static str| [Seg::Key("metrics"), Seg::Index(i), Seg::Key(k)];
            let before = c.issues.len();
            let line = locate(text, &base).map_or(0, |(l, _, _)| l);
            let namespace = if m.namespace == "*" {
                NamespaceMatch::Any
            } else {
                if let Err(e) = validate_namespace(&m.namespace) {
                    c.issue(&at("namespace"), e, None);
                }
                NamespaceMatch::Exact(m.namespace.clone())
            };
            if let Err(e) = validate_metric_name(&m.name) {
                c.issue(&at("name"), e, None);
            }
            for (k, v) in &m.selector {
                let p = [Seg::Key("metrics"), Seg::Index(i), Seg::Key("selector"), Seg::Key(k)];
                if let Err(e) = validate_label_key(k) {
                    c.issue(&p, format!("invalid label key {k:?}: {e}"), None);
                }
                if let Err(e) = validate_label_value(v) {
                    c.issue(&p, format!("invalid label value {v:?}: {e}"), None);
                }
            }
            // Trailing newlines (block scalars) would put end-of-input errors on an empty line.
            if let Err(e) = check_query(m.query.trim_end()) {
                c.issue(&at("query"), "invalid PromQL query".to_owned(), Some(e));
            }
            let window = match m.window.as_deref().map(parse_duration) {
                None => None,
                Some(Ok(d)) if d.as_secs() > 0 && d.subsec_nanos() == 0 => Some(d),
                Some(Ok(_)) => {
                    c.issue(
                        &at("window"),
                        "window must be a positive whole number of seconds".to_owned(),
                        None,
                    );
                    None
                }
                Some(Err(e)) => {
                    c.issue(&at("window"), e, None);
                    None
                }
            };
            let settings = apply_fields(&mut c, &base, &defaults, &m.policy_fields());
            let backend = match backends.get(&settings.backend) {
                Some(b) => b.clone(),
                None => {
                    c.issue(&at("backend"), format!("unknown backend {:?}", settings.backend), None);
                    Backend::default_prometheus()
                }
            };
            let key = (m.namespace.clone(), m.name.to_ascii_lowercase(), m.selector.clone());
            if let Some(first) = seen.get(&key) {
                c.issue(
                    &base,
                    format!(
                        "duplicate metric: namespace {:?}, name {:?} and selector {:?} are already defined at line {first}",
                        m.namespace, m.name, m.selector
                    ),
                    None,
                );
            } else {
                seen.insert(key, line);
            }
            if c.issues.len() == before {
                metrics.push(MetricQuery {
                    namespace,
                    metric_name: m.name.clone(),
                    labels: m.selector.clone(),
                    query: m.query.clone(),
                    interval: settings.interval,
                    window,
                    backend_name: settings.backend.clone(),
                    backend,
                    policies: settings.policies,
                    reduce: settings.reduce,
                    origin: Origin::ConfigFile { file: file.to_owned(), line },
                });
            }
        }
        if c.issues.is_empty() {
            Ok(Config { defaults, backends, metrics })
        } else {
            Err(ConfigError::Invalid(c.issues))
        }
    }

    /// The registry of this file's queries.
    pub fn registry(&self) -> Registry {
        Registry::new(self.metrics.clone())
    }
}

#[cfg(test)]
mod tests;
