//! Backends at run time: where a [`MetricQuery`](crate::config::MetricQuery)'s PromQL is
//! evaluated. Built once per distinct [`config::Backend`] and shared by its queries.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use promql::eval::Engine;
use promql::source::prometheus::{HttpOptions, PrometheusSource};
use promql::storage::{load_fixture, MemoryStore, SampleSource};
use promql::value::{Timestamp, Value};

use crate::config::{self, FixtureTime};
use crate::pods::PodScrapers;

/// Why a backend could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The Prometheus API failed: unreachable, timed out, an error answer or garbage.
    #[error("{0}")]
    Source(String),
    /// The query failed in the embedded engine.
    #[error("query failed: {0}")]
    Eval(String),
    /// The backend cannot be built from its configuration.
    #[error("{0}")]
    Setup(String),
}

/// A backend ready to evaluate queries.
#[derive(Debug, Clone)]
pub enum Runtime {
    /// Forward to a Prometheus-compatible `/api/v1/query`.
    Prometheus(PrometheusSource),
    /// Fetch the selected samples from a Prometheus API, evaluate with the engine.
    Local {
        /// The API samples come from.
        source: PrometheusSource,
        /// The engine.
        engine: Arc<Engine>,
    },
    /// Scrape annotated pods, evaluate with the engine over what was scraped.
    Pods {
        /// The scrapers.
        pods: Arc<PodScrapers>,
        /// The engine.
        engine: Arc<Engine>,
        /// The pod watch, stopped with the last clone of this backend (its scrapers
        /// stop with it).
        watch: Arc<AbortOnDrop>,
    },
    /// Evaluate with the engine over a loaded file.
    Fixture {
        /// The samples.
        store: Arc<MemoryStore>,
        /// The file's newest sample, for [`FixtureTime::End`].
        end: Option<Timestamp>,
        /// When to evaluate.
        at: FixtureTime,
        /// The engine.
        engine: Arc<Engine>,
    },
}

/// Settings shared by all backends, from the command line.
#[derive(Clone, Default)]
pub struct BackendDefaults {
    /// `--prometheus-server`: the URL of backends without their own.
    pub prometheus_server: Option<String>,
    /// The Kubernetes API, for pod discovery.
    pub kube: Option<kube::Client>,
}

impl Runtime {
    /// Builds a backend: loads a fixture, prepares an HTTP client.
    pub fn build(backend: &config::Backend, defaults: &BackendDefaults) -> Result<Runtime, BackendError> {
        match backend {
            config::Backend::Prometheus(p) => {
                let url = p.url.clone().or_else(|| defaults.prometheus_server.clone()).ok_or_else(|| {
                    BackendError::Setup(
                        "no Prometheus URL: set --prometheus-server or the backend's url".into(),
                    )
                })?;
                let opts = http_options(p)?;
                let source =
                    PrometheusSource::new(&url, opts).map_err(|e| BackendError::Setup(e.to_string()))?;
                Ok(Runtime::Prometheus(source))
            }
            config::Backend::Local { api: Some(api), .. } => {
                let url = api.url.as_deref().unwrap_or_default();
                let source = PrometheusSource::new(url, http_options(api)?)
                    .map_err(|e| BackendError::Setup(e.to_string()))?;
                Ok(Runtime::Local { source, engine: Arc::new(Engine::default()) })
            }
            config::Backend::Local { api: None, scrape_interval, retention } => {
                let client = defaults.kube.clone().ok_or_else(|| {
                    BackendError::Setup(
                        "a local backend without url scrapes pods found through the Kubernetes API: \
                         run in a pod or give --kubeconfig"
                            .into(),
                    )
                })?;
                let pods = PodScrapers::new(*scrape_interval, *retention);
                let watch = Arc::new(AbortOnDrop(tokio::spawn(pods.clone().watch(client))));
                Ok(Runtime::Pods { pods, engine: Arc::new(Engine::default()), watch })
            }
            config::Backend::Fixture { file, at } => {
                let mut store = MemoryStore::new();
                let engine = Engine::default();
                let stats = load_fixture(Path::new(file), None, &mut store, engine.options().max_samples)
                    .map_err(|e| BackendError::Setup(format!("fixture backend: {e}")))?;
                store.shrink_to_fit();
                Ok(Runtime::Fixture {
                    store: Arc::new(store),
                    end: stats.max_time,
                    at: *at,
                    engine: Arc::new(engine),
                })
            }
        }
    }

    /// A short description for logs and the debug endpoint.
    pub fn describe(&self) -> String {
        match self {
            Runtime::Prometheus(s) => format!("prometheus {}", s.base_url()),
            Runtime::Local { source, .. } => format!("local over {}", source.base_url()),
            Runtime::Fixture { store, .. } => format!("fixture ({} series)", store.series_count()),
            Runtime::Pods { pods, .. } => format!("local over {} scraped pods", pods.target_count()),
        }
    }

    /// The evaluation time for a collection at wall-clock `now`.
    pub fn eval_time(&self, now: Timestamp) -> Timestamp {
        match self {
            Runtime::Fixture { at: FixtureTime::End, end: Some(end), .. } => *end,
            _ => now,
        }
    }

    /// Evaluates `query` at `t`; the embedded engine gives up after `timeout` (a
    /// collection that timed out must not keep a core busy).
    pub async fn instant(&self, query: &str, t: Timestamp, timeout: Duration) -> Result<Value, BackendError> {
        match self {
            Runtime::Prometheus(source) => {
                source.instant_query(query, t).await.map_err(|e| BackendError::Source(e.to_string()))
            }
            Runtime::Local { source, engine } => {
                let expr = promql::parse_with(query, engine.options().features)
                    .map_err(|e| BackendError::Eval(e.to_string()))?;
                let plan = engine.plan(&expr, t, t, 0).map_err(|e| BackendError::Eval(e.to_string()))?;
                let store = source.fetch(&plan).await.map_err(|e| BackendError::Source(e.to_string()))?;
                evaluate(engine, Arc::new(store), query, t, timeout).await
            }
            Runtime::Pods { pods, engine, .. } => evaluate(engine, pods.clone(), query, t, timeout).await,
            Runtime::Fixture { store, engine, .. } => {
                evaluate(engine, store.clone(), query, t, timeout).await
            }
        }
    }
}

/// `engine` with its evaluation timeout at most `timeout`, sharing its parsed queries:
/// an autoscaler asks the same queries every 15 s.
fn with_timeout(engine: &Engine, timeout: Duration) -> Engine {
    let mut opts = engine.options().clone();
    opts.timeout = Some(opts.timeout.map_or(timeout, |t| t.min(timeout)));
    engine.with_options(opts)
}

/// How to reach a Prometheus API: credentials, CA and timeout of the backend.
fn http_options(p: &config::PrometheusBackend) -> Result<HttpOptions, BackendError> {
    let basic_auth = match &p.basic_auth {
        None => None,
        Some(b) => {
            let password = std::fs::read_to_string(&b.password_file).map_err(|e| {
                BackendError::Setup(format!("basic auth password file {}: {e}", b.password_file))
            })?;
            Some((b.username.clone(), password.trim_end_matches(['\r', '\n']).to_owned()))
        }
    };
    Ok(HttpOptions {
        timeout: p.timeout,
        basic_auth,
        // The next collection is the retry: a retry inside one would run past the
        // interval when Prometheus is slow.
        retries: 0,
        bearer_token_file: p.bearer_token_file.as_ref().map(Into::into),
        ca_file: p.ca_file.as_ref().map(Into::into),
        ..HttpOptions::default()
    })
}

/// Evaluates `query` at `t` over an in-memory source, off the async threads: it is CPU
/// work.
async fn evaluate(
    engine: &Engine,
    source: Arc<dyn SampleSource + Send + Sync>,
    query: &str,
    t: Timestamp,
    timeout: Duration,
) -> Result<Value, BackendError> {
    let engine = with_timeout(engine, timeout);
    let query = query.to_owned();
    tokio::task::spawn_blocking(move || engine.instant_query(source.as_ref(), &query, t))
        .await
        .map_err(|e| BackendError::Eval(format!("evaluation task failed: {e}")))?
        .map(|r| r.value)
        .map_err(|e| BackendError::Eval(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BasicAuth, PrometheusBackend};

    /// A Prometheus API stand-in that answers only with the right credentials.
    async fn api_with_basic_auth() -> String {
        use axum::http::{HeaderMap, StatusCode};
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(|headers: HeaderMap| async move {
                // "hpa:s3cret" in base64.
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    != Some("Basic aHBhOnMzY3JldA==")
                {
                    return (StatusCode::UNAUTHORIZED, "unauthorized".to_owned());
                }
                let body =
                    r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}"#;
                (StatusCode::OK, body.to_owned())
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn prometheus_backend_sends_basic_auth() {
        let url = api_with_basic_auth().await;
        let dir = testkit::temp_dir("extmetrics-basic");
        let password_file = dir.join("password");
        std::fs::write(&password_file, "s3cret\n").unwrap();
        let backend = |password_file: String| {
            config::Backend::Prometheus(PrometheusBackend {
                url: Some(url.clone()),
                bearer_token_file: None,
                basic_auth: Some(BasicAuth { username: "hpa".into(), password_file }),
                ca_file: None,
                timeout: Duration::from_secs(5),
            })
        };
        let rt = Runtime::build(&backend(password_file.display().to_string()), &BackendDefaults::default())
            .unwrap();
        assert_eq!(
            rt.instant("x", 1_700_000_000_000, Duration::from_secs(5)).await.unwrap(),
            Value::Scalar { t: 1_700_000_000_000, v: 42.0 }
        );
        let missing = Runtime::build(&backend("/nonexistent/password".into()), &BackendDefaults::default());
        assert!(missing.unwrap_err().to_string().contains("/nonexistent/password"));
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// A task aborted when this is dropped.
#[derive(Debug)]
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for BackendDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendDefaults")
            .field("prometheus_server", &self.prometheus_server)
            .field("kube", &self.kube.is_some())
            .finish()
    }
}
