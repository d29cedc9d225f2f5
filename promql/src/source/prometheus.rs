//! A Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir, VictoriaMetrics) as a
//! source of raw samples. The plan's selections are fetched as range selectors with
//! instant queries, then evaluation runs locally on the fetched samples.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Deserialize;

use crate::eval::{Plan, PlannedSelection};
use crate::labels::Labels;
use crate::storage::{MemoryStore, SourceError};
use crate::value::{Point, Sample, Series, Timestamp, Value};

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Timeout of one request.
    pub timeout: Duration,
    /// How often a request is retried after a connection error, a timeout, a 5xx or a 429.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// File with a bearer token, read for every request (tokens rotate).
    pub bearer_token_file: Option<PathBuf>,
    /// User and password for basic authentication.
    pub basic_auth: Option<(String, String)>,
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// PEM file of certificate authorities to trust besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only.
    pub insecure_skip_verify: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(200),
            concurrency: 8,
            bearer_token_file: None,
            basic_auth: None,
            headers: Vec::new(),
            ca_file: None,
            insecure_skip_verify: false,
        }
    }
}

/// A Prometheus HTTP API.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use promql::eval::Engine;
/// use promql::source::prometheus::{HttpOptions, PrometheusSource};
///
/// let source = PrometheusSource::new("http://127.0.0.1:9090", HttpOptions::default())?;
/// let engine = Engine::default();
/// let expr = promql::parse("sum(rate(istio_requests_total[1m]))")?;
/// let now = 1_700_000_000_000;
/// let store = source.fetch(&engine.plan(&expr, now, now, 0)?).await?;
/// let result = engine.eval(&store, &expr, now, now, 0)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    client: reqwest::Client,
    base: String,
    opts: HttpOptions,
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct ApiSample {
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Debug, Deserialize)]
struct ApiSeries {
    metric: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

fn source_error(msg: impl Into<String>) -> SourceError {
    SourceError(msg.into())
}

/// Seconds with millisecond precision, as the API's `time` parameter.
pub(crate) fn api_time(ms: Timestamp) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

/// A float sample value as the API writes it (`"1.5"`, `"NaN"`, `"+Inf"`).
fn parse_api_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

impl PrometheusSource {
    /// A source for the API at `base_url` (e.g. `http://127.0.0.1:9090`, with any path
    /// prefix before `/api/v1`).
    pub fn new(base_url: &str, opts: HttpOptions) -> Result<Self, SourceError> {
        let mut builder = reqwest::Client::builder().timeout(opts.timeout).tcp_nodelay(true);
        if let Some(ca) = &opts.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| source_error(format!("reading CA file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| source_error(format!("CA file {}: {e}", ca.display())))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if opts.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| source_error(format!("HTTP client: {e}")))?;
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(source_error(format!(
                "Prometheus URL must start with http:// or https://, got {base_url:?}"
            )));
        }
        Ok(PrometheusSource { client, base, opts })
    }

    /// The API's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Fetches the raw samples of every selection of `plan` into a store.
    pub async fn fetch(&self, plan: &Plan) -> Result<MemoryStore, SourceError> {
        // The futures are made before the stream: a closure inside the stream would make
        // the returned future `Send` only for one lifetime, unusable in `tokio::spawn`.
        let fetches: Vec<_> = plan.selections.iter().map(|sel| self.fetch_selection(sel)).collect();
        let results: Vec<Vec<ApiSeries>> =
            stream::iter(fetches).buffered(self.opts.concurrency.max(1)).try_collect().await?;
        let mut store = MemoryStore::new();
        for series in results {
            for s in series {
                let labels = Labels::from_pairs(s.metric.iter());
                for (t, v) in &s.values {
                    let v =
                        parse_api_value(v).ok_or_else(|| source_error(format!("bad sample value {v:?}")))?;
                    store.append(&labels, (t * 1000.0).round() as i64, v);
                }
            }
        }
        Ok(store)
    }

    /// Pulls the raw samples of every series matching `selectors` in `[start, end]`,
    /// in windows of at most an hour so that no response grows unbounded: what
    /// `promql-cli record` writes to a fixture.
    pub async fn record(
        &self,
        selectors: &[String],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<MemoryStore, SourceError> {
        const CHUNK_MS: i64 = 3_600_000;
        let mut selections = Vec::new();
        for sel in selectors {
            let expr = crate::parse(sel).map_err(|e| source_error(format!("--match {sel:?}: {e}")))?;
            let crate::ast::Expr::VectorSelector(vs) = expr.unparen() else {
                return Err(source_error(format!(
                    "--match {sel:?}: expected a series selector like up{{job=\"x\"}}"
                )));
            };
            let mut from = start;
            while from <= end {
                let to = (from + CHUNK_MS - 1).min(end);
                selections.push(
                    PlannedSelection::from_selector(vs, from, to).map_err(|e| source_error(e.to_string()))?,
                );
                from = to + 1;
            }
        }
        self.fetch(&Plan { selections }).await
    }

    /// Evaluates `query` at `time` on the server itself (`/api/v1/query`): what a
    /// client that forwards queries, rather than evaluating them, does.
    pub async fn instant_query(&self, query: &str, time: Timestamp) -> Result<Value, SourceError> {
        let data = self.query(query, time).await?;
        self.to_value(data)
    }

    /// Evaluates a range query on the server itself (`/api/v1/query_range`).
    pub async fn range_query(
        &self,
        query: &str,
        start: Timestamp,
        end: Timestamp,
        step: i64,
    ) -> Result<Value, SourceError> {
        let params = [
            ("query", query.to_owned()),
            ("start", api_time(start)),
            ("end", api_time(end)),
            ("step", api_time(step)),
        ];
        let data = self.get_with_retries("/api/v1/query_range", &params).await?;
        self.to_value(data)
    }

    fn to_value(&self, data: ApiData) -> Result<Value, SourceError> {
        let bad = |e: serde_json::Error| source_error(format!("malformed {} result: {e}", data.result_type));
        Ok(match data.result_type.as_str() {
            "scalar" | "string" => {
                let (t, v): (f64, String) = serde_json::from_value(data.result.clone()).map_err(bad)?;
                let t = (t * 1000.0).round() as i64;
                if data.result_type == "string" {
                    Value::String { t, v }
                } else {
                    let v =
                        parse_api_value(&v).ok_or_else(|| source_error(format!("bad sample value {v:?}")))?;
                    Value::Scalar { t, v }
                }
            }
            "vector" => {
                let items: Vec<ApiSample> = serde_json::from_value(data.result.clone()).map_err(bad)?;
                let mut out = Vec::with_capacity(items.len());
                for s in items {
                    let (t, v) = s.value;
                    let v =
                        parse_api_value(&v).ok_or_else(|| source_error(format!("bad sample value {v:?}")))?;
                    out.push(Sample {
                        labels: Labels::from_pairs(s.metric.iter()),
                        t: (t * 1000.0).round() as i64,
                        v,
                    });
                }
                Value::Vector(out)
            }
            "matrix" => {
                let items: Vec<ApiSeries> = serde_json::from_value(data.result.clone()).map_err(bad)?;
                let mut out = Vec::with_capacity(items.len());
                for s in items {
                    let mut points = Vec::with_capacity(s.values.len());
                    for (t, v) in &s.values {
                        let v = parse_api_value(v)
                            .ok_or_else(|| source_error(format!("bad sample value {v:?}")))?;
                        points.push(Point { t: (t * 1000.0).round() as i64, v });
                    }
                    out.push(Series { labels: Labels::from_pairs(s.metric.iter()), points });
                }
                Value::Matrix(out)
            }
            other => return Err(source_error(format!("unknown result type {other:?}"))),
        })
    }

    /// One selection as an instant query of a range selector at the window's end. The
    /// range is one millisecond longer than the window so that Prometheus 3's
    /// left-open windows include the first millisecond too.
    async fn fetch_selection(&self, sel: &PlannedSelection) -> Result<Vec<ApiSeries>, SourceError> {
        let range_ms = (sel.end - sel.start + 1).max(1);
        let query = format!("{}[{range_ms}ms]", sel.selector());
        let data = self.query(&query, sel.end).await?;
        if data.result_type != "matrix" {
            return Err(source_error(format!("expected a matrix for {query}, got {}", data.result_type)));
        }
        serde_json::from_value(data.result)
            .map_err(|e| source_error(format!("malformed matrix for {query}: {e}")))
    }

    /// `GET /api/v1/query`.
    async fn query(&self, query: &str, time: Timestamp) -> Result<ApiData, SourceError> {
        self.get_with_retries("/api/v1/query", &[("query", query.to_owned()), ("time", api_time(time))]).await
    }

    /// A GET with retries; the backend's own error message is kept.
    async fn get_with_retries(&self, path: &str, params: &[(&str, String)]) -> Result<ApiData, SourceError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            let outcome = self.request(&url, params).await;
            match outcome {
                Ok(data) => return Ok(data),
                Err((retryable, e)) if !retryable || attempt >= self.opts.retries => return Err(e),
                Err(_) => {
                    tokio::time::sleep(self.opts.backoff * 2u32.saturating_pow(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One request; the error says whether trying again may help.
    async fn request(&self, url: &str, params: &[(&str, String)]) -> Result<ApiData, (bool, SourceError)> {
        let mut req = self.client.get(url).query(params);
        if let Some(path) = &self.opts.bearer_token_file {
            let token = std::fs::read_to_string(path).map_err(|e| {
                (false, source_error(format!("reading bearer token file {}: {e}", path.display())))
            })?;
            req = req.bearer_auth(token.trim());
        }
        if let Some((user, password)) = &self.opts.basic_auth {
            req = req.basic_auth(user, Some(password));
        }
        for (name, value) in &self.opts.headers {
            req = req.header(name, value);
        }
        let resp = req.send().await.map_err(|e| (true, source_error(format!("{url}: {e}"))))?;
        let status = resp.status();
        let retryable = status.is_server_error() || status.as_u16() == 429;
        let body = resp.bytes().await.map_err(|e| (true, source_error(format!("{url}: {e}"))))?;
        let parsed: Result<ApiResponse, _> = serde_json::from_slice(&body);
        match parsed {
            Ok(r) if r.status == "success" => {
                r.data.ok_or_else(|| (false, source_error(format!("{url}: response without data"))))
            }
            Ok(r) => {
                let kind = r.error_type.unwrap_or_default();
                let msg = r.error.unwrap_or_else(|| "unknown error".into());
                Err((retryable, source_error(format!("{kind}: {msg}"))))
            }
            Err(_) => {
                let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
                Err((
                    retryable,
                    source_error(format!("{url}: HTTP {status}: not a Prometheus API response: {snippet}")),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_values() {
        assert_eq!(api_time(1_700_000_000_123), "1700000000.123");
        assert_eq!(api_time(-1), "-0.001");
        assert_eq!(api_time(-1500), "-1.500");
        assert_eq!(api_time(0), "0.000");
        assert_eq!(parse_api_value("+Inf"), Some(f64::INFINITY));
        assert!(parse_api_value("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_api_value("1.5"), Some(1.5));
        assert_eq!(parse_api_value("x"), None);
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(PrometheusSource::new("localhost:9090", HttpOptions::default()).is_err());
    }
}
