//! The experimental `info(v, [label-selector])` function: adds the data labels of info
//! series (`target_info` by default) to the series of `v` they share the identifying
//! labels `instance` and `job` with.
//!
//! The info series are not a selector of the query: planning adds one selection per
//! `info` call, keyed by the call, over the times the info series are read at. Those
//! are the reference times of the first selector of `v` (its `@` and `offset`, and
//! those of the subqueries around it), so that enrichment follows the base samples.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{
    check_duplicates, exec_error, regex_error, Compat, EResult, Evaluator, Planned, PlannedSelection, S, V,
};
use crate::ast::{Call, Expr, MatchOp, VectorSelector};
use crate::labels::{Label, Labels, METRIC_NAME};
use crate::storage::LabelMatcher;
use crate::storage::{partition_point_near, SelectedSeries};
use crate::value::{is_stale_marker, Timestamp};

/// The info metric used without a label selector, or one without a `__name__` matcher.
const TARGET_INFO: &str = "target_info";

/// The labels an info series and a base series are matched on.
const IDENTIFYING: [&str; 2] = ["instance", "job"];

/// The matchers of an `info` call, compiled.
struct InfoMatchers {
    /// Every matcher of the selection, the default `__name__` one included.
    selection: Vec<LabelMatcher>,
    /// The `__name__` matchers info series match, with the default ones: a base series
    /// matching them all is an info series itself, left alone.
    names: Vec<LabelMatcher>,
    /// The matchers of data labels (not `__name__`), by label name.
    data: BTreeMap<String, Vec<LabelMatcher>>,
}

impl InfoMatchers {
    fn new(c: &Call) -> EResult<Self> {
        let mut selection = Vec::new();
        let mut names = Vec::new();
        let mut data: BTreeMap<String, Vec<LabelMatcher>> = BTreeMap::new();
        match c.args.get(1) {
            Some(Expr::VectorSelector(vs)) => {
                if let Some(name) = &vs.name {
                    let m = LabelMatcher::new(METRIC_NAME, MatchOp::Equal, name).map_err(regex_error)?;
                    names.push(m.clone());
                    selection.push(m);
                }
                for m in &vs.matchers {
                    let m = LabelMatcher::from_ast(m).map_err(regex_error)?;
                    if m.name == METRIC_NAME {
                        names.push(m.clone());
                    } else {
                        data.entry(m.name.clone()).or_default().push(m.clone());
                    }
                    selection.push(m);
                }
                if names.is_empty() {
                    // No `__name__` matcher: `target_info`.
                    let m =
                        LabelMatcher::new(METRIC_NAME, MatchOp::Equal, TARGET_INFO).map_err(regex_error)?;
                    names.push(m.clone());
                    selection.insert(0, m);
                } else if !names.iter().any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Regex)) {
                    // Only negated ones: they filter the info metrics, `.+_info`.
                    let m = LabelMatcher::new(METRIC_NAME, MatchOp::Regex, ".+_info").map_err(regex_error)?;
                    names.insert(0, m.clone());
                    selection.insert(0, m);
                }
            }
            Some(_) => return exec_error("expected label selectors only"),
            None => {
                let m = LabelMatcher::new(METRIC_NAME, MatchOp::Equal, TARGET_INFO).map_err(regex_error)?;
                names.push(m.clone());
                selection.push(m);
            }
        }
        Ok(InfoMatchers { selection, names, data })
    }

    /// Whether a base series is an info series of this call, not to be enriched.
    fn is_info(&self, labels: &Labels) -> bool {
        let name = labels.metric_name().unwrap_or("");
        self.names.iter().all(|m| m.matches(name))
    }
}

/// The key of an `info` call's selection among the selected samples.
fn key(c: &Call) -> *const VectorSelector {
    (c as *const Call).cast::<VectorSelector>()
}

/// Which info series a base series is matched with: the info metric name and the
/// identifying labels.
type Signature<'a> = (&'a str, [Option<&'a str>; 2]);

fn identifying(labels: &Labels) -> [Option<&str>; 2] {
    IDENTIFYING.map(|l| labels.get(l))
}

impl Evaluator<'_> {
    /// Plans the first argument of `info` and the selection of its info series.
    pub(super) fn plan_info(
        &self,
        c: &Call,
        tmin: Timestamp,
        tmax: Timestamp,
        out: &mut Vec<Planned>,
    ) -> EResult<()> {
        let Some(base) = c.args.first() else {
            return exec_error("expected at least one argument in call to function \"info\"");
        };
        self.plan(base, tmin, tmax, out)?;
        let matchers = InfoMatchers::new(c)?;
        let lo = self.info_time(base, tmin)?.unwrap_or(tmin);
        let hi = self.info_time(base, tmax)?.unwrap_or(tmax);
        out.push(Planned {
            key: key(c),
            selection: PlannedSelection {
                matchers: matchers.selection,
                start: lo.min(hi) - self.opts.lookback_delta_ms,
                end: hi.max(lo),
            },
        });
        Ok(())
    }

    /// The time info series are read at for `e` evaluated at `t`: the reference time of
    /// its first selector, or `None` without one.
    fn info_time(&self, e: &Expr, t: Timestamp) -> EResult<Option<Timestamp>> {
        let selector = |vs: &VectorSelector| -> EResult<Option<Timestamp>> {
            Ok(Some(self.at_ms(vs.at).unwrap_or(t) - self.offset_ms(vs.offset.as_ref())?))
        };
        Ok(match e {
            Expr::VectorSelector(vs) => selector(vs)?,
            Expr::MatrixSelector(ms) => selector(&ms.selector)?,
            Expr::Subquery(sq) => {
                let inner = self.at_ms(sq.at).unwrap_or(t) - self.offset_ms(sq.offset.as_ref())?;
                self.info_time(&sq.expr, inner)?
            }
            Expr::Aggregate(a) => match self.info_time(&a.expr, t)? {
                Some(r) => Some(r),
                None => match &a.param {
                    Some(p) => self.info_time(p, t)?,
                    None => None,
                },
            },
            Expr::Binary(b) => match self.info_time(&b.lhs, t)? {
                Some(r) => Some(r),
                None => self.info_time(&b.rhs, t)?,
            },
            Expr::Call(c) => {
                let mut found = None;
                for a in &c.args {
                    found = self.info_time(a, t)?;
                    if found.is_some() {
                        break;
                    }
                }
                found
            }
            Expr::Paren(p) => self.info_time(&p.expr, t)?,
            Expr::Unary(u) => self.info_time(&u.expr, t)?,
            Expr::Number(_) | Expr::String(_) => None,
        })
    }

    /// `info(v, [label-selector])` at `t`.
    pub(super) fn info(&mut self, c: &Call, t: Timestamp) -> EResult<V> {
        let Some(base_expr) = c.args.first() else {
            return exec_error("expected at least one argument in call to function \"info\"");
        };
        let base = self.vector_arg(base_expr, t)?;
        if base.is_empty() {
            return Ok(V::Vector(base));
        }
        let matchers = InfoMatchers::new(c)?;
        let reference = self.info_time(base_expr, t)?.unwrap_or(t);
        let all = self.selected.get(&(key(c) as usize)).cloned().unwrap_or_default();

        // The identifying label values of the series to enrich: info series must have
        // one of them for every identifying label some series has.
        let mut wanted: [Option<HashSet<&str>>; 2] = [None, None];
        for s in base.iter().filter(|s| !matchers.is_info(&s.labels)) {
            for (i, v) in identifying(&s.labels).into_iter().enumerate() {
                if let Some(v) = v {
                    wanted[i].get_or_insert_with(HashSet::new).insert(v);
                }
            }
        }
        let mut info: HashMap<Signature<'_>, (&Labels, Timestamp)> = HashMap::new();
        let mut names: Vec<&str> = Vec::new();
        if wanted.iter().any(Option::is_some) {
            for series in all.iter() {
                let ids = identifying(&series.labels);
                let eligible = wanted.iter().zip(ids).all(|(w, v)| match w {
                    None => true,
                    Some(w) => v.is_some_and(|v| w.contains(v)),
                });
                if !eligible {
                    continue;
                }
                let Some(ts) = self.info_sample(series, reference) else {
                    continue;
                };
                let name = series.labels.metric_name().unwrap_or("");
                if !names.contains(&name) {
                    names.push(name);
                }
                match info.get(&(name, ids)) {
                    Some(&(existing, existing_t)) if existing_t == ts => {
                        return exec_error(format!(
                            "found duplicate series for info metric: existing {existing} @ {existing_t}, new {} @ {ts}",
                            series.labels
                        ));
                    }
                    Some(&(_, existing_t)) if existing_t > ts => {}
                    _ => {
                        info.insert((name, ids), (&series.labels, ts));
                    }
                }
            }
        }
        names.sort_unstable();

        let data_must_exist = matchers.data.values().flatten().any(|m| !m.matches(""));
        let mut out = Vec::with_capacity(base.len());
        for s in &base {
            if matchers.is_info(&s.labels) {
                out.push(s.clone());
                continue;
            }
            let ids = identifying(&s.labels);
            let mut added: Vec<Label> = Vec::new();
            let mut matched = false;
            for name in &names {
                let Some(&(info_labels, _)) = info.get(&(*name, ids)) else {
                    continue;
                };
                matched = true;
                for l in info_labels.iter() {
                    if &*l.name == METRIC_NAME
                        || (!matchers.data.is_empty() && !matchers.data.contains_key(&*l.name))
                    {
                        continue;
                    }
                    if let Some(prev) = added.iter().find(|a| a.name == l.name) {
                        if prev.value != l.value {
                            return exec_error(format!("conflicting label: {}", l.name));
                        }
                    }
                    if s.labels.get(&l.name).is_some() || added.iter().any(|a| a.name == l.name) {
                        continue;
                    }
                    added.push(l.clone());
                }
            }
            if !matched && data_must_exist {
                continue;
            }
            let labels = if added.is_empty() {
                s.labels.clone()
            } else {
                let mut all: Vec<Label> = s.labels.iter().cloned().chain(added).collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                Labels::from_interned(all)
            };
            out.push(S { labels, ..s.clone() });
        }
        check_duplicates(&out, self.delayed)?;
        Ok(V::Vector(out))
    }

    /// The time of the sample an info series has at `reference`, looking back as an
    /// instant selector does; `None` when it has none or it is stale.
    fn info_sample(&self, series: &SelectedSeries, reference: Timestamp) -> Option<Timestamp> {
        let i = partition_point_near(&series.points, reference, |t| t <= reference);
        let p = series.points.get(i.checked_sub(1)?)?;
        let too_old = match self.opts.compat {
            Compat::Prometheus3 => p.t <= reference - self.opts.lookback_delta_ms,
            Compat::Prometheus2 => p.t < reference - self.opts.lookback_delta_ms,
        };
        if too_old || is_stale_marker(p.v) {
            return None;
        }
        Some(p.t)
    }
}
