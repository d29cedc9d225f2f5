//! The HTTPS server: TLS with optional client certificates, front-proxy authentication,
//! the `external.metrics.k8s.io/v1beta1` routes, health endpoints; and the plain HTTP
//! server with `/metrics` and `/debug/queries`.
//!
//! Authentication follows an aggregated API server's request-header scheme: the
//! kube-apiserver connects with a client certificate signed by the front-proxy CA
//! (`--requestheader-client-ca-file`) whose common name is one of
//! `--requestheader-allowed-names` (any name when the list is empty), and names the user
//! in `X-Remote-User`/`X-Remote-Group`. Those headers are trusted only on such a
//! connection; a verified client without them is the certificate's common name.
//! Everything else gets 401, except `/healthz`, `/livez` and `/readyz`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Serialize;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::api::{
    APIGroup, APIGroupList, APIResourceList, ExternalMetricValueList, Status, GROUP, GROUP_VERSION,
};
use crate::cluster::{Attributes, Authorizer, Decision, Target};
use crate::collector::Collector;
use crate::selector::Selector;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A certificate, key or CA file is missing or invalid.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// TLS could not be configured.
    #[error("TLS: {0}")]
    Tls(String),
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// How the HTTPS server authenticates clients.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// The front proxy's CA: from `--requestheader-client-ca-file`, or from
    /// `kube-system/extension-apiserver-authentication`.
    pub client_ca: Option<ClientCa>,
    /// `--requestheader-allowed-names`: common names allowed (empty: any).
    pub allowed_names: Vec<String>,
    /// `--requestheader-username-headers`.
    pub username_headers: Vec<String>,
    /// `--requestheader-group-headers`.
    pub group_headers: Vec<String>,
}

/// CA certificates (PEM) and where they came from, for messages.
#[derive(Debug, Clone, Default)]
pub struct ClientCa {
    /// A file name or a ConfigMap.
    pub source: String,
    /// The PEM text.
    pub pem: Vec<u8>,
}

/// The TLS server configuration: the serving pair from files, or a self-signed one.
pub fn tls_config(
    cert_file: Option<&str>,
    key_file: Option<&str>,
    auth: &AuthOptions,
) -> Result<(Arc<ServerConfig>, bool), ServerError> {
    let (chain, key, self_signed) = match (cert_file, key_file) {
        (Some(c), Some(k)) => (read_certs(c)?, read_key(k)?, false),
        (None, None) => {
            let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
            let ck = rcgen::generate_simple_self_signed(names)
                .map_err(|e| ServerError::Tls(format!("cannot generate a self-signed certificate: {e}")))?;
            let key = PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
            (vec![ck.cert.der().clone()], key, true)
        }
        _ => {
            return Err(ServerError::Tls(
                "--tls-cert-file and --tls-private-key-file must be given together".into(),
            ))
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match &auth.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let pem_err = |message: String| ServerError::Pem { path: ca.source.clone(), message };
            let certs = CertificateDer::pem_slice_iter(&ca.pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(pem_err("no PEM certificate".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| pem_err(e.to_string()))?;
            }
            // Clients without a certificate may connect (health checks); they get 401.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| ServerError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| ServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), self_signed))
}

fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let pem_err = |message: String| ServerError::Pem { path: path.to_owned(), message };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, ServerError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| ServerError::Pem { path: path.to_owned(), message: e.to_string() })
}

/// Who is calling, as established by the connection and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No verified client certificate.
    Anonymous,
    /// A verified certificate whose common name is not allowed.
    NotAllowed(String),
    /// An authenticated user.
    User {
        /// User name.
        name: String,
        /// Groups.
        groups: Vec<String>,
    },
}

/// The verified client certificate's common name, if any.
#[derive(Debug, Clone)]
struct PeerCert(Option<String>);

fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The queries and their cache.
    pub collector: Arc<Collector>,
    /// Authentication settings.
    pub auth: Arc<AuthOptions>,
    /// Self-metrics.
    pub metrics: Arc<Metrics>,
    /// Delegated authorization (`--authorization-subject-access-review`); without it
    /// every authenticated caller may read every metric.
    pub authorizer: Option<Arc<Authorizer>>,
}

fn caller(auth: &AuthOptions, cert: Option<&PeerCert>, headers: &HeaderMap) -> Caller {
    let Some(PeerCert(Some(cn))) = cert else { return Caller::Anonymous };
    if !auth.allowed_names.is_empty() && !auth.allowed_names.iter().any(|n| n == cn) {
        return Caller::NotAllowed(cn.clone());
    }
    let header_values = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .flat_map(|n| headers.get_all(n.as_str()).iter())
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    };
    let user = header_values(&auth.username_headers).into_iter().find(|u| !u.is_empty());
    Caller::User { name: user.unwrap_or_else(|| cn.clone()), groups: header_values(&auth.group_headers) }
}

fn json<T: Serialize>(code: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => status_response(&Status::internal_error(format!("cannot encode the answer: {e}"))),
    }
}

fn status_response(s: &Status) -> Response {
    let code = StatusCode::from_u16(s.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONTENT_TYPE, "application/json")], s.to_json()).into_response()
}

const PUBLIC_PATHS: [&str; 3] = ["/healthz", "/livez", "/readyz"];

/// The router of the secure port.
pub fn secure_router(state: AppState) -> Router {
    let api = format!("/apis/{GROUP_VERSION}");
    Router::new()
        .route("/apis", get(|| async { json(StatusCode::OK, &APIGroupList::external_metrics()) }))
        .route(
            &format!("/apis/{GROUP}"),
            get(|| async { json(StatusCode::OK, &APIGroup::external_metrics()) }),
        )
        .route(&api, get(discovery))
        .route(&format!("{api}/namespaces/{{namespace}}/{{metric}}"), get(metric_values))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(fallback)
        // A known path with another method: a Status too, not an empty 405.
        .method_not_allowed_fallback(|method: Method| async move {
            status_response(&Status::method_not_allowed(method.as_str()))
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn authenticate(State(state): State<AppState>, req: Request, next: axum::middleware::Next) -> Response {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let route = route_label(&path);
    let response = if PUBLIC_PATHS.contains(&path.as_str()) {
        next.run(req).await
    } else {
        match caller(&state.auth, req.extensions().get::<PeerCert>(), req.headers()) {
            Caller::Anonymous => status_response(&Status::unauthorized(match &state.auth.client_ca {
                Some(ca) => {
                    format!(
                        "Unauthorized: a client certificate signed by the front-proxy CA ({}) is required",
                        ca.source
                    )
                }
                None => "Unauthorized: no front-proxy CA is configured, so no client can be authenticated"
                    .to_owned(),
            })),
            Caller::NotAllowed(cn) => status_response(&Status::unauthorized(format!(
                "Unauthorized: client certificate common name {cn:?} is not in --requestheader-allowed-names"
            ))),
            Caller::User { name, groups } => {
                tracing::debug!(user = %name, groups = ?groups, method = %req.method(), path = %path, "request");
                match &state.authorizer {
                    None => next.run(req).await,
                    Some(authorizer) => {
                        let attributes = attributes_of(&path, name, groups);
                        match authorizer.decide(&attributes).await {
                            Ok(Decision::Allow) => next.run(req).await,
                            Ok(Decision::Deny(reason)) => status_response(&forbidden(&attributes, &reason)),
                            Err(e) => status_response(&Status::service_unavailable(
                                format!("cannot authorize the request: {e}"),
                                Some(1),
                            )),
                        }
                    }
                }
            }
        }
    };
    let code = response.status().as_u16();
    state.metrics.requests.get_or_create(&RequestLabels { route: route.to_owned(), code }).inc();
    state.metrics.request_seconds.observe(started.elapsed().as_secs_f64());
    response
}

/// What a request asks for, as the kube-apiserver would describe it: a GET of
/// `.../namespaces/{ns}/{metric}` lists the metric's values; anything else is a path.
fn attributes_of(path: &str, user: String, groups: Vec<String>) -> Attributes {
    let prefix = format!("/apis/{GROUP_VERSION}/namespaces/");
    let target = match path.strip_prefix(&prefix).map(|rest| rest.split('/').collect::<Vec<_>>()) {
        Some(parts) if parts.len() == 2 => {
            Target::Metric { namespace: parts[0].to_owned(), metric: parts[1].to_ascii_lowercase() }
        }
        _ => Target::Path(path.to_owned()),
    };
    let verb = if matches!(target, Target::Metric { .. }) { "list" } else { "get" };
    Attributes { user, groups, verb: verb.to_owned(), target }
}

/// 403 worded as the kube-apiserver words it.
fn forbidden(a: &Attributes, reason: &str) -> Status {
    let what = match &a.target {
        Target::Metric { namespace, metric } => format!(
            "cannot {} resource {metric:?} in API group {GROUP:?} in the namespace {namespace:?}",
            a.verb
        ),
        Target::Path(p) => format!("cannot {} path {p:?}", a.verb),
    };
    let reason = if reason.is_empty() { String::new() } else { format!(": {reason}") };
    Status::forbidden(format!("User {:?} {what}{reason}", a.user))
}

fn route_label(path: &str) -> &'static str {
    if PUBLIC_PATHS.contains(&path) {
        "health"
    } else if path.starts_with(&format!("/apis/{GROUP_VERSION}/namespaces/")) {
        "metric"
    } else if path.starts_with("/apis") {
        "discovery"
    } else {
        "other"
    }
}

async fn discovery(State(state): State<AppState>) -> Response {
    json(StatusCode::OK, &APIResourceList::for_metrics(state.collector.metric_names()))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.collector.ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        let entries = state.collector.entries();
        let done = entries.iter().filter(|e| e.collected()).count();
        let msg = format!("not ready: {done} of {} queries collected once", entries.len());
        (StatusCode::SERVICE_UNAVAILABLE, msg).into_response()
    }
}

async fn metric_values(
    State(state): State<AppState>,
    path: Result<UrlPath<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    // Malformed paths and query strings get a Status too, not axum's plain text.
    let (namespace, metric) = match path {
        Ok(UrlPath(p)) => p,
        Err(e) => return status_response(&Status::bad_request(format!("invalid path: {}", e.body_text()))),
    };
    let params = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return status_response(&Status::bad_request(format!("invalid query string: {}", e.body_text())))
        }
    };
    let selector = match params.get("labelSelector").map(|s| Selector::parse(s)).transpose() {
        Ok(s) => s.unwrap_or_else(Selector::everything),
        Err(e) => {
            return status_response(&Status::bad_request(format!("unable to parse labelSelector: {e}")))
        }
    };
    match state.collector.answer(&namespace, &metric, &selector) {
        Ok(items) => json(StatusCode::OK, &ExternalMetricValueList::new(items)),
        Err(status) => status_response(&status),
    }
}

async fn fallback(method: Method, uri: axum::http::Uri) -> Response {
    if method != Method::GET {
        return status_response(&Status::method_not_allowed(method.as_str()));
    }
    status_response(&Status::path_not_found(uri.path()))
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then lets open
/// connections finish for up to ten seconds.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                // Worth seeing: a front proxy with the wrong certificate fails here.
                // (X.509 v1 client certificates, which `openssl x509 -req` makes without
                // an extension file, are refused as UnsupportedCertVersion.)
                Ok(Err(e)) => return tracing::info!(%peer, "TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let cert =
                PeerCert(tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(common_name));
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(cert.clone());
                app.clone().oneshot(req)
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 10s; closing them");
    }
}

/// Binds `addr`.
pub async fn bind(addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr: addr.to_owned(), source })
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    namespace: String,
    metric: String,
    selector: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    namespace: String,
    metric: String,
    selector: String,
    outcome: String,
}

/// The adapter's own metrics.
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histogram,
    collections: Family<OutcomeLabels, Counter>,
    value_age: Family<QueryLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Collections already counted, by entry and outcome: a query replaced under the
    /// same labels starts counting again from its own zero.
    seen_outcomes: std::sync::Mutex<HashMap<(u64, &'static str), u64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = prometheus_client::registry::Registry::with_prefix("extmetrics");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests on the secure port by route and status code",
            requests.clone(),
        );
        let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
        let request_seconds = Histogram::new(buckets);
        registry.register(
            "request_duration_seconds",
            "Latency of requests on the secure port",
            request_seconds.clone(),
        );
        let collections = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "collections",
            "Query collections by outcome (ok, empty, not_finite, backend_error, bad_result)",
            collections.clone(),
        );
        let value_age = Family::<QueryLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register("value_age_seconds", "Age of each query's last good value", value_age.clone());
        Metrics {
            registry,
            requests,
            request_seconds,
            collections,
            value_age,
            seen_outcomes: Default::default(),
        }
    }
}

impl Metrics {
    /// The exposition text, with the collection counters and value ages brought up to date.
    pub fn render(&self, collector: &Collector) -> String {
        let mut seen = self.seen_outcomes.lock().unwrap_or_else(|p| p.into_inner());
        for e in collector.entries() {
            let q = e.query();
            let labels = QueryLabels {
                namespace: q.namespace.as_str().to_owned(),
                metric: q.metric_name.clone(),
                selector: q.labels_text(),
            };
            if let Some(age) = e.value_age() {
                self.value_age.get_or_create(&labels).set(age);
            }
            for (kind, count) in e.outcome_counts() {
                let outcome = OutcomeLabels {
                    namespace: labels.namespace.clone(),
                    metric: labels.metric.clone(),
                    selector: labels.selector.clone(),
                    outcome: kind.to_owned(),
                };
                let last = seen.entry((e.id(), kind)).or_insert(0);
                if count > *last {
                    self.collections.get_or_create(&outcome).inc_by(count - *last);
                    *last = count;
                }
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// The router of the plain metrics port: `/metrics` and `/debug/queries`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move {
                let body = s.metrics.render(&s.collector);
                ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
            }),
        )
        .route(
            "/debug/queries",
            get(|State(s): State<AppState>| async move {
                let queries: Vec<_> = s.collector.entries().iter().map(|e| e.debug()).collect();
                json(
                    StatusCode::OK,
                    &serde_json::json!({"queries": queries, "problems": s.collector.problems()}),
                )
            }),
        )
        .with_state(state)
}

/// Serves the plain router until `shutdown`.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!("metrics server failed: {e}");
    }
}

/// The address a listener is bound to, for logs.
pub fn local_addr(l: &TcpListener) -> String {
    l.local_addr().map(|a: SocketAddr| a.to_string()).unwrap_or_else(|_| "?".into())
}
