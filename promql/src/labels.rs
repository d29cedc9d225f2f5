//! Label sets: the identity of a series.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use crate::printer::write_quoted;

/// The metric name label.
pub const METRIC_NAME: &str = "__name__";

/// The labels that name a metric and go with its name when it is dropped.
pub(crate) const NAME_LABELS: [&str; 3] = [METRIC_NAME, "__type__", "__unit__"];

/// One `name="value"` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// The label name.
    pub name: Arc<str>,
    /// The label value; never empty inside a [`Labels`] (empty means absent).
    pub value: Arc<str>,
}

/// A label set, sorted by name, without empty values. Cloning is cheap.
///
/// ```
/// use promql::Labels;
/// let l = Labels::from_pairs([("job", "api"), ("__name__", "up"), ("empty", "")]);
/// assert_eq!(l.get("job"), Some("api"));
/// assert_eq!(l.get("empty"), None);
/// assert_eq!(l.to_string(), r#"{__name__="up", job="api"}"#);
/// assert_eq!(l.metric_string(), r#"up{job="api"}"#);
/// ```
#[derive(Clone)]
pub struct Labels(Arc<Inner>);

impl Default for Labels {
    /// The empty set, one shared by all (every empty set made is this one): aggregations
    /// without grouping make one a group at every step.
    fn default() -> Self {
        static EMPTY: OnceLock<Labels> = OnceLock::new();
        EMPTY.get_or_init(|| Labels(Arc::new(Inner::default()))).clone()
    }
}

/// The labels and their hash, computed once: label sets are hashed for every grouping
/// and match at every step of a query.
#[derive(Default)]
struct Inner {
    labels: Box<[Label]>,
    hash: OnceLock<u64>,
    /// This set without its name labels, made on first use: most queries drop the
    /// name of every series they select, and stored series are selected again and again.
    unnamed: OnceLock<Labels>,
}

impl From<Vec<Label>> for Inner {
    fn from(v: Vec<Label>) -> Self {
        Inner { labels: v.into_boxed_slice(), hash: OnceLock::new(), unnamed: OnceLock::new() }
    }
}

impl std::ops::Deref for Inner {
    type Target = [Label];
    fn deref(&self) -> &[Label] {
        &self.labels
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.labels.iter()).finish()
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.hash_value() == other.hash_value() && self.0.labels == other.0.labels)
    }
}

impl Eq for Labels {}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash_value());
    }
}

/// The hasher of maps keyed by label sets: a label set writes its cached hash (SipHash
/// of its labels with per-process keys), which is used as is instead of being hashed
/// again.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LabelsHasher(u64);

impl Hasher for LabelsHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached by label sets; FNV-1a keeps other keys correct.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(29) ^ n;
    }
}

/// Builds [`LabelsHasher`]s.
pub(crate) type LabelsHashing = std::hash::BuildHasherDefault<LabelsHasher>;

/// A map keyed by label sets (see [`LabelsHasher`]).
pub(crate) type LabelsMap<V> = std::collections::HashMap<Labels, V, LabelsHashing>;

/// A set of label sets (see [`LabelsHasher`]).
pub(crate) type LabelsSet = std::collections::HashSet<Labels, LabelsHashing>;

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.labels.cmp(&other.0.labels)
    }
}

impl Labels {
    fn new(v: Vec<Label>) -> Self {
        if v.is_empty() {
            return Labels::default();
        }
        Labels(Arc::new(Inner::from(v)))
    }

    /// A hash of the labels, computed on first use, keyed per process: maps use it as
    /// is ([`LabelsHasher`]), so label sets from a scrape target must not be able to
    /// aim at one bucket.
    fn hash_value(&self) -> u64 {
        static KEYS: OnceLock<std::hash::RandomState> = OnceLock::new();
        *self.0.hash.get_or_init(|| KEYS.get_or_init(std::hash::RandomState::new).hash_one(&self.0.labels))
    }

    /// Whether both are the very same set (not merely equal): a cheap identity test.
    pub(crate) fn ptr_eq(&self, other: &Labels) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The address of the shared set: the same for clones (and for every empty set),
    /// different for any two other sets alive at once.
    pub(crate) fn addr(&self) -> usize {
        Arc::as_ptr(&self.0) as *const u8 as usize
    }

    /// The empty label set.
    pub fn empty() -> Self {
        Labels::default()
    }

    /// Builds a set from pairs in any order. Empty values are dropped; for a repeated
    /// name the last pair wins.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut v: Vec<Label> = Vec::new();
        for (n, val) in pairs {
            let (n, val) = (n.as_ref(), val.as_ref());
            v.retain(|l| &*l.name != n);
            if !val.is_empty() {
                v.push(Label { name: n.into(), value: val.into() });
            }
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Labels::new(v)
    }

    /// A set from labels taken from another set, in the same order.
    pub(crate) fn from_interned(v: Vec<Label>) -> Self {
        Labels::new(v)
    }

    /// The labels, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Label> + '_ {
        self.0.iter()
    }

    /// The number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_shared(name).map(|v| &**v)
    }

    /// The value of `name`, if set, as the string the label set holds (shared with the
    /// other label sets of a store that pools its strings).
    pub(crate) fn get_shared(&self, name: &str) -> Option<&Arc<str>> {
        // A series has a dozen labels or so: comparing lengths, which the labels' string
        // pointers carry, skips almost every name without reading it, where a binary
        // search reads and compares four.
        if self.0.len() <= 16 {
            return self.0.iter().find(|l| l.name.len() == name.len() && *l.name == *name).map(|l| &l.value);
        }
        self.0.binary_search_by(|l| (*l.name).cmp(name)).ok().map(|i| &self.0[i].value)
    }

    /// The metric name.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// A copy with `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut v: Vec<Label> = self.0.iter().filter(|l| &*l.name != name).cloned().collect();
        if !value.is_empty() {
            let at = v.partition_point(|l| &*l.name < name);
            v.insert(at, Label { name: name.into(), value: value.into() });
        }
        Labels::new(v)
    }

    /// A copy without the listed names.
    pub fn without(&self, names: &[&str]) -> Labels {
        if !self.0.iter().any(|l| names.contains(&&*l.name)) {
            return self.clone();
        }
        Labels::new(self.0.iter().filter(|l| !names.contains(&&*l.name)).cloned().collect())
    }

    /// A copy with only the listed names.
    pub fn keep(&self, names: &[&str]) -> Labels {
        Labels::new(self.0.iter().filter(|l| names.contains(&&*l.name)).cloned().collect())
    }

    /// A copy without `__name__` (and the other metadata labels `__type__`, `__unit__`).
    pub fn without_metric_name(&self) -> Labels {
        // Checked first: it spares reading the labels, a cache miss per series.
        if let Some(unnamed) = self.0.unnamed.get() {
            return unnamed.clone();
        }
        if !self.0.labels.iter().any(|l| NAME_LABELS.contains(&&*l.name)) {
            return self.clone();
        }
        // The derived set has no name labels, so it never caches itself: no Arc cycle.
        self.0.unnamed.get_or_init(|| self.without(&NAME_LABELS)).clone()
    }
}

impl Labels {
    /// The form `name{a="b"}` (name outside the braces) that people read, as the
    /// Prometheus UI shows series.
    pub fn metric_string(&self) -> String {
        let name = self.metric_name();
        let rest: Vec<&Label> = self.0.iter().filter(|l| &*l.name != METRIC_NAME).collect();
        let mut out = name.unwrap_or("").to_owned();
        if name.is_none() || !rest.is_empty() {
            out.push('{');
            for (i, l) in rest.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&l.name);
                out.push('=');
                let _ = write_quoted(&mut out, &l.value);
            }
            out.push('}');
        }
        out
    }
}

impl fmt::Display for Labels {
    /// Prometheus' `labels.String()`: `{__name__="up", job="api"}`, `{}` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}=", l.name)?;
            write_quoted(f, &l.value)?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small sets are scanned, large ones searched: both find every label and nothing
    /// else, names of one length included.
    #[test]
    fn get_finds_each_label_in_small_and_large_sets() {
        for n in [0, 1, 2, 15, 16, 17, 40] {
            let names: Vec<String> = (0..n).map(|i| format!("l{i:02}")).collect();
            let labels = Labels::from_pairs(names.iter().map(|name| (name.as_str(), format!("v_{name}"))));
            for name in &names {
                assert_eq!(labels.get(name), Some(format!("v_{name}").as_str()), "{n} labels");
            }
            for absent in ["l99", "l0", "", "l000", "__name__"] {
                assert_eq!(labels.get(absent), None, "{absent} among {n} labels");
            }
        }
    }
}
