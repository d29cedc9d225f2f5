//! `extmetrics-adapter`: a Kubernetes External Metrics API server that lets a
//! HorizontalPodAutoscaler scale on PromQL. Not built yet: this binary only explains
//! what it will be, and refuses to pretend otherwise.

use std::process::ExitCode;

use clap::Parser;

/// A Kubernetes External Metrics API server (external.metrics.k8s.io/v1beta1) that lets
/// HorizontalPodAutoscalers scale on PromQL.
///
/// Planned: drop-in compatible with kube-metrics-adapter's
/// `metric-config.external.prometheus-query.prometheus/<name>` HPA annotations, queries
/// evaluated on an interval against a Prometheus-compatible API or locally over scraped
/// samples, served over HTTPS with front-proxy client-certificate authentication.
///
/// This build does not serve anything yet: it exits with status 1.
#[derive(Debug, Parser)]
#[command(name = "extmetrics-adapter", version, about, long_about)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!("extmetrics-adapter: not implemented yet; see --help for what it will do");
    ExitCode::from(1)
}
