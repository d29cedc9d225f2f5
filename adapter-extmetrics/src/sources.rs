//! Where the served queries come from, together: the config file, HPA manifest files,
//! and the HPAs watched in the cluster. Files are reloaded when they change; a reload
//! that fails keeps the last good version and says why on the debug endpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::annotations::{from_hpa, Hpa};
use crate::config::manifests::hpas_from_yaml;
use crate::config::{Config, MetricQuery};

/// A file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceFileError(pub String);

/// A file's identity for change detection: modification time and size (ConfigMap
/// volumes swap a symlink, which changes both as seen through it).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// All query sources.
#[derive(Debug)]
pub struct Sources {
    config_path: Option<PathBuf>,
    config: Config,
    config_stamp: Stamp,
    hpa_files: Vec<(PathBuf, Stamp, Vec<Hpa>)>,
    watched: BTreeMap<String, Hpa>,
    /// Failed reloads, by file.
    reload_errors: BTreeMap<PathBuf, String>,
}

fn load_config(path: Option<&Path>) -> Result<Config, SourceFileError> {
    match path {
        Some(p) => Config::load(p).map_err(|e| SourceFileError(e.to_string())),
        None => Config::from_yaml_str("(no --config)", "").map_err(|e| SourceFileError(e.to_string())),
    }
}

fn load_hpas(path: &Path) -> Result<Vec<Hpa>, SourceFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SourceFileError(format!("{name}: {e}")))?;
    hpas_from_yaml(&name, &text).map_err(|e| SourceFileError(e.to_string()))
}

impl Sources {
    /// Loads the files; any error is fatal at start.
    pub fn load(config: Option<&Path>, hpa_files: &[PathBuf]) -> Result<Sources, SourceFileError> {
        let mut files = Vec::new();
        for path in hpa_files {
            files.push((path.clone(), stamp(path), load_hpas(path)?));
        }
        Ok(Sources {
            config_path: config.map(Path::to_owned),
            config_stamp: config.and_then(stamp),
            config: load_config(config)?,
            hpa_files: files,
            watched: BTreeMap::new(),
            reload_errors: BTreeMap::new(),
        })
    }

    /// Reloads the files that changed since they were read. Returns whether anything
    /// changed (a new version, or a new or cleared reload error).
    pub fn reload_changed(&mut self) -> bool {
        let mut changed = false;
        if let Some(path) = self.config_path.clone() {
            let now = stamp(&path);
            if now != self.config_stamp {
                self.config_stamp = now;
                changed = true;
                match load_config(Some(&path)) {
                    Ok(c) => {
                        tracing::info!(file = %path.display(), "config reloaded");
                        self.config = c;
                        self.reload_errors.remove(&path);
                    }
                    Err(e) => {
                        tracing::error!("config reload failed, keeping the previous version: {e}");
                        self.reload_errors.insert(path, e.0);
                    }
                }
            }
        }
        for (path, old, hpas) in &mut self.hpa_files {
            let now = stamp(path);
            if now == *old {
                continue;
            }
            *old = now;
            changed = true;
            match load_hpas(path) {
                Ok(h) => {
                    tracing::info!(file = %path.display(), "HPA file reloaded");
                    *hpas = h;
                    self.reload_errors.remove(path);
                }
                Err(e) => {
                    tracing::error!("HPA file reload failed, keeping the previous version: {e}");
                    self.reload_errors.insert(path.clone(), e.0);
                }
            }
        }
        changed
    }

    /// Replaces the HPAs seen in the cluster.
    pub fn set_watched(&mut self, hpas: BTreeMap<String, Hpa>) {
        self.watched = hpas;
    }

    /// The queries to serve, and the problems found on the way: bad annotations,
    /// conflicting definitions, failed reloads.
    pub fn queries(&self) -> (Vec<MetricQuery>, Vec<SourceProblem>) {
        let mut queries = self.config.metrics.clone();
        let mut problems: Vec<SourceProblem> = self
            .reload_errors
            .iter()
            .map(|(path, e)| SourceProblem {
                reason: "ReloadFailed",
                source: path.display().to_string(),
                object: path.display().to_string(),
                message: format!("reload failed, previous version in use: {e}"),
            })
            .collect();
        let mut add = |source: &str, hpa: &Hpa, queries: &mut Vec<MetricQuery>| {
            let found = from_hpa(hpa, &self.config.defaults, &self.config.backends);
            problems.extend(found.problems.iter().map(|p| SourceProblem {
                reason: "InvalidAnnotation",
                source: source.to_owned(),
                object: format!("HorizontalPodAutoscaler {}", p.hpa),
                message: p.detail(),
            }));
            queries.extend(found.queries);
        };
        for (path, _, hpas) in &self.hpa_files {
            let source = path.display().to_string();
            for hpa in hpas {
                add(&source, hpa, &mut queries);
            }
        }
        for hpa in self.watched.values() {
            add("cluster", hpa, &mut queries);
        }
        for (path, _, hpas) in &self.hpa_files {
            if hpas.is_empty() {
                problems.push(SourceProblem {
                    reason: "NoHorizontalPodAutoscaler",
                    source: path.display().to_string(),
                    object: path.display().to_string(),
                    message: "no HorizontalPodAutoscaler in the file".to_owned(),
                });
            }
        }
        let queries = dedupe(queries, &mut problems);
        (queries, problems)
    }
}

/// A problem of a query source, shaped like a Kubernetes Event: why, about what, where
/// it was found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct SourceProblem {
    /// A CamelCase reason: `InvalidAnnotation`, `ConflictingQueries`, `ReloadFailed`,
    /// `NoHorizontalPodAutoscaler`, `BackendUnusable`.
    pub reason: &'static str,
    /// Where it was found: a file, or `cluster` for watched HPAs.
    pub source: String,
    /// What it is about: an HPA, a metric, a file or a backend.
    pub object: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.source == self.object {
            write!(f, "{}: {}", self.object, self.message)
        } else {
            write!(f, "{} ({}): {}", self.object, self.source, self.message)
        }
    }
}

/// Drops queries answering the same (namespace, metric, labels) as an earlier one:
/// two would be summed into one answer. Identical repeats (two HPAs sharing one
/// annotation) are merged quietly; different ones are reported.
fn dedupe(queries: Vec<MetricQuery>, problems: &mut Vec<SourceProblem>) -> Vec<MetricQuery> {
    let mut seen: BTreeMap<(String, String, BTreeMap<String, String>), MetricQuery> = BTreeMap::new();
    let mut out = Vec::new();
    for q in queries {
        let key = (q.namespace.as_str().to_owned(), q.metric_name.to_ascii_lowercase(), q.labels.clone());
        match seen.get(&key) {
            Some(first) if first.query == q.query && first.backend == q.backend => {}
            Some(first) => problems.push(SourceProblem {
                reason: "ConflictingQueries",
                source: q.origin.to_string(),
                object: describe(&q),
                message: format!(
                    "defined twice with different queries, at {} and at {}; the first one is used",
                    first.origin, q.origin
                ),
            }),
            None => {
                seen.insert(key, q.clone());
                out.push(q);
            }
        }
    }
    out
}

/// `namespace/metric{labels}`, for messages.
pub fn describe(q: &MetricQuery) -> String {
    format!("{}/{}{{{}}}", q.namespace.as_str(), q.metric_name, q.labels_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HPA: &str = "kind: HorizontalPodAutoscaler\nmetadata:\n  name: podinfo\n  namespace: test\n  annotations:\n    \
                       metric-config.external.prometheus-query.prometheus/rps: QUERY\nspec:\n  metrics:\n  - type: External\n    \
                       external:\n      metric:\n        name: prometheus-query\n        selector: {matchLabels: {query-name: rps}}\n";

    #[test]
    fn reload_keeps_the_last_good_version() {
        let dir = testkit::temp_dir("extmetrics-sources");
        let hpa = dir.join("hpa.yaml");
        std::fs::write(&hpa, HPA.replace("QUERY", "sum(up)")).unwrap();
        let config = dir.join("c.yaml");
        std::fs::write(&config, "metrics:\n  - {namespace: test, name: prometheus-query, selector: {query-name: rps}, query: 'sum(x)'}\n").unwrap();
        let mut s = Sources::load(Some(&config), std::slice::from_ref(&hpa)).unwrap();
        let (q, problems) = s.queries();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].query, "sum(x)", "the config file comes first");
        assert_eq!(problems[0].reason, "ConflictingQueries");
        assert!(problems[0].to_string().contains("defined twice with different queries"), "{problems:?}");
        assert!(!s.reload_changed());

        // mtime granularity: make sure the new version looks different.
        std::fs::write(&config, "metrics: [\n").unwrap();
        std::fs::write(&hpa, HPA.replace("QUERY", "sum(up) * 2").replace("podinfo", "podinfo-2")).unwrap();
        assert!(s.reload_changed());
        let (q, problems) = s.queries();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].query, "sum(x)", "the broken config's previous version is kept");
        assert!(
            problems.iter().any(|p| p.reason == "ReloadFailed"
                && p.message.starts_with("reload failed, previous version in use: ")),
            "{problems:?}"
        );

        let mut watched = BTreeMap::new();
        let mut h = hpas_from_yaml("w", &HPA.replace("QUERY", "sum(up)").replace("rps", "w")).unwrap();
        watched.insert("test/podinfo".to_owned(), h.remove(0));
        s.set_watched(watched);
        let (q, _) = s.queries();
        assert_eq!(q.len(), 2);
        assert_eq!(q[1].labels["query-name"], "w");
        std::fs::remove_dir_all(&dir).ok();
    }
}
