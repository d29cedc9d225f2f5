//! `promql-cli serve`: a Prometheus-compatible HTTP API over fixtures, so that Grafana,
//! promtool and scripts written for Prometheus can query recorded data.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::serve::ListenerExt;
use axum::Router;
use promql::eval::{AnnotationKind, Engine, EngineOptions, EvalError, Offload, QueryResult};
use promql::storage::{LabelMatcher, MemoryStore, SampleSource, Selection};
use promql::value::Value;
use serde_json::{json, Value as Json};

/// Prometheus refuses range queries with more points than this per series.
const MAX_POINTS: i64 = 11_000;

struct AppState {
    store: MemoryStore,
    /// For one query at a time: large ones split their work over rayon's pool.
    engine: Engine,
    /// For queries that come while another holds `engine`: single-threaded.
    serial: Engine,
    /// Whether a query holds `engine`.
    splitting: AtomicBool,
}

impl AppState {
    fn new(store: MemoryStore, engine: Engine) -> Self {
        // Queries run on the runtime worker that read them (`query_api`); those that are
        // not light hand the worker's other tasks to another thread first.
        let offload = Some(Offload::new(|work| tokio::task::block_in_place(work)));
        let engine = engine.with_options(EngineOptions { offload, ..engine.options().clone() });
        let serial = engine.with_options(EngineOptions { parallel: false, ..engine.options().clone() });
        AppState { store, engine, serial, splitting: AtomicBool::new(false) }
    }

    /// An engine for one query: the one that splits large queries over rayon's pool if
    /// no other query holds it, else a single-threaded one, so that a long query's parts
    /// do not queue later queries behind them in the pool.
    fn engine(&self) -> EngineLease<'_> {
        let parallel = !self.splitting.swap(true, Ordering::AcqRel);
        EngineLease { state: self, parallel }
    }
}

/// An engine of [`AppState::engine`], released when dropped (also when a query panics).
struct EngineLease<'a> {
    state: &'a AppState,
    parallel: bool,
}

impl std::ops::Deref for EngineLease<'_> {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        if self.parallel {
            &self.state.engine
        } else {
            &self.state.serial
        }
    }
}

impl Drop for EngineLease<'_> {
    fn drop(&mut self) {
        if self.parallel {
            self.state.splitting.store(false, Ordering::Release);
        }
    }
}

/// An API error: Prometheus' `errorType` and HTTP status.
struct ApiError {
    kind: &'static str,
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_data(message: impl Into<String>) -> Self {
        ApiError { kind: "bad_data", status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    fn param(name: &str, err: impl std::fmt::Display) -> Self {
        Self::bad_data(format!("invalid parameter \"{name}\": {err}"))
    }
}

impl From<EvalError> for ApiError {
    fn from(e: EvalError) -> Self {
        match e {
            EvalError::Parse(p) => ApiError::param("query", p),
            EvalError::Cancelled => {
                ApiError { kind: "canceled", status: StatusCode::SERVICE_UNAVAILABLE, message: e.to_string() }
            }
            EvalError::Timeout => {
                ApiError { kind: "timeout", status: StatusCode::SERVICE_UNAVAILABLE, message: e.to_string() }
            }
            e => ApiError {
                kind: "execution",
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: e.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.kind, "error": self.message});
        (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

fn success(data: Json) -> Response {
    success_with(|body| body.push_str(&data.to_string()), None, "")
}

/// Most values of an answer written on the runtime worker without handing its other
/// tasks over: about a third of a millisecond of writing.
const LARGE_ANSWER: usize = 16_384;

/// A query's answer: its `data` is written straight into the body
/// (`promql::api::write_data_json_with`), not built as a tree, over rayon's pool only
/// by the engine that may use it.
fn success_result(result: &QueryResult, engine: &Engine, query: &str) -> Response {
    let parallel = engine.options().parallel;
    let respond = || {
        success_with(
            |body| promql::api::write_data_json_with(&result.value, body, parallel),
            Some(result),
            query,
        )
    };
    // Writing a large answer is long work too (`query_api`).
    if points(&result.value) > LARGE_ANSWER {
        tokio::task::block_in_place(respond)
    } else {
        respond()
    }
}

/// How many values `value` holds.
fn points(value: &Value) -> usize {
    match value {
        Value::Matrix(series) => series.iter().map(|s| s.points.len()).sum(),
        Value::Vector(samples) => samples.len(),
        Value::Scalar { .. } | Value::String { .. } => 1,
    }
}

/// A success body around the `data` that `write_data` appends.
fn success_with(write_data: impl FnOnce(&mut String), result: Option<&QueryResult>, query: &str) -> Response {
    let mut body = String::from(r#"{"status":"success","data":"#);
    write_data(&mut body);
    if let Some(r) = result {
        let pick = |kind| -> Vec<String> {
            r.annotations.iter().filter(|a| a.kind == kind).map(|a| a.render(query)).collect()
        };
        for (key, list) in
            [("warnings", pick(AnnotationKind::Warning)), ("infos", pick(AnnotationKind::Info))]
        {
            if !list.is_empty() {
                body.push_str(&format!(",\"{key}\":{}", json!(list)));
            }
        }
    }
    body.push('}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The parameters of a request: the URL's query string and, for a form POST, the body.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(
        method: &Method,
        headers: &HeaderMap,
        query: Option<String>,
        body: &Bytes,
    ) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = match query {
            Some(q) => serde_urlencoded::from_str(&q)
                .map_err(|e| ApiError::bad_data(format!("bad query string: {e}")))?,
            None => Vec::new(),
        };
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if method == Method::POST && form {
            let body: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| ApiError::bad_data(format!("bad form body: {e}")))?;
            pairs.extend(body);
        }
        Ok(Params(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    fn time(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(v) => parse_api_time(v)
                .ok_or_else(|| ApiError::param(name, format!("cannot parse {v:?} to a valid timestamp"))),
        }
    }
}

/// Prometheus' `parseTime`: Unix seconds (with fraction) or RFC 3339, and the texts of
/// its own earliest and latest times, which clients send for "all time" and no RFC 3339
/// parser reads (years of nine digits).
fn parse_api_time(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<f64>() {
        return secs.is_finite().then(|| (secs * 1000.0).round() as i64);
    }
    match s {
        "-292273086-05-16T16:47:06Z" => return Some(-9_223_309_901_257_974_000),
        "292277025-08-18T07:12:54.999999999Z" => return Some(9_223_309_901_257_974_999),
        _ => {}
    }
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// An endpoint: state, parameters, and the `{name}` of the path where there is one.
type Handler = fn(&AppState, &Params, &str) -> Result<Response, ApiError>;

/// A route for GET and form POST. A request is answered on the runtime worker that
/// read it: `block_in_place` offers the worker's other tasks, and the I/O driver, to a
/// blocking thread while `f` runs, so health checks answer while a long request runs.
/// Handing each request to a pool and its answer back cost 0.03–0.1 ms more on this
/// project's 2-core VM, whose idle cores halt. Running a long request without
/// `block_in_place` is not safe, even the only one in flight: the runtime's other
/// worker need not be the one polling the I/O driver, and health checks then waited for
/// it (the busy-server test, run beside another, failed that way every time). Needs a
/// multi-thread runtime, as [`serve`] builds.
fn api(f: Handler) -> MethodRouter<Arc<AppState>> {
    route(f, true)
}

/// [`api`] for the query endpoints, which run light queries in place (parsing and
/// planning too): the engine offloads the others ([`AppState::new`]) and
/// [`success_result`] the writing of large answers. `block_in_place` wakes a thread
/// for the worker's tasks, and on this project's VM that was a fifth of a one-workload
/// query's time as a client sees it.
fn query_api(f: Handler) -> MethodRouter<Arc<AppState>> {
    route(f, false)
}

fn route(f: Handler, hand_over: bool) -> MethodRouter<Arc<AppState>> {
    let handler = move |State(state): State<Arc<AppState>>,
                        name: Option<Path<String>>,
                        method: Method,
                        headers: HeaderMap,
                        RawQuery(query): RawQuery,
                        body: Bytes| async move {
        let params = match Params::parse(&method, &headers, query, &body) {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
        let name = name.map(|Path(n)| n).unwrap_or_default();
        let run = || catch_unwind(AssertUnwindSafe(|| f(&state, &params, &name)));
        let answer = if hand_over { tokio::task::block_in_place(run) } else { run() };
        match answer {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => e.into_response(),
            Err(payload) => {
                internal(&format!("query panicked, please report a bug: {}", panic_text(&*payload)))
            }
        }
    };
    get(handler).post(handler)
}

fn internal(message: &str) -> Response {
    ApiError { kind: "internal", status: StatusCode::INTERNAL_SERVER_ERROR, message: message.to_owned() }
        .into_response()
}

/// The message of a panic payload (`panic!` with a literal or with formatting).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn instant_query(state: &AppState, p: &Params, _: &str) -> Result<Response, ApiError> {
    let query = p.get("query").ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": missing"))?;
    let time = p.time("time", crate::timeflags::now_ms())?;
    let engine = state.engine();
    let result = engine.instant_query(&state.store, query, time)?;
    Ok(success_result(&result, &engine, query))
}

fn range_query(state: &AppState, p: &Params, _: &str) -> Result<Response, ApiError> {
    let query = p.get("query").ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": missing"))?;
    let start = p.time("start", i64::MIN).and_then(|t| required(t, "start"))?;
    let end = p.time("end", i64::MIN).and_then(|t| required(t, "end"))?;
    let step = match p.get("step") {
        Some(s) => crate::timeflags::parse_duration(s).map_err(|e| ApiError::param("step", e))?,
        None => return Err(ApiError::param("step", "missing")),
    };
    if end < start {
        return Err(ApiError::param("end", "end timestamp must not be before start time"));
    }
    if step <= 0 {
        return Err(ApiError::param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // In 128 bits: the span of the earliest and latest times overflows 64.
    if (i128::from(end) - i128::from(start)) / i128::from(step) > i128::from(MAX_POINTS) {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let engine = state.engine();
    let result = engine.range_query(&state.store, query, start, end, step)?;
    Ok(success_result(&result, &engine, query))
}

fn required(t: i64, name: &str) -> Result<i64, ApiError> {
    if t == i64::MIN {
        Err(ApiError::param(name, "missing"))
    } else {
        Ok(t)
    }
}

/// The series matching each of the `match[]` selectors within `start`..`end`, a series
/// once per selector that matches it. Selected through `select_shared`, which lends the
/// samples: only whether a series has any in range is needed (copying them cost
/// `label/…/values` 46 MB and 60 ms on 12k series).
fn matching_series(
    state: &AppState,
    p: &Params,
    selectors: &[&str],
) -> Result<Vec<promql::Labels>, ApiError> {
    let (start, end) = (p.time("start", i64::MIN)?, p.time("end", i64::MAX)?);
    let mut out = Vec::new();
    for sel in selectors {
        let expr = promql::parse(sel).map_err(|e| ApiError::param("match[]", e))?;
        let promql::Expr::VectorSelector(vs) = expr.unparen() else {
            return Err(ApiError::param("match[]", format!("{sel:?} is not a series selector")));
        };
        let mut matchers = Vec::new();
        if let Some(name) = &vs.name {
            matchers.push(
                LabelMatcher::new("__name__", promql::ast::MatchOp::Equal, name)
                    .map_err(|e| ApiError::param("match[]", e))?,
            );
        }
        for m in &vs.matchers {
            matchers.push(LabelMatcher::from_ast(m).map_err(|e| ApiError::param("match[]", e))?);
        }
        let found = state
            .store
            .select_shared(&Selection { matchers: &matchers, start, end })
            .map_err(|e| ApiError::bad_data(e.0))?;
        out.extend(found.into_iter().filter(|s| !s.points.is_empty()).map(|s| s.labels));
    }
    Ok(out)
}

fn series(state: &AppState, p: &Params, _: &str) -> Result<Response, ApiError> {
    let selectors = p.all("match[]");
    if selectors.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    // Sorted, and once each where selectors overlap.
    let series: BTreeSet<promql::Labels> = matching_series(state, p, &selectors)?.into_iter().collect();
    let data: Vec<Json> = series
        .iter()
        .map(|l| {
            Json::Object(l.iter().map(|l| (l.name.to_string(), Json::String(l.value.to_string()))).collect())
        })
        .collect();
    Ok(success(Json::Array(data)))
}

fn labels(state: &AppState, p: &Params, _: &str) -> Result<Response, ApiError> {
    let selectors = p.all("match[]");
    let names: BTreeSet<String> = if selectors.is_empty() {
        // Without selectors, from the index instead of every series.
        let (start, end) = (p.time("start", i64::MIN)?, p.time("end", i64::MAX)?);
        state.store.label_names(start, end).into_iter().map(str::to_owned).collect()
    } else {
        let series = matching_series(state, p, &selectors)?;
        let names: BTreeSet<&str> = series.iter().flat_map(|l| l.iter().map(|l| &*l.name)).collect();
        names.into_iter().map(str::to_owned).collect()
    };
    Ok(success(json!(names)))
}

fn label_values(state: &AppState, p: &Params, name: &str) -> Result<Response, ApiError> {
    let selectors = p.all("match[]");
    let values: BTreeSet<String> = if selectors.is_empty() {
        let (start, end) = (p.time("start", i64::MIN)?, p.time("end", i64::MAX)?);
        state.store.label_values(name, start, end).into_iter().map(str::to_owned).collect()
    } else {
        let series = matching_series(state, p, &selectors)?;
        let values: BTreeSet<&str> = series.iter().filter_map(|l| l.get(name)).collect();
        values.into_iter().map(str::to_owned).collect()
    };
    Ok(success(json!(values)))
}

fn buildinfo(_: &AppState, _: &Params, _: &str) -> Result<Response, ApiError> {
    let data = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "promql-cli",
        "buildDate": "",
        "goVersion": "none (Rust)",
    });
    Ok(success(data))
}

/// The router of the API. Its handlers call `block_in_place`, so it must run on a
/// multi-thread runtime.
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/query", query_api(instant_query))
        .route("/api/v1/query_range", query_api(range_query))
        .route("/api/v1/series", api(series))
        .route("/api/v1/labels", api(labels))
        .route("/api/v1/label/{name}/values", api(label_values))
        .route("/api/v1/status/buildinfo", api(buildinfo))
        .route("/-/ready", get(|| async { "Ready.\n" }))
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .with_state(state)
}

/// Loads the fixtures and serves until SIGTERM or Ctrl-C.
pub fn serve(store: MemoryStore, engine: Engine, listen: &str) -> anyhow::Result<()> {
    let addr: SocketAddr =
        listen.parse().with_context(|| format!("--listen {listen:?}: expected HOST:PORT"))?;
    // Every request but a light query wakes an idle blocking thread to offer the
    // worker's tasks to (`api`, `query_api`); kept five minutes instead of ten seconds,
    // so that a client asking every 15 s (an autoscaler) does not have a thread started
    // for each request.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_keep_alive(std::time::Duration::from_secs(300))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!("serving the Prometheus API on http://{local} ({} series)", store.series_count());
        let app = router(Arc::new(AppState::new(store, engine)));
        // Small responses must not wait for Nagle's algorithm.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
        eprintln!("shut down");
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_times_read_as_prometheus_reads_them() {
        for (text, ms) in [
            ("1704070800", Some(1_704_070_800_000)),
            ("1704070800.5", Some(1_704_070_800_500)),
            ("2024-01-01T02:00:00+01:00", Some(1_704_070_800_000)),
            ("2024-01-01T01:00:00.5Z", Some(1_704_070_800_500)),
            // Prometheus' `minTimeFormatted` and `maxTimeFormatted` (in milliseconds).
            ("-292273086-05-16T16:47:06Z", Some(-9_223_309_901_257_974_000)),
            ("292277025-08-18T07:12:54.999999999Z", Some(9_223_309_901_257_974_999)),
            ("2024-01-01T01:00:00", None),
            ("NaN", None),
            ("abc", None),
        ] {
            assert_eq!(parse_api_time(text), ms, "{text}");
        }
    }
}
