//! HorizontalPodAutoscaler manifests read from disk (`--hpa-file`): YAML or JSON, one or
//! several documents, `kind: List` included. Only what the adapter needs is read
//! (namespace, name, annotations, `type: External` metrics); other kinds are skipped, so
//! a whole kustomize output can be given.
//!
//! ```
//! use adapter_extmetrics::config::manifests::hpas_from_yaml;
//!
//! let hpas = hpas_from_yaml("hpa.yaml", r#"
//! apiVersion: autoscaling/v2
//! kind: HorizontalPodAutoscaler
//! metadata:
//!   name: podinfo
//!   namespace: test
//!   annotations:
//!     metric-config.external.prometheus-query.prometheus/rps: sum(rate(istio_requests_total[1m]))
//! spec:
//!   metrics:
//!   - type: External
//!     external:
//!       metric:
//!         name: prometheus-query
//!         selector: {matchLabels: {query-name: rps}}
//!       target: {type: AverageValue, averageValue: "10"}
//! "#).unwrap();
//! assert_eq!(hpas[0].name, "podinfo");
//! assert_eq!(hpas[0].external_metrics[0].match_labels["query-name"], "rps");
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::annotations::{ExternalMetricRef, Hpa};

/// Why a manifest file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.message),
            line => write!(f, "{}:{line}:{}: {}", self.file, self.column, self.message),
        }
    }
}

impl std::error::Error for ManifestError {}

/// The HPAs of a manifest file.
pub fn hpas_from_yaml(file: &str, text: &str) -> Result<Vec<Hpa>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = e.to_string().split(" at line ").next().unwrap_or_default().to_owned();
            ManifestError { file: file.to_owned(), line, column, message }
        })?;
        collect(&value, &mut out).map_err(|message| ManifestError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message: format!("document {}: {message}", i + 1),
        })?;
    }
    Ok(out)
}

fn collect(v: &Value, out: &mut Vec<Hpa>) -> Result<(), String> {
    match v.get("kind").and_then(Value::as_str) {
        Some("List") | Some("HorizontalPodAutoscalerList") => {
            for item in v.get("items").and_then(Value::as_array).into_iter().flatten() {
                collect(item, out)?;
            }
            Ok(())
        }
        Some("HorizontalPodAutoscaler") => {
            out.push(hpa(v)?);
            Ok(())
        }
        // Empty documents, other kinds.
        _ => Ok(()),
    }
}

fn string_map(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(BTreeMap::new()) };
    let obj = v.as_object().ok_or_else(|| format!("{what} must be a map"))?;
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            // YAML turns `replicas: 3` into a number; Kubernetes would refuse it.
            other => Err(format!("{what}.{k} must be a string, not {other}")),
        })
        .collect()
}

/// One HPA object (`autoscaling/v2` or `v2beta2`).
fn hpa(v: &Value) -> Result<Hpa, String> {
    let meta = v.get("metadata").ok_or("HorizontalPodAutoscaler without metadata")?;
    let name =
        meta.get("name").and_then(Value::as_str).ok_or("HorizontalPodAutoscaler without metadata.name")?;
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("default");
    let annotations = string_map(meta.get("annotations"), "metadata.annotations")?;
    let mut external_metrics = Vec::new();
    let metrics = v.get("spec").and_then(|s| s.get("metrics")).and_then(Value::as_array);
    for (i, m) in metrics.into_iter().flatten().enumerate() {
        if m.get("type").and_then(Value::as_str) != Some("External") {
            continue;
        }
        let metric = m
            .get("external")
            .and_then(|e| e.get("metric"))
            .ok_or_else(|| format!("{name}: spec.metrics[{i}] is External without external.metric"))?;
        let metric_name = metric
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{name}: spec.metrics[{i}].external.metric has no name"))?;
        let match_labels = string_map(
            metric.get("selector").and_then(|s| s.get("matchLabels")),
            &format!("spec.metrics[{i}].external.metric.selector.matchLabels"),
        )?;
        external_metrics.push(ExternalMetricRef { name: metric_name.to_owned(), match_labels });
    }
    Ok(Hpa { namespace: namespace.to_owned(), name: name.to_owned(), annotations, external_metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_other_kinds_and_errors() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n\
                    kind: List\nitems:\n- kind: HorizontalPodAutoscaler\n  metadata: {name: a}\n\
                    - kind: HorizontalPodAutoscaler\n  metadata: {name: b, namespace: prod}\n---\n";
        let hpas = hpas_from_yaml("h.yaml", text).unwrap();
        let names: Vec<_> = hpas.iter().map(|h| format!("{}/{}", h.namespace, h.name)).collect();
        assert_eq!(names, ["default/a", "prod/b"]);

        let e = hpas_from_yaml("h.yaml", "kind: HorizontalPodAutoscaler\nmetadata: [\n").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("h.yaml", 3), "{e}");
        let e = hpas_from_yaml("h.yaml", "kind: HorizontalPodAutoscaler\nmetadata: {namespace: x}\n")
            .unwrap_err();
        assert_eq!(e.to_string(), "h.yaml: document 1: HorizontalPodAutoscaler without metadata.name");
        let e = hpas_from_yaml(
            "h.yaml",
            "kind: HorizontalPodAutoscaler\nmetadata: {name: a, annotations: {metric-config.x: 3}}\n",
        )
        .unwrap_err();
        assert!(e.message.contains("metadata.annotations.metric-config.x must be a string"), "{e}");
    }
}
