//! Binary operators: scalar/vector arithmetic and comparisons, vector matching
//! (one-to-one, many-to-one, one-to-many) and the set operators.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use super::{exec_error, gomath, Compat, EResult, EvalError, Evaluator, S, V};
use crate::ast::{BinaryExpr, BinaryOp, GroupSide, VectorMatching};
use crate::labels::{Labels, LabelsMap, LabelsSet, NAME_LABELS};
use crate::value::{Point, Series, Timestamp};

/// Arithmetic with Go's float semantics (`%` is `math.Mod`, `^` is `math.Pow`).
pub(crate) fn arith(op: BinaryOp, l: f64, r: f64) -> f64 {
    match op {
        BinaryOp::Add => l + r,
        BinaryOp::Sub => l - r,
        BinaryOp::Mul => l * r,
        BinaryOp::Div => l / r,
        BinaryOp::Mod => l % r,
        BinaryOp::Pow => gomath::pow(l, r),
        BinaryOp::Atan2 => gomath::atan2(l, r),
        _ => f64::NAN,
    }
}

/// The operators [`arith`] computes.
pub(super) fn is_arithmetic(op: BinaryOp) -> bool {
    use BinaryOp::*;
    matches!(op, Add | Sub | Mul | Div | Mod | Pow | Atan2)
}

/// Whether `op`'s result loses the metric name (`bool` aside): arithmetic's does, a
/// comparison's does not, and in Prometheus 2 `atan2`'s did not either (its
/// `shouldDropMetricName` lists `+ - * / % ^`).
pub(super) fn drops_name(op: BinaryOp, compat: Compat) -> bool {
    let kept_in_2 = op == BinaryOp::Atan2 && compat == Compat::Prometheus2;
    !(op.is_comparison() || kept_in_2)
}

fn compare(op: BinaryOp, l: f64, r: f64) -> bool {
    match op {
        BinaryOp::Eql => l == r,
        BinaryOp::Neq => l != r,
        BinaryOp::Gtr => l > r,
        BinaryOp::Lss => l < r,
        BinaryOp::Gte => l >= r,
        BinaryOp::Lte => l <= r,
        _ => false,
    }
}

/// The value of `l op r`, or `None` when a comparison filters the element out.
/// A comparison keeps the left value.
pub(super) fn elem(op: BinaryOp, l: f64, r: f64, return_bool: bool) -> Option<f64> {
    if op.is_comparison() {
        let keep = compare(op, l, r);
        return if return_bool { Some(if keep { 1.0 } else { 0.0 }) } else { keep.then_some(l) };
    }
    Some(arith(op, l, r))
}

/// The label set that identifies a match group.
fn signature(labels: &Labels, matching: Option<&VectorMatching>) -> Labels {
    match matching {
        Some(m) if m.on => {
            let names: Vec<&str> = m.labels.iter().map(String::as_str).collect();
            labels.keep(&names)
        }
        Some(m) => {
            let mut names: Vec<&str> = m.labels.iter().map(String::as_str).collect();
            names.extend(NAME_LABELS);
            labels.without(&names)
        }
        None => labels.without_metric_name(),
    }
}

/// The labels a vector-vector operation derives, kept over the steps of a range query
/// (series mostly keep their label sets from one step to the next): each label set's
/// match signature, and the result's labels for each pair of label sets matched. Keyed
/// by the sets' addresses; the memo holds the sets, so that no other set can take an
/// address while it is kept. The results keep their addresses from step to step too,
/// which spares the range result a lookup by labels.
#[derive(Default)]
pub(super) struct JoinLabels {
    signatures: LabelsByAddr<Labels>,
    results: HashMap<(usize, usize), (Labels, Labels, Labels), AddrHashing>,
}

/// Hashes the addresses [`JoinLabels`] (and the evaluator's per-node maps) are keyed
/// by: a multiply, and the high bits folded into the low ones the table indexes by
/// (aligned addresses end in zeros). Addresses are the process's own, not input, so no
/// per-process keys are needed.
#[derive(Default)]
pub(super) struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&b| self.write_u64(u64::from(b)));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(17) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

pub(super) type AddrHashing = std::hash::BuildHasherDefault<AddrHasher>;

/// Something derived from label sets, keyed by their addresses; each entry holds its
/// set, so that no other set can take the address while the entry is kept.
pub(super) type LabelsByAddr<T> = HashMap<usize, (Labels, T), AddrHashing>;

/// [`signature`], through the memo when there is one.
fn signature_in(
    memo: &mut Option<&mut JoinLabels>,
    labels: &Labels,
    matching: Option<&VectorMatching>,
) -> Labels {
    match memo {
        Some(memo) => {
            let entry = memo.signatures.entry(labels.addr());
            entry.or_insert_with(|| (labels.clone(), signature(labels, matching))).1.clone()
        }
        None => signature(labels, matching),
    }
}

impl Evaluator<'_> {
    pub(super) fn binary(&mut self, b: &BinaryExpr, t: Timestamp) -> EResult<V> {
        if matches!(b.op, BinaryOp::TrimUpper | BinaryOp::TrimLower) {
            return Err(EvalError::Unsupported("native histogram trim operators".into()));
        }
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        let out = match (lhs, rhs) {
            (V::Scalar(l), V::Scalar(r)) => {
                return Ok(V::Scalar(elem(b.op, l, r, b.return_bool).unwrap_or(f64::NAN)));
            }
            (V::Vector(l), V::Scalar(r)) => self.vector_scalar(b, l, r, false),
            (V::Scalar(l), V::Vector(r)) => self.vector_scalar(b, r, l, true),
            (V::Vector(l), V::Vector(r)) => self.vector_vector(b, l, r)?,
            _ => return exec_error("binary expression must contain only scalar and instant vector types"),
        };
        self.check_distinct(super::sliding::node_key(b), &out)?;
        Ok(V::Vector(out))
    }

    /// Applies `op` between every element and a scalar; `scalar_left` for `s op v`.
    fn vector_scalar(&self, b: &BinaryExpr, v: Vec<S>, scalar: f64, scalar_left: bool) -> Vec<S> {
        let mut out = Vec::with_capacity(v.len());
        for s in v {
            let (l, r) = if scalar_left { (scalar, s.v) } else { (s.v, scalar) };
            let Some(mut value) = elem(b.op, l, r, b.return_bool) else { continue };
            // A filtering comparison keeps the vector's value, whichever side it is on.
            if b.op.is_comparison() && !b.return_bool {
                value = s.v;
            }
            let drop = drops_name(b.op, self.opts.compat) || b.return_bool;
            let s = S { v: value, ..s };
            out.push(if drop { self.drop_name(s) } else { s });
        }
        out
    }

    fn vector_vector(&mut self, b: &BinaryExpr, lhs: Vec<S>, rhs: Vec<S>) -> EResult<Vec<S>> {
        // Worth keeping only where there are further steps.
        let key = super::sliding::node_key(b);
        let mut memo = (self.grid_step != 0).then(|| self.join_labels.remove(&key).unwrap_or_default());
        let matching = b.matching.as_ref();
        let out = match b.op {
            BinaryOp::And => Ok(and_unless(lhs, &rhs, matching, true, memo.as_mut())),
            BinaryOp::Unless => Ok(and_unless(lhs, &rhs, matching, false, memo.as_mut())),
            BinaryOp::Or => Ok(or(lhs, rhs, matching, memo.as_mut())),
            _ => self.join(b, lhs, rhs, memo.as_mut()),
        };
        if let Some(memo) = memo {
            self.join_labels.insert(key, memo);
        }
        out
    }

    fn join(
        &self,
        b: &BinaryExpr,
        lhs: Vec<S>,
        rhs: Vec<S>,
        mut memo: Option<&mut JoinLabels>,
    ) -> EResult<Vec<S>> {
        let matching = b.matching.as_ref();
        let group = matching.and_then(|m| m.group.as_ref());
        let one_to_many = matches!(group, Some((GroupSide::Right, _)));
        // As in Prometheus, `fill_right` fills a missing "one" side and `fill_left` a
        // missing "many" side, so with `group_right` they apply to the other operand.
        let fill = b.fill.unwrap_or_default();
        let (many_fill, one_fill) = (fill.left, fill.right);
        let no_fill = many_fill.is_none() && one_fill.is_none();
        if (lhs.is_empty() && rhs.is_empty()) || ((lhs.is_empty() || rhs.is_empty()) && no_fill) {
            return Ok(Vec::new());
        }
        // The "many" side is iterated; the "one" side is indexed by signature.
        let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
        let mut one_by_sig: LabelsMap<&S> =
            LabelsMap::with_capacity_and_hasher(one.len(), Default::default());
        // The "one" side's signatures in input order, for filling a missing "many" side.
        let mut one_sigs: Vec<Labels> = Vec::new();
        for s in &one {
            let sig = signature_in(&mut memo, &s.labels, matching);
            if let Some(dup) = one_by_sig.get(&sig) {
                let side = if one_to_many { "left" } else { "right" };
                let (a, c) = sorted_pair(&s.labels, &dup.labels);
                return exec_error(format!(
                    "found duplicate series for the match group {sig} on the {side} hand-side of the operation: [{a}, {c}];many-to-many matching not allowed: matching labels must be unique on one side"
                ));
            }
            if many_fill.is_some() {
                one_sigs.push(sig.clone());
            }
            one_by_sig.insert(sig, s);
        }
        let matched = LabelsMap::with_capacity_and_hasher(many.len(), Default::default());
        let compat = self.opts.compat;
        let drops = drops_name(b.op, compat);
        let out = Vec::with_capacity(many.len());
        let mut join = Join { b, matching, group, one_to_many, compat, drops, matched, out };
        for ms in &many {
            let sig = signature_in(&mut memo, &ms.labels, matching);
            let filled;
            let os = match one_by_sig.get(&sig) {
                Some(os) => *os,
                None => {
                    let Some(v) = one_fill else { continue };
                    // The missing side is synthesized from the matching labels.
                    filled = S { labels: sig.clone(), v, t: ms.t, drop_name: false };
                    &filled
                }
            };
            join.pair(self, memo.as_deref_mut(), ms, os, sig)?;
        }
        if let Some(v) = many_fill {
            for sig in one_sigs {
                if join.matched.contains_key(&sig) {
                    continue;
                }
                let Some(os) = one_by_sig.get(&sig) else { continue };
                let ms = S { labels: sig.clone(), v, t: os.t, drop_name: false };
                join.pair(self, memo.as_deref_mut(), &ms, os, sig)?;
            }
        }
        Ok(join.out)
    }
}

/// The state of a vector-vector join: the result so far and the result labels seen per
/// match group (none kept for one-to-one matching, where the group's presence is enough).
struct Join<'a> {
    b: &'a BinaryExpr,
    matching: Option<&'a VectorMatching>,
    group: Option<&'a (GroupSide, Vec<String>)>,
    one_to_many: bool,
    compat: Compat,
    /// Whether results lose the metric name ([`drops_name`]).
    drops: bool,
    matched: LabelsMap<HashSet<Labels>>,
    out: Vec<S>,
}

impl Join<'_> {
    /// Combines a "many" side element with its "one" side match of signature `sig`.
    fn pair(
        &mut self,
        ev: &Evaluator<'_>,
        memo: Option<&mut JoinLabels>,
        ms: &S,
        os: &S,
        sig: Labels,
    ) -> EResult<()> {
        let (b, group) = (self.b, self.group);
        let (l, r) = if self.one_to_many { (os.v, ms.v) } else { (ms.v, os.v) };
        let value = elem(b.op, l, r, b.return_bool);
        // Prometheus 2 let a comparison filter a pair out before it checked that matches
        // are unique (one-to-one or grouped); 3 checks first (`operators.test`). `fill()` is
        // 3's alone.
        if value.is_none() && self.compat == Compat::Prometheus2 && b.fill.is_none() {
            return Ok(());
        }
        let drops = self.drops;
        let labels = match memo {
            Some(memo) => {
                let entry = memo.results.entry((ms.labels.addr(), os.labels.addr()));
                let kept = entry.or_insert_with(|| {
                    (ms.labels.clone(), os.labels.clone(), self.result_labels(&ms.labels, &os.labels, &sig))
                });
                kept.2.clone()
            }
            None => self.result_labels(&ms.labels, &os.labels, &sig),
        };
        if group.is_none() {
            // One-to-one: a second match of the group is an error; an empty set marks
            // the first without allocating.
            match self.matched.entry(sig) {
                Entry::Occupied(_) => {
                    return exec_error(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    )
                }
                Entry::Vacant(e) => {
                    e.insert(HashSet::new());
                }
            }
        } else {
            let inserted = self.matched.entry(sig).or_default();
            if inserted.contains(&labels) {
                return exec_error("multiple matches for labels: grouping labels must ensure unique matches");
            }
            inserted.insert(labels.clone());
        }
        let Some(value) = value else { return Ok(()) };
        let s = S { labels, v: value, t: ms.t, drop_name: ms.drop_name && !drops };
        self.out.push(if b.return_bool { ev.drop_name(s) } else { s });
        Ok(())
    }

    /// The labels of the result of matching `many` (the "many" side's labels) with
    /// `one` (the "one" side's), of signature `sig`.
    fn result_labels(&self, many: &Labels, one: &Labels, sig: &Labels) -> Labels {
        let (matching, group, drops) = (self.matching, self.group, self.drops);
        let mut labels = many.clone();
        if drops {
            labels = labels.without_metric_name();
        }
        match group {
            None => {
                labels = match matching {
                    // The signature is the many side's `on` labels: those of the result
                    // too, unless the name is among them and the operator drops it.
                    Some(m)
                        if m.on && !(drops && m.labels.iter().any(|l| NAME_LABELS.contains(&l.as_str()))) =>
                    {
                        sig.clone()
                    }
                    Some(m) if m.on => labels.keep(&m.labels.iter().map(String::as_str).collect::<Vec<_>>()),
                    Some(m) => labels.without(&m.labels.iter().map(String::as_str).collect::<Vec<_>>()),
                    None => labels,
                };
            }
            Some((_, include)) => {
                for name in include {
                    labels = labels.with(name, one.get(name).unwrap_or(""));
                }
            }
        }
        labels
    }
}

/// The two series of an error message, in label order.
fn sorted_pair<'a>(a: &'a Labels, b: &'a Labels) -> (&'a Labels, &'a Labels) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// `a and b` (`keep` true) or `a unless b`: the left elements whose signature does
/// (resp. does not) occur on the right.
fn and_unless(
    lhs: Vec<S>,
    rhs: &[S],
    matching: Option<&VectorMatching>,
    keep: bool,
    mut memo: Option<&mut JoinLabels>,
) -> Vec<S> {
    if keep && rhs.is_empty() {
        return Vec::new();
    }
    let sigs: LabelsSet = rhs.iter().map(|s| signature_in(&mut memo, &s.labels, matching)).collect();
    lhs.into_iter().filter(|s| sigs.contains(&signature_in(&mut memo, &s.labels, matching)) == keep).collect()
}

/// [`and_unless`] over all steps of a range query at once: each left series' points at
/// the steps where (`keep`: `and`) or where not (`unless`) a right series has its
/// signature. The series keep their order; those left without points are dropped.
pub(super) fn and_unless_range(
    lhs: Vec<Series>,
    rhs: &[Series],
    matching: Option<&VectorMatching>,
    keep: bool,
) -> Vec<Series> {
    let present = steps_by_signature(rhs, matching);
    lhs.into_iter()
        .filter_map(|mut s| {
            let times = present.get(&signature(&s.labels, matching)).map_or(&[][..], Vec::as_slice);
            s.points.retain(|p| times.binary_search(&p.t).is_ok() == keep);
            (!s.points.is_empty()).then_some(s)
        })
        .collect()
}

/// [`or`] over all steps of a range query at once: every left series, and each right
/// series' points at the steps where no left series has its signature. A label set on
/// both sides (at different steps, then) is one series; the series in label order.
pub(super) fn or_range(
    mut lhs: Vec<Series>,
    rhs: Vec<Series>,
    matching: Option<&VectorMatching>,
) -> Vec<Series> {
    let present = steps_by_signature(&lhs, matching);
    for mut s in rhs {
        let times = present.get(&signature(&s.labels, matching)).map_or(&[][..], Vec::as_slice);
        s.points.retain(|p| times.binary_search(&p.t).is_err());
        if !s.points.is_empty() {
            lhs.push(s);
        }
    }
    lhs.sort_by(|a, b| a.labels.cmp(&b.labels));
    lhs.dedup_by(|right, left| {
        let same = left.labels == right.labels;
        if same {
            left.points.append(&mut right.points);
            left.points.sort_by_key(|p| p.t);
        }
        same
    });
    lhs
}

/// An arithmetic operation or a comparison between two vectors ([`Evaluator::join`])
/// over all steps of a range query at once, from the whole results of its sides: each
/// pair of series matched by signature gives the values at the steps where both have
/// one, under its result labels (pairs at different steps may share them, as a series
/// that comes back under new labels does). `None` where a step might fail or merge,
/// which the step-by-step path decides: two series of one signature at one step on
/// the "one" side; one-to-one, two pairs of one signature at one step (a second match,
/// whether their result labels differ, as names kept make them, or not); two pairs of
/// the same result labels at one step; or `fill`. Pairs count whether a comparison
/// keeps their values or not: Prometheus 3 finds a clash before it filters (2 after,
/// where the step-by-step path answers, then, as 2 did).
pub(super) fn join_range(
    b: &BinaryExpr,
    lhs: &[Series],
    rhs: &[Series],
    compat: Compat,
) -> Option<Vec<Series>> {
    if b.fill.is_some() {
        return None;
    }
    let matching = b.matching.as_ref();
    let group = matching.and_then(|m| m.group.as_ref());
    let one_to_many = matches!(group, Some((GroupSide::Right, _)));
    let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut one_by_sig: LabelsMap<Vec<&Series>> = LabelsMap::default();
    for s in one {
        one_by_sig.entry(signature(&s.labels, matching)).or_default().push(s);
    }
    if one_by_sig.values().any(|group| meet(group)) {
        return None;
    }
    let drops = drops_name(b.op, compat);
    let join = Join {
        b,
        matching,
        group,
        one_to_many,
        compat,
        drops,
        matched: LabelsMap::default(),
        out: Vec::new(),
    };
    // The steps each match group (one-to-one) and each result label set was paired
    // at, and the result series.
    let mut group_steps: LabelsMap<PairedSteps> = LabelsMap::default();
    let mut by_labels: LabelsMap<(Vec<Point>, PairedSteps)> = LabelsMap::default();
    for ms in many {
        let sig = signature(&ms.labels, matching);
        let Some(ones) = one_by_sig.get(&sig) else { continue };
        for os in ones {
            if !overlap(&ms.points, &os.points) {
                continue;
            }
            let (points, at) = paired_points(&ms.points, &os.points, |m, o| {
                let (l, r) = if one_to_many { (o, m) } else { (m, o) };
                elem(b.op, l, r, b.return_bool)
            });
            if at.is_empty() {
                continue;
            }
            if group.is_none() {
                group_steps.entry(sig.clone()).or_default().add(&at);
            }
            let mut labels = join.result_labels(&ms.labels, &os.labels, &sig);
            if b.return_bool {
                labels = labels.without_metric_name();
            }
            let (series, steps) = by_labels.entry(labels).or_default();
            series.extend(points);
            steps.add(&at);
        }
    }
    if group_steps.values_mut().any(PairedSteps::clash) || by_labels.values_mut().any(|(_, at)| at.clash()) {
        return None;
    }
    let mut out: Vec<Series> = by_labels
        .into_iter()
        .filter(|(_, (points, _))| !points.is_empty())
        .map(|(labels, (mut points, at))| {
            if at.pairs > 1 {
                points.sort_by_key(|p| p.t);
            }
            Series { labels, points }
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Some(out)
}

/// The steps at which some pairs of series of [`join_range`] were both there.
#[derive(Default)]
struct PairedSteps {
    times: Vec<Timestamp>,
    pairs: usize,
}

impl PairedSteps {
    fn add(&mut self, at: &[Timestamp]) {
        self.times.extend_from_slice(at);
        self.pairs += 1;
    }

    /// Whether two of the pairs were there at one step.
    fn clash(&mut self) -> bool {
        self.pairs > 1 && repeats(&mut self.times)
    }
}

/// Whether a time comes twice in `times` (sorted on the way).
fn repeats(times: &mut [Timestamp]) -> bool {
    times.sort_unstable();
    times.windows(2).any(|w| w[0] == w[1])
}

/// Whether the spans of `a` and `b` overlap: else they have no time in common.
fn overlap(a: &[Point], b: &[Point]) -> bool {
    match (a.first(), a.last(), b.first(), b.last()) {
        (Some(a0), Some(a1), Some(b0), Some(b1)) => a0.t <= b1.t && b0.t <= a1.t,
        _ => false,
    }
}

/// Whether two of `series` have a point at the same time.
fn meet(series: &[&Series]) -> bool {
    if series.len() < 2 {
        return false;
    }
    let mut times: Vec<Timestamp> = series.iter().flat_map(|s| s.points.iter().map(|p| p.t)).collect();
    repeats(&mut times)
}

/// `f` of the values of `a` and `b` at each time both have a point (`None` drops it),
/// and those times.
fn paired_points(
    a: &[Point],
    b: &[Point],
    f: impl Fn(f64, f64) -> Option<f64>,
) -> (Vec<Point>, Vec<Timestamp>) {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let mut at = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while let (Some(p), Some(q)) = (a.get(i), b.get(j)) {
        match p.t.cmp(&q.t) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                if let Some(v) = f(p.v, q.v) {
                    out.push(Point { t: p.t, v });
                }
                at.push(p.t);
                (i, j) = (i + 1, j + 1);
            }
        }
    }
    (out, at)
}

/// The steps at which each signature is in `series`, in order.
fn steps_by_signature(series: &[Series], matching: Option<&VectorMatching>) -> LabelsMap<Vec<Timestamp>> {
    let mut present: LabelsMap<Vec<Timestamp>> = LabelsMap::default();
    for s in series {
        present.entry(signature(&s.labels, matching)).or_default().extend(s.points.iter().map(|p| p.t));
    }
    for times in present.values_mut() {
        times.sort_unstable();
    }
    present
}

/// `a or b`: all of the left, plus the right elements whose signature is not on the left.
fn or(
    lhs: Vec<S>,
    rhs: Vec<S>,
    matching: Option<&VectorMatching>,
    mut memo: Option<&mut JoinLabels>,
) -> Vec<S> {
    let sigs: LabelsSet = lhs.iter().map(|s| signature_in(&mut memo, &s.labels, matching)).collect();
    let mut out = lhs;
    out.extend(rhs.into_iter().filter(|s| !sigs.contains(&signature_in(&mut memo, &s.labels, matching))));
    out
}

#[cfg(test)]
mod tests {
    use crate::promqltest::run::{run_script, Outcome};

    fn assert_passes(script: &str) {
        let results = run_script(script, None).expect("script parses");
        assert!(!results.is_empty());
        for r in results {
            assert_eq!(r.outcome, Outcome::Pass, "line {}: {}", r.line, r.query);
        }
    }

    #[test]
    fn fill_with_group_right_comparison_keeps_left_value() {
        assert_passes(
            r#"
load 5m
  cpu_info{instance="a", cpu="0"} 1
  cpu_info{instance="b", cpu="0"} 1
  node_meta{instance="a"} 100
  node_meta{instance="c"} 300

eval instant at 0m node_meta > on(instance) group_right fill(150) cpu_info
  cpu_info{instance="a", cpu="0"} 100
  cpu_info{instance="b", cpu="0"} 150
  {instance="c"} 300
"#,
        );
    }

    #[test]
    fn fill_left_copies_include_labels_from_the_one_side() {
        assert_passes(
            r#"
load 5m
  requests{method="GET", status="200"} 100
  limits{status="200", owner="team-a"} 1000
  limits{status="500", owner="team-b"} 50

eval instant at 0m requests + on(status) group_left(owner) fill_left(0) limits
  {method="GET", status="200", owner="team-a"} 1100
  {status="500", owner="team-b"} 50
"#,
        );
    }

    #[test]
    fn filtered_comparison_still_counts_as_matched() {
        assert_passes(
            r#"
load 5m
  a{x="1"} 1
  b{x="1"} 5

eval instant at 0m a > fill_left(0) b
"#,
        );
    }

    #[test]
    fn filled_duplicates_on_the_many_side_fail() {
        assert_passes(
            r#"
load 5m
  a{job="j", i="1"} 1
  a{job="j", i="2"} 2
  b{job="k"} 5

eval instant at 0m a + on(job) fill_right(0) b
  expect fail
"#,
        );
    }
}
