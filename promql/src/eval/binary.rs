//! Binary operators: scalar/vector arithmetic and comparisons, vector matching
//! (one-to-one, many-to-one, one-to-many) and the set operators.

use std::collections::{HashMap, HashSet};

use super::{check_duplicates, exec_error, EResult, EvalError, Evaluator, S, V};
use crate::ast::{BinaryExpr, BinaryOp, GroupSide, VectorMatching};
use crate::labels::{Labels, METRIC_NAME};
use crate::value::Timestamp;

/// Arithmetic with Go's float semantics (`%` is `math.Mod`, `^` is `math.Pow`).
pub(crate) fn arith(op: BinaryOp, l: f64, r: f64) -> f64 {
    match op {
        BinaryOp::Add => l + r,
        BinaryOp::Sub => l - r,
        BinaryOp::Mul => l * r,
        BinaryOp::Div => l / r,
        BinaryOp::Mod => l % r,
        BinaryOp::Pow => l.powf(r),
        BinaryOp::Atan2 => l.atan2(r),
        _ => f64::NAN,
    }
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
fn elem(op: BinaryOp, l: f64, r: f64, return_bool: bool) -> Option<f64> {
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
            names.extend([METRIC_NAME, "__type__", "__unit__"]);
            labels.without(&names)
        }
        None => labels.without_metric_name(),
    }
}

impl Evaluator<'_> {
    pub(super) fn binary(&mut self, b: &BinaryExpr, t: Timestamp) -> EResult<V> {
        if matches!(b.op, BinaryOp::TrimUpper | BinaryOp::TrimLower) {
            return Err(EvalError::Unsupported("native histogram trim operators".into()));
        }
        if b.fill.is_some() {
            return Err(EvalError::Unsupported("binop fill modifiers".into()));
        }
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        let out = match (lhs, rhs) {
            (V::Scalar(l), V::Scalar(r)) => {
                return Ok(V::Scalar(elem(b.op, l, r, b.return_bool).unwrap_or(f64::NAN)));
            }
            (V::Vector(l), V::Scalar(r)) => self.vector_scalar(b, l, r, false),
            (V::Scalar(l), V::Vector(r)) => self.vector_scalar(b, r, l, true),
            (V::Vector(l), V::Vector(r)) => match b.op {
                BinaryOp::And => and_unless(l, &r, b.matching.as_ref(), true),
                BinaryOp::Unless => and_unless(l, &r, b.matching.as_ref(), false),
                BinaryOp::Or => or(l, r, b.matching.as_ref()),
                _ => self.vector_vector(b, l, r)?,
            },
            _ => return exec_error("binary expression must contain only scalar and instant vector types"),
        };
        check_duplicates(&out, self.delayed)?;
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
            let drop = !b.op.is_comparison() || b.return_bool;
            let s = S { v: value, ..s };
            out.push(if drop { self.drop_name(s) } else { s });
        }
        out
    }

    fn vector_vector(&self, b: &BinaryExpr, lhs: Vec<S>, rhs: Vec<S>) -> EResult<Vec<S>> {
        if lhs.is_empty() || rhs.is_empty() {
            return Ok(Vec::new());
        }
        let matching = b.matching.as_ref();
        let group = matching.and_then(|m| m.group.as_ref());
        let one_to_many = matches!(group, Some((GroupSide::Right, _)));
        // The "many" side is iterated; the "one" side is indexed by signature.
        let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
        let mut one_by_sig: HashMap<Labels, &S> = HashMap::with_capacity(one.len());
        for s in &one {
            let sig = signature(&s.labels, matching);
            if let Some(dup) = one_by_sig.get(&sig) {
                let side = if one_to_many { "left" } else { "right" };
                let (a, c) = sorted_pair(&s.labels, &dup.labels);
                return exec_error(format!(
                    "found duplicate series for the match group {sig} on the {side} hand-side of the operation: [{a}, {c}];many-to-many matching not allowed: matching labels must be unique on one side"
                ));
            }
            one_by_sig.insert(sig, s);
        }
        let mut matched: HashMap<Labels, HashSet<Labels>> = HashMap::new();
        let mut out = Vec::new();
        for ms in many {
            let sig = signature(&ms.labels, matching);
            let Some(os) = one_by_sig.get(&sig) else { continue };
            let (l, r) = if one_to_many { (os.v, ms.v) } else { (ms.v, os.v) };
            let value = elem(b.op, l, r, b.return_bool);
            let arithmetic = !b.op.is_comparison();
            let mut labels = ms.labels.clone();
            if arithmetic {
                labels = labels.without_metric_name();
            }
            match group {
                None => {
                    labels = match matching {
                        Some(m) if m.on => {
                            labels.keep(&m.labels.iter().map(String::as_str).collect::<Vec<_>>())
                        }
                        Some(m) => labels.without(&m.labels.iter().map(String::as_str).collect::<Vec<_>>()),
                        None => labels,
                    };
                }
                Some((_, include)) => {
                    for name in include {
                        labels = labels.with(name, os.labels.get(name).unwrap_or(""));
                    }
                }
            }
            let inserted = matched.entry(sig).or_default();
            if group.is_none() {
                if !inserted.is_empty() {
                    return exec_error(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    );
                }
            } else if inserted.contains(&labels) {
                return exec_error("multiple matches for labels: grouping labels must ensure unique matches");
            }
            inserted.insert(labels.clone());
            let Some(value) = value else { continue };
            let s = S { labels, v: value, t: ms.t, drop_name: ms.drop_name && !arithmetic };
            out.push(if b.return_bool { self.drop_name(s) } else { s });
        }
        Ok(out)
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
fn and_unless(lhs: Vec<S>, rhs: &[S], matching: Option<&VectorMatching>, keep: bool) -> Vec<S> {
    if keep && rhs.is_empty() {
        return Vec::new();
    }
    let sigs: HashSet<Labels> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
    lhs.into_iter().filter(|s| sigs.contains(&signature(&s.labels, matching)) == keep).collect()
}

/// `a or b`: all of the left, plus the right elements whose signature is not on the left.
fn or(lhs: Vec<S>, rhs: Vec<S>, matching: Option<&VectorMatching>) -> Vec<S> {
    let sigs: HashSet<Labels> = lhs.iter().map(|s| signature(&s.labels, matching)).collect();
    let mut out = lhs;
    out.extend(rhs.into_iter().filter(|s| !sigs.contains(&signature(&s.labels, matching))));
    out
}
