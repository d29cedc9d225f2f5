//! What the adapter reads from the Kubernetes API: HorizontalPodAutoscalers (watched,
//! their annotations hold queries) and the front proxy's client CA
//! (`kube-system/extension-apiserver-authentication`).

use std::collections::BTreeMap;

use futures_util::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use crate::config::annotations::{ExternalMetricRef, Hpa};

/// A Kubernetes API problem.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable client configuration.
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
    /// A request failed.
    #[error("Kubernetes API: {0}")]
    Api(String),
}

/// A client from `kubeconfig`, or from the in-cluster service account when `None`.
pub async fn client(kubeconfig: Option<&str>) -> Result<kube::Client, ClusterError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::Config(format!("{path}: {e}")))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| ClusterError::Config(format!("{path}: {e}")))?
        }
        None => kube::Config::incluster().map_err(|e| ClusterError::Config(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))
}

/// The request-header authentication settings the kube-apiserver publishes for
/// aggregated API servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontProxy {
    /// PEM of the CA signing the front proxy's client certificates.
    pub client_ca_pem: String,
    /// Allowed common names (empty: any).
    pub allowed_names: Vec<String>,
    /// Headers naming the user.
    pub username_headers: Vec<String>,
    /// Headers naming the groups.
    pub group_headers: Vec<String>,
}

/// Reads `kube-system/extension-apiserver-authentication`.
pub async fn front_proxy(client: &kube::Client) -> Result<FrontProxy, ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = api.get("extension-apiserver-authentication").await.map_err(|e| {
        ClusterError::Api(format!("reading kube-system/extension-apiserver-authentication: {e}"))
    })?;
    front_proxy_from(&cm.data.unwrap_or_default())
}

fn front_proxy_from(data: &BTreeMap<String, String>) -> Result<FrontProxy, ClusterError> {
    let ca = data.get("requestheader-client-ca-file").filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        ClusterError::Api(
            "kube-system/extension-apiserver-authentication has no requestheader-client-ca-file: \
             the kube-apiserver runs without --requestheader-client-ca-file"
                .into(),
        )
    })?;
    // The other keys hold JSON string arrays.
    let list = |key: &str, default: &[&str]| -> Result<Vec<String>, ClusterError> {
        match data.get(key) {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(text) => serde_json::from_str::<Vec<String>>(text)
                .map_err(|e| ClusterError::Api(format!("extension-apiserver-authentication {key}: {e}"))),
        }
    };
    Ok(FrontProxy {
        client_ca_pem: ca.clone(),
        allowed_names: list("requestheader-allowed-names", &[])?,
        username_headers: list("requestheader-username-headers", &["X-Remote-User"])?,
        group_headers: list("requestheader-group-headers", &["X-Remote-Group"])?,
    })
}

/// What the adapter needs of an HPA object.
pub fn hpa_of(o: &HorizontalPodAutoscaler) -> Hpa {
    let external_metrics = o
        .spec
        .as_ref()
        .and_then(|s| s.metrics.as_ref())
        .into_iter()
        .flatten()
        .filter(|m| m.type_ == "External")
        .filter_map(|m| m.external.as_ref())
        .map(|e| ExternalMetricRef {
            name: e.metric.name.clone(),
            match_labels: e.metric.selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default(),
        })
        .collect();
    Hpa {
        namespace: o.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: o.metadata.name.clone().unwrap_or_default(),
        annotations: o.metadata.annotations.clone().unwrap_or_default(),
        external_metrics,
    }
}

/// Watches every HPA of the cluster and calls `on_change` with all of them (by
/// `namespace/name`) after the initial list and after each change. Errors are logged
/// and the watch resumes with backoff; it never ends.
pub async fn watch_hpas(client: kube::Client, mut on_change: impl FnMut(&BTreeMap<String, Hpa>) + Send) {
    let api: Api<HorizontalPodAutoscaler> = Api::all(client);
    let mut current: BTreeMap<String, Hpa> = BTreeMap::new();
    let mut relisting: Option<BTreeMap<String, Hpa>> = None;
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let key = |h: &Hpa| format!("{}/{}", h.namespace, h.name);
        match event {
            Err(e) => tracing::warn!("watching HorizontalPodAutoscalers: {e}"),
            Ok(Event::Init) => relisting = Some(BTreeMap::new()),
            Ok(Event::InitApply(o)) => {
                let h = hpa_of(&o);
                relisting.get_or_insert_with(BTreeMap::new).insert(key(&h), h);
            }
            Ok(Event::InitDone) => {
                current = relisting.take().unwrap_or_default();
                tracing::info!(count = current.len(), "listed HorizontalPodAutoscalers");
                on_change(&current);
            }
            Ok(Event::Apply(o)) => {
                let h = hpa_of(&o);
                tracing::info!(hpa = %key(&h), "HorizontalPodAutoscaler changed");
                current.insert(key(&h), h);
                on_change(&current);
            }
            Ok(Event::Delete(o)) => {
                let h = hpa_of(&o);
                tracing::info!(hpa = %key(&h), "HorizontalPodAutoscaler deleted");
                current.remove(&key(&h));
                on_change(&current);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_proxy_settings() {
        let data = BTreeMap::from([
            ("requestheader-client-ca-file".to_owned(), "-----BEGIN CERTIFICATE-----\n".to_owned()),
            ("requestheader-allowed-names".to_owned(), r#"["front-proxy-client"]"#.to_owned()),
        ]);
        let fp = front_proxy_from(&data).unwrap();
        assert_eq!(fp.allowed_names, ["front-proxy-client"]);
        assert_eq!(fp.username_headers, ["X-Remote-User"]);
        let err = front_proxy_from(&BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("has no requestheader-client-ca-file"), "{err}");
        let bad = BTreeMap::from([
            ("requestheader-client-ca-file".to_owned(), "x".to_owned()),
            ("requestheader-allowed-names".to_owned(), "front-proxy-client".to_owned()),
        ]);
        assert!(front_proxy_from(&bad).unwrap_err().to_string().contains("requestheader-allowed-names"));
    }
}
