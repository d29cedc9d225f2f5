//! `extmetrics-adapter`: a Kubernetes External Metrics API server that lets a
//! HorizontalPodAutoscaler scale on PromQL.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use adapter_extmetrics::backend::BackendDefaults;
use adapter_extmetrics::collector::Collector;
use adapter_extmetrics::config::annotations::from_hpa;
use adapter_extmetrics::config::manifests::hpas_from_yaml;
use adapter_extmetrics::config::{Config, MetricQuery, NamespaceMatch};
use adapter_extmetrics::server::{self, AppState, AuthOptions, Metrics};
use anyhow::Context;
use clap::Parser;

/// A Kubernetes External Metrics API server (external.metrics.k8s.io/v1beta1) that lets
/// HorizontalPodAutoscalers scale on PromQL.
///
/// Queries come from a config file (--config) and from kube-metrics-adapter style
/// annotations of HorizontalPodAutoscaler manifests (--hpa-file). Each query is
/// evaluated on its interval against a Prometheus-compatible API, or locally by the
/// embedded engine, and requests are answered from that cache over HTTPS.
///
/// Exit status: 0 after SIGTERM/SIGINT, 1 when the configuration or a file is invalid
/// or a port cannot be bound, 2 for bad command-line usage.
#[derive(Debug, Parser)]
#[command(name = "extmetrics-adapter", version, about, long_about)]
struct Cli {
    /// Static config file (YAML): metrics, queries, backends, policies.
    #[arg(long, value_name = "FILE")]
    config: Option<String>,
    /// HorizontalPodAutoscaler manifests whose kube-metrics-adapter annotations define
    /// queries (YAML or JSON, several documents or a List). Repeatable.
    #[arg(long = "hpa-file", value_name = "FILE")]
    hpa_files: Vec<String>,
    /// The default Prometheus (backend `default`), e.g. <http://prometheus.monitoring:9090>.
    #[arg(long, value_name = "URL")]
    prometheus_server: Option<String>,
    /// Address of the HTTPS server.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    bind_address: String,
    /// Port of the HTTPS server.
    #[arg(long, default_value_t = 6443, value_name = "PORT")]
    secure_port: u16,
    /// Serving certificate (PEM, chain allowed). Without it and the key, a self-signed
    /// pair is generated at start.
    #[arg(long, value_name = "FILE")]
    tls_cert_file: Option<String>,
    /// Serving private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_private_key_file: Option<String>,
    /// CA bundle verifying client certificates of the front proxy (the kube-apiserver).
    /// Without it every request but /healthz, /livez and /readyz is refused with 401.
    #[arg(long, value_name = "FILE")]
    requestheader_client_ca_file: Option<String>,
    /// Common names allowed for client certificates (comma-separated; empty: any name
    /// signed by the CA).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    requestheader_allowed_names: Vec<String>,
    /// Headers naming the user on a verified connection.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-User", value_name = "HEADERS")]
    requestheader_username_headers: Vec<String>,
    /// Headers naming the user's groups on a verified connection.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Group", value_name = "HEADERS")]
    requestheader_group_headers: Vec<String>,
    /// Plain-HTTP address of /metrics and /debug/queries.
    #[arg(long, default_value = "0.0.0.0:9100", value_name = "ADDR")]
    metrics_address: String,
    /// Validate --config and --hpa-file, print the queries, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("extmetrics-adapter: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The queries of the config file and HPA manifests, and the problems found in them.
fn load_queries(cli: &Cli) -> anyhow::Result<(Vec<MetricQuery>, Vec<String>)> {
    let config = match &cli.config {
        Some(path) => Config::load(std::path::Path::new(path)).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Config::from_yaml_str("(no --config)", "").map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let mut queries = config.metrics.clone();
    let mut problems = Vec::new();
    for file in &cli.hpa_files {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read --hpa-file {file}"))?;
        let hpas = hpas_from_yaml(file, &text)?;
        if hpas.is_empty() {
            problems.push(format!("{file}: no HorizontalPodAutoscaler in the file"));
        }
        for hpa in &hpas {
            let found = from_hpa(hpa, &config.defaults, &config.backends);
            problems.extend(found.problems.iter().map(|p| format!("{file}: {p}")));
            queries.extend(found.queries);
        }
    }
    Ok((dedupe(queries, &mut problems), problems))
}

/// Drops queries answering the same (namespace, metric, labels) as an earlier one:
/// two would be summed into one answer. Identical repeats (two HPAs sharing one
/// annotation) are merged quietly; different ones are reported.
fn dedupe(queries: Vec<MetricQuery>, problems: &mut Vec<String>) -> Vec<MetricQuery> {
    let mut seen: BTreeMap<(String, String, BTreeMap<String, String>), MetricQuery> = BTreeMap::new();
    let mut out = Vec::new();
    for q in queries {
        let ns = match &q.namespace {
            NamespaceMatch::Any => "*".to_owned(),
            NamespaceMatch::Exact(n) => n.clone(),
        };
        let key = (ns, q.metric_name.to_ascii_lowercase(), q.labels.clone());
        match seen.get(&key) {
            Some(first) if first.query == q.query && first.backend == q.backend => {}
            Some(first) => problems.push(format!(
                "{} is defined twice with different queries, at {} and at {}; the first one is used",
                describe(&q),
                first.origin,
                q.origin
            )),
            None => {
                seen.insert(key, q.clone());
                out.push(q);
            }
        }
    }
    out
}

/// `namespace/metric{labels}`.
fn describe(q: &MetricQuery) -> String {
    let ns = match &q.namespace {
        NamespaceMatch::Any => "*",
        NamespaceMatch::Exact(n) => n,
    };
    let labels: Vec<String> = q.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{ns}/{}{{{}}}", q.metric_name, labels.join(","))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (queries, problems) = load_queries(&cli)?;
    for p in &problems {
        tracing::warn!("{p}");
    }
    if cli.check {
        for q in &queries {
            let interval = q.interval.as_secs_f64();
            let query = q.query.trim();
            println!(
                "{}: {query} (every {interval}s, backend {}, {})",
                describe(q),
                q.backend_name,
                q.origin
            );
        }
        println!("{} queries, {} problems", queries.len(), problems.len());
        return Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    if queries.is_empty() {
        tracing::warn!("no queries: give --config or --hpa-file; discovery will list no metrics");
    }
    let auth = AuthOptions {
        client_ca_file: cli.requestheader_client_ca_file.clone(),
        allowed_names: cli.requestheader_allowed_names.iter().filter(|n| !n.is_empty()).cloned().collect(),
        username_headers: cli.requestheader_username_headers.clone(),
        group_headers: cli.requestheader_group_headers.clone(),
    };
    let (tls, self_signed) =
        server::tls_config(cli.tls_cert_file.as_deref(), cli.tls_private_key_file.as_deref(), &auth)?;
    if self_signed {
        tracing::warn!("no --tls-cert-file: serving a self-signed certificate generated at start");
    }
    if auth.client_ca_file.is_none() {
        tracing::warn!("no --requestheader-client-ca-file: every API request will be refused with 401");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let collector =
            Arc::new(Collector::new(BackendDefaults { prometheus_server: cli.prometheus_server.clone() }));
        collector.set_problems(problems);
        for (backend, e) in collector.set_queries(queries) {
            tracing::error!(backend = %backend, "backend unusable: {e}");
        }
        let state = AppState { collector, auth: Arc::new(auth), metrics: Arc::new(Metrics::default()) };
        let secure_addr = if cli.bind_address.contains(':') {
            format!("[{}]:{}", cli.bind_address, cli.secure_port)
        } else {
            format!("{}:{}", cli.bind_address, cli.secure_port)
        };
        let secure = server::bind(&secure_addr).await?;
        let plain = server::bind(&cli.metrics_address).await?;
        tracing::info!(
            secure = %server::local_addr(&secure),
            metrics = %server::local_addr(&plain),
            "serving external.metrics.k8s.io/v1beta1"
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let plain_stop = {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let metrics_server =
            tokio::spawn(server::serve_plain(plain, server::metrics_router(state.clone()), plain_stop));
        let secure_stop = {
            let mut rx = stop_rx;
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let secure_server =
            tokio::spawn(server::serve_tls(secure, tls, server::secure_router(state), secure_stop));
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = secure_server.await;
        let _ = metrics_server.await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
