//! `extmetrics-adapter`, a Kubernetes External Metrics API server
//! (`external.metrics.k8s.io/v1beta1`) that lets HorizontalPodAutoscalers scale on PromQL.
//!
//! * [`quantity`] — canonical Kubernetes quantities for metric values (rounded, never NaN).
//! * [`selector`] — the label-selector syntax of the `labelSelector=` query parameter.
//! * [`api`] — the wire types: discovery documents, metric value lists, `Status` errors.
//! * [`config`] — the static YAML config, kube-metrics-adapter HPA annotations and HPA
//!   manifests, compiled into [`config::MetricQuery`] entries.
//! * [`sources`] — those sources together, reloaded on change, with their problems.
//! * [`backend`] — where queries run: a Prometheus API, the embedded engine over
//!   fetched samples, or a fixture file.
//! * [`collector`] — each query on its interval, cached, answered through its policies.
//! * [`server`] — HTTPS with front-proxy client certificates, the API routes, health,
//!   `/metrics` and `/debug/queries`.
//! * [`cluster`] — the Kubernetes API: watched HPAs and the front proxy's CA.
//! * [`pods`] — scraping annotated pods for the `local` backend without a url.

pub mod api;
pub mod backend;
pub mod cluster;
pub mod collector;
pub mod config;
pub mod pods;
pub mod quantity;
pub mod selector;
pub mod server;
pub mod sources;
