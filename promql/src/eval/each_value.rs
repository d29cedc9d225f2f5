//! Operations on each value of a vector alone: a negation, an arithmetic operation or a
//! comparison with a scalar (`rate(m[5m]) * 8`, `time() - x`, `x > 0.5`), a math
//! function (`abs`, `ln`, …), and `clamp`, `clamp_min`, `clamp_max` and `round` with
//! literal arguments. The whole-result paths of a range query apply them to every value
//! of a series; a fused aggregation applies them between its input and its groups
//! (`sum(rate(m[5m]) * 8)`), in the step-by-step path's order. Each computes a value as
//! the step-by-step path does (`binary`'s `vector_scalar`, `functions`' `math`), bit
//! for bit.

use super::binary::{drops_name, elem, is_arithmetic};
use super::kernels;
use super::sliding::{number, scalar_form};
use super::{Compat, EResult, Evaluator};
use crate::ast::{BinaryOp, Call, Expr, UnaryOp};
use crate::value::Timestamp;

/// One operation on each value; a scalar operand is given at each step.
pub(super) enum ValueOp {
    Neg,
    /// An arithmetic operation or a comparison with a scalar, whose values at the steps
    /// are `values`; `scalar_left` for `s op v`.
    Scalar {
        op: BinaryOp,
        return_bool: bool,
        scalar_left: bool,
        values: Vec<f64>,
    },
    Math(fn(f64) -> f64),
    /// `clamp`, `clamp_min`, `clamp_max` between the bounds; `None` where they cross,
    /// which empties the result at every step (as in Prometheus).
    Clamp(Option<(f64, f64)>),
    Round(f64),
}

impl ValueOp {
    /// The result for value `v` at the step of position `i`; `None` drops the value.
    #[inline]
    pub(super) fn apply(&self, i: usize, v: f64) -> Option<f64> {
        match self {
            ValueOp::Neg => Some(-v),
            ValueOp::Scalar { op, return_bool, scalar_left, values } => {
                let s = values[i];
                let (l, r) = if *scalar_left { (s, v) } else { (v, s) };
                let x = elem(*op, l, r, *return_bool)?;
                // A filtering comparison keeps the vector's value whichever side it is on.
                Some(if op.is_comparison() && !return_bool { v } else { x })
            }
            ValueOp::Math(f) => Some(f(v)),
            ValueOp::Clamp(bounds) => bounds.map(|(lo, hi)| kernels::clamp(v, lo, hi)),
            ValueOp::Round(to) => Some(kernels::go_round(v, *to)),
        }
    }

    /// Whether it drops the metric name: all do but a filtering comparison (and in
    /// Prometheus 2, `atan2`).
    pub(super) fn drops_name(&self, compat: Compat) -> bool {
        match self {
            ValueOp::Scalar { op, return_bool, .. } => drops_name(*op, compat) || *return_bool,
            _ => true,
        }
    }
}

/// The operations between an aggregation and its input (`sum(-rate(m[5m]) * 8)`),
/// innermost first.
pub(super) struct ValueChain {
    ops: Vec<ValueOp>,
    /// Whether one of them drops the metric name.
    pub(super) drops_name: bool,
}

impl ValueChain {
    pub(super) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The result for value `v` at the step of position `i`, through every operation;
    /// `None` where one drops it.
    #[inline]
    pub(super) fn apply(&self, i: usize, v: f64) -> Option<f64> {
        self.ops.iter().try_fold(v, |v, op| op.apply(i, v))
    }
}

/// The vector operand of `e` when `e` is an operation on each of its values that
/// [`Evaluator::value_op`] computes (the same operand) with a scalar, if any, that holds
/// no vector (a number, `time()`, `pi()`, operations of those): one that costs nothing
/// to compute for any block of steps.
pub(super) fn operand(e: &Expr) -> Option<&Expr> {
    match e.unparen() {
        Expr::Unary(u) if u.op == UnaryOp::Neg => Some(&u.expr),
        Expr::Binary(b) if b.op.is_comparison() || is_arithmetic(b.op) => {
            match (scalar_form(&b.lhs), scalar_form(&b.rhs)) {
                (true, false) if constant_scalar(&b.lhs) => Some(&b.rhs),
                (false, true) if constant_scalar(&b.rhs) => Some(&b.lhs),
                _ => None,
            }
        }
        Expr::Call(c) => call_op(c).map(|_| &c.args[0]),
        _ => None,
    }
}

/// Whether `e` is a scalar of [`scalar_form`] without a vector in it.
fn constant_scalar(e: &Expr) -> bool {
    match e.unparen() {
        Expr::Number(_) => true,
        Expr::Call(c) => matches!(c.func.name, "time" | "pi"),
        Expr::Unary(u) => constant_scalar(&u.expr),
        Expr::Binary(b) => constant_scalar(&b.lhs) && constant_scalar(&b.rhs),
        _ => false,
    }
}

/// What call `c` does to each value of its first argument, if it is a math function or
/// `clamp`, `clamp_min`, `clamp_max` or `round` with literal numbers besides.
pub(super) fn call_op(c: &Call) -> Option<ValueOp> {
    if let Some(f) = super::functions::elementwise_call(c) {
        return Some(ValueOp::Math(f));
    }
    let rest = c.args.get(1..).filter(|rest| rest.len() <= 2)?;
    let mut numbers = [0.0; 2];
    for (n, arg) in numbers.iter_mut().zip(rest) {
        *n = number(arg)?;
    }
    Some(match (c.func.name, &numbers[..rest.len()]) {
        // Not `hi >= lo`: NaN bounds clamp (to NaN).
        ("clamp", &[lo, hi]) => ValueOp::Clamp(if hi < lo { None } else { Some((lo, hi)) }),
        ("clamp_min", &[lo]) => ValueOp::Clamp(Some((lo, f64::INFINITY))),
        ("clamp_max", &[hi]) => ValueOp::Clamp(Some((f64::NEG_INFINITY, hi))),
        ("round", to) if to.len() <= 1 => ValueOp::Round(to.first().copied().unwrap_or(1.0)),
        _ => return None,
    })
}

impl Evaluator<'_> {
    /// The operation of `e` on each value of its vector operand, with that operand, at
    /// `steps` ([`operand`]); `None` where `e` is none, or its scalar has no value at
    /// each step without a step-by-step evaluation.
    pub(super) fn value_op<'e>(
        &mut self,
        e: &'e Expr,
        steps: &[Timestamp],
    ) -> EResult<Option<(ValueOp, &'e Expr)>> {
        Ok(match e.unparen() {
            Expr::Unary(u) if u.op == UnaryOp::Neg => Some((ValueOp::Neg, &u.expr)),
            Expr::Binary(b) if b.op.is_comparison() || is_arithmetic(b.op) => {
                let (scalar, vector, scalar_left) = match (scalar_form(&b.lhs), scalar_form(&b.rhs)) {
                    (true, false) => (&b.lhs, &b.rhs, true),
                    (false, true) => (&b.rhs, &b.lhs, false),
                    _ => return Ok(None),
                };
                let Some(values) = self.scalar_steps(scalar, steps)? else { return Ok(None) };
                Some((ValueOp::Scalar { op: b.op, return_bool: b.return_bool, scalar_left, values }, vector))
            }
            Expr::Call(c) => call_op(c).map(|op| (op, &c.args[0])),
            _ => None,
        })
    }

    /// The operations on each value of `e` down to its first operand that is none
    /// ([`operand`], as [`Input::of`](super::sliding::Input::of) walks), at `steps`.
    pub(super) fn value_chain(&mut self, mut e: &Expr, steps: &[Timestamp]) -> EResult<Option<ValueChain>> {
        let mut ops = Vec::new();
        while let Some(inner) = operand(e) {
            let Some((op, _)) = self.value_op(e, steps)? else { return Ok(None) };
            ops.push(op);
            e = inner;
        }
        ops.reverse();
        let compat = self.opts.compat;
        let drops_name = ops.iter().any(|op| op.drops_name(compat));
        Ok(Some(ValueChain { ops, drops_name }))
    }
}
