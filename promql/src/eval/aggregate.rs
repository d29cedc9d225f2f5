//! Aggregation operators.

use std::collections::HashMap;
use std::sync::Arc;

use super::kernels;
use super::sliding::{fused_param, node_key, Input, Positioned, SlidSeries};
use super::{exec_error, AnnotationKind, Compat, EResult, Evaluator, S, V};
use crate::ast::{AggregateExpr, AggregateOp, Grouping};
use crate::labels::{Labels, LabelsHashing, LabelsMap, NAME_LABELS};
use crate::value::{Point, Series, Timestamp};

/// The labels that identify an element's group.
fn group_labels(labels: &Labels, grouping: Option<&Grouping>) -> Labels {
    match grouping {
        None => Labels::empty(),
        Some(g) => {
            let names: Vec<&str> = g.labels.iter().map(String::as_str).collect();
            if g.without {
                let mut names = names;
                names.extend(NAME_LABELS);
                labels.without(&names)
            } else {
                labels.keep(&names)
            }
        }
    }
}

/// Whether a label takes part in the group key.
fn is_group_label(name: &str, grouping: &Grouping) -> bool {
    let listed = grouping.labels.iter().any(|l| l == name);
    if grouping.without {
        !listed && !NAME_LABELS.contains(&name)
    } else {
        listed
    }
}

/// A hash of the labels that make an element's group key, without building the key.
fn group_hash(labels: &Labels, grouping: Option<&Grouping>) -> u64 {
    let Some(g) = grouping else { return 0 };
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    let mut add = |name: &str, value: &str| {
        h.update(name.as_bytes());
        h.update(&[0xff]);
        h.update(value.as_bytes());
        h.update(&[0xfe]);
    };
    if g.without {
        for l in labels.iter().filter(|l| is_group_label(&l.name, g)) {
            add(&l.name, &l.value);
        }
    } else {
        // A lookup per listed label instead of a pass over all (`by (le)` of buckets
        // with a dozen labels each); the same order for every element.
        for name in &g.labels {
            if let Some(value) = labels.get(name) {
                add(name, value);
            }
        }
    }
    h.digest()
}

/// Whether `labels` belongs to the group whose key is `key`.
fn in_group(key: &Labels, labels: &Labels, grouping: Option<&Grouping>) -> bool {
    let Some(g) = grouping else { return true };
    if !g.without {
        // The key is its first element's listed labels: a listed label must be absent
        // from both or have the same value in both.
        return g.labels.iter().all(|name| labels.get(name) == key.get(name));
    }
    let mut own = labels.iter().filter(|l| is_group_label(&l.name, g));
    let mut keys = key.iter();
    loop {
        match (own.next(), keys.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.name == b.name && a.value == b.value => {}
            _ => return false,
        }
    }
}

/// Per-group state of the value aggregations.
enum Acc {
    /// Prometheus 3's `sum`: a Kahan–Neumaier sum and its compensation.
    Sum {
        sum: f64,
        c: f64,
    },
    /// Prometheus 2's `sum`: no compensation.
    PlainSum(f64),
    /// Prometheus 3's `avg`: compensated.
    Avg(kernels::AvgAcc),
    /// Prometheus 2's `avg`: an incremental mean.
    IncrementalMean(kernels::IncrementalMean),
    Count(f64),
    Group,
    Min(f64),
    Max(f64),
    Stddev(kernels::StddevAcc),
    Quantile(Vec<f64>),
}

impl Acc {
    /// A group's state from its first value `v`, as `compat`'s Prometheus keeps it: 3
    /// compensates sums and means (Kahan), 2.x adds plainly and takes an incremental
    /// mean, so that its answers' last bits come out as 2.x's.
    fn new(op: AggregateOp, v: f64, compat: Compat) -> Acc {
        let three = compat == Compat::Prometheus3;
        match op {
            AggregateOp::Sum if three => Acc::Sum { sum: v, c: 0.0 },
            AggregateOp::Sum => Acc::PlainSum(v),
            AggregateOp::Avg if three => Acc::Avg(kernels::AvgAcc::new(v)),
            AggregateOp::Avg => Acc::IncrementalMean(kernels::IncrementalMean::new(v)),
            AggregateOp::Count => Acc::Count(1.0),
            AggregateOp::Min => Acc::Min(v),
            AggregateOp::Max => Acc::Max(v),
            AggregateOp::Stddev | AggregateOp::Stdvar => Acc::Stddev(kernels::StddevAcc::new(v, compat)),
            AggregateOp::Quantile => Acc::Quantile(vec![v]),
            _ => Acc::Group,
        }
    }

    #[inline]
    fn add(&mut self, v: f64) {
        match self {
            Acc::Sum { sum, c } => (*sum, *c) = kernels::kahan_inc(v, *sum, *c),
            Acc::PlainSum(sum) => *sum += v,
            Acc::Avg(a) => a.add(v),
            Acc::IncrementalMean(a) => a.add(v),
            Acc::Count(n) => *n += 1.0,
            Acc::Group => {}
            // NaN is replaced by anything, so NaN results only when all inputs are NaN.
            Acc::Min(m) => {
                if v < *m || m.is_nan() {
                    *m = v;
                }
            }
            Acc::Max(m) => {
                if v > *m || m.is_nan() {
                    *m = v;
                }
            }
            Acc::Stddev(s) => s.add(v),
            Acc::Quantile(vs) => vs.push(v),
        }
    }

    fn value(self, op: AggregateOp, param: f64) -> f64 {
        match self {
            Acc::Sum { sum, c } => sum + c,
            Acc::PlainSum(sum) => sum,
            Acc::Avg(a) => a.value(),
            Acc::IncrementalMean(a) => a.value(),
            Acc::Count(n) => n,
            Acc::Group => 1.0,
            Acc::Min(m) | Acc::Max(m) => m,
            Acc::Stddev(s) if op == AggregateOp::Stddev => s.stddev(),
            Acc::Stddev(s) => s.stdvar(),
            Acc::Quantile(mut vs) => kernels::quantile(param, &mut vs),
        }
    }
}

/// The groups a fused aggregation ([`Evaluator::fused_aggregate`]) has found, and each
/// series' group (`usize::MAX` while unseen), by position in the selection.
#[derive(Default)]
pub(super) struct FusedGroups {
    group_of: Vec<usize>,
    groups: GroupKeys,
}

impl FusedGroups {
    /// Series `s`'s group; the first time `s` comes, also its labels and whether its
    /// group is new.
    #[inline]
    fn place(&mut self, s: &SlidSeries<'_>, grouping: Option<&Grouping>) -> (usize, Option<(Labels, bool)>) {
        if s.n >= self.group_of.len() {
            self.group_of.resize(s.n + 1, usize::MAX);
        }
        if self.group_of[s.n] != usize::MAX {
            return (self.group_of[s.n], None);
        }
        let labels = s.labels();
        let (g, new) = self.groups.find_or_add(&labels, grouping);
        self.group_of[s.n] = g;
        (g, Some((labels, new)))
    }
}

/// A group's accumulators over `steps` steps, none started.
fn empty_cells(steps: usize) -> Vec<Option<(Acc, usize)>> {
    (0..steps).map(|_| None).collect()
}

/// A fused aggregation's values on their way into its cells. The values of the series
/// being slid wait in `pending` until the next series starts (and after the last), to be
/// added to their group's row in a tight loop: the group is found once a series instead
/// of once a value, and the sliding loop is left with a push (a call per value, which
/// looked the group up, made `r_rps_one_15s`' evaluation 88 µs instead of 81).
struct Folding<'a> {
    op: AggregateOp,
    compat: Compat,
    grouping: Option<&'a Grouping>,
    steps: usize,
    /// Per group, per step: the accumulator and the first series that went into it.
    cells: Vec<Vec<Option<(Acc, usize)>>>,
    found: FusedGroups,
    drop_names: bool,
    /// The values of the series `current` (its position, its group), with their steps.
    pending: Vec<(usize, f64)>,
    current: Option<(usize, usize)>,
}

impl Folding<'_> {
    /// Takes series `s`'s value `v` at step `i`.
    #[inline(always)]
    fn take(&mut self, s: &SlidSeries<'_>, i: usize, v: f64) {
        if self.current.is_none_or(|(n, _)| n != s.n) {
            self.start(s);
        }
        self.pending.push((i, v));
    }

    /// Folds the pending values, then makes `s` the current series.
    #[inline(never)]
    fn start(&mut self, s: &SlidSeries<'_>) {
        self.fold();
        let (g, first) = self.found.place(s, self.grouping);
        if let Some((_, true)) = first {
            self.cells.push(empty_cells(self.steps));
        }
        self.drop_names |= s.drop_name;
        self.current = Some((s.n, g));
    }

    /// Adds the pending values to their cells.
    fn fold(&mut self) {
        let Some((n, g)) = self.current else { return };
        let row = &mut self.cells[g];
        for &(i, v) in &self.pending {
            match &mut row[i] {
                Some((acc, _)) => acc.add(v),
                cell => *cell = Some((Acc::new(self.op, v, self.compat), n)),
            }
        }
        self.pending.clear();
    }
}

/// A fused aggregation's accumulators over a block of steps: per group, per step, the
/// accumulator and the first series that went into it; and whether names are to be
/// dropped at the end.
struct Fused {
    cells: Vec<Vec<Option<(Acc, usize)>>>,
    drop_names: bool,
}

/// The groups of an aggregation, numbered in order of first appearance. They are found
/// by a hash of the grouping labels' values, so that no label set is built for an
/// element whose group exists already.
#[derive(Default)]
struct GroupKeys {
    /// Hashed again with the map's per-process keys: `group_hash` is unkeyed, and label
    /// values from scrape targets must not be able to aim at one bucket.
    by_hash: HashMap<u64, Vec<usize>>,
    keys: Vec<Labels>,
    /// For `by`, groups by where the listed values live: a store's label sets share
    /// their strings, so the elements of a group mostly hold the very same ones, found
    /// without hashing or comparing their text (a third of an instant `sum by` over 3k
    /// series). The same address is the same text; other addresses of a text go the
    /// long way once. The strings are held, so their addresses are not reused.
    by_address: HashMap<u64, Vec<(AddressKey, usize)>, LabelsHashing>,
    /// Lookups by address that found nothing while the group existed: elements whose
    /// strings are their own (made by `label_replace`, say), for which the addresses
    /// only cost; past a few, and more than the hits, they are no longer tried.
    address_misses: usize,
    address_hits: usize,
}

/// `count` or `group` (`a`, without a parameter) over all steps of a range query at
/// once, from `inner`, the whole result of its argument: how many of its series (or
/// whether any) each group has at each step. Neither depends on the order in which the
/// series come, which a whole result does not keep (the step-by-step path's vectors
/// set it, and a sum's last bits follow it). `None` if a point is off the steps.
pub(super) fn count_range(a: &AggregateExpr, inner: &[Series], steps: &[Timestamp]) -> Option<Vec<Series>> {
    let mut keys = GroupKeys::default();
    let mut counts: Vec<Vec<u32>> = Vec::new();
    for s in inner {
        let (g, new) = keys.find_or_add(&s.labels, a.grouping.as_ref());
        if new {
            counts.push(vec![0; steps.len()]);
        }
        let group = &mut counts[g];
        super::sliding::at_steps(steps, &s.points, |i, _| group[i] += 1)?;
    }
    let only_whether = a.op == AggregateOp::Group;
    let mut out: Vec<Series> = keys
        .keys
        .into_iter()
        .zip(counts)
        .filter_map(|(labels, counts)| {
            let points: Vec<Point> = steps
                .iter()
                .zip(counts)
                .filter(|&(_, n)| n > 0)
                .map(|(&t, n)| Point { t, v: if only_whether { 1.0 } else { f64::from(n) } })
                .collect();
            (!points.is_empty()).then_some(Series { labels, points })
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Some(out)
}

/// `by`'s listed values of one element, as the strings its label set holds.
type AddressKey = Box<[Option<Arc<str>>]>;

/// A hash of where `by`'s listed values of `labels` live.
fn address_hash(labels: &Labels, names: &[String]) -> u64 {
    names.iter().fold(0u64, |h, name| {
        let at = labels.get_shared(name).map_or(0, |v| Arc::as_ptr(v).cast::<u8>() as usize as u64);
        (h.rotate_left(5) ^ at).wrapping_mul(0x517c_c1b7_2722_0a95)
    })
}

impl GroupKeys {
    /// The group of an element with `labels`, and whether it is new.
    fn find_or_add(&mut self, labels: &Labels, grouping: Option<&Grouping>) -> (usize, bool) {
        let Some(by) = grouping.filter(|g| !g.without).map(|g| &g.labels[..]) else {
            return self.find_or_add_by_text(labels, grouping);
        };
        if self.address_misses > 16 && self.address_misses > self.address_hits {
            return self.find_or_add_by_text(labels, grouping);
        }
        // Until a group has a second element, every element starts a group of its own
        // (`by (pod)` of one series a pod): no addresses to look up.
        let h = (!self.by_address.is_empty()).then(|| address_hash(labels, by));
        let same = |values: &[Option<Arc<str>>]| {
            values.iter().zip(by).all(|(v, name)| match (v, labels.get_shared(name)) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            })
        };
        let known =
            h.and_then(|h| self.by_address.get(&h)).and_then(|c| c.iter().find(|(values, _)| same(values)));
        if let Some(&(_, g)) = known {
            self.address_hits += 1;
            return (g, false);
        }
        let (g, new) = self.find_or_add_by_text(labels, grouping);
        // A group's second element by text: its addresses are kept for the rest.
        if !new {
            if h.is_some() {
                self.address_misses += 1;
            }
            let values = by.iter().map(|name| labels.get_shared(name).cloned()).collect();
            let h = h.unwrap_or_else(|| address_hash(labels, by));
            self.by_address.entry(h).or_default().push((values, g));
        }
        (g, new)
    }

    /// [`find_or_add`](Self::find_or_add) by the text of the grouping labels.
    fn find_or_add_by_text(&mut self, labels: &Labels, grouping: Option<&Grouping>) -> (usize, bool) {
        let candidates = self.by_hash.entry(group_hash(labels, grouping)).or_default();
        if let Some(g) = candidates.iter().copied().find(|&g| in_group(&self.keys[g], labels, grouping)) {
            return (g, false);
        }
        candidates.push(self.keys.len());
        self.keys.push(group_labels(labels, grouping));
        (self.keys.len() - 1, true)
    }
}

impl Evaluator<'_> {
    pub(super) fn aggregate(&mut self, a: &AggregateExpr, t: Timestamp) -> EResult<V> {
        if let Some(out) = self.take_precomputed(node_key(a), t) {
            self.check_distinct(node_key(a), &out)?;
            return Ok(V::Vector(out));
        }
        let param = match (&a.param, a.op) {
            (Some(p), AggregateOp::CountValues) => match self.eval(p, t)? {
                V::String(s) => Param::Label(s),
                _ => return exec_error("count_values needs a string parameter"),
            },
            (Some(p), _) => Param::Number(self.scalar_arg(p, t)?),
            (None, _) => Param::None,
        };
        let input = self.vector_arg(&a.expr, t)?;
        let grouping = a.grouping.as_ref();
        let out = match (a.op, param) {
            (AggregateOp::Topk | AggregateOp::Bottomk, Param::Number(k)) => {
                let groups = self.groups_of(node_key(a), input, grouping);
                top_bottom_k(groups, k, a.op == AggregateOp::Topk, self.opts.compat)?
            }
            (AggregateOp::Limitk, Param::Number(k)) => {
                limitk(self.groups_of(node_key(a), input, grouping), k)?
            }
            (AggregateOp::LimitRatio, Param::Number(r)) => {
                if r.is_nan() {
                    return exec_error("Ratio value is NaN");
                }
                let capped = r.clamp(-1.0, 1.0);
                if capped != r {
                    self.annotate(
                        AnnotationKind::Warning,
                        format!(
                            "ratio value should be between -1 and 1, got {}, capping to {}",
                            kernels::go_format_g(r),
                            kernels::go_format_g(capped)
                        ),
                        a.param.as_ref().map_or(a.span, |p| p.span()),
                    );
                }
                input.into_iter().filter(|s| ratio_keeps(&s.labels, capped)).collect()
            }
            (AggregateOp::CountValues, Param::Label(name)) => count_values(input, grouping, &name)?,
            (op, param) => {
                let p = match param {
                    Param::Number(p) => p,
                    _ => f64::NAN,
                };
                if op == AggregateOp::Quantile {
                    if let Some(param) = &a.param {
                        self.quantile_range_warning(p, param);
                    }
                }
                self.value_aggregation(a, input, grouping, op, p)
            }
        };
        self.check_distinct(node_key(a), &out)?;
        Ok(V::Vector(out))
    }

    /// `a` (a value aggregation without parameter, or `quantile` of a literal in [0, 1];
    /// [`value_aggregation`]) of its `input` (a sliding range function call or a plain
    /// instant selector, maybe through operations on each value) at each of `steps`, the
    /// input's values going straight into their groups instead of into a vector per
    /// step. `None` when the input cannot be computed so.
    ///
    /// Within a step, groups come out in the order of their first element in the input's
    /// output, as [`value_aggregation`] gives them, and take their elements in the same
    /// order, so that sums round the same way.
    ///
    /// [`value_aggregation`]: Evaluator::value_aggregation
    pub(super) fn fused_aggregate(
        &mut self,
        a: &AggregateExpr,
        input: Input<'_>,
        steps: &[Timestamp],
    ) -> EResult<Option<Vec<Vec<S>>>> {
        let Some(Fused { mut cells, drop_names }) = self.fused_cells(a, input, steps)? else {
            return Ok(None);
        };
        let keys = self.fused_groups.get(&node_key(a)).map_or(&[][..], |f| &f.groups.keys[..]);
        let param = fused_param(a);
        let mut out = Vec::with_capacity(steps.len());
        let mut present: Vec<(usize, usize, Acc)> = Vec::new();
        for i in 0..steps.len() {
            present.clear();
            present.extend(cells.iter_mut().enumerate().filter_map(|(g, row)| {
                let (acc, first) = row[i].take()?;
                Some((first, g, acc))
            }));
            present.sort_unstable_by_key(|&(first, ..)| first);
            out.push(
                present
                    .drain(..)
                    .map(|(_, g, acc)| S {
                        labels: keys[g].clone(),
                        v: acc.value(a.op, param),
                        t: 0,
                        drop_name: drop_names,
                    })
                    .collect(),
            );
        }
        Ok(Some(out))
    }

    /// [`fused_aggregate`](Self::fused_aggregate) at each of `steps` of a range query,
    /// appended to `series`, a series per group in the order groups were found (the
    /// series of a range result, whose order within a step does not matter). False when
    /// the input cannot be computed so, or when names are to be dropped at the end,
    /// which can make two groups one (the step-by-step path reports that).
    pub(super) fn fused_aggregate_series(
        &mut self,
        a: &AggregateExpr,
        input: Input<'_>,
        steps: &[Timestamp],
        series: &mut Vec<Series>,
    ) -> EResult<bool> {
        let Some(Fused { cells, drop_names: false }) = self.fused_cells(a, input, steps)? else {
            return Ok(false);
        };
        let keys = self.fused_groups.get(&node_key(a)).map_or(&[][..], |f| &f.groups.keys[..]);
        let param = fused_param(a);
        series.extend(keys[series.len()..].iter().map(|k| Series { labels: k.clone(), points: Vec::new() }));
        for (row, s) in cells.into_iter().zip(series.iter_mut()) {
            let points = row
                .into_iter()
                .zip(steps)
                .filter_map(|(cell, &t)| cell.map(|(acc, _)| Point { t, v: acc.value(a.op, param) }));
            s.points.extend(points);
        }
        Ok(true)
    }

    /// The accumulators of [`fused_aggregate`](Self::fused_aggregate); the groups stay in
    /// `fused_groups`, numbered as the rows of the cells.
    fn fused_cells(
        &mut self,
        a: &AggregateExpr,
        input: Input<'_>,
        steps: &[Timestamp],
    ) -> EResult<Option<Fused>> {
        if !self.distinct_input(input, steps)? {
            return Ok(None);
        }
        let Some(chain) = self.input_chain(a, input, steps)? else { return Ok(None) };
        // Per series of the selection, its group once seen; kept for the next block of
        // steps, which then finds the groups without reading a label (where the series
        // keep their positions).
        let found = match input.stable_positions() {
            true => self.fused_groups.remove(&node_key(a)).unwrap_or_default(),
            false => FusedGroups::default(),
        };
        let mut folding = Folding {
            op: a.op,
            compat: self.opts.compat,
            grouping: a.grouping.as_ref(),
            steps: steps.len(),
            cells: found.groups.keys.iter().map(|_| empty_cells(steps.len())).collect(),
            found,
            drop_names: false,
            pending: Vec::with_capacity(steps.len()),
            current: None,
        };
        let slid = self.input_each(input, &chain, steps, |s, i, v| folding.take(s, i, v))?;
        folding.fold();
        let Folding { cells, found, drop_names, .. } = folding;
        self.fused_groups.insert(node_key(a), found);
        Ok(slid.then_some(Fused { cells, drop_names }))
    }

    /// `input` split into its groups under `grouping`, in order of first appearance,
    /// through the node's [`GroupPlan`] (kept over the steps of a range query, made
    /// again where the input's series change).
    fn groups_of(&mut self, node: usize, input: Vec<S>, grouping: Option<&Grouping>) -> Vec<Vec<S>> {
        if let Some(plan) = self.group_plans.get(&node).filter(|plan| plan.fits(&input)) {
            return split_groups(input, &plan.group_of, plan.keys.len());
        }
        let mut keys = GroupKeys::default();
        let group_of: Vec<usize> = input.iter().map(|s| keys.find_or_add(&s.labels, grouping).0).collect();
        let keep_plan = self.grid_step > 0;
        let inputs = if keep_plan { input.iter().map(|s| s.labels.clone()).collect() } else { Vec::new() };
        let groups = split_groups(input, &group_of, keys.keys.len());
        if keep_plan {
            self.group_plans.insert(node, GroupPlan { inputs, group_of, keys: keys.keys });
        }
        groups
    }

    fn value_aggregation(
        &mut self,
        a: &AggregateExpr,
        input: Vec<S>,
        grouping: Option<&Grouping>,
        op: AggregateOp,
        p: f64,
    ) -> Vec<S> {
        let node = node_key(a);
        // Over many steps (a range query, a subquery) the input is usually the same
        // series in the same order as at the previous step: reuse its grouping.
        if let Some(plan) = self.group_plans.get(&node).filter(|plan| plan.fits(&input)) {
            let mut groups: Vec<Option<(Acc, bool)>> = (0..plan.keys.len()).map(|_| None).collect();
            for (s, &g) in input.iter().zip(&plan.group_of) {
                match &mut groups[g] {
                    Some((acc, drop_name)) => {
                        acc.add(s.v);
                        *drop_name |= s.drop_name;
                    }
                    slot => *slot = Some((Acc::new(op, s.v, self.opts.compat), s.drop_name)),
                }
            }
            // Groups are numbered in order of first appearance, as they come out.
            return groups
                .into_iter()
                .zip(&plan.keys)
                .filter_map(|(g, labels)| {
                    let (acc, drop_name) = g?;
                    Some(S { labels: labels.clone(), v: acc.value(op, p), t: 0, drop_name })
                })
                .collect();
        }
        let keep_plan = self.grid_step > 0;
        let mut group_of = Vec::with_capacity(if keep_plan { input.len() } else { 0 });
        let mut keys = GroupKeys::default();
        // Per group: the accumulator and whether a name is to be dropped at the end.
        let mut groups: Vec<(Acc, bool)> = Vec::new();
        for s in &input {
            let (g, new) = keys.find_or_add(&s.labels, grouping);
            if new {
                groups.push((Acc::new(op, s.v, self.opts.compat), s.drop_name));
            } else {
                groups[g].0.add(s.v);
                groups[g].1 |= s.drop_name;
            }
            if keep_plan {
                group_of.push(g);
            }
        }
        if keep_plan {
            let plan = GroupPlan {
                inputs: input.into_iter().map(|s| s.labels).collect(),
                group_of,
                keys: keys.keys.clone(),
            };
            self.group_plans.insert(node, plan);
        }
        keys.keys
            .into_iter()
            .zip(groups)
            .map(|(labels, (acc, drop_name))| S { labels, v: acc.value(op, p), t: 0, drop_name })
            .collect()
    }

    /// What `keep` keeps of `input` (through the operations on each value between it and
    /// `a`, their scalars taken at each block's steps) at each of `steps` of a range
    /// query, block by block of `block` steps: the input's values at a step go into their
    /// group's heap as values and series positions, in the step-by-step path's order (so
    /// that the same of equal values stay), instead of into a vector of label sets per
    /// step, and those kept become points of their series (a range result's order within
    /// a step does not matter). `None` where the input cannot be computed so.
    pub(super) fn top_bottom_series(
        &mut self,
        a: &AggregateExpr,
        input: Input<'_>,
        steps: &[Timestamp],
        keep: Keep,
        block: usize,
    ) -> EResult<Option<Positioned>> {
        let grouping = a.grouping.as_ref();
        let mut placed = FusedGroups::default();
        // Per series position: its result series once it has a point.
        let mut series: Vec<(Option<Labels>, Vec<Point>)> = Vec::new();
        let mut heaps: Vec<Vec<(f64, usize)>> = Vec::new();
        for block in steps.chunks(block.max(1)) {
            self.check_deadline()?;
            // Its scalars are given at the block's steps.
            let Some(chain) = self.input_chain(a, input, block)? else { return Ok(None) };
            // Per step, the values with their series' positions, series by series.
            let mut at: Vec<Vec<(usize, f64)>> = vec![Vec::new(); block.len()];
            // Values come series by series: a series is placed once a block.
            let mut current = usize::MAX;
            let mut take = |s: &SlidSeries<'_>, i: usize, v: f64| {
                if s.n != current {
                    current = s.n;
                    if let (_, Some((labels, _))) = placed.place(s, grouping) {
                        if series.len() <= s.n {
                            series.resize_with(s.n + 1, || (None, Vec::new()));
                        }
                        // A range result is final: a name to drop at the end goes now.
                        series[s.n].0 = Some(if s.drop_name { labels.without_metric_name() } else { labels });
                    }
                }
                at[i].push((s.n, v));
            };
            if !self.input_each(input, &chain, block, &mut take)? {
                return Ok(None);
            }
            if keep.k == 0 {
                continue;
            }
            heaps.resize_with(placed.groups.keys.len(), Vec::new);
            for (values, &t) in at.iter().zip(block) {
                for &(n, v) in values {
                    offer(&mut heaps[placed.group_of[n]], keep, (v, n), |&(v, _)| v);
                }
                for heap in &mut heaps {
                    for (v, n) in heap.drain(..) {
                        series[n].1.push(Point { t, v });
                    }
                }
            }
        }
        Ok(Some(
            series
                .into_iter()
                .enumerate()
                .filter(|(_, (_, points))| !points.is_empty())
                .filter_map(|(n, (labels, points))| Some((n, Series { labels: labels?, points })))
                .collect(),
        ))
    }
}

/// `count_values(name, input)`: per group, how many elements have each value, the value
/// (as Go formats it) under `name`.
fn count_values(input: Vec<S>, grouping: Option<&Grouping>, name: &str) -> EResult<Vec<S>> {
    if name.is_empty() {
        return exec_error(format!("invalid label name {name:?}"));
    }
    // The elements of one group with one value count into the same output series:
    // found by the group's number and the value's bits (every NaN prints alike), so
    // that its labels and its value's text are made once, not for every element.
    let mut groups = GroupKeys::default();
    let mut counted: HashMap<(usize, u64), usize> = HashMap::new();
    // Groups can still meet in one label set when the new label replaces one of
    // theirs (`count_values("job", m) by (job)`).
    let mut index: LabelsMap<usize> = LabelsMap::default();
    let mut out: Vec<S> = Vec::new();
    for s in input {
        let (g, _) = groups.find_or_add(&s.labels, grouping);
        let bits = if s.v.is_nan() { f64::NAN.to_bits() } else { s.v.to_bits() };
        let i = *counted.entry((g, bits)).or_insert_with(|| {
            let labels = groups.keys[g].with(name, &kernels::go_format_float(s.v));
            *index.entry(labels.clone()).or_insert_with(|| {
                out.push(S { labels, v: 0.0, t: 0, drop_name: false });
                out.len() - 1
            })
        });
        out[i].v += 1.0;
    }
    Ok(out)
}

/// How one step's input of an aggregation was grouped: by input position, the group
/// number, and each group's labels. It fits another input made of the very same label
/// sets in the same order.
pub(crate) struct GroupPlan {
    pub(super) inputs: Vec<Labels>,
    pub(super) group_of: Vec<usize>,
    pub(super) keys: Vec<Labels>,
}

impl GroupPlan {
    pub(super) fn fits(&self, input: &[S]) -> bool {
        self.inputs.len() == input.len() && self.inputs.iter().zip(input).all(|(a, s)| a.ptr_eq(&s.labels))
    }
}

enum Param {
    None,
    Number(f64),
    Label(String),
}

/// `k` as Prometheus converts it: NaN and values beyond int64 are errors.
pub(super) fn k_param(k: f64) -> EResult<i64> {
    if k.is_nan() {
        return exec_error("Parameter value is NaN");
    }
    if k <= -9_223_372_036_854_775_808.0 {
        return exec_error(format!("Scalar value {} underflows int64", kernels::go_format_g(k)));
    }
    if k >= 9_223_372_036_854_774_784.0 {
        return exec_error(format!("Scalar value {} overflows int64", kernels::go_format_g(k)));
    }
    Ok(k as i64)
}

/// `input` split by each element's group in `group_of`, of `count` groups.
fn split_groups(input: Vec<S>, group_of: &[usize], count: usize) -> Vec<Vec<S>> {
    if count == 1 {
        // No grouping: the input as it is.
        return vec![input];
    }
    let mut groups: Vec<Vec<S>> = (0..count).map(|_| Vec::new()).collect();
    for (s, &g) in input.into_iter().zip(group_of) {
        groups[g].push(s);
    }
    groups
}

/// `topk`/`bottomk` of `groups`, with Prometheus' heap so that ties come out in the same
/// order.
fn top_bottom_k(groups: Vec<Vec<S>>, k: f64, top: bool, compat: Compat) -> EResult<Vec<S>> {
    let k = k_param(k)?;
    if k < 1 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for group in groups {
        let k = (k as usize).min(group.len());
        let keep = Keep { k, top, compat };
        let mut heap: Vec<S> = Vec::with_capacity(k);
        for s in group {
            offer(&mut heap, keep, s, |s| s.v);
        }
        out.extend(heap_to_output(heap, top));
    }
    Ok(out)
}

/// What `topk` (`top`) or `bottomk` keeps of a group: its `k` greatest or least values,
/// with the heap of `compat`'s Prometheus.
#[derive(Clone, Copy)]
pub(super) struct Keep {
    pub(super) k: usize,
    pub(super) top: bool,
    pub(super) compat: Compat,
}

/// Offers `x`, of value `value(x)`, to `heap`, what `keep` keeps so far (its `k` at least
/// 1), as Prometheus' heap takes it: which of equal values stay depends on this order of
/// comparisons. Prometheus 3 puts a value that goes in in the place of the least and
/// sifts it down; 2 pops the least, pushes the new value, and lets a value replace a NaN
/// even when it is NaN too.
#[inline]
fn offer<T>(heap: &mut Vec<T>, keep: Keep, x: T, value: impl Fn(&T) -> f64) {
    let Keep { k, top, compat } = keep;
    // "Less" of Prometheus' heaps: NaN sorts first, so it is the first to be replaced.
    let less = |a: &T, b: &T| {
        let (a, b) = (value(a), value(b));
        a.is_nan() || if top { a < b } else { a > b }
    };
    if heap.len() < k {
        heap.push(x);
        let n = heap.len() - 1;
        heap_up(heap, n, &less);
        return;
    }
    let (least, v) = (value(&heap[0]), value(&x));
    let beats = if top { least < v } else { least > v };
    if compat == Compat::Prometheus2 {
        if beats || least.is_nan() {
            // `heap.Pop`: the last in the place of the least, sifted down without it.
            let last = heap.len() - 1;
            heap.swap(0, last);
            heap_down(&mut heap[..last], 0, &less);
            heap.pop();
            heap.push(x);
            heap_up(heap, last, &less);
        }
    } else if beats || (least.is_nan() && !v.is_nan()) {
        heap[0] = x;
        if k > 1 {
            heap_down(heap, 0, &less);
        }
    }
}

fn heap_up<T>(h: &mut [T], mut j: usize, less: &impl Fn(&T, &T) -> bool) {
    while j > 0 {
        let i = (j - 1) / 2;
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        j = i;
    }
}

fn heap_down<T>(h: &mut [T], mut i: usize, less: &impl Fn(&T, &T) -> bool) {
    let n = h.len();
    loop {
        let j1 = 2 * i + 1;
        if j1 >= n {
            break;
        }
        let mut j = j1;
        if j1 + 1 < n && less(&h[j1 + 1], &h[j1]) {
            j = j1 + 1;
        }
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        i = j;
    }
}

/// The heap in Prometheus' output order, `sort.Sort(sort.Reverse(heap))`: for up to 12
/// elements Go sorts by insertion, whose result is the non-NaN values stably sorted
/// (descending for `topk`) followed by the NaNs in reverse heap order (every element
/// moves left past a NaN). That result is built here in O(k log k) for any k; beyond 12
/// elements Go's pdqsort may order equal values differently.
fn heap_to_output(heap: Vec<S>, top: bool) -> Vec<S> {
    let (mut numbers, mut nans): (Vec<S>, Vec<S>) = heap.into_iter().partition(|s| !s.v.is_nan());
    // `partial_cmp`, not `total_cmp`: -0 and +0 are equal to Go, so they keep their order.
    let cmp = |a: f64, b: f64| a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal);
    if top {
        numbers.sort_by(|a, b| cmp(b.v, a.v));
    } else {
        numbers.sort_by(|a, b| cmp(a.v, b.v));
    }
    nans.reverse();
    numbers.extend(nans);
    numbers
}

#[cfg(test)]
fn insertion_sort_by(v: &mut [S], less: impl Fn(&S, &S) -> bool) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && less(&v[j], &v[j - 1]) {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}

fn limitk(groups: Vec<Vec<S>>, k: f64) -> EResult<Vec<S>> {
    let k = k_param(k)?;
    if k < 1 {
        return Ok(Vec::new());
    }
    Ok(groups.into_iter().flat_map(|g| g.into_iter().take(k as usize)).collect())
}

/// Whether `limit_ratio` keeps a series: Prometheus' hash of its labels (xxhash64 of
/// the length-prefixed names and values) mapped to [0, 1], compared with the ratio (from
/// the top for negative ratios), so that the same series are kept as in Prometheus.
fn ratio_keeps(labels: &Labels, ratio: f64) -> bool {
    let mut buf = Vec::with_capacity(128);
    let uvarint = |buf: &mut Vec<u8>, mut n: usize| {
        while n >= 0x80 {
            buf.push((n as u8) | 0x80);
            n >>= 7;
        }
        buf.push(n as u8);
    };
    for l in labels.iter() {
        uvarint(&mut buf, l.name.len());
        buf.extend_from_slice(l.name.as_bytes());
        uvarint(&mut buf, l.value.len());
        buf.extend_from_slice(l.value.as_bytes());
    }
    let x = xxhash_rust::xxh64::xxh64(&buf, 0) as f64 / u64::MAX as f64;
    if ratio >= 0.0 {
        x < ratio
    } else {
        x >= 1.0 + ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups found by the addresses of shared strings are those found by text: over
    /// label sets of a store (shared strings), sets of their own (the same texts, other
    /// strings) and both mixed, in orders that start groups with either kind.
    #[test]
    fn groups_by_address_are_groups_by_text() {
        let mut store = crate::storage::MemoryStore::new();
        let mut own = Vec::new();
        for i in 0..60 {
            let (a, b, id) = ((i % 7).to_string(), (i % 3).to_string(), i.to_string());
            let mut pairs = vec![("__name__", "m"), ("a", a.as_str()), ("i", id.as_str())];
            // Some without `b`: a listed label that is absent groups too.
            if i % 5 != 0 {
                pairs.push(("b", b.as_str()));
            }
            store.append(&Labels::from_pairs(pairs.iter().copied()), 0, 1.0);
            own.push(Labels::from_pairs(pairs.iter().copied()));
        }
        let sel = crate::storage::Selection { matchers: &[], start: 0, end: 0 };
        let shared: Vec<Labels> = crate::storage::SampleSource::select(&store, &sel)
            .unwrap()
            .into_iter()
            .map(|s| s.labels)
            .collect();
        let mixed: Vec<Labels> = shared.iter().zip(&own).flat_map(|(a, b)| [b.clone(), a.clone()]).collect();
        for names in [vec!["a"], vec!["a", "b"], vec!["b"], vec!["z"], vec![]] {
            let g = Grouping { without: false, labels: names.iter().map(|n| n.to_string()).collect() };
            for input in [&shared, &own, &mixed] {
                let (mut by_address, mut by_text) = (GroupKeys::default(), GroupKeys::default());
                for labels in input.iter() {
                    assert_eq!(
                        by_address.find_or_add(labels, Some(&g)),
                        by_text.find_or_add_by_text(labels, Some(&g)),
                        "{g:?}: {labels}"
                    );
                }
                assert_eq!(by_address.keys, by_text.keys);
            }
        }
    }

    /// `in_group` and `group_hash` agree with comparing built keys, for `by` (listed
    /// labels absent on one side, on both, listed twice, never present) and `without`.
    #[test]
    fn group_lookups_agree_with_built_keys() {
        let mut sets = Vec::new();
        for a in ["", "1", "2"] {
            for b in ["", "1"] {
                for c in ["", "x"] {
                    sets.push(Labels::from_pairs([("__name__", "m"), ("a", a), ("b", b), ("c", c)]));
                }
            }
        }
        let groupings = [
            (false, vec!["a"]),
            (false, vec!["a", "b"]),
            (false, vec!["b", "a", "a"]),
            (false, vec!["z"]),
            (false, vec![]),
            (true, vec!["a"]),
            (true, vec![]),
        ];
        for (without, names) in groupings {
            let g = Grouping { without, labels: names.iter().map(|n| n.to_string()).collect() };
            for first in &sets {
                let key = group_labels(first, Some(&g));
                for other in &sets {
                    let same = group_labels(other, Some(&g)) == key;
                    assert_eq!(in_group(&key, other, Some(&g)), same, "{g:?}: {first} / {other}");
                    if same {
                        assert_eq!(group_hash(first, Some(&g)), group_hash(other, Some(&g)), "{g:?}");
                    }
                }
            }
        }
    }

    /// Counting by group number and value bits gives what building each element's
    /// output labels gives: the same series in the same order with the same counts,
    /// also where the new label replaces a grouping label (groups merge), for NaN of
    /// either sign and payload (one value) and for -0 and +0 (two).
    #[test]
    fn count_values_counts_as_labels_built_per_element() {
        let neg_nan = f64::from_bits(f64::NAN.to_bits() | (1 << 63) | 1);
        let values = [6.0, 6.0, 8.0, f64::NAN, neg_nan, -0.0, 0.0, 7.0, 6.0, 1e21, 8.0];
        let input: Vec<S> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let job = ["api", "app", "db"][i % 3];
                let group = ["prod", "canary"][i % 2];
                let labels = Labels::from_pairs([
                    ("__name__", "version"),
                    ("job", job),
                    ("group", group),
                    ("instance", i.to_string().as_str()),
                ]);
                S { labels, v, t: 0, drop_name: false }
            })
            .collect();
        let groupings = [
            None,
            Some(Grouping { without: false, labels: vec!["job".into(), "group".into()] }),
            Some(Grouping { without: true, labels: vec!["instance".into()] }),
            Some(Grouping { without: false, labels: vec![] }),
        ];
        for grouping in &groupings {
            for name in ["version", "job", "group"] {
                let mut want: Vec<S> = Vec::new();
                for s in &input {
                    let labels =
                        group_labels(&s.labels, grouping.as_ref()).with(name, &kernels::go_format_float(s.v));
                    match want.iter_mut().find(|w| w.labels == labels) {
                        Some(w) => w.v += 1.0,
                        None => want.push(S { labels, v: 1.0, t: 0, drop_name: false }),
                    }
                }
                let got = count_values(input.clone(), grouping.as_ref(), name).unwrap();
                let text = |v: &[S]| v.iter().map(|s| format!("{} {}", s.labels, s.v)).collect::<Vec<_>>();
                assert_eq!(text(&got), text(&want), "{grouping:?} {name}");
            }
        }
    }

    /// A range query's `topk` groups each step's input anew where its series changed,
    /// also when their number did not: here a series of another group goes stale as one
    /// of the first group's begins, and the first group's two then compete.
    #[test]
    fn topk_regroups_when_the_series_change() {
        let script = r#"
load 1m
  m{g="x", i="1"} 1x10
  m{g="y", i="2"} 2 2 2 stale
  m{g="x", i="3"} _ _ _ 3 3 3 3

eval range from 0 to 5m step 1m topk by (g) (1, m)
  m{g="x", i="1"} 1 1 1 _ _ _
  m{g="y", i="2"} 2 2 2 _ _ _
  m{g="x", i="3"} _ _ _ 3 3 3
"#;
        let results = crate::promqltest::run::run_script(script, None).expect("script parses");
        assert!(!results.is_empty());
        for r in results {
            assert_eq!(r.outcome, crate::promqltest::run::Outcome::Pass, "line {}: {}", r.line, r.query);
        }
    }

    fn sample(v: f64, id: usize) -> S {
        S { labels: Labels::from_pairs([("id", id.to_string().as_str())]), v, t: 0, drop_name: false }
    }

    /// Which of equal values `topk` and `bottomk` keep, and in which order they come out,
    /// with each version's heap: Prometheus 2.42's answers (the 2 column) to these, each
    /// element labelled by its place in the input.
    #[test]
    fn top_and_bottom_k_keep_ties_as_each_version_does() {
        use crate::eval::{Engine, EngineOptions};
        let input = |values: &[&str]| {
            let one = |(i, v): (usize, &&str)| {
                format!("label_replace(vector({v}), \"p\", \"{}\", \"\", \"\")", char::from(b'a' + i as u8))
            };
            values.iter().enumerate().map(one).collect::<Vec<_>>().join(" or ")
        };
        for (op, values, prometheus2, prometheus3) in [
            ("bottomk(2", &["4", "12", "4", "3"][..], "dc", "da"),
            ("topk(2", &["4", "1", "4", "5"], "dc", "da"),
            ("bottomk(2", &["4", "12", "4"], "ac", "ca"),
            ("topk(1", &["NaN", "NaN"], "b", "a"),
            ("topk(2", &["NaN", "1", "NaN", "1"], "bd", "db"),
            ("bottomk(3", &["2", "2", "1", "2", "2"], "cab", "cab"),
        ] {
            let q = format!("{op}, {})", input(values));
            for (compat, want) in [(Compat::Prometheus2, prometheus2), (Compat::Prometheus3, prometheus3)] {
                let engine = Engine::new(EngineOptions { compat, ..EngineOptions::default() });
                let result = engine.instant_query(&crate::storage::MemoryStore::new(), &q, 0).unwrap();
                let crate::value::Value::Vector(v) = result.value else { panic!("{q}") };
                let kept: String = v.iter().filter_map(|s| s.labels.get("p")).collect();
                assert_eq!(kept, want, "{q} ({compat:?})");
            }
        }
    }

    /// The O(k log k) output order equals the insertion sort Go runs on small heaps.
    #[test]
    fn heap_output_matches_insertion_sort() {
        let values = [1.0, 2.0, 2.0, f64::NAN, -0.0, 0.0, f64::INFINITY, 5.0, f64::NAN, 2.0, -3.0];
        for top in [true, false] {
            for len in 0..=values.len() {
                for rot in 0..values.len() {
                    let heap: Vec<S> =
                        (0..len).map(|i| sample(values[(i + rot) % values.len()], i)).collect();
                    let less = |a: f64, b: f64| a.is_nan() || if top { a < b } else { a > b };
                    let mut want = heap.clone();
                    insertion_sort_by(&mut want, |a, b| less(b.v, a.v));
                    let got = heap_to_output(heap, top);
                    let ids = |v: &[S]| {
                        v.iter().map(|s| s.labels.get("id").unwrap_or("").to_owned()).collect::<Vec<_>>()
                    };
                    assert_eq!(ids(&got), ids(&want), "top {top}, len {len}, rot {rot}");
                }
            }
        }
    }
}
