//! Wire types of `external.metrics.k8s.io/v1beta1`, with the exact JSON shapes Kubernetes uses.
//!
//! * [`APIResourceList`] — `GET /apis/external.metrics.k8s.io/v1beta1` (also the aggregator's
//!   availability check): one namespaced resource per known metric name.
//! * [`APIGroupList`] / [`APIGroup`] — `GET /apis` and `GET /apis/external.metrics.k8s.io`.
//! * [`ExternalMetricValueList`] — the data response the HPA reads.
//! * [`Status`] — `metav1.Status` errors with the matching HTTP code and reason.
//!
//! ```
//! use std::collections::BTreeMap;
//! use adapter_extmetrics::api::{ExternalMetricValue, ExternalMetricValueList, Status};
//! use adapter_extmetrics::quantity::Quantity;
//!
//! let ts = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z").unwrap().to_utc();
//! let list = ExternalMetricValueList::new(vec![ExternalMetricValue {
//!     metric_name: "prometheus-query".into(),
//!     metric_labels: BTreeMap::from([("query-name".into(), "rps".into())]),
//!     timestamp: ts,
//!     window: Some(60),
//!     value: Quantity::from_f64(8.308).unwrap(),
//! }]);
//! assert_eq!(
//!     serde_json::to_string(&list).unwrap(),
//!     r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},"items":[{"metricName":"prometheus-query","metricLabels":{"query-name":"rps"},"timestamp":"2024-05-01T10:00:00Z","window":60,"value":"8308m"}]}"#
//! );
//!
//! let status = Status::metric_not_found("prometheus-query");
//! assert_eq!(status.code, 404);
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::quantity::Quantity;

/// The API group served.
pub const GROUP: &str = "external.metrics.k8s.io";
/// The version served.
pub const VERSION: &str = "v1beta1";
/// `external.metrics.k8s.io/v1beta1`.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";
/// The `kind` of metric values and of every discovered resource.
pub const VALUE_LIST_KIND: &str = "ExternalMetricValueList";

/// `metav1.ListMeta`; all fields are `omitempty` so it serialises as `{}` here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// `resourceVersion`, unused by this adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// One entry of [`APIResourceList::resources`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIResource {
    /// The resource (metric) name, lowercase as clients request it.
    pub name: String,
    /// Always `""` (as custom-metrics-apiserver sends it).
    pub singular_name: String,
    /// Always `true`: external metrics are requested per namespace.
    pub namespaced: bool,
    /// Always `ExternalMetricValueList`.
    pub kind: String,
    /// `["get"]`, as custom-metrics-apiserver lists external metrics.
    pub verbs: Vec<String>,
}

impl APIResource {
    /// The discovery entry for one metric name (lowercased), with verbs `get` and `list`.
    pub fn metric(name: &str) -> Self {
        APIResource {
            name: name.to_ascii_lowercase(),
            singular_name: String::new(),
            namespaced: true,
            kind: VALUE_LIST_KIND.to_owned(),
            verbs: vec!["get".to_owned()],
        }
    }
}

/// `GET /apis/external.metrics.k8s.io/v1beta1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIResourceList {
    /// `APIResourceList`.
    pub kind: String,
    /// `v1`.
    pub api_version: String,
    /// `external.metrics.k8s.io/v1beta1`.
    pub group_version: String,
    /// One per metric name (sorted, deduplicated case-insensitively). Always present, even empty.
    pub resources: Vec<APIResource>,
}

impl APIResourceList {
    /// The list for the given metric names: lowercased, sorted and deduplicated.
    pub fn for_metrics<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        APIResourceList {
            kind: "APIResourceList".to_owned(),
            api_version: "v1".to_owned(),
            group_version: GROUP_VERSION.to_owned(),
            resources: names.iter().map(|n| APIResource::metric(n)).collect(),
        }
    }
}

/// `GroupVersionForDiscovery`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersionForDiscovery {
    /// `external.metrics.k8s.io/v1beta1`.
    pub group_version: String,
    /// `v1beta1`.
    pub version: String,
}

/// `metav1.APIGroup`. `kind`/`apiVersion` appear at top level (`/apis/<group>`) but not inside
/// an [`APIGroupList`], as Kubernetes serves them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIGroup {
    /// `APIGroup` at top level, absent in a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `v1` at top level, absent in a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `external.metrics.k8s.io`.
    pub name: String,
    /// The single served version.
    pub versions: Vec<GroupVersionForDiscovery>,
    /// The same version.
    pub preferred_version: GroupVersionForDiscovery,
}

impl APIGroup {
    /// The `external.metrics.k8s.io` group document served at `/apis/external.metrics.k8s.io`.
    pub fn external_metrics() -> Self {
        let v =
            GroupVersionForDiscovery { group_version: GROUP_VERSION.to_owned(), version: VERSION.to_owned() };
        APIGroup {
            kind: Some("APIGroup".to_owned()),
            api_version: Some("v1".to_owned()),
            name: GROUP.to_owned(),
            versions: vec![v.clone()],
            preferred_version: v,
        }
    }
}

/// `metav1.APIGroupList`, served at `/apis`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIGroupList {
    /// `APIGroupList`.
    pub kind: String,
    /// `v1`.
    pub api_version: String,
    /// The groups, without their own `kind`/`apiVersion`.
    pub groups: Vec<APIGroup>,
}

impl APIGroupList {
    /// `/apis` listing only `external.metrics.k8s.io`.
    pub fn external_metrics() -> Self {
        let group = APIGroup { kind: None, api_version: None, ..APIGroup::external_metrics() };
        APIGroupList { kind: "APIGroupList".to_owned(), api_version: "v1".to_owned(), groups: vec![group] }
    }
}

/// One metric value (`ExternalMetricValue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValue {
    /// The metric name.
    pub metric_name: String,
    /// Labels identifying the series; always serialised, `{}` when empty.
    #[serde(default)]
    pub metric_labels: BTreeMap<String, String>,
    /// When the value was observed, RFC 3339 with second precision in UTC (`metav1.Time`).
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub timestamp: DateTime<Utc>,
    /// The window in seconds the value was computed over, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<i64>,
    /// The value as a canonical quantity.
    pub value: Quantity,
}

/// `GET .../namespaces/{ns}/{metric}` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValueList {
    /// `ExternalMetricValueList`.
    pub kind: String,
    /// `external.metrics.k8s.io/v1beta1`.
    pub api_version: String,
    /// Always `{}`.
    #[serde(default)]
    pub metadata: ListMeta,
    /// The values; the HPA sums their milli-values. Always present, `[]` when empty.
    pub items: Vec<ExternalMetricValue>,
}

impl ExternalMetricValueList {
    /// A list holding `items`.
    pub fn new(items: Vec<ExternalMetricValue>) -> Self {
        ExternalMetricValueList {
            kind: VALUE_LIST_KIND.to_owned(),
            api_version: GROUP_VERSION.to_owned(),
            metadata: ListMeta::default(),
            items,
        }
    }
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&s).map(|t| t.to_utc()).map_err(serde::de::Error::custom)
}

/// `metav1.StatusReason` values this adapter returns, with their HTTP codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatusReason {
    /// 400: e.g. a malformed label selector.
    BadRequest,
    /// 401: no verified client certificate or credentials.
    Unauthorized,
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 404: unknown metric or path.
    NotFound,
    /// 405: anything but GET.
    MethodNotAllowed,
    /// 500: a bug in this adapter.
    InternalError,
    /// 503: the metric's backend is down or its policy says to fail.
    ServiceUnavailable,
}

impl StatusReason {
    /// The HTTP status code Kubernetes pairs with the reason.
    pub fn code(self) -> u16 {
        match self {
            StatusReason::BadRequest => 400,
            StatusReason::Unauthorized => 401,
            StatusReason::Forbidden => 403,
            StatusReason::NotFound => 404,
            StatusReason::MethodNotAllowed => 405,
            StatusReason::InternalError => 500,
            StatusReason::ServiceUnavailable => 503,
        }
    }
}

/// `metav1.StatusDetails` (the fields this adapter uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// The object's name, e.g. the metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The API group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The resource kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Suggested retry delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<i32>,
}

/// `metav1.Status` with `status: "Failure"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `Status`.
    pub kind: String,
    /// `v1`.
    pub api_version: String,
    /// Always `{}`.
    #[serde(default)]
    pub metadata: ListMeta,
    /// `Failure`.
    pub status: String,
    /// Human-readable description.
    pub message: String,
    /// Machine-readable reason.
    pub reason: StatusReason,
    /// Optional details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code.
    pub code: u16,
}

impl Status {
    /// A failure with the reason's code.
    pub fn failure(reason: StatusReason, message: impl Into<String>) -> Self {
        Status {
            kind: "Status".to_owned(),
            api_version: "v1".to_owned(),
            metadata: ListMeta::default(),
            status: "Failure".to_owned(),
            message: message.into(),
            reason,
            details: None,
            code: reason.code(),
        }
    }

    /// 404 for an unknown metric, worded as custom-metrics-apiserver's `NewMetricNotFoundError`.
    pub fn metric_not_found(metric: &str) -> Self {
        Status::failure(
            StatusReason::NotFound,
            format!("the server could not find the metric {metric} for {GROUP}"),
        )
    }

    /// 404 for a path this server does not serve.
    pub fn path_not_found(path: &str) -> Self {
        Status::failure(
            StatusReason::NotFound,
            format!("the server could not find the requested resource {path}"),
        )
    }

    /// 400, e.g. `unable to parse labelSelector: …`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Status::failure(StatusReason::BadRequest, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Status::failure(StatusReason::Unauthorized, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Status::failure(StatusReason::Forbidden, message)
    }

    /// 405.
    pub fn method_not_allowed(method: &str) -> Self {
        Status::failure(StatusReason::MethodNotAllowed, format!("method {method} is not supported"))
    }

    /// 500, for this adapter's own bugs only.
    pub fn internal_error(message: impl Into<String>) -> Self {
        Status::failure(StatusReason::InternalError, format!("Internal error occurred: {}", message.into()))
    }

    /// 503 for a metric whose backend failed, with an optional retry hint.
    pub fn service_unavailable(message: impl Into<String>, retry_after_seconds: Option<i32>) -> Self {
        let mut s = Status::failure(StatusReason::ServiceUnavailable, message);
        if let Some(secs) = retry_after_seconds {
            s.details = Some(StatusDetails { retry_after_seconds: Some(secs), ..StatusDetails::default() });
        }
        s
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","code":{}}}"#,
                self.code
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T10:00:00.123456Z").unwrap().to_utc()
    }

    #[test]
    fn value_list_golden() {
        let list = ExternalMetricValueList::new(vec![
            ExternalMetricValue {
                metric_name: "prometheus-query".into(),
                metric_labels: BTreeMap::from([("query-name".into(), "rps".into())]),
                timestamp: ts(),
                window: Some(60),
                value: Quantity::from_f64(8.308).unwrap(),
            },
            ExternalMetricValue {
                metric_name: "p99".into(),
                metric_labels: BTreeMap::new(),
                timestamp: ts(),
                window: None,
                value: Quantity::from_f64(1.5e6).unwrap(),
            },
        ]);
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},
                   "items":[{"metricName":"prometheus-query","metricLabels":{"query-name":"rps"},
                             "timestamp":"2024-05-01T10:00:00Z","window":60,"value":"8308m"},
                            {"metricName":"p99","metricLabels":{},
                             "timestamp":"2024-05-01T10:00:00Z","value":"1500k"}]})
        );
        let text = serde_json::to_string(&list).unwrap();
        assert!(text.starts_with(r#"{"kind":"ExternalMetricValueList","apiVersion":"#), "{text}");
        let back: ExternalMetricValueList = serde_json::from_str(&text).unwrap();
        assert_eq!(back.items[0].value.to_string(), "8308m");
        assert_eq!(back.items[0].timestamp.to_rfc3339(), "2024-05-01T10:00:00+00:00");
    }

    #[test]
    fn empty_list_keeps_items() {
        assert_eq!(
            serde_json::to_string(&ExternalMetricValueList::new(vec![])).unwrap(),
            r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},"items":[]}"#
        );
    }

    #[test]
    fn parses_a_kubernetes_response_with_offsets() {
        let body = r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},
            "items":[{"metricName":"m","metricLabels":null,"timestamp":"2024-05-01T12:00:00+02:00","value":"1.5"}]}"#;
        let body = body.replace("null", "{}");
        let list: ExternalMetricValueList = serde_json::from_str(&body).unwrap();
        assert_eq!(list.items[0].timestamp, DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z").unwrap());
        assert_eq!(list.items[0].value.milli_value(), 1500);
    }

    #[test]
    fn resource_list_golden() {
        let list = APIResourceList::for_metrics(["prometheus-query", "Istio-RPS", "istio-rps"]);
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":"external.metrics.k8s.io/v1beta1",
                   "resources":[
                     {"name":"istio-rps","singularName":"","namespaced":true,"kind":"ExternalMetricValueList","verbs":["get"]},
                     {"name":"prometheus-query","singularName":"","namespaced":true,"kind":"ExternalMetricValueList","verbs":["get"]}]})
        );
        assert_eq!(
            serde_json::to_string(&APIResourceList::for_metrics(Vec::<String>::new())).unwrap(),
            r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"external.metrics.k8s.io/v1beta1","resources":[]}"#
        );
    }

    #[test]
    fn group_documents_golden() {
        assert_eq!(
            serde_json::to_value(APIGroup::external_metrics()).unwrap(),
            json!({"kind":"APIGroup","apiVersion":"v1","name":"external.metrics.k8s.io",
                   "versions":[{"groupVersion":"external.metrics.k8s.io/v1beta1","version":"v1beta1"}],
                   "preferredVersion":{"groupVersion":"external.metrics.k8s.io/v1beta1","version":"v1beta1"}})
        );
        assert_eq!(
            serde_json::to_string(&APIGroupList::external_metrics()).unwrap(),
            r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"external.metrics.k8s.io","versions":[{"groupVersion":"external.metrics.k8s.io/v1beta1","version":"v1beta1"}],"preferredVersion":{"groupVersion":"external.metrics.k8s.io/v1beta1","version":"v1beta1"}}]}"#
        );
    }

    #[test]
    fn status_golden() {
        assert_eq!(
            Status::metric_not_found("prometheus-query").to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the metric prometheus-query for external.metrics.k8s.io","reason":"NotFound","code":404}"#
        );
        assert_eq!(
            serde_json::to_value(Status::service_unavailable("prometheus down", Some(15))).unwrap(),
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"prometheus down",
                   "reason":"ServiceUnavailable","details":{"retryAfterSeconds":15},"code":503})
        );
        let cases = [
            (Status::bad_request("x"), "BadRequest", 400),
            (Status::unauthorized("x"), "Unauthorized", 401),
            (Status::forbidden("x"), "Forbidden", 403),
            (Status::path_not_found("/x"), "NotFound", 404),
            (Status::method_not_allowed("POST"), "MethodNotAllowed", 405),
            (Status::internal_error("x"), "InternalError", 500),
            (Status::service_unavailable("x", None), "ServiceUnavailable", 503),
        ];
        for (s, reason, code) in cases {
            let v = serde_json::to_value(&s).unwrap();
            assert_eq!(v["reason"], reason);
            assert_eq!(v["code"], code);
            assert_eq!(v["status"], "Failure");
            assert_eq!(v["metadata"], json!({}));
            assert!(v.get("details").is_none() || reason == "ServiceUnavailable");
            let back: Status = serde_json::from_value(v).unwrap();
            assert_eq!(back, s);
        }
        assert_eq!(Status::internal_error("boom").message, "Internal error occurred: boom");
    }
}
