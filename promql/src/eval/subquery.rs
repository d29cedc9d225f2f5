//! Subqueries: the inner expression at each step of an absolute grid inside a window
//! that ends at the outer time.
//!
//! At the steps of a range query the windows overlap (`[30m:1m]` at 60 s steps shares
//! 29 of its 30 inner steps with the step before), so the inner steps of a run of outer
//! steps are evaluated once, together (where range functions slide), and each outer
//! step's window is cut from them — as Prometheus evaluates a subquery once over the
//! whole range of the query. Each window comes out as the step-by-step path gives it:
//! the same series, points and order. A range function of the subquery (`rate`,
//! `max_over_time`, …) instead slides over the inner steps' series as over a selection
//! ([`sliding`](super::sliding)), and an inner selector or sliding call fills them
//! series by series.

use super::sliding::{node_key, slides_over_selection, Source};
use super::{exec_error, Compat, EResult, EvalError, Evaluator, Matrix, Points, M, V};
use crate::ast::{Expr, SubqueryExpr};
use crate::labels::{Labels, LabelsMap};
use crate::storage::SelectedSeries;
use crate::value::{Point, Timestamp};
use std::sync::Arc;

/// Most inner points (series × inner steps) held for a run of windows that tile the
/// steps ([`Evaluator::precompute_subquery`]): 16 MB of points.
const TILED_POINTS: i128 = 1 << 20;

/// A subquery's window at one outer time: `(start, end]`, inner steps `first`,
/// `first + step`, … up to `end`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    start: Timestamp,
    end: Timestamp,
    first: Timestamp,
    pub(super) step: i64,
}

impl Window {
    /// How many inner steps the window holds (wide: `[30d:1ms]` is counted before
    /// anything is allocated).
    pub(super) fn count(&self) -> i128 {
        if self.first > self.end {
            return 0;
        }
        (i128::from(self.end) - i128::from(self.first)) / i128::from(self.step) + 1
    }

    /// The last inner step, when there is one (`count` is at least 1 and at most the
    /// sample limit).
    fn last(&self) -> Timestamp {
        self.first + (self.count() as i64 - 1) * self.step
    }

    /// The inner steps, when there are any (`count` is at most the sample limit).
    fn steps(&self) -> impl Iterator<Item = Timestamp> {
        let (first, step) = (self.first, self.step);
        (0..self.count() as i64).map(move |i| first + i * step)
    }
}

/// The inner steps of a run of outer steps, evaluated once.
#[derive(Debug, Default)]
pub(super) struct InnerSteps {
    /// The grid intervals evaluated, each `(first, last)` step, ascending.
    runs: Vec<(Timestamp, Timestamp)>,
    /// The time of each evaluated inner step that has samples.
    times: Vec<Timestamp>,
    /// Where each of those steps' series start in `order` (one more entry than `times`).
    starts: Vec<usize>,
    /// Per inner step, the index in `series` of each of its samples, in the order of
    /// its value: a window's series come in the order they first appear in it.
    order: Vec<u32>,
    series: Vec<M>,
    /// Each series' index in `series`, by its labels (without a name dropped at once).
    index: LabelsMap<usize>,
    /// Whether a window cut from these steps could differ from the step-by-step path's:
    /// a series whose name is to be dropped at some steps and not at others, samples
    /// merged by their labels without the name (the first label set seen in a window
    /// names its series), or a series given twice by a broken source.
    uncut: bool,
    /// Per series, the window it was last taken into (`generation`).
    seen: Vec<u32>,
    generation: u32,
    /// The series' points, moved here once every inner step has come
    /// ([`freeze`](Self::freeze)), for windows to point into ([`Points::Selected`])
    /// instead of copying their points (an allocation a series a window).
    frozen: Option<Arc<Vec<SelectedSeries>>>,
    /// Whether every kept inner step (one with samples) holds the series of the kept
    /// step before, in the same order, then maybe new ones: the series of any window
    /// then come in the order of their index (new series are numbered after all
    /// others, in the order they come), as a call sliding over the series emits them.
    pub(super) growing: bool,
    /// The series at each position of the last step's vector ([`push`](Self::push)).
    previous: Vec<u32>,
}

/// A series of the inner expression over a run of inner steps, as emitted series by
/// series ([`Evaluator::inner_rows`]).
#[derive(Debug)]
struct Row {
    /// Its position in the selection.
    n: usize,
    labels: Labels,
    drop_name: bool,
    points: Vec<Point>,
    /// The step of each point, by position in the run.
    steps: Vec<u32>,
}

/// [`Row`]s as they are emitted, series after series.
#[derive(Debug, Default)]
struct Rows(Vec<Row>);

impl Rows {
    /// Takes the value `v` of series `n` at the step at position `i` of `grid`; `make`
    /// gives its labels and whether its name is to go, on its first value.
    fn take(
        &mut self,
        n: usize,
        make: impl FnOnce() -> (Labels, bool),
        grid: &[Timestamp],
        i: usize,
        v: f64,
    ) {
        if self.0.last().is_none_or(|row| row.n != n) {
            let (labels, drop_name) = make();
            // Most series have a value at every step left; at most 256, so that a series
            // living minutes of a long run does not reserve it all.
            let left = (grid.len() - i).min(256);
            let (points, steps) = (Vec::with_capacity(left), Vec::with_capacity(left));
            self.0.push(Row { n, labels, drop_name, points, steps });
        }
        if let Some(row) = self.0.last_mut() {
            row.points.push(Point { t: grid[i], v });
            row.steps.push(i as u32);
        }
    }
}

impl InnerSteps {
    /// Adds the value of the next inner step.
    fn push(&mut self, t: Timestamp, value: V, delayed: bool) -> EResult<()> {
        match value {
            V::Vector(v) => {
                for (j, s) in v.into_iter().enumerate() {
                    // Steps mostly give the very same label sets in the same order: the
                    // series at this position in the step before is tried before the map.
                    let same = |i: u32| {
                        let m = &self.series[i as usize];
                        m.labels.ptr_eq(&s.labels) && m.drop_name == s.drop_name
                    };
                    let i = match self.previous.get(j).copied().filter(|&i| same(i)) {
                        Some(i) => i as usize,
                        None => {
                            let i = self.series_of(&s.labels, s.drop_name, delayed);
                            match self.previous.get_mut(j) {
                                Some(p) => *p = i as u32,
                                None => self.previous.push(i as u32),
                            }
                            i
                        }
                    };
                    if let Points::Owned(points) = &mut self.series[i].points {
                        points.push(Point { t, v: s.v });
                    }
                    self.order.push(i as u32);
                }
            }
            V::Scalar(v) => {
                if self.series.is_empty() {
                    self.series.push(M {
                        labels: Labels::empty(),
                        points: Points::Owned(Vec::new()),
                        drop_name: false,
                    });
                }
                if let Points::Owned(points) = &mut self.series[0].points {
                    points.push(Point { t, v });
                }
                self.order.push(0);
            }
            _ => return exec_error("subquery must evaluate to an instant vector"),
        }
        self.end_step(t);
        Ok(())
    }

    /// The index of the series a sample with `labels` goes to, a new series if none
    /// (named by these labels). Without delayed name removal a name to drop is gone
    /// already: such samples meet by their labels without it.
    fn series_of(&mut self, labels: &Labels, drop_name: bool, delayed: bool) -> usize {
        let key = if drop_name && !delayed {
            self.uncut = true;
            labels.without_metric_name()
        } else {
            labels.clone()
        };
        let i = *self.index.entry(key).or_insert_with(|| {
            self.series.push(M { labels: labels.clone(), points: Points::Owned(Vec::new()), drop_name });
            self.series.len() - 1
        });
        self.uncut |= self.series[i].drop_name != drop_name;
        i
    }

    /// Closes the step at `t`, whose samples are the entries of `order` after the last
    /// step's. A step without samples is not kept: it adds nothing to a window (and the
    /// steps that are kept still grow when each holds the one before it that has
    /// samples, which is what [`growing`](Self::growing) promises of a window's series).
    fn end_step(&mut self, t: Timestamp) {
        self.open();
        // This step's samples start at the last start, the step before's at the one before.
        let here = self.starts[self.starts.len() - 1];
        if self.order.len() == here {
            return;
        }
        let before = self.starts.len().checked_sub(2).map_or(here, |k| self.starts[k]);
        let (before, at) = (&self.order[before..here], &self.order[here..]);
        // The series after the prefix are new while the steps grow: numbered in order.
        self.growing &= at.starts_with(before);
        self.times.push(t);
        self.starts.push(self.order.len());
    }

    /// Starts the bookkeeping of the steps at the first one: they grow until a kept
    /// step does not.
    fn open(&mut self) {
        if self.starts.is_empty() {
            self.starts.push(0);
            self.growing = true;
        }
    }

    /// Adds the steps `grid` from `rows`, the series that have values at them, as
    /// [`push`](Self::push) adds the vectors of those steps when each holds its series
    /// in the order of `rows`. New series are numbered in that order, not as first seen:
    /// the order of a window's series is in `order`, and when the steps are
    /// [`growing`](Self::growing) it is that of their numbers either way.
    fn push_rows(&mut self, grid: &[Timestamp], rows: Vec<Row>, delayed: bool) {
        if rows.is_empty() {
            // No step has a sample, and none is kept; steps of nothing grow.
            self.open();
            return;
        }
        let mut index_of = Vec::with_capacity(rows.len());
        for row in &rows {
            index_of.push(self.series_of(&row.labels, row.drop_name, delayed) as u32);
        }
        // Two rows of one series: a source gave it twice (an error of the step-by-step
        // path), or names dropped made two one.
        let mut distinct = index_of.clone();
        distinct.sort_unstable();
        distinct.dedup();
        self.uncut |= distinct.len() < index_of.len();
        // Each step's series in the order of the rows (a counting sort by step).
        let mut at = vec![0usize; grid.len() + 1];
        for row in &rows {
            for &k in &row.steps {
                at[k as usize + 1] += 1;
            }
        }
        for k in 1..at.len() {
            at[k] += at[k - 1];
        }
        let mut order = vec![0u32; at[grid.len()]];
        let mut next = at.clone();
        for (row, &i) in rows.iter().zip(&index_of) {
            for &k in &row.steps {
                order[next[k as usize]] = i;
                next[k as usize] += 1;
            }
        }
        for (row, &i) in rows.into_iter().zip(&index_of) {
            if let Points::Owned(points) = &mut self.series[i as usize].points {
                if points.is_empty() {
                    *points = row.points;
                } else {
                    points.extend(row.points);
                }
            }
        }
        for (k, &t) in grid.iter().enumerate() {
            self.order.extend_from_slice(&order[at[k]..at[k + 1]]);
            self.end_step(t);
        }
    }

    /// Moves the series' points where windows point into them: no step comes after.
    fn freeze(&mut self) {
        let series = self.series.iter_mut().map(|s| {
            let points = match &mut s.points {
                Points::Owned(points) => std::mem::take(points),
                Points::Selected { .. } => Vec::new(),
            };
            SelectedSeries { labels: s.labels.clone(), points: points.into() }
        });
        self.frozen = Some(Arc::new(series.collect()));
    }

    /// Whether every inner step of `w` was evaluated.
    fn covers(&self, w: &Window) -> bool {
        w.count() == 0 || self.runs.iter().any(|&(a, b)| a <= w.first && w.last() <= b)
    }

    /// The subquery's value over `w`, when every one of its inner steps was evaluated.
    fn window(&mut self, w: &Window) -> Option<Matrix> {
        if !self.covers(w) {
            return None;
        }
        let lo = self.times.partition_point(|&t| t < w.first);
        let hi = self.times.partition_point(|&t| t <= w.end);
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.seen.iter_mut().for_each(|g| *g = 0);
            self.generation = 1;
        }
        self.seen.resize(self.series.len(), 0);
        let (all, source) = (&self.series, self.frozen.as_ref()?);
        let mut series = Vec::new();
        if lo < hi {
            for &i in &self.order[self.starts[lo]..self.starts[hi]] {
                let i = i as usize;
                if self.seen[i] == self.generation {
                    continue;
                }
                self.seen[i] = self.generation;
                let (s, points) = (&all[i], &source[i].points);
                let from = points.partition_point(|p| p.t < w.first);
                let to = points.partition_point(|p| p.t <= w.end);
                series.push(M {
                    labels: s.labels.clone(),
                    points: Points::Selected { series: i, range: from..to },
                    drop_name: s.drop_name,
                });
            }
        }
        Some(Matrix { series, start: w.start, end: w.end, source: Some(Arc::clone(source)) })
    }
}

impl<'a> Evaluator<'a> {
    /// The range and the step of `sq`, its step the default where it has none.
    pub(super) fn subquery_range_step(&self, sq: &SubqueryExpr) -> EResult<(i64, i64)> {
        let range = self.positive_ms(&sq.range, "subquery range")?;
        let step = match &sq.step {
            Some(s) => self.positive_ms(s, "subquery step")?,
            None => self.opts.default_subquery_step_ms,
        };
        Ok((range, step))
    }

    /// The window of `sq` at outer time `t`.
    pub(super) fn subquery_window(&self, sq: &SubqueryExpr, t: Timestamp) -> EResult<Window> {
        let (range, step) = self.subquery_range_step(sq)?;
        let offset = self.offset_ms(sq.offset.as_ref())?;
        let end = self.at_ms(sq.at).unwrap_or(t) - offset;
        let start = end - range;
        // Inner steps sit on the absolute grid of multiples of `step`.
        let mut first = start.div_euclid(step) * step;
        let before_window = match self.opts.compat {
            Compat::Prometheus3 => first <= start,
            Compat::Prometheus2 => first < start,
        };
        if before_window {
            first += step;
        }
        Ok(Window { start, end, first, step })
    }

    /// `sq` at outer time `t`: cut from the inner steps evaluated for this run of
    /// outer steps ([`precompute_subquery`](Self::precompute_subquery)), else evaluated
    /// now.
    pub(super) fn subquery(&mut self, sq: &SubqueryExpr, t: Timestamp) -> EResult<Matrix> {
        let w = self.subquery_window(sq, t)?;
        // Counted before anything is allocated: `[30d:1ms]` has 2.6e9 steps, more
        // than the sample limit however few series there are.
        if w.count() > self.opts.max_samples as i128 {
            return Err(EvalError::TooManySamples);
        }
        if let Some(m) = self.inner_steps.get_mut(&node_key(sq)).and_then(|inner| inner.window(&w)) {
            return Ok(m);
        }
        let steps: Vec<Timestamp> = w.steps().collect();
        let rows = if self.fast_paths { self.inner_rows(sq, &steps)? } else { None };
        if let Some(mut rows) = rows {
            // Its series in the order they first appear in the window, as the steps'
            // vectors bring them (a stable sort: a step's in their order). They differ:
            // a selection's series, or a call's whose names stay or differ.
            rows.sort_by_key(|row| row.steps.first().copied());
            let series = rows.into_iter().map(|row| M {
                labels: row.labels,
                points: Points::Owned(row.points),
                drop_name: row.drop_name,
            });
            return Ok(Matrix { series: series.collect(), start: w.start, end: w.end, source: None });
        }
        let mut inner = InnerSteps::default();
        self.evaluate_inner(sq, &steps, w.step, &mut inner, false)?;
        Ok(Matrix { series: inner.series, start: w.start, end: w.end, source: None })
    }

    /// Adds the inner expression of `sq` at each of `steps` (`step` apart) to `inner`;
    /// if `to_cut`, stops once a cut from it could differ from the step-by-step path's.
    fn evaluate_inner(
        &mut self,
        sq: &SubqueryExpr,
        steps: &[Timestamp],
        step: i64,
        inner: &mut InnerSteps,
        to_cut: bool,
    ) -> EResult<()> {
        for (t, value) in self.eval_steps(&sq.expr, steps, step, &|_: &mut Evaluator<'a>, _, v| Ok(v))? {
            inner.push(t, value, self.delayed)?;
            if to_cut && inner.uncut {
                break;
            }
        }
        Ok(())
    }

    /// The inner expression of `sq` at `grid`, series by series, when it is a plain
    /// instant selector or a call sliding over a plain range selector (which
    /// [`sliding`](super::sliding) computes series by series anyway): the values the
    /// step-by-step path's vectors hold, each step's in their order, without a vector a
    /// step. `None` for other expressions.
    fn inner_rows(&mut self, sq: &SubqueryExpr, grid: &[Timestamp]) -> EResult<Option<Vec<Row>>> {
        if grid.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut rows = Rows::default();
        let done =
            match sq.expr.unparen() {
                Expr::VectorSelector(vs) => self
                    .latest_each(vs, grid, |s, i, p| rows.take(s.n, || (s.labels(), false), grid, i, p.v))?,
                // Label sets that collide are an error of the step-by-step path.
                Expr::Call(c) if slides_over_selection(c) && self.distinct_outputs(c, grid)? => self
                    .slide_each(c, grid, true, |s, i, v| {
                        rows.take(s.n, || (s.labels(), s.drop_name), grid, i, v)
                    })?,
                _ => false,
            };
        Ok(done.then_some(rows.0))
    }

    /// Adds [`inner_rows`](Self::inner_rows) to `inner`; false, and nothing added, where
    /// there are none.
    fn inner_series(
        &mut self,
        sq: &SubqueryExpr,
        grid: &[Timestamp],
        inner: &mut InnerSteps,
    ) -> EResult<bool> {
        let Some(rows) = self.inner_rows(sq, grid)? else { return Ok(false) };
        inner.push_rows(grid, rows, self.delayed);
        Ok(true)
    }

    /// The inner steps of `sq` as series for a range function to slide over at `steps`
    /// (outer times), evaluated for them here unless they were: `None` when they are
    /// not ([`precompute_subquery`](Self::precompute_subquery) declined), or when some
    /// series have names still to drop (delayed name removal) and others not. Each
    /// window is then the one
    /// [`subquery`](Self::subquery) cuts, its series those with points in it, in the
    /// same order where the inner steps are [`growing`](InnerSteps::growing).
    pub(super) fn subquery_source(
        &mut self,
        sq: &SubqueryExpr,
        steps: &[Timestamp],
    ) -> EResult<Option<Source>> {
        let Ok(windows) = steps.iter().map(|&t| self.subquery_window(sq, t)).collect::<EResult<Vec<_>>>()
        else {
            return Ok(None);
        };
        // A window past the sample limit is never covered: its run would be too.
        let key = node_key(sq);
        let covered = |ev: &Self| {
            let inner = ev.inner_steps.get(&key);
            inner.is_some_and(|inner| windows.iter().all(|w| inner.covers(w)))
        };
        if !covered(self) {
            // Inner steps there already, for these steps, were declined.
            if self.inner_steps.contains_key(&key) {
                return Ok(None);
            }
            self.precompute_subquery(sq, steps, true)?;
            if !covered(self) {
                return Ok(None);
            }
        }
        let Some(inner) = self.inner_steps.get(&key) else { return Ok(None) };
        let Some(series) = &inner.frozen else { return Ok(None) };
        // Each series' name goes or stays at every inner step (or the steps were not
        // kept): the same for all, or step by step.
        let names_dropped = inner.series.first().is_some_and(|s| s.drop_name);
        if inner.series.iter().any(|s| s.drop_name != names_dropped) {
            return Ok(None);
        }
        Ok(Some(Source {
            series: Arc::clone(series),
            range: self.positive_ms(&sq.range, "subquery range")?,
            offset: self.offset_ms(sq.offset.as_ref())?,
            in_order: inner.growing,
            names_dropped,
        }))
    }

    /// Evaluates the inner steps of `sq` for all of `steps` (outer times) at once, for
    /// [`subquery`](Self::subquery) to cut from when their windows overlap enough, or,
    /// if `sliding`, for a range function to slide over ([`subquery_source`]). An error
    /// of an inner step comes out here, before the outer steps' other errors: the query
    /// fails either way, maybe naming another cause. Declined, it leaves empty inner
    /// steps (which cut no window: none is frozen), so that it is not asked again for
    /// these steps.
    ///
    /// [`subquery_source`]: Self::subquery_source
    pub(super) fn precompute_subquery(
        &mut self,
        sq: &SubqueryExpr,
        steps: &[Timestamp],
        sliding: bool,
    ) -> EResult<()> {
        // One step gains nothing from shared inner steps but what sliding over them
        // saves (a part of a range query split over many cores may be one step).
        if steps.is_empty() || (steps.len() < 2 && !sliding) {
            return Ok(());
        }
        self.inner_steps.insert(node_key(sq), InnerSteps::default());
        // A window in error is reported by the step-by-step path, at its step.
        let Ok(windows) = steps.iter().map(|&t| self.subquery_window(sq, t)).collect::<EResult<Vec<_>>>()
        else {
            return Ok(());
        };
        // Outer times ascend, and so do the windows: overlapping or adjacent ones make
        // one run of the grid.
        let mut runs: Vec<(Timestamp, Timestamp)> = Vec::new();
        let (mut each, mut widest) = (0i128, 0i128);
        for w in &windows {
            let count = w.count();
            if count == 0 || count > self.opts.max_samples as i128 {
                continue;
            }
            each += count;
            widest = widest.max(count);
            match runs.last_mut() {
                Some((_, b)) if w.first <= *b + w.step => *b = (*b).max(w.last()),
                _ => runs.push((w.first, w.last())),
            }
        }
        let step = windows[0].step;
        let total: i128 = runs.iter().map(|&(a, b)| i128::from((b - a) / step + 1)).sum();
        // Holding the run's windows at once costs memory (up to a block of steps' windows
        // where they barely overlap): only worth it when it at least halves the work, or,
        // to slide over, when it holds at most twice a window (the step-by-step path holds
        // one; a last block of two steps, say, halves nothing).
        // Windows that tile the steps (a minute every minute) or barely overlap make one
        // run and save few inner steps or none, but held, a range function slides over
        // them instead of building a row per series and window: a plain selector's are
        // held, within a budget.
        let tiled = sliding
            && runs.len() == 1
            && match sq.expr.unparen() {
                Expr::VectorSelector(vs) => {
                    i128::try_from(self.selected(vs).len()).unwrap_or(i128::MAX).saturating_mul(total)
                        <= TILED_POINTS
                }
                _ => false,
            };
        let worth = total * 2 <= each || (sliding && total <= 2 * widest) || tiled;
        if !worth || total > self.opts.max_samples as i128 {
            return Ok(());
        }
        let mut inner = InnerSteps::default();
        for &(a, b) in &runs {
            let grid: Vec<Timestamp> = (0..=(b - a) / step).map(|i| a + i * step).collect();
            if !self.inner_series(sq, &grid, &mut inner)? {
                self.evaluate_inner(sq, &grid, step, &mut inner, true)?;
            }
            if inner.uncut {
                return Ok(());
            }
        }
        inner.runs = runs;
        inner.freeze();
        self.inner_steps.insert(node_key(sq), inner);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{InnerSteps, Window};
    use crate::eval::{Engine, EngineOptions};
    use crate::labels::Labels;
    use crate::storage::MemoryStore;
    use crate::value::{Value, STALE_NAN_BITS};

    /// A window cut from the shared inner steps, or slid over (the range functions of
    /// `sliding`), holds its series in the order they first appear in it, as the
    /// step-by-step path has them; `topk` keeps the first of equal values, so the order
    /// shows. Both stores have series that leave and come back: in the first, `b` is
    /// seen first over the whole run, but at 540 s `a` comes first in the window (450 s,
    /// 540 s]; in the second, `a` comes first at every step it is at, yet after its gap
    /// `b` comes first in the windows that begin in it.
    #[test]
    fn a_cut_window_keeps_the_order_of_the_step_by_step_path() {
        let (a, b) = (
            Labels::from_pairs([("__name__", "x"), ("s", "a")]),
            Labels::from_pairs([("__name__", "x"), ("s", "b")]),
        );
        let stale = f64::from_bits(STALE_NAN_BITS);
        let mut returns_late = MemoryStore::new();
        for t in (0..=100_000).step_by(15_000) {
            returns_late.append(&b, t, 1.0);
        }
        returns_late.append(&b, 105_000, stale);
        for t in (465_000..=900_000).step_by(15_000) {
            returns_late.append(&b, t, 1.0);
        }
        for t in (300_000..=900_000).step_by(15_000) {
            returns_late.append(&a, t, 1.0);
        }
        let mut first_leaves = MemoryStore::new();
        for t in (0..=900_000).step_by(15_000) {
            first_leaves.append(&b, t, 1.0);
            if !(200_000..400_000).contains(&t) {
                first_leaves.append(&a, t, 1.0);
            }
        }
        first_leaves.append(&a, 200_000, stale);
        let engine = Engine::new(EngineOptions::default());
        for st in [&returns_late, &first_leaves] {
            for q in ["topk(1, last_over_time(x[2m:30s]))", "bottomk(1, max_over_time(x[1m:30s] offset 30s))"]
            {
                let Value::Matrix(range) = engine.range_query(st, q, 0, 900_000, 30_000).unwrap().value
                else {
                    panic!("{q}: not a matrix")
                };
                for t in (0..=900_000).step_by(30_000) {
                    let Value::Vector(want) = engine.instant_query(st, q, t).unwrap().value else {
                        panic!("{q}: not a vector")
                    };
                    let want: Vec<String> = want.iter().map(|s| s.labels.to_string()).collect();
                    let got: Vec<String> = range
                        .iter()
                        .filter(|s| s.points.iter().any(|p| p.t == t))
                        .map(|s| s.labels.to_string())
                        .collect();
                    assert_eq!(got, want, "{q} at {t}");
                }
            }
        }
        let Value::Vector(at) =
            engine.instant_query(&returns_late, "topk(1, last_over_time(x[2m:30s]))", 540_000).unwrap().value
        else {
            panic!("not a vector")
        };
        assert_eq!(at[0].labels.to_string(), r#"{__name__="x", s="a"}"#);
        let Value::Vector(at) =
            engine.instant_query(&first_leaves, "topk(1, last_over_time(x[2m:30s]))", 480_000).unwrap().value
        else {
            panic!("not a vector")
        };
        assert_eq!(at[0].labels.to_string(), r#"{__name__="x", s="b"}"#);
    }

    /// Windows an hour apart, a minute long: holding their inner steps together would
    /// hold 32 windows where the step-by-step path holds one, so they are not shared,
    /// to slide over or not; two of them are, to slide over (no more than twice a
    /// window).
    #[test]
    fn inner_steps_of_windows_far_apart_are_not_held_together() {
        let mut st = MemoryStore::new();
        let labels = Labels::from_pairs([("__name__", "x")]);
        for t in (0..=40 * 3_600_000).step_by(15_000) {
            st.append(&labels, t, 1.0);
        }
        let (start, step) = (3_600_000, 3_600_000);
        for (last, sliding, held) in [(32, true, false), (32, false, false), (2, true, true)] {
            let end = start + (last - 1) * step;
            let inner = precomputed(&st, "max_over_time(x[1m:15s])", (start, end, step), sliding);
            assert_eq!(inner.frozen.is_some(), held, "{last} steps, sliding {sliding}");
        }
    }

    /// Windows that tile the steps (a minute every minute) save no inner step, but a
    /// plain selector's are held for a range function to slide over, with the answers
    /// of the step-by-step path; not to cut from, nor for other expressions.
    #[test]
    fn windows_that_tile_the_steps_are_held_to_slide_over() {
        let mut st = MemoryStore::new();
        for s in ["a", "b", "c"] {
            let labels = Labels::from_pairs([("__name__", "x"), ("s", s)]);
            for t in (0..=7_200_000).step_by(15_000) {
                // A reset every 20 minutes, at another time per series.
                let v = ((t + s.len() as i64 * 400_000) % 1_200_000) as f64 / 1000.0;
                st.append(&labels, t, v);
            }
        }
        let (start, end, step) = (600_000, 6_600_000, 60_000);
        for (q, sliding, held) in [
            ("rate(x[1m:15s])", true, true),
            ("rate(x[1m:15s])", false, false),
            ("max_over_time(rate(x[1m])[1m:15s])", true, false),
        ] {
            let inner = precomputed(&st, q, (start, end, step), sliding);
            assert_eq!(inner.frozen.is_some(), held, "{q}, sliding {sliding}");
        }
        let engine = Engine::new(EngineOptions::default());
        for q in ["sum(rate(x[1m:15s]))", "rate(x[1m:15s] offset 30s)", "max_over_time(x[2m:1m])"] {
            let expr = crate::parse(q).unwrap();
            let answer = |fast| engine.eval_with(&st, &expr, (start, end, step), fast).map(|r| r.value);
            assert_eq!(format!("{:?}", answer(true)), format!("{:?}", answer(false)), "{q}");
        }
    }

    /// The inner steps that [`Evaluator::precompute_subquery`] evaluates for the
    /// subquery argument of the call `q` over the steps of `start..=end` every `step`.
    ///
    /// [`Evaluator::precompute_subquery`]: super::Evaluator::precompute_subquery
    fn precomputed(
        st: &MemoryStore,
        q: &str,
        (start, end, step): (i64, i64, i64),
        sliding: bool,
    ) -> InnerSteps {
        let expr = crate::parse(q).unwrap();
        let crate::Expr::Call(c) = &expr else { panic!("{q}: not a call") };
        let crate::Expr::Subquery(sq) = &c.args[0] else { panic!("{q}: not a subquery") };
        let engine = Engine::default();
        let mut ev = engine.evaluator(start, end, step);
        let mut planned = Vec::new();
        ev.plan(&expr, start, end, &mut planned).unwrap();
        ev.select_all(st, planned).unwrap();
        let steps: Vec<i64> = (start..=end).step_by(step as usize).collect();
        ev.precompute_subquery(sq, &steps, sliding).unwrap();
        ev.inner_steps.remove(&super::node_key(sq)).unwrap()
    }

    /// Inner steps without samples are not kept: a subquery of nothing keeps no step (a
    /// two-week one at 30 s steps had filled in 40k of them, 7 ms a range query), and
    /// one of a rate over a series with a gap keeps only the steps that have samples,
    /// its windows still what the step-by-step path gives.
    #[test]
    fn inner_steps_without_samples_are_not_kept() {
        let (a, b) = (
            Labels::from_pairs([("__name__", "x"), ("s", "a")]),
            Labels::from_pairs([("__name__", "x"), ("s", "b")]),
        );
        let mut st = MemoryStore::new();
        for t in (0..=900_000).step_by(15_000) {
            if !(200_000..500_000).contains(&t) {
                st.append(&a, t, t as f64);
            }
            if t >= 600_000 {
                st.append(&b, t, 1.0);
            }
        }
        let engine = Engine::default();
        let (start, end, step) = (300_000, 900_000, 60_000);
        let steps: Vec<i64> = (start..=end).step_by(step as usize).collect();
        // Each query with its inner step, how many inner steps its windows hold, and how
        // many of those have samples.
        for (q, inner_step, grid, kept) in [
            // Two weeks before 300 s (left open) to 900 s at 30 s.
            ("max_over_time(rate(nothing[1m])[2w:30s])", 30_000, 40_340, 0),
            // Windows are open on the left: inner steps from 15 s to 900 s. Rates of `a`
            // from 15 s (two samples) to 225 s (the last two before its gap) and from
            // 525 s on; `b`'s, from 615 s, come at steps kept anyway.
            ("max_over_time(rate(x[1m])[5m:15s])", 15_000, 60, 15 + 26),
        ] {
            let inner = precomputed(&st, q, (start, end, step), true);
            let evaluated: i64 = inner.runs.iter().map(|&(a, b)| (b - a) / inner_step + 1).sum();
            assert!(inner.frozen.is_some(), "{q}: not held");
            assert_eq!(evaluated, grid, "{q}: inner steps evaluated");
            assert_eq!(inner.times.len(), kept, "{q}: {:?}", inner.times);
            assert!(inner.starts.windows(2).all(|w| w[0] < w[1]), "{q}: a step without samples");
            // `a` alone before and after its gap, then `a` and `b`: still in index order.
            assert!(inner.growing, "{q}: not growing");
            let Value::Matrix(range) = engine.range_query(&st, q, start, end, step).unwrap().value else {
                panic!("{q}: not a matrix")
            };
            for &t in &steps {
                let Value::Vector(want) = engine.instant_query(&st, q, t).unwrap().value else {
                    panic!("{q}: not a vector")
                };
                let want: Vec<(String, u64)> =
                    want.iter().map(|s| (s.labels.to_string(), s.v.to_bits())).collect();
                let got: Vec<(String, u64)> = range
                    .iter()
                    .filter_map(|s| {
                        s.points.iter().find(|p| p.t == t).map(|p| (s.labels.to_string(), p.v.to_bits()))
                    })
                    .collect();
                assert_eq!(got, want, "{q} at {t}");
            }
        }
    }

    #[test]
    fn a_window_shorter_than_its_step_may_hold_no_inner_step() {
        let w = Window { start: 3, end: 8, first: 10, step: 10 };
        assert_eq!(w.count(), 0);
        assert_eq!(w.steps().count(), 0);
        let w = Window { start: -2, end: 3, first: 0, step: 10 };
        assert_eq!(w.steps().collect::<Vec<_>>(), vec![0]);
    }
}
