//! The network-free core of `extmetrics-adapter`, a Kubernetes External Metrics API server
//! (`external.metrics.k8s.io/v1beta1`) that lets HorizontalPodAutoscalers scale on PromQL.
//!
//! * [`quantity`] — canonical Kubernetes quantities for metric values (rounded, never NaN).
//! * [`selector`] — the label-selector syntax of the `labelSelector=` query parameter.
//! * [`api`] — the wire types: discovery documents, metric value lists, `Status` errors.
//! * [`config`] — the static YAML config and kube-metrics-adapter HPA annotations, both
//!   compiled into one registry of [`config::MetricQuery`] entries.

pub mod api;
pub mod backend;
pub mod collector;
pub mod config;
pub mod quantity;
pub mod selector;
pub mod server;
