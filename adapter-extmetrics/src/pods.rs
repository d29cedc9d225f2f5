//! The `local` backend without a url: pods annotated for scraping are discovered through
//! the Kubernetes API and scraped by the adapter itself, so no Prometheus sits in the
//! scaling path.
//!
//! A pod is scraped when it is Running, has an IP, and carries the annotations
//! Prometheus' usual `kubernetes-pods` job reads: `prometheus.io/scrape: "true"`,
//! `prometheus.io/port` (else the pod's first declared container port),
//! `prometheus.io/path` (default `/metrics`) and `prometheus.io/scheme` (default
//! `http`). Series get `job="kubernetes-pods"` and `instance="<ip>:<port>"`, as a
//! scrape config without relabeling gives.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use promql::source::scrape::{ScrapeConfig, ScrapeHandle};
use promql::storage::{SampleSource, Selection, SourceError};
use promql::value::Series;

/// The job label of scraped pods.
pub const JOB: &str = "kubernetes-pods";

/// Where to scrape a pod, if it asks to be scraped.
pub fn scrape_url(pod: &Pod) -> Option<String> {
    let annotations = pod.metadata.annotations.as_ref()?;
    if annotations.get("prometheus.io/scrape").map(String::as_str) != Some("true") {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    let port = match annotations.get("prometheus.io/port") {
        Some(p) => p.parse::<u16>().ok()?,
        None => {
            let containers = &pod.spec.as_ref()?.containers;
            let first = containers.iter().flat_map(|c| c.ports.iter().flatten()).next()?;
            u16::try_from(first.container_port).ok()?
        }
    };
    let path = annotations.get("prometheus.io/path").map_or("/metrics", String::as_str);
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    let scheme = match annotations.get("prometheus.io/scheme").map(String::as_str) {
        Some("https") => "https",
        _ => "http",
    };
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_owned() };
    Some(format!("{scheme}://{host}:{port}{path}"))
}

/// Scrapers of the discovered pods, as one sample source.
pub struct PodScrapers {
    interval: Duration,
    retention: Duration,
    /// `namespace/name` → (url, scraper).
    scrapers: RwLock<BTreeMap<String, (String, ScrapeHandle)>>,
}

impl std::fmt::Debug for PodScrapers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets: Vec<String> = self
            .scrapers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(u, _)| u.clone())
            .collect();
        f.debug_struct("PodScrapers").field("targets", &targets).finish()
    }
}

impl PodScrapers {
    /// No pods yet; [`watch`](Self::watch) finds them.
    pub fn new(interval: Duration, retention: Duration) -> Arc<Self> {
        Arc::new(PodScrapers { interval, retention, scrapers: RwLock::default() })
    }

    /// How many pods are scraped.
    pub fn target_count(&self) -> usize {
        self.scrapers.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Starts scraping new pods, stops scraping pods gone or no longer annotated.
    /// Must run within a tokio runtime.
    pub fn set_pods(&self, pods: &BTreeMap<String, Pod>) {
        let wanted: BTreeMap<&String, String> =
            pods.iter().filter_map(|(key, pod)| scrape_url(pod).map(|u| (key, u))).collect();
        let mut scrapers = self.scrapers.write().unwrap_or_else(|p| p.into_inner());
        scrapers.retain(|key, (url, handle)| {
            let keep = wanted.get(key) == Some(url);
            if !keep {
                tracing::info!(pod = %key, url = %url, "no longer scraping");
                handle.stop();
            }
            keep
        });
        for (key, url) in wanted {
            if scrapers.contains_key(key) {
                continue;
            }
            let config = ScrapeConfig {
                interval: self.interval,
                timeout: self.interval.min(Duration::from_secs(10)),
                retention: self.retention,
                ..ScrapeConfig::new(JOB, [url.clone()])
            };
            match promql::source::scrape::Scraper::start(config) {
                Ok(handle) => {
                    tracing::info!(pod = %key, url = %url, "scraping");
                    scrapers.insert(key.clone(), (url, handle));
                }
                Err(e) => tracing::warn!(pod = %key, url = %url, "cannot scrape: {e}"),
            }
        }
    }

    /// Watches pods through `client`, keeping the scrapers in step. Never ends.
    pub async fn watch(self: Arc<Self>, client: kube::Client) {
        let api: kube::Api<Pod> = kube::Api::all(client);
        crate::cluster::watch_all(api, "Pods", |p: &Pod| p.clone(), move |pods| self.set_pods(pods)).await;
    }
}

impl SampleSource for PodScrapers {
    fn select(&self, sel: &Selection<'_>) -> Result<Vec<Series>, SourceError> {
        let scrapers = self.scrapers.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (_, handle) in scrapers.values() {
            out.extend(handle.select(sel)?);
        }
        // Sources return series in label order; each pod's come sorted, together not.
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: &[(&str, &str)], phase: &str, ip: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "test",
                         "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 9898}]}]},
            "status": {"phase": phase, "podIP": ip}
        }))
        .unwrap()
    }

    #[test]
    fn scrape_annotations() {
        let yes = [("prometheus.io/scrape", "true")];
        assert_eq!(
            scrape_url(&pod(&yes, "Running", "10.0.0.7")).as_deref(),
            Some("http://10.0.0.7:9898/metrics")
        );
        let all = [
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port", "15020"),
            ("prometheus.io/path", "stats/prometheus"),
            ("prometheus.io/scheme", "https"),
        ];
        assert_eq!(
            scrape_url(&pod(&all, "Running", "fd00::7")).as_deref(),
            Some("https://[fd00::7]:15020/stats/prometheus")
        );
        assert_eq!(scrape_url(&pod(&yes, "Pending", "10.0.0.7")), None);
        assert_eq!(scrape_url(&pod(&yes, "Running", "")), None);
        assert_eq!(scrape_url(&pod(&[("prometheus.io/scrape", "false")], "Running", "10.0.0.7")), None);
        assert_eq!(
            scrape_url(&pod(
                &[("prometheus.io/scrape", "true"), ("prometheus.io/port", "x")],
                "Running",
                "1.2.3.4"
            )),
            None
        );
    }
}
