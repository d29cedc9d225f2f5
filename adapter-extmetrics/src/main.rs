//! `extmetrics-adapter`: a Kubernetes External Metrics API server that lets a
//! HorizontalPodAutoscaler scale on PromQL.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapter_extmetrics::backend::BackendDefaults;
use adapter_extmetrics::cluster;
use adapter_extmetrics::collector::Collector;
use adapter_extmetrics::server::{self, AppState, AuthOptions, ClientCa, Metrics};
use adapter_extmetrics::sources::{describe, SourceProblem, Sources};
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
    /// Without it, read from kube-system/extension-apiserver-authentication when a
    /// Kubernetes API is configured; otherwise every request but /healthz, /livez and
    /// /readyz is refused with 401.
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
    /// Kubeconfig for the Kubernetes API (HPA watching, the front proxy's CA). In a
    /// pod, the service account is used without it.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<String>,
    /// Watch HorizontalPodAutoscalers through the Kubernetes API and serve the queries
    /// of their annotations (when a Kubernetes API is configured).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    watch_hpas: bool,
    /// Authorize every API request with a SubjectAccessReview to the Kubernetes API
    /// (needs the system:auth-delegator role); without it, every authenticated caller
    /// may read every metric.
    #[arg(long)]
    authorization_subject_access_review: bool,
    /// How often --config and --hpa-file are checked for changes.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    reload_interval: Duration,
    /// Validate --config and --hpa-file, print the queries, and exit.
    #[arg(long)]
    check: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    adapter_extmetrics::config::parse_duration(s).and_then(|d| {
        if d.is_zero() {
            Err("must be positive".into())
        } else {
            Ok(d)
        }
    })
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

/// Puts the sources' queries and problems into the collector.
fn apply(collector: &Collector, sources: &Sources) {
    let (queries, mut problems) = sources.queries();
    for (backend, e) in collector.set_queries(queries) {
        problems.push(SourceProblem {
            reason: "BackendUnusable",
            source: "config".to_owned(),
            object: format!("backend {backend}"),
            message: e.to_string(),
        });
    }
    // Logged once, when they appear, not at every HPA change.
    for p in collector.set_problems(problems) {
        tracing::warn!(reason = p.reason, "{p}");
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let hpa_files: Vec<PathBuf> = cli.hpa_files.iter().map(PathBuf::from).collect();
    let sources = Sources::load(cli.config.as_deref().map(Path::new), &hpa_files)?;
    if cli.check {
        let (queries, problems) = sources.queries();
        for p in &problems {
            eprintln!("problem: {p}");
        }
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(cli, sources))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(cli: Cli, sources: Sources) -> anyhow::Result<()> {
    // A Kubernetes client when one is configured: --kubeconfig, or in a pod.
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let kube = match (&cli.kubeconfig, in_cluster) {
        (Some(path), _) => Some(cluster::client(Some(path)).await?),
        (None, true) => Some(cluster::client(None).await?),
        (None, false) => None,
    };

    let mut auth = AuthOptions {
        client_ca: None,
        allowed_names: cli.requestheader_allowed_names.iter().filter(|n| !n.is_empty()).cloned().collect(),
        username_headers: cli.requestheader_username_headers.clone(),
        group_headers: cli.requestheader_group_headers.clone(),
    };
    match (&cli.requestheader_client_ca_file, &kube) {
        (Some(file), _) => {
            let pem =
                std::fs::read(file).with_context(|| format!("--requestheader-client-ca-file {file}"))?;
            auth.client_ca = Some(ClientCa { source: file.clone(), pem });
        }
        // As an aggregated API server does: the kube-apiserver publishes its front
        // proxy's CA and names for extension servers.
        (None, Some(client)) => {
            let fp = cluster::front_proxy(client).await?;
            auth.client_ca = Some(ClientCa {
                source: "kube-system/extension-apiserver-authentication".into(),
                pem: fp.client_ca_pem.into_bytes(),
            });
            if auth.allowed_names.is_empty() {
                auth.allowed_names = fp.allowed_names;
            }
            auth.username_headers = fp.username_headers;
            auth.group_headers = fp.group_headers;
        }
        (None, None) => {
            tracing::warn!(
                "no --requestheader-client-ca-file and no Kubernetes API: every API request will be refused with 401"
            );
        }
    }
    let (tls, self_signed) =
        server::tls_config(cli.tls_cert_file.as_deref(), cli.tls_private_key_file.as_deref(), &auth)?;
    if self_signed {
        tracing::warn!("no --tls-cert-file: serving a self-signed certificate generated at start");
    }

    let collector = Arc::new(Collector::new(BackendDefaults {
        prometheus_server: cli.prometheus_server.clone(),
        kube: kube.clone(),
    }));
    apply(&collector, &sources);
    let sources = Arc::new(Mutex::new(sources));

    // Files are polled: ConfigMap volumes change by swapping a symlink.
    {
        let (sources, collector) = (sources.clone(), collector.clone());
        let every = cli.reload_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                // Reading files and building backends (a fixture loads) blocks: not on an
                // async worker's time.
                tokio::task::block_in_place(|| {
                    let mut s = sources.lock().unwrap_or_else(|p| p.into_inner());
                    if s.reload_changed() {
                        apply(&collector, &s);
                    }
                });
            }
        });
    }
    if let (Some(client), true) = (kube.clone(), cli.watch_hpas) {
        let (sources, collector) = (sources.clone(), collector.clone());
        tokio::spawn(cluster::watch_hpas(client, move |hpas| {
            tokio::task::block_in_place(|| {
                let mut s = sources.lock().unwrap_or_else(|p| p.into_inner());
                s.set_watched(hpas.clone());
                apply(&collector, &s);
            })
        }));
    }

    let authorizer = match (cli.authorization_subject_access_review, &kube) {
        (false, _) => None,
        (true, Some(client)) => Some(Arc::new(cluster::Authorizer::new(client.clone()))),
        (true, None) => anyhow::bail!(
            "--authorization-subject-access-review needs the Kubernetes API: run in a pod or give --kubeconfig"
        ),
    };
    let state =
        AppState { collector, auth: Arc::new(auth), metrics: Arc::new(Metrics::default()), authorizer };
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
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics_server = tokio::spawn(server::serve_plain(
        plain,
        server::metrics_router(state.clone()),
        stopped(stop_rx.clone()),
    ));
    let secure_server =
        tokio::spawn(server::serve_tls(secure, tls, server::secure_router(state), stopped(stop_rx)));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = secure_server.await;
    let _ = metrics_server.await;
    Ok(())
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
