//! Function calls: range-vector functions, elementwise math, label manipulation,
//! sorting, classic histograms, dates.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use super::aggregate::GroupPlan;
use super::gomath;
use super::kernels::{self, Bucket, Laned};
use super::{exec_error, AnnotationKind, Compat, EResult, EvalError, Evaluator, Matrix, S, V};
use crate::ast::{Call, Expr, MatchOp, VectorSelector};
use crate::labels::{Labels, LabelsMap, METRIC_NAME};
use crate::storage::{go_regex, SelectedSeries, SharedPoints};
use crate::value::{is_stale_marker, Point, Timestamp};

impl Evaluator<'_> {
    pub(super) fn call(&mut self, c: &Call, t: Timestamp) -> EResult<V> {
        if let Some(v) = self.take_precomputed(super::sliding::node_key(c), t) {
            self.check_distinct(super::sliding::node_key(c), &v)?;
            return Ok(V::Vector(v));
        }
        super::extended::check_call(c)?;
        let name = c.func.name;
        let secs = |ms: i64| ms as f64 / 1000.0;
        let out = match name {
            "time" => return Ok(V::Scalar(secs(t))),
            "pi" => return Ok(V::Scalar(std::f64::consts::PI)),
            "start" => return Ok(V::Scalar(secs(self.start))),
            "end" => return Ok(V::Scalar(secs(self.end))),
            "range" => return Ok(V::Scalar(secs(self.end.saturating_sub(self.start)))),
            "step" => return Ok(V::Scalar(secs(self.step))),
            "min_of" | "max_of" => {
                let a = self.scalar_arg(&c.args[0], t)?;
                let b = self.scalar_arg(&c.args[1], t)?;
                return Ok(V::Scalar(if name == "min_of" {
                    kernels::go_min(a, b)
                } else {
                    kernels::go_max(a, b)
                }));
            }
            "scalar" => {
                let v = self.vector_arg(&c.args[0], t)?;
                return Ok(V::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }));
            }
            "vector" => {
                let v = self.scalar_arg(&c.args[0], t)?;
                vec![S { labels: Labels::empty(), v, t, drop_name: false }]
            }
            "absent" => {
                let v = self.vector_arg(&c.args[0], t)?;
                absent(v.is_empty(), &c.args[0])
            }
            "absent_over_time" => {
                let m = self.matrix_arg(&c.args[0], t)?;
                absent(m.series.is_empty(), &c.args[0])
            }
            "present_over_time" => self.range_fn(c, t, 0, |_| Some(1.0))?,
            "timestamp" => self.timestamp(&c.args[0], t)?,
            "label_replace" | "label_join" => self.relabel_samples(c, t)?,
            "sort" | "sort_desc" => {
                self.sort_warning(c);
                let mut v = self.vector_arg(&c.args[0], t)?;
                let desc = name == "sort_desc";
                // NaN last in both directions; ties keep their order.
                v.sort_by(|a, b| {
                    a.v.is_nan().cmp(&b.v.is_nan()).then_with(|| {
                        let o = a.v.partial_cmp(&b.v).unwrap_or(std::cmp::Ordering::Equal);
                        if desc {
                            o.reverse()
                        } else {
                            o
                        }
                    })
                });
                v
            }
            "sort_by_label" | "sort_by_label_desc" => {
                self.sort_warning(c);
                let mut v = self.vector_arg(&c.args[0], t)?;
                let mut names = Vec::new();
                for a in &c.args[1..] {
                    names.push(self.string_arg(a, t)?);
                }
                let desc = name == "sort_by_label_desc";
                v.sort_by(|a, b| {
                    let o = names
                        .iter()
                        .map(|n| {
                            kernels::natural_cmp(a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""))
                        })
                        .find(|o| o.is_ne())
                        .unwrap_or_else(|| a.labels.cmp(&b.labels));
                    if desc {
                        o.reverse()
                    } else {
                        o
                    }
                });
                v
            }
            "histogram_quantile" => {
                let phi = self.scalar_arg(&c.args[0], t)?;
                self.quantile_range_warning(phi, &c.args[0]);
                let v = self.vector_arg(&c.args[1], t)?;
                let compat = self.opts.compat;
                self.buckets(v, &c.args[1], |b| {
                    let (q, fixed, _) = kernels::bucket_quantile(phi, b, compat);
                    (q, fixed)
                })?
            }
            "histogram_fraction" => {
                let lo = self.scalar_arg(&c.args[0], t)?;
                let hi = self.scalar_arg(&c.args[1], t)?;
                let v = self.vector_arg(&c.args[2], t)?;
                self.buckets(v, &c.args[2], |b| (kernels::bucket_fraction(lo, hi, b), false))?
            }
            "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
            | "histogram_stdvar" => {
                // These read native histograms and skip float samples, which is all this
                // engine stores.
                self.vector_arg(&c.args[0], t)?;
                Vec::new()
            }
            "histogram_quantiles" => {
                let v = self.vector_arg(&c.args[0], t)?;
                let label = self.string_arg(&c.args[1], t)?;
                let compat = self.opts.compat;
                let mut out = Vec::new();
                for arg in &c.args[2..] {
                    let phi = self.scalar_arg(arg, t)?;
                    self.quantile_range_warning(phi, arg);
                    let value = openmetrics_float(phi);
                    let part = self.buckets(v.clone(), &c.args[0], |b| {
                        let (q, fixed, _) = kernels::bucket_quantile(phi, b, compat);
                        (q, fixed)
                    })?;
                    out.extend(part.into_iter().map(|s| S { labels: s.labels.with(&label, &value), ..s }));
                }
                out
            }
            "info" => return self.info(c, t),
            "start_timestamp" => {
                return Err(EvalError::Unsupported(format!("function {name}()")));
            }
            "round" => {
                let to = match c.args.get(1) {
                    Some(a) => self.scalar_arg(a, t)?,
                    None => 1.0,
                };
                self.math(c, t, |v| kernels::go_round(v, to))?
            }
            "clamp" | "clamp_min" | "clamp_max" => {
                let (lo, hi) = match name {
                    "clamp" => (self.scalar_arg(&c.args[1], t)?, self.scalar_arg(&c.args[2], t)?),
                    "clamp_min" => (self.scalar_arg(&c.args[1], t)?, f64::INFINITY),
                    _ => (f64::NEG_INFINITY, self.scalar_arg(&c.args[1], t)?),
                };
                if hi < lo {
                    self.vector_arg(&c.args[0], t)?;
                    Vec::new()
                } else {
                    self.math(c, t, |v| kernels::clamp(v, lo, hi))?
                }
            }
            "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
            | "month" | "year" => {
                let f = |secs: f64| kernels::date_part(name, secs);
                if c.args.is_empty() {
                    vec![S { labels: Labels::empty(), v: f(secs(t).trunc()), t, drop_name: false }]
                } else {
                    self.math(c, t, f)?
                }
            }
            name if ELEMENTWISE.contains(&name) => {
                let f = elementwise(name);
                self.math(c, t, f)?
            }
            _ => self.range_function(c, t)?,
        };
        self.check_distinct(super::sliding::node_key(c), &out)?;
        Ok(V::Vector(out))
    }

    fn sort_warning(&mut self, c: &Call) {
        if self.step != 0 {
            self.annotate(
                AnnotationKind::Warning,
                "sort is ineffective for range queries since results are always ordered by labels".into(),
                c.span,
            );
        }
    }

    pub(super) fn quantile_range_warning(&mut self, phi: f64, arg: &Expr) {
        if !(0.0..=1.0).contains(&phi) {
            self.annotate(
                AnnotationKind::Warning,
                format!("quantile value should be between 0 and 1, got {}", kernels::go_format_g(phi)),
                arg.span(),
            );
        }
    }

    fn string_arg(&mut self, e: &Expr, t: Timestamp) -> EResult<String> {
        match self.eval(e, t)? {
            V::String(s) => Ok(s),
            _ => exec_error("expected a string argument"),
        }
    }

    /// Applies `f` to every sample of the first argument, dropping the metric name.
    fn math(&mut self, c: &Call, t: Timestamp, f: impl Fn(f64) -> f64) -> EResult<Vec<S>> {
        let v = self.vector_arg(&c.args[0], t)?;
        Ok(v.into_iter().map(|s| self.drop_name(S { v: f(s.v), ..s })).collect())
    }

    fn timestamp(&mut self, arg: &Expr, t: Timestamp) -> EResult<Vec<S>> {
        // Of a selector, the stored sample's own time; of anything else, the step time.
        let direct = matches!(arg.unparen(), Expr::VectorSelector(_));
        let v = self.vector_arg(arg, t)?;
        Ok(v.into_iter()
            .map(|s| {
                let ts = if direct { s.t } else { t };
                self.drop_name(S { v: ts as f64 / 1000.0, ..s })
            })
            .collect())
    }

    /// `label_replace` or `label_join`. Over the steps of a range query the same label
    /// sets come again and again: their results are kept, so that the pattern runs
    /// once a label set, not once a step.
    fn relabel_samples(&mut self, c: &Call, t: Timestamp) -> EResult<Vec<S>> {
        let v = self.vector_arg(&c.args[0], t)?;
        let relabel = self.relabel(c, t)?;
        if self.grid_step == 0 {
            return Ok(v.into_iter().map(|s| relabel.sample(s, None)).collect());
        }
        let key = super::sliding::node_key(c);
        let mut memo = self.relabels.remove(&key).unwrap_or_default();
        let out = v
            .into_iter()
            .map(|s| {
                let (_, labels) = memo
                    .entry(s.labels.addr())
                    .or_insert_with(|| (s.labels.clone(), relabel.labels(&s.labels)));
                let labels = labels.clone();
                relabel.sample(s, Some(labels))
            })
            .collect();
        self.relabels.insert(key, memo);
        Ok(out)
    }

    /// What the `label_replace` or `label_join` call `c` does to a label set, its string
    /// arguments read at `t`; an error for an invalid pattern or label name.
    pub(super) fn relabel(&mut self, c: &Call, t: Timestamp) -> EResult<Relabel> {
        let dst = self.string_arg(&c.args[1], t)?;
        let relabel = if c.func.name == "label_replace" {
            let repl = self.string_arg(&c.args[2], t)?;
            let src = self.string_arg(&c.args[3], t)?;
            let pattern = self.string_arg(&c.args[4], t)?;
            let re = go_regex(&pattern).map_err(|_| {
                EvalError::Execution(format!("invalid regular expression in label_replace(): {pattern}"))
            })?;
            if !valid_label_name(&c.args[1], &dst) {
                return exec_error(format!("invalid destination label name in label_replace(): {dst}"));
            }
            Relabel::Replace { dst, repl, src, re, expansions: Default::default() }
        } else {
            let sep = self.string_arg(&c.args[2], t)?;
            let mut srcs = Vec::new();
            for a in &c.args[3..] {
                let s = self.string_arg(a, t)?;
                if !valid_label_name(a, &s) {
                    return exec_error(format!("invalid source label name in label_join(): {s}"));
                }
                srcs.push(s);
            }
            if !valid_label_name(&c.args[1], &dst) {
                return exec_error(format!("invalid destination label name in label_join(): {dst}"));
            }
            Relabel::Join { dst, sep, srcs }
        };
        Ok(relabel)
    }

    /// Groups classic histogram buckets by their labels without `le` and applies `f`.
    fn buckets(
        &mut self,
        v: Vec<S>,
        arg: &Expr,
        f: impl Fn(&mut Vec<Bucket>) -> (f64, bool),
    ) -> EResult<Vec<S>> {
        let node = super::sliding::node_key(arg);
        // Per group: its labels, whether its name is to be dropped, its buckets.
        let (keys, groups) = match self.bucket_plans.get(&node).filter(|plan| plan.grouping.fits(&v)) {
            // Over many steps the input is usually the same series in the same order.
            Some(plan) => {
                let grouping = &plan.grouping;
                let mut groups: Vec<(bool, Vec<Bucket>)> =
                    grouping.keys.iter().map(|_| (false, Vec::new())).collect();
                for ((s, &g), &upper) in v.iter().zip(&grouping.group_of).zip(&plan.upper) {
                    let (drop_name, buckets) = &mut groups[g];
                    if buckets.is_empty() {
                        *drop_name = s.drop_name;
                    }
                    buckets.push(Bucket { upper, count: s.v });
                }
                (grouping.keys.clone(), groups)
            }
            None => self.group_buckets(v, arg, node),
        };
        let mut out = Vec::with_capacity(groups.len());
        for (labels, (drop_name, mut buckets)) in keys.into_iter().zip(groups) {
            let (v, fixed) = f(&mut buckets);
            if fixed {
                let for_metric = self.for_metric_name(&labels);
                self.annotate(
                    AnnotationKind::Info,
                    format!("input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile){for_metric}"),
                    arg.span(),
                );
            }
            out.push(self.drop_name(S { labels, v, t: 0, drop_name }));
        }
        Ok(out)
    }

    /// [`buckets`](Self::buckets)' grouping worked out from the labels, kept as the
    /// plan of `node` over many steps when every `le` was well formed.
    #[allow(clippy::type_complexity)]
    fn group_buckets(
        &mut self,
        v: Vec<S>,
        arg: &Expr,
        node: usize,
    ) -> (Vec<Labels>, Vec<(bool, Vec<Bucket>)>) {
        let mut index: LabelsMap<usize> = LabelsMap::default();
        let mut keys: Vec<Labels> = Vec::new();
        let mut groups: Vec<(bool, Vec<Bucket>)> = Vec::new();
        // The plan's columns: each input's labels, group and parsed `le`.
        let (mut inputs, mut group_of, mut uppers) = (Vec::new(), Vec::new(), Vec::new());
        let mut plannable = self.grid_step > 0;
        for s in v {
            let le = s.labels.get("le").unwrap_or("");
            let Some(upper) = kernels::parse_le(le) else {
                let for_metric = self.for_metric_name(&s.labels);
                self.annotate(
                    AnnotationKind::Warning,
                    format!("bucket label \"le\" is missing or has a malformed value of {le:?}{for_metric}"),
                    arg.span(),
                );
                plannable = false;
                continue;
            };
            let key = s.labels.without(&["le"]);
            let i = *index.entry(key.clone()).or_insert_with(|| {
                keys.push(key);
                groups.push((s.drop_name, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(Bucket { upper, count: s.v });
            if plannable {
                inputs.push(s.labels);
                group_of.push(i);
                uppers.push(upper);
            }
        }
        if plannable {
            let grouping = GroupPlan { inputs, group_of, keys: keys.clone() };
            self.bucket_plans.insert(node, BucketPlan { grouping, upper: uppers });
        }
        (keys, groups)
    }

    /// ` for metric name "x"`, which messages carry only in delayed name removal mode.
    fn for_metric_name(&self, labels: &Labels) -> String {
        match labels.metric_name() {
            Some(n) if self.delayed => format!(" for metric name {n:?}"),
            _ => String::new(),
        }
    }

    /// The functions over a range vector.
    fn range_function(&mut self, c: &Call, t: Timestamp) -> EResult<Vec<S>> {
        let name = c.func.name;
        Ok(match name {
            "rate" | "increase" | "delta" if super::extended::anchoring_of(&c.args[0]).is_some() => {
                let counter = name != "delta";
                let rate = name == "rate";
                let Some(ms) = super::extended::matrix_selector_of(&c.args[0]) else {
                    return exec_error("expected a range selector");
                };
                let smoothed = ms.selector.anchoring == Some(crate::ast::RangeAnchoring::Smoothed);
                let m = self.extended_range(ms, t, true)?;
                if counter {
                    self.counter_info(&m, &c.args[0]);
                }
                let (start, end) = (m.start, m.end);
                self.per_series(m, false, |p| {
                    super::extended::extended_rate(p, start, end, smoothed, counter, rate)
                })
            }
            "rate" | "increase" | "delta" => {
                let counter = name != "delta";
                let rate = name == "rate";
                let zero_clamp_first = self.opts.compat == Compat::Prometheus2;
                self.over_windows(&c.args[0], t, false, counter, |start, end| {
                    move |p: &[Point], decreases: &dyn Fn() -> Option<usize>| {
                        let kind = kernels::CounterKind::of(counter, counter.then(decreases).flatten());
                        kernels::extrapolated_rate_of(
                            p,
                            start,
                            end,
                            end - start,
                            kind,
                            rate,
                            zero_clamp_first,
                        )
                    }
                })?
            }
            "irate" | "idelta" => {
                let rate = name == "irate";
                self.range_fn(c, t, 0, |p| kernels::instant_value(p, rate))?
            }
            "deriv" => self.in_lanes(c, t, Laned::Deriv)?,
            "predict_linear" => {
                let d = self.scalar_arg(&c.args[1], t)?;
                self.in_lanes(c, t, Laned::Predict(d))?
            }
            "resets" => self.over_windows(&c.args[0], t, false, false, |_, _| {
                |p: &[Point], decreases: &dyn Fn() -> Option<usize>| {
                    Some(decreases().map_or_else(|| kernels::resets(p), |n| n as f64))
                }
            })?,
            "changes" => self.range_fn(c, t, 0, |p| Some(kernels::changes(p)))?,
            "sum_over_time" => self.in_lanes(c, t, Laned::Sum)?,
            "avg_over_time" => match self.opts.compat {
                Compat::Prometheus3 => self.in_lanes(c, t, Laned::Avg)?,
                Compat::Prometheus2 => self.in_lanes(c, t, Laned::Mean2)?,
            },
            "min_over_time" => self.range_fn(c, t, 0, |p| Some(kernels::min_over_time(p)))?,
            "max_over_time" => self.range_fn(c, t, 0, |p| Some(kernels::max_over_time(p)))?,
            "count_over_time" => self.range_fn(c, t, 0, |p| Some(p.len() as f64))?,
            "stddev_over_time" => self.in_lanes(c, t, Laned::Stddev)?,
            "stdvar_over_time" => self.in_lanes(c, t, Laned::Stdvar)?,
            "mad_over_time" => self.range_fn(c, t, 0, |p| Some(kernels::mad_over_time(p)))?,
            "last_over_time" => self.keep_name_fn(c, t, |p| p.last().map(|p| p.v))?,
            "first_over_time" => self.keep_name_fn(c, t, |p| p.first().map(|p| p.v))?,
            "ts_of_min_over_time" => self.range_fn(c, t, 0, |p| Some(kernels::ts_of_min_over_time(p)))?,
            "ts_of_max_over_time" => self.range_fn(c, t, 0, |p| Some(kernels::ts_of_max_over_time(p)))?,
            "ts_of_first_over_time" => self.range_fn(c, t, 0, |p| p.first().map(|p| p.t as f64 / 1000.0))?,
            "ts_of_last_over_time" => self.range_fn(c, t, 0, |p| p.last().map(|p| p.t as f64 / 1000.0))?,
            "quantile_over_time" => {
                let phi = self.scalar_arg(&c.args[0], t)?;
                self.quantile_range_warning(phi, &c.args[0]);
                self.range_fn(c, t, 1, |p| Some(kernels::quantile_over_time(phi, p)))?
            }
            "double_exponential_smoothing" => {
                let sf = self.scalar_arg(&c.args[1], t)?;
                let tf = self.scalar_arg(&c.args[2], t)?;
                match kernels::validate_smoothing(sf, tf) {
                    Ok(()) => self.in_lanes(c, t, Laned::Smooth(sf, tf))?,
                    // An error only where there are series.
                    Err(e) if !self.matrix_arg(&c.args[0], t)?.series.is_empty() => {
                        return Err(EvalError::Execution(e));
                    }
                    Err(_) => Vec::new(),
                }
            }
            other => return Err(EvalError::Unsupported(format!("function {other}()"))),
        })
    }

    /// `rate`/`increase` on a metric whose name does not say it is a counter.
    fn counter_info(&mut self, m: &Matrix, arg: &Expr) {
        // The series of a selector that names its metric all have that name: one look
        // instead of one per series.
        if let Expr::MatrixSelector(ms) = arg {
            if let Some(name) = &ms.selector.name {
                self.counter_info_named(name, !m.series.is_empty(), arg);
                return;
            }
        }
        let names: Vec<String> = self.map_series(&m.series, |_, s| {
            let n = s.labels.metric_name()?;
            (!looks_like_counter(n)).then(|| n.to_owned())
        });
        for n in names {
            self.counter_info_for(&n, arg);
        }
    }

    /// The note of `rate`/`increase` over a selector naming its metric `name`, when it
    /// found samples (`any`).
    fn counter_info_named(&mut self, name: &str, any: bool, arg: &Expr) {
        if any && !looks_like_counter(name) {
            self.counter_info_for(name, arg);
        }
    }

    /// The info note that `rate`/`increase` read a metric that does not look like a counter
    /// ([`looks_like_counter`]).
    pub(super) fn counter_info_for(&mut self, name: &str, arg: &Expr) {
        self.annotate(
            AnnotationKind::Info,
            format!(
                "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}"
            ),
            arg.span(),
        );
    }

    /// A function of the range vector in argument `arg`; the name is dropped.
    fn range_fn(
        &mut self,
        c: &Call,
        t: Timestamp,
        arg: usize,
        f: impl Fn(&[Point]) -> Option<f64> + Sync + Send,
    ) -> EResult<Vec<S>> {
        self.over_windows(&c.args[arg], t, false, false, |_, _| {
            move |p: &[Point], _: &dyn Fn() -> Option<usize>| f(p)
        })
    }

    fn per_series(
        &self,
        m: Matrix,
        keep_name: bool,
        f: impl Fn(&[Point]) -> Option<f64> + Sync + Send,
    ) -> Vec<S> {
        self.per_window(m, keep_name, |p, _| f(p))
    }

    /// [`per_series`](Self::per_series), `f` also given a way to ask for the window's
    /// number of decreasing values where the store knows it without a scan (two
    /// searches, so only the functions that need it ask).
    fn per_window(
        &self,
        m: Matrix,
        keep_name: bool,
        f: impl Fn(&[Point], &dyn Fn() -> Option<usize>) -> Option<f64> + Sync + Send,
    ) -> Vec<S> {
        let source = m.source;
        self.map_series_owned(m.series, |s| {
            let points = super::points_of(source.as_ref(), &s.points);
            let v = f(points, &|| super::decreases_of(source.as_ref(), &s.points))?;
            let out = S { labels: s.labels, v, t: 0, drop_name: s.drop_name };
            Some(if keep_name { out } else { self.drop_name(out) })
        })
    }

    /// `last_over_time`/`first_over_time`: the name stays.
    fn keep_name_fn(
        &mut self,
        c: &Call,
        t: Timestamp,
        f: impl Fn(&[Point]) -> Option<f64> + Sync + Send,
    ) -> EResult<Vec<S>> {
        self.over_windows(&c.args[0], t, true, false, |_, _| {
            move |p: &[Point], _: &dyn Fn() -> Option<usize>| f(p)
        })
    }

    /// `f` of each window of the range vector `arg` at `t` (`make` gives `f` the window's
    /// bounds), with the `rate` note when `counter`. A plain range selector's
    /// windows are found, computed and labelled in one pass over its selection: a
    /// matrix of windows first and the values after is a second pass, which misses the
    /// cache again on every series once there are some hundred thousand of them.
    fn over_windows<F>(
        &mut self,
        arg: &Expr,
        t: Timestamp,
        keep_name: bool,
        counter: bool,
        make: impl FnOnce(Timestamp, Timestamp) -> F,
    ) -> EResult<Vec<S>>
    where
        F: Fn(&[Point], &dyn Fn() -> Option<usize>) -> Option<f64> + Sync + Send,
    {
        let plain = match arg.unparen() {
            Expr::MatrixSelector(ms) if ms.selector.anchoring.is_none() => Some(ms),
            _ => None,
        };
        // The note names the metric of each series when the selector names none: that
        // goes through the matrix.
        let Some(ms) = plain.filter(|ms| self.fast_paths && (!counter || ms.selector.name.is_some())) else {
            let m = self.matrix_arg(arg, t)?;
            if counter {
                self.counter_info(&m, arg);
            }
            let f = make(m.start, m.end);
            return Ok(self.per_window(m, keep_name, f));
        };
        let (start, end) = self.range_window(ms, t)?;
        let f = make(start, end);
        let series = self.selected(&ms.selector);
        let delayed = self.delayed;
        // Whether a series had samples in its window (the matrix would not be empty).
        let seen = std::sync::atomic::AtomicBool::new(false);
        let saw = || {
            if !seen.load(std::sync::atomic::Ordering::Relaxed) {
                seen.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let out = self.map_series(&series, |_, s| {
            let (lo, hi) = self.window_in(&s.points, start, end);
            let window = unstale(&s.points, lo..hi);
            if window.is_empty() {
                return None;
            }
            saw();
            let v = match &window {
                Cow::Borrowed(w) => f(w, &|| s.points.decreases_in(lo..hi))?,
                // The store's count of decreases is not that of the window without markers.
                Cow::Owned(kept) => f(kept, &|| None)?,
            };
            let (labels, drop_name) = output_labels(&s.labels, keep_name, delayed);
            Some(S { labels, v, t: 0, drop_name })
        });
        if let (true, Some(name)) = (counter, &ms.selector.name) {
            self.counter_info_named(name, seen.into_inner(), arg);
        }
        Ok(out)
    }

    /// `f` of `c`'s argument at `t`: for a plain selector, the windows of
    /// [`over_windows`](Self::over_windows), their values then taken side by side
    /// ([`kernels::laned_values`]). A selection large enough to be split over the cores
    /// goes window by window there instead (`map_series`): one core's lanes do not make
    /// up for the other core's share of looking up each series and its window.
    fn in_lanes(&mut self, c: &Call, t: Timestamp, f: Laned) -> EResult<Vec<S>> {
        let plain = match c.args[0].unparen() {
            Expr::MatrixSelector(ms) if ms.selector.anchoring.is_none() && self.fast_paths => Some(ms),
            _ => None,
        }
        .filter(|ms| !(self.parallel && self.selected(&ms.selector).len() >= super::PARALLEL_SERIES));
        let compat = self.opts.compat;
        let Some(ms) = plain else {
            return self.range_fn(c, t, 0, |p| f.of(p, t, compat));
        };
        let (start, end) = self.range_window(ms, t)?;
        let series = self.selected(&ms.selector);
        let windows: Vec<(&SelectedSeries, Cow<'_, [Point]>)> = (series.iter())
            .filter_map(|s| {
                let (lo, hi) = self.window_in(&s.points, start, end);
                let window = unstale(&s.points, lo..hi);
                (window.len() >= f.fewest()).then_some((s, window))
            })
            .collect();
        let slices: Vec<&[Point]> = windows.iter().map(|(_, w)| &**w).collect();
        let mut values = Vec::with_capacity(slices.len());
        let bounded = slices.iter().all(|w| f.bounded(w));
        kernels::laned_values(f, &slices, |_| t, bounded, compat, &mut Default::default(), &mut values);
        let delayed = self.delayed;
        Ok((windows.iter().zip(values))
            .map(|((s, _), v)| {
                let (labels, drop_name) = output_labels(&s.labels, false, delayed);
                S { labels, v, t: 0, drop_name }
            })
            .collect())
    }
}

/// The samples of `points[range]` as a range vector holds them (`range_selector`): stale
/// markers left out, copied only when there are some. A `Cow`, not `Points`, whose
/// reference count cost 2–5% of an instant `rate` at 10k series.
#[inline(always)]
fn unstale(points: &SharedPoints, range: Range<usize>) -> Cow<'_, [Point]> {
    if points.stale_markers_in(range.clone()) {
        Cow::Owned(points[range].iter().copied().filter(|p| !is_stale_marker(p.v)).collect())
    } else {
        Cow::Borrowed(&points[range])
    }
}

/// The label set of a function's output from its input's `labels`, and whether its name
/// is still to be dropped (delayed name removal). The label set without its name is
/// kept with the stored one: no second reference count to take and give back.
#[inline(always)]
fn output_labels(labels: &Labels, keep_name: bool, delayed: bool) -> (Labels, bool) {
    match (keep_name, delayed) {
        (true, _) => (labels.clone(), false),
        (false, true) => (labels.clone(), true),
        (false, false) => (labels.without_metric_name(), false),
    }
}

/// Whether a metric name ends as Prometheus expects a counter's to (else `rate` and
/// `increase` note that it might not be one).
pub(super) fn looks_like_counter(name: &str) -> bool {
    ["_total", "_sum", "_count", "_bucket"].iter().any(|x| name.ends_with(x))
}

/// How one step's buckets were grouped (as an aggregation's input is), with each
/// input's parsed `le`.
pub(crate) struct BucketPlan {
    grouping: GroupPlan,
    upper: Vec<f64>,
}

/// Whether a label name from a string argument is valid: non-empty UTF-8.
fn valid_label_name(arg: &Expr, name: &str) -> bool {
    let invalid_bytes = matches!(arg.unparen(), Expr::String(s) if s.bytes.is_some());
    !name.is_empty() && !invalid_bytes
}

/// `absent`'s output: `{labels} 1` when `empty`, with labels from the `=` matchers of
/// a selector argument.
fn absent(empty: bool, arg: &Expr) -> Vec<S> {
    if !empty {
        return Vec::new();
    }
    let vs: Option<&VectorSelector> = match arg.unparen() {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.selector),
        _ => None,
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut deleted: Vec<&str> = Vec::new();
    if let Some(vs) = vs {
        for m in &vs.matchers {
            if m.name == METRIC_NAME {
                continue;
            }
            let seen = pairs.iter().any(|(n, _)| *n == m.name) || deleted.contains(&m.name.as_str());
            if m.op == MatchOp::Equal && !seen {
                pairs.push((m.name.clone(), m.value.clone()));
            } else {
                pairs.retain(|(n, _)| *n != m.name);
                deleted.push(&m.name);
            }
        }
    }
    vec![S { labels: Labels::from_pairs(pairs), v: 1.0, t: 0, drop_name: false }]
}

/// A float as OpenMetrics writes label values such as `quantile`: `1.0`, `0.25`, `+Inf`.
fn openmetrics_float(v: f64) -> String {
    let s = kernels::go_format_g(v);
    if v.is_finite() && !s.contains(['.', 'e']) {
        format!("{s}.0")
    } else {
        s
    }
}

/// A `label_replace` or `label_join` with its arguments read.
pub(super) enum Relabel {
    Replace {
        dst: String,
        repl: String,
        src: String,
        re: std::sync::Arc<regex::Regex>,
        expansions: std::cell::RefCell<Expansions>,
    },
    Join {
        dst: String,
        sep: String,
        srcs: Vec<String>,
    },
}

/// `label_replace`'s replacements by source value (`None`: no match), for the series
/// of one call at one step. Many series share a value (the pods of a workload, the
/// workloads of a namespace): the pattern then runs once a value, not once a series.
/// Where values do not repeat (one per series), keeping every one made a query a fifth
/// slower: past [`Expansions::TRIAL`] lookups, values are kept only while at least half
/// of the lookups found theirs, and once not, none are looked up any more.
#[derive(Default)]
pub(super) struct Expansions {
    by_value: HashMap<Box<str>, Option<Box<str>>>,
    looked_up: usize,
    off: bool,
}

impl Expansions {
    const TRIAL: usize = 64;

    fn get(&mut self, value: &str) -> Option<&Option<Box<str>>> {
        if self.off {
            return None;
        }
        self.looked_up += 1;
        self.by_value.get(value)
    }

    fn keep(&mut self, value: &str, expansion: Option<String>) {
        if self.off {
            return;
        }
        if self.looked_up > Self::TRIAL && self.by_value.len() * 2 > self.looked_up {
            self.off = true;
            self.by_value = HashMap::new();
            return;
        }
        self.by_value.insert(value.into(), expansion.map(String::into_boxed_str));
    }
}

impl Relabel {
    /// The new label set, or `None` where `label_replace`'s pattern does not match.
    pub(super) fn labels(&self, labels: &Labels) -> Option<Labels> {
        match self {
            Relabel::Replace { dst, repl, src, re, expansions } => {
                let value = labels.get(src).unwrap_or("");
                let mut expansions = expansions.borrow_mut();
                if let Some(known) = expansions.get(value) {
                    return known.as_deref().map(|e| labels.with(dst, e));
                }
                let found = re.captures(value).map(|caps| {
                    let mut expanded = String::new();
                    caps.expand(repl, &mut expanded);
                    expanded
                });
                let out = found.as_deref().map(|e| labels.with(dst, e));
                expansions.keep(value, found);
                out
            }
            Relabel::Join { dst, sep, srcs } => {
                let joined: Vec<&str> = srcs.iter().map(|n| labels.get(n).unwrap_or("")).collect();
                Some(labels.with(dst, &joined.join(sep)))
            }
        }
    }

    /// `s` relabelled; `known` is [`labels`](Self::labels) of its set when already found.
    fn sample(&self, mut s: S, known: Option<Option<Labels>>) -> S {
        if let Some(labels) = known.unwrap_or_else(|| self.labels(&s.labels)) {
            s.labels = labels;
            // A name written by the call is kept, even when names go at the end.
            let (Relabel::Replace { dst, .. } | Relabel::Join { dst, .. }) = self;
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
        s
    }
}

/// The functions of one vector that map each value alone and drop the metric name.
const ELEMENTWISE: [&str; 23] = [
    "abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10", "sin", "cos", "tan", "asin", "acos",
    "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "deg", "rad", "sgn",
];

/// What `c` does to each value, if it is one of the [`ELEMENTWISE`] functions.
pub(super) fn elementwise_call(c: &Call) -> Option<fn(f64) -> f64> {
    (c.args.len() == 1 && ELEMENTWISE.contains(&c.func.name)).then(|| elementwise(c.func.name))
}

fn elementwise(name: &str) -> fn(f64) -> f64 {
    match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => gomath::exp,
        "sqrt" => f64::sqrt,
        "ln" => gomath::log,
        "log2" => gomath::log2,
        "log10" => gomath::log10,
        "sin" => gomath::sin,
        "cos" => gomath::cos,
        "tan" => gomath::tan,
        "asin" => gomath::asin,
        "acos" => gomath::acos,
        "atan" => gomath::atan,
        "sinh" => gomath::sinh,
        "cosh" => gomath::cosh,
        "tanh" => gomath::tanh,
        "asinh" => gomath::asinh,
        "acosh" => gomath::acosh,
        "atanh" => gomath::atanh,
        "deg" => kernels::deg,
        "rad" => kernels::rad,
        _ => kernels::sgn,
    }
}

#[cfg(test)]
mod tests {
    use crate::eval::Engine;
    use crate::labels::Labels;
    use crate::storage::MemoryStore;
    use crate::value::Value;

    /// `label_replace` runs its pattern once a source value: the series that share a
    /// value get the same replacement but keep their other labels, and those whose value
    /// does not match keep their set, in instant queries, range queries and under an
    /// aggregation.
    #[test]
    fn label_replace_applies_a_values_replacement_to_each_series_with_it() {
        let mut st = MemoryStore::new();
        let pods = [("web-1", "200"), ("web-1", "500"), ("db", "200"), ("db", "500"), ("web-2", "200")];
        for (pod, code) in pods {
            let labels = Labels::from_pairs([("__name__", "x"), ("pod", pod), ("code", code)]);
            for t in (0..=60_000).step_by(15_000) {
                st.append(&labels, t, 1.0);
            }
        }
        let engine = Engine::default();
        let q = r#"label_replace(x, "app", "$1", "pod", "(.*)-[0-9]+")"#;
        let want = [
            r#"{__name__="x", app="web", code="200", pod="web-1"}"#,
            r#"{__name__="x", app="web", code="200", pod="web-2"}"#,
            r#"{__name__="x", app="web", code="500", pod="web-1"}"#,
            r#"{__name__="x", code="200", pod="db"}"#,
            r#"{__name__="x", code="500", pod="db"}"#,
        ];
        let Value::Vector(v) = engine.instant_query(&st, q, 60_000).unwrap().value else {
            panic!("not a vector")
        };
        let mut got: Vec<String> = v.iter().map(|s| s.labels.to_string()).collect();
        got.sort();
        assert_eq!(got, want);
        let Value::Matrix(m) = engine.range_query(&st, q, 0, 60_000, 15_000).unwrap().value else {
            panic!("not a matrix")
        };
        let mut got: Vec<String> = m.iter().map(|s| s.labels.to_string()).collect();
        got.sort();
        assert_eq!(got, want);
        let sum = format!("sum by (app) ({q})");
        let Value::Matrix(m) = engine.range_query(&st, &sum, 0, 60_000, 15_000).unwrap().value else {
            panic!("not a matrix")
        };
        let got: Vec<(String, f64)> = m.iter().map(|s| (s.labels.to_string(), s.points[0].v)).collect();
        assert_eq!(got, [("{}".to_string(), 2.0), (r#"{app="web"}"#.to_string(), 3.0)]);
        // A value per series: past the trial, nothing is kept, every series still done.
        let mut st = MemoryStore::new();
        for i in 0..300 {
            st.append(&Labels::from_pairs([("__name__", "y"), ("id", &format!("i-{i}"))]), 0, i as f64);
        }
        let q = r#"label_replace(y, "n", "$1", "id", "i-(.*)")"#;
        let Value::Vector(v) = engine.instant_query(&st, q, 0).unwrap().value else { panic!("not a vector") };
        assert_eq!(v.len(), 300);
        for s in &v {
            assert_eq!(s.labels.get("n").map(|n| format!("i-{n}")).as_deref(), s.labels.get("id"));
        }
    }
}
