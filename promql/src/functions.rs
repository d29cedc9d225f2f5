//! The PromQL function table (Prometheus 3.14), as data.
//!
//! Each row is a signature: name, argument types, how the last argument may repeat,
//! result type and whether it needs `promql-experimental-functions`. The checker is
//! generic over this table, so adding a function is one row here plus its kernel in
//! the evaluator. Function-specific rules that do not fit a signature (`info`'s
//! selector argument) live in [`crate::check`].
//!
//! Rows are sorted by name (byte order) so that [`function`] can binary-search.
//! Aggregations (`sum`, `topk`, `limitk`, …) are operators, not functions.
use crate::ast::ValueType;

/// One PromQL function's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    /// The name, matched case-sensitively.
    pub name: &'static str,
    /// Argument types; with `variadic != 0` the last one is optional and may repeat.
    pub arg_types: &'static [ValueType],
    /// 0: exactly `arg_types.len()` arguments. n > 0: the last type may be given 0..=n times
    /// (so between len-1 and len-1+n arguments). -1: the last type may repeat without limit
    /// (at least len-1 arguments).
    pub variadic: i32,
    /// The type of the result.
    pub return_type: ValueType,
    /// Needs the `promql-experimental-functions` feature.
    pub experimental: bool,
}

use ValueType::{Matrix as M, Scalar as S, String as Str, Vector as V};

/// Shorthand for a row; keeps the table below one line per function.
const fn f(
    name: &'static str,
    arg_types: &'static [ValueType],
    variadic: i32,
    return_type: ValueType,
    experimental: bool,
) -> Function {
    Function { name, arg_types, variadic, return_type, experimental }
}

/// Stable (not experimental).
const STABLE: bool = false;
/// Needs `--enable-feature=promql-experimental-functions`.
const EXP: bool = true;

/// Every function, sorted by name.
pub static FUNCTIONS: &[Function] = &[
    f("abs", &[V], 0, V, STABLE),
    f("absent", &[V], 0, V, STABLE),
    f("absent_over_time", &[M], 0, V, STABLE),
    f("acos", &[V], 0, V, STABLE),
    f("acosh", &[V], 0, V, STABLE),
    f("asin", &[V], 0, V, STABLE),
    f("asinh", &[V], 0, V, STABLE),
    f("atan", &[V], 0, V, STABLE),
    f("atanh", &[V], 0, V, STABLE),
    f("avg_over_time", &[M], 0, V, STABLE),
    f("ceil", &[V], 0, V, STABLE),
    f("changes", &[M], 0, V, STABLE),
    f("clamp", &[V, S, S], 0, V, STABLE),
    f("clamp_max", &[V, S], 0, V, STABLE),
    f("clamp_min", &[V, S], 0, V, STABLE),
    f("cos", &[V], 0, V, STABLE),
    f("cosh", &[V], 0, V, STABLE),
    f("count_over_time", &[M], 0, V, STABLE),
    // Date functions: the vector argument is optional (defaults to vector(time())).
    f("day_of_month", &[V], 1, V, STABLE),
    f("day_of_week", &[V], 1, V, STABLE),
    f("day_of_year", &[V], 1, V, STABLE),
    f("days_in_month", &[V], 1, V, STABLE),
    f("deg", &[V], 0, V, STABLE),
    f("delta", &[M], 0, V, STABLE),
    f("deriv", &[M], 0, V, STABLE),
    // Renamed from holt_winters in 3.0 (holt_winters is now an unknown function).
    f("double_exponential_smoothing", &[M, S, S], 0, V, EXP),
    // Query-context function: folded to a number literal before evaluation.
    f("end", &[], 0, S, EXP),
    f("exp", &[V], 0, V, STABLE),
    // Stable since 3.7.
    f("first_over_time", &[M], 0, V, STABLE),
    f("floor", &[V], 0, V, STABLE),
    f("histogram_avg", &[V], 0, V, STABLE),
    f("histogram_count", &[V], 0, V, STABLE),
    f("histogram_fraction", &[S, S, V], 0, V, STABLE),
    f("histogram_quantile", &[S, V], 0, V, STABLE),
    // histogram_quantiles(v, label, phi_1, ..., phi_k) with 1 <= k <= 10,
    // i.e. 3..=12 arguments (len 4, variadic 9).
    f("histogram_quantiles", &[V, Str, S, S], 9, V, EXP),
    f("histogram_stddev", &[V], 0, V, STABLE),
    f("histogram_stdvar", &[V], 0, V, STABLE),
    f("histogram_sum", &[V], 0, V, STABLE),
    f("hour", &[V], 1, V, STABLE),
    f("idelta", &[M], 0, V, STABLE),
    f("increase", &[M], 0, V, STABLE),
    // info(v [, {label selectors}]): the optional second argument must be a
    // name-less vector selector (checked in parse.go checkAST).
    f("info", &[V, V], 1, V, EXP),
    f("irate", &[M], 0, V, STABLE),
    // label_join(v, dst, sep, src_1, src_2, ...): at least 3 arguments.
    f("label_join", &[V, Str, Str, Str], -1, V, STABLE),
    // label_replace(v, dst, replacement, src, regex).
    f("label_replace", &[V, Str, Str, Str, Str], 0, V, STABLE),
    f("last_over_time", &[M], 0, V, STABLE),
    f("ln", &[V], 0, V, STABLE),
    f("log10", &[V], 0, V, STABLE),
    f("log2", &[V], 0, V, STABLE),
    f("mad_over_time", &[M], 0, V, EXP),
    // Scalar max/min (Go math.Max/Min); also usable inside duration expressions.
    f("max_of", &[S, S], 0, S, EXP),
    f("max_over_time", &[M], 0, V, STABLE),
    f("min_of", &[S, S], 0, S, EXP),
    f("min_over_time", &[M], 0, V, STABLE),
    f("minute", &[V], 1, V, STABLE),
    f("month", &[V], 1, V, STABLE),
    f("pi", &[], 0, S, STABLE),
    f("predict_linear", &[M, S], 0, V, STABLE),
    f("present_over_time", &[M], 0, V, STABLE),
    f("quantile_over_time", &[S, M], 0, V, STABLE),
    f("rad", &[V], 0, V, STABLE),
    // Query-context function: end - start in seconds (0 for an instant query).
    f("range", &[], 0, S, EXP),
    f("rate", &[M], 0, V, STABLE),
    f("resets", &[M], 0, V, STABLE),
    // round(v [, to_nearest]).
    f("round", &[V, S], 1, V, STABLE),
    f("scalar", &[V], 0, S, STABLE),
    f("sgn", &[V], 0, V, STABLE),
    f("sin", &[V], 0, V, STABLE),
    f("sinh", &[V], 0, V, STABLE),
    f("sort", &[V], 0, V, STABLE),
    // sort_by_label(v, label_1, label_2, ...): at least 1 argument (the vector);
    // label names are not validated.
    f("sort_by_label", &[V, Str], -1, V, EXP),
    f("sort_by_label_desc", &[V, Str], -1, V, EXP),
    f("sort_desc", &[V], 0, V, STABLE),
    f("sqrt", &[V], 0, V, STABLE),
    // Query-context function: query start in seconds.
    f("start", &[], 0, S, EXP),
    // Needs stored start timestamps; the data is lost if the argument is not a selector.
    f("start_timestamp", &[V], 0, V, EXP),
    f("stddev_over_time", &[M], 0, V, STABLE),
    f("stdvar_over_time", &[M], 0, V, STABLE),
    // Query-context function: query step in seconds (0 for an instant query).
    f("step", &[], 0, S, EXP),
    f("sum_over_time", &[M], 0, V, STABLE),
    f("tan", &[V], 0, V, STABLE),
    f("tanh", &[V], 0, V, STABLE),
    f("time", &[], 0, S, STABLE),
    f("timestamp", &[V], 0, V, STABLE),
    f("ts_of_first_over_time", &[M], 0, V, EXP),
    f("ts_of_last_over_time", &[M], 0, V, EXP),
    f("ts_of_max_over_time", &[M], 0, V, EXP),
    f("ts_of_min_over_time", &[M], 0, V, EXP),
    f("vector", &[S], 0, V, STABLE),
    f("year", &[V], 1, V, STABLE),
];

/// Looks a function up by its exact (case-sensitive) name.
pub fn function(name: &str) -> Option<&'static Function> {
    FUNCTIONS.binary_search_by(|row| row.name.cmp(name)).ok().map(|i| &FUNCTIONS[i])
}

/// The Prometheus 3 name of a function Prometheus 2 had under `old`: `holt_winters` is
/// `double_exponential_smoothing` since 3.0.
///
/// ```
/// assert_eq!(promql::functions::renamed("holt_winters"), Some("double_exponential_smoothing"));
/// assert_eq!(promql::functions::renamed("rate"), None);
/// ```
pub fn renamed(old: &str) -> Option<&'static str> {
    match old {
        "holt_winters" => Some("double_exponential_smoothing"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus' arity rule (parse.go `checkAST`, `case *Call`), restated so the
    /// table's `variadic` values can be checked against real call shapes.
    fn arity_ok(func: &Function, nargs: usize) -> bool {
        let len = func.arg_types.len();
        match func.variadic {
            0 => nargs == len,
            -1 => nargs + 1 >= len,
            n if n > 0 => nargs + 1 >= len && nargs <= len - 1 + n as usize,
            _ => false,
        }
    }

    #[test]
    fn sorted_and_unique() {
        for pair in FUNCTIONS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "not strictly sorted: {:?} then {:?}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn every_row_is_found() {
        for row in FUNCTIONS {
            assert_eq!(function(row.name), Some(row));
        }
    }

    #[test]
    fn rate_takes_a_range_vector() {
        let rate = function("rate").expect("rate exists");
        assert_eq!(rate.arg_types, &[ValueType::Matrix]);
        assert_eq!(rate.variadic, 0);
        assert_eq!(rate.return_type, ValueType::Vector);
        assert!(!rate.experimental);
    }

    #[test]
    fn lookup_is_exact() {
        assert!(function("Rate").is_none());
        assert!(function("rate ").is_none());
        assert!(function("").is_none());
        // Removed in 3.0 / never functions.
        assert!(function("holt_winters").is_none());
        assert!(function("sum").is_none());
        assert!(function("limitk").is_none());
    }

    #[test]
    fn table_size() {
        // Every name in this table is called somewhere in the promqltest corpus.
        assert_eq!(FUNCTIONS.len(), 90);
        assert_eq!(FUNCTIONS.iter().filter(|f| f.experimental).count(), 17);
    }

    #[test]
    fn variadic_values_are_valid() {
        for row in FUNCTIONS {
            assert!(row.variadic >= -1, "{}", row.name);
            if row.variadic != 0 {
                assert!(!row.arg_types.is_empty(), "{}", row.name);
            }
        }
    }

    #[test]
    fn arities() {
        let get = |n| function(n).unwrap();
        // Date functions: 0 or 1 argument.
        for name in
            ["day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year"]
        {
            assert!(arity_ok(get(name), 0) && arity_ok(get(name), 1) && !arity_ok(get(name), 2), "{name}");
        }
        // round: 1 or 2.
        assert!(
            !arity_ok(get("round"), 0)
                && arity_ok(get("round"), 1)
                && arity_ok(get("round"), 2)
                && !arity_ok(get("round"), 3)
        );
        // label_join: at least 3.
        assert!(
            !arity_ok(get("label_join"), 2)
                && arity_ok(get("label_join"), 3)
                && arity_ok(get("label_join"), 7)
        );
        // label_replace: exactly 5.
        assert!(
            arity_ok(get("label_replace"), 5)
                && !arity_ok(get("label_replace"), 4)
                && !arity_ok(get("label_replace"), 6)
        );
        // sort_by_label: at least 1.
        assert!(
            arity_ok(get("sort_by_label"), 1)
                && arity_ok(get("sort_by_label_desc"), 4)
                && !arity_ok(get("sort_by_label"), 0)
        );
        // info: 1 or 2.
        assert!(
            arity_ok(get("info"), 1)
                && arity_ok(get("info"), 2)
                && !arity_ok(get("info"), 3)
                && !arity_ok(get("info"), 0)
        );
        // histogram_quantiles: 3..=12 (1 to 10 quantiles).
        let hq = get("histogram_quantiles");
        assert!(!arity_ok(hq, 2) && arity_ok(hq, 3) && arity_ok(hq, 12) && !arity_ok(hq, 13));
        // Zero-argument functions.
        for name in ["pi", "time", "start", "end", "range", "step"] {
            assert!(arity_ok(get(name), 0) && !arity_ok(get(name), 1), "{name}");
            assert_eq!(get(name).return_type, ValueType::Scalar, "{name}");
        }
        assert!(arity_ok(get("min_of"), 2) && !arity_ok(get("max_of"), 3));
    }

    #[test]
    fn experimental_set() {
        let mut exp: Vec<&str> = FUNCTIONS.iter().filter(|f| f.experimental).map(|f| f.name).collect();
        exp.sort_unstable();
        assert_eq!(
            exp,
            [
                "double_exponential_smoothing",
                "end",
                "histogram_quantiles",
                "info",
                "mad_over_time",
                "max_of",
                "min_of",
                "range",
                "sort_by_label",
                "sort_by_label_desc",
                "start",
                "start_timestamp",
                "step",
                "ts_of_first_over_time",
                "ts_of_last_over_time",
                "ts_of_max_over_time",
                "ts_of_min_over_time",
            ]
        );
    }

    #[test]
    fn scalar_returning_functions() {
        let mut s: Vec<&str> =
            FUNCTIONS.iter().filter(|f| f.return_type == ValueType::Scalar).map(|f| f.name).collect();
        s.sort_unstable();
        assert_eq!(s, ["end", "max_of", "min_of", "pi", "range", "scalar", "start", "step", "time"]);
        assert!(FUNCTIONS
            .iter()
            .all(|f| f.return_type != ValueType::Matrix && f.return_type != ValueType::String));
    }
}
