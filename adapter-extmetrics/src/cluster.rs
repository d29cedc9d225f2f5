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
pub async fn watch_hpas(client: kube::Client, on_change: impl FnMut(&BTreeMap<String, Hpa>) + Send) {
    let api: Api<HorizontalPodAutoscaler> = Api::all(client);
    watch_all(api, "HorizontalPodAutoscalers", hpa_of, on_change).await;
}

/// Watches every object of `api`, keeps `convert`ed copies by `namespace/name`, and
/// calls `on_change` with all of them after the initial list and after each change.
/// Errors are logged and the watch resumes with backoff; it never ends.
pub async fn watch_all<K, T: PartialEq>(
    api: Api<K>,
    what: &str,
    convert: impl Fn(&K) -> T,
    mut on_change: impl FnMut(&BTreeMap<String, T>),
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let key = |o: &K| {
        let m = o.meta();
        format!("{}/{}", m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""))
    };
    let mut current: BTreeMap<String, T> = BTreeMap::new();
    let mut relisting: Option<BTreeMap<String, T>> = None;
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Err(e) => tracing::warn!("watching {what}: {e}"),
            Ok(Event::Init) => relisting = Some(BTreeMap::new()),
            Ok(Event::InitApply(o)) => {
                relisting.get_or_insert_with(BTreeMap::new).insert(key(&o), convert(&o));
            }
            Ok(Event::InitDone) => {
                current = relisting.take().unwrap_or_default();
                tracing::info!(count = current.len(), "listed {what}");
                on_change(&current);
            }
            Ok(Event::Apply(o)) => {
                // The HPA controller rewrites every HPA's status each sync period; only
                // a change of what we keep is a change.
                let value = convert(&o);
                if current.get(&key(&o)) == Some(&value) {
                    continue;
                }
                tracing::debug!(object = %key(&o), "{what}: changed");
                current.insert(key(&o), value);
                on_change(&current);
            }
            Ok(Event::Delete(o)) => {
                tracing::debug!(object = %key(&o), "{what}: deleted");
                current.remove(&key(&o));
                on_change(&current);
            }
        }
    }
}

/// What a request wants to do, for a SubjectAccessReview.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// The authenticated user.
    pub user: String,
    /// Their groups.
    pub groups: Vec<String>,
    /// `list` for metric values (a collection path), `get` for discovery.
    pub verb: String,
    /// For metric values: namespace and metric (the resource); else the path.
    pub target: Target,
}

/// The object of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `external.metrics.k8s.io` resource `metric` in `namespace`.
    Metric {
        /// Namespace.
        namespace: String,
        /// Metric name (the resource).
        metric: String,
    },
    /// A non-resource path (discovery).
    Path(String),
}

/// Delegated authorization: asks the kube-apiserver with SubjectAccessReviews whether
/// a caller may read a metric, as aggregated API servers do. Decisions are cached for
/// ten seconds so that an HPA's polling costs one review per interval at most.
pub struct Authorizer {
    client: kube::Client,
    cache: std::sync::Mutex<std::collections::HashMap<Attributes, (Decision, std::time::Instant)>>,
}

/// A review's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, with the reviewer's reason (may be empty).
    Deny(String),
}

const DECISION_TTL: std::time::Duration = std::time::Duration::from_secs(10);
const REVIEW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorizer")
    }
}

impl Authorizer {
    /// An authorizer asking the API server behind `client`.
    pub fn new(client: kube::Client) -> Self {
        Authorizer { client, cache: Default::default() }
    }

    /// Whether `a` is allowed; an error when the review failed or took over five
    /// seconds (a slow API server must not hang metric reads). `system:masters` is
    /// allowed without a review, as by Kubernetes' delegating authorizer.
    pub async fn decide(&self, a: &Attributes) -> Result<Decision, ClusterError> {
        if a.groups.iter().any(|g| g == "system:masters") {
            return Ok(Decision::Allow);
        }
        tokio::time::timeout(REVIEW_TIMEOUT, self.review(a)).await.map_err(|_| {
            ClusterError::Api(format!("SubjectAccessReview: no answer within {REVIEW_TIMEOUT:?}"))
        })?
    }

    async fn review(&self, a: &Attributes) -> Result<Decision, ClusterError> {
        if let Some((d, at)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(a) {
            if at.elapsed() < DECISION_TTL {
                return Ok(d.clone());
            }
        }
        use k8s_openapi::api::authorization::v1::{
            NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        let (resource_attributes, non_resource_attributes) = match &a.target {
            Target::Metric { namespace, metric } => (
                Some(ResourceAttributes {
                    group: Some(crate::api::GROUP.to_owned()),
                    version: Some("v1beta1".to_owned()),
                    resource: Some(metric.clone()),
                    namespace: Some(namespace.clone()),
                    verb: Some(a.verb.clone()),
                    ..Default::default()
                }),
                None,
            ),
            Target::Path(path) => {
                (None, Some(NonResourceAttributes { path: Some(path.clone()), verb: Some(a.verb.clone()) }))
            }
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(a.user.clone()),
                groups: Some(a.groups.clone()),
                resource_attributes,
                non_resource_attributes,
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| ClusterError::Api(format!("SubjectAccessReview: {e}")))?;
        let status = answer.status.unwrap_or_default();
        let decision =
            if status.allowed { Decision::Allow } else { Decision::Deny(status.reason.unwrap_or_default()) };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: expired decisions go when the map grows.
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < DECISION_TTL);
        }
        cache.insert(a.clone(), (decision.clone(), std::time::Instant::now()));
        Ok(decision)
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
