//! Parser of Prometheus' promqltest scripts (the `*.test` files of
//! `promql/promqltest/testdata`), following `promql/promqltest/test.go` and the series
//! grammar of `promql/parser`.
//!
//! A script is a list of commands, separated by blank lines:
//!
//! - `clear` deletes all data;
//! - `load <interval>` / `load_with_nhcb <interval>` and one series per line,
//!   `<labels> <values…>`;
//! - `eval instant at <time> <query>` / `eval range from <t> to <t> step <d> <query>`
//!   (and the deprecated `eval_fail`, `eval_warn`, `eval_info`, `eval_ordered`), followed
//!   by `expect …` lines and the expected result.
//!
//! Lines are trimmed; a line starting with `#` counts as a blank line (so, as in
//! Prometheus, a comment also ends a block). Times are Prometheus durations after Unix
//! time 0 (`5m`, `1h30m`, or `0`), in milliseconds here.
//!
//! Native histogram values (`{{…}}`) are recognized but not decoded: the series is
//! flagged with `has_histograms` and those slots carry no float. Start-timestamp lines
//! (`metric@st …`) are recognized and reported through `Command::Load::unsupported`.
//!
//! ```
//! use promql::promqltest::script::{parse_script, Command, ExpectedResult};
//! let script = parse_script("load 1m\n  up{job=\"a\"} 1+1x2\n\neval instant at 2m up\n  up{job=\"a\"} 3\n")
//!     .unwrap();
//! let Command::Load { series, .. } = &script.commands[0] else { panic!() };
//! assert_eq!(series[0].points.len(), 3);
//! assert_eq!(series[0].points[2].t, 120_000);
//! let Command::Eval(eval) = &script.commands[1] else { panic!() };
//! assert!(matches!(&eval.result, ExpectedResult::Vector(s) if s[0].values == [Some(3.0)]));
//! ```

use crate::ast::{Expr, MatchOp};
use crate::lexer::{duration_ms, number_value, unquote};
use crate::value::{stale_marker, Point, Timestamp};
use crate::Labels;

/// Most value slots one series line may expand to (`_x…` and `…xN` included); a
/// guard against runaway repetition counts.
const MAX_SLOTS_PER_LINE: u64 = 10_000_000;

/// A parsed promqltest script.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// The commands, in file order.
    pub commands: Vec<Command>,
}

/// One command of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A `load <interval>` (or `load_with_nhcb <interval>`) block.
    Load {
        /// 1-based line of the command.
        line: usize,
        /// The interval between value slots, in milliseconds.
        interval_ms: i64,
        /// `load_with_nhcb`: Prometheus also derives native histograms with custom
        /// buckets from the classic `_bucket`/`_count`/`_sum` series (not represented).
        with_nhcb: bool,
        /// The series, in first-definition order; a label set defined twice keeps the
        /// position of its first line and the values of its last.
        series: Vec<LoadSeries>,
        /// Set when the block uses something this model does not represent
        /// (start-timestamp `@st` lines); says what and where. The float samples are
        /// still complete.
        unsupported: Option<String>,
    },
    /// `clear`: delete all loaded data.
    Clear {
        /// 1-based line of the command.
        line: usize,
    },
    /// `eval…`.
    Eval(Eval),
}

/// One series line of a `load` block.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSeries {
    /// 1-based line of the (last) definition.
    pub line: usize,
    /// The series labels, metric name included.
    pub labels: Labels,
    /// The float samples: slot k is at time k·interval; `_` slots and native histogram
    /// slots have no point; `stale` is a [`stale_marker`].
    pub points: Vec<Point>,
    /// The line has native histogram values (`{{…}}`), which are not in `points`.
    pub has_histograms: bool,
}

/// An `eval` command.
#[derive(Debug, Clone, PartialEq)]
pub struct Eval {
    /// 1-based line of the command.
    pub line: usize,
    /// The PromQL expression, as written (not validated here).
    pub query: String,
    /// Instant or range query, and when.
    pub kind: EvalKind,
    /// The query must fail (`expect fail …`, or `eval_fail` with optional
    /// `expected_fail_message`/`expected_fail_regexp`), with an error matching this.
    pub expect_fail: Option<MessageMatch>,
    /// Annotation expectations, in line order. `eval_warn`/`eval_info` add a `Warn`/`Info`
    /// expectation matching any message. When empty, annotations are not checked.
    pub annotations: Vec<AnnotationExpectation>,
    /// `eval_ordered` or `expect ordered`: the instant vector must be in line order.
    pub ordered: bool,
    /// The expected result.
    pub result: ExpectedResult,
}

/// When an eval runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalKind {
    /// `eval instant at <time>`.
    Instant {
        /// The evaluation time (ms). With `expect range vector`, this is the end of that
        /// range, as Prometheus' runner evaluates such queries there (in the corpus it
        /// always equals the written time).
        at: Timestamp,
    },
    /// `eval range from <start> to <end> step <step>` (ms; `end ≥ start`; the step is
    /// not checked to be positive).
    Range {
        /// First step.
        start: Timestamp,
        /// Last possible step.
        end: Timestamp,
        /// Step width.
        step: i64,
    },
}

/// A time range with a step, all in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeRange {
    start: Timestamp,
    end: Timestamp,
    step: i64,
}

/// How an error or annotation message must look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageMatch {
    /// Any message.
    Any,
    /// Exactly this text (already whitespace-trimmed, compared as is).
    Exact(String),
    /// An unanchored regular expression (Go RE2 syntax; checked to compile here).
    Regex(String),
}

impl MessageMatch {
    /// Whether `message` matches. An invalid regex (impossible after parsing) matches
    /// nothing.
    pub fn matches(&self, message: &str) -> bool {
        match self {
            MessageMatch::Any => true,
            MessageMatch::Exact(m) => m == message,
            MessageMatch::Regex(re) => regex::Regex::new(re).is_ok_and(|re| re.is_match(message)),
        }
    }
}

/// One `expect warn|info|no_warn|no_info` line (or the implied one of `eval_warn` /
/// `eval_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationExpectation {
    /// Which kind.
    pub kind: AnnotationKindExpect,
    /// The message matcher (meaningless for `NoWarn`/`NoInfo`, but kept).
    pub message: MessageMatch,
}

/// The kind of an annotation expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnotationKindExpect {
    /// `expect warn`: some warning matches; if any `warn` line exists, every warning
    /// must match one of them.
    Warn,
    /// `expect info`: likewise for info annotations.
    Info,
    /// `expect no_warn`: no warnings.
    NoWarn,
    /// `expect no_info`: no info annotations.
    NoInfo,
}

/// The expected result of an eval.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpectedResult {
    /// No result lines: an empty vector or matrix (or no check at all when the eval
    /// expects a failure).
    Empty,
    /// A bare number line: a scalar.
    Scalar(f64),
    /// `expect string "…"`: a string.
    String(String),
    /// Series lines of an instant query: one value per series (or none, if the line
    /// has no values).
    Vector(Vec<ExpectedSeries>),
    /// A range vector: the series lines of a range query, or of an instant query with
    /// `expect range vector from <start> to <end> step <step>` (then possibly no series).
    /// Value i of a series is at `start + i·step` ([`Eval::slot_timestamp`]).
    Matrix {
        /// The expected series.
        series: Vec<ExpectedSeries>,
        /// Time of the first value (ms).
        start: Timestamp,
        /// Last possible time (ms); Prometheus fails an eval whose series have values
        /// past it.
        end: Timestamp,
        /// Time between values (ms).
        step: i64,
    },
}

/// One expected series line.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedSeries {
    /// 1-based line.
    pub line: usize,
    /// The series labels.
    pub labels: Labels,
    /// The expected values by slot; `None` is `_` (no value at that step) — or, when
    /// `has_histograms`, possibly a native histogram slot.
    pub values: Vec<Option<f64>>,
    /// The line has native histogram values (`{{…}}`), not represented in `values`.
    pub has_histograms: bool,
}

impl Eval {
    /// The time of expected value `i`: `start + i·step` for a range vector result (or a
    /// range query), else the instant evaluation time. Saturating.
    pub fn slot_timestamp(&self, i: usize) -> Timestamp {
        let (start, step) = match (&self.result, self.kind) {
            (ExpectedResult::Matrix { start, step, .. }, _) => (*start, *step),
            (_, EvalKind::Range { start, step, .. }) => (start, step),
            (_, EvalKind::Instant { at }) => return at,
        };
        let i = i64::try_from(i).unwrap_or(i64::MAX);
        start.saturating_add(i.saturating_mul(step))
    }

    /// Whether an instant eval expects a range vector (`expect range vector`).
    pub fn expects_range_vector(&self) -> bool {
        matches!((self.kind, &self.result), (EvalKind::Instant { .. }, ExpectedResult::Matrix { .. }))
    }

    /// Whether any expected series has native histogram values.
    pub fn has_histograms(&self) -> bool {
        match &self.result {
            ExpectedResult::Vector(s) | ExpectedResult::Matrix { series: s, .. } => {
                s.iter().any(|s| s.has_histograms)
            }
            _ => false,
        }
    }
}

/// A script syntax error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ScriptError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a promqltest script.
///
/// Deviations from Prometheus' runner, none of which the corpus exercises: queries
/// are not parsed; range `eval` lines are split into words (Prometheus' greedy regex
/// could split a query containing ` to ` differently); hexadecimal float scalar lines
/// are rejected; combining a scalar, string or series result in one eval, or two
/// specific failure-message matchers, is an error rather than a runtime oddity.
pub fn parse_script(text: &str) -> Result<Script, ScriptError> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                ""
            } else {
                l
            }
        })
        .collect();
    let mut commands = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        let word = l.split([' ', '\t']).next().unwrap_or("").to_ascii_lowercase();
        let (command, last) = if word == "clear" {
            (Command::Clear { line: i + 1 }, i)
        } else if word.starts_with("load") {
            parse_load(&lines, i)?
        } else if word.starts_with("eval") {
            let (eval, last) = parse_eval(&lines, i)?;
            (Command::Eval(eval), last)
        } else {
            return Err(error(i, format!("invalid command {l:?}")));
        };
        commands.push(command);
        i = last + 1;
    }
    Ok(Script { commands })
}

/// An error at 0-based line index `i`.
fn error(i: usize, message: impl Into<String>) -> ScriptError {
    ScriptError { line: i + 1, message: message.into() }
}

/// Parses `load` at `lines[i]` and its series; returns the index of its last line.
fn parse_load(lines: &[&str], i: usize) -> Result<(Command, usize), ScriptError> {
    let l = lines[i];
    let invalid = || error(i, "invalid load command. (load[_with_nhcb] <step:duration>)");
    let (with_nhcb, rest) = match l.strip_prefix("load_with_nhcb") {
        Some(rest) => (true, rest),
        None => (false, l.strip_prefix("load").ok_or_else(invalid)?),
    };
    if !rest.starts_with([' ', '\t']) {
        return Err(invalid());
    }
    let step = rest.trim();
    let interval_ms =
        parse_duration(step).map_err(|e| error(i, format!("invalid step definition {step:?}: {e}")))?;
    let mut series: Vec<LoadSeries> = Vec::new();
    let mut unsupported: Option<String> = None;
    // A `metric@st …` line waiting for its sample line: (line index, labels).
    let mut pending_st: Option<(usize, Labels)> = None;
    let mut j = i;
    while j + 1 < lines.len() && !lines[j + 1].is_empty() {
        j += 1;
        let def = lines[j];
        if let Some(st_labels) = parse_st_line(def).map_err(|e| error(j, e))? {
            if let Some((p, _)) = pending_st {
                return Err(error(p, "@st line has no following sample line"));
            }
            if unsupported.is_none() {
                unsupported =
                    Some(format!("line {}: start timestamps (`@st` lines) are not supported", j + 1));
            }
            pending_st = st_labels.map(|labels| (j, labels));
            continue;
        }
        let (labels, slots) = parse_series_desc(def).map_err(|e| error(j, e))?;
        if let Some((p, st_labels)) = pending_st.take() {
            if st_labels != labels {
                return Err(error(p, "@st metric does not match the following sample line metric"));
            }
        }
        let mut points = Vec::new();
        let mut has_histograms = false;
        let mut t: Timestamp = 0;
        for (k, slot) in slots.iter().enumerate() {
            if k > 0 {
                t = t.checked_add(interval_ms).ok_or_else(|| error(j, "sample timestamp out of range"))?;
            }
            match *slot {
                Slot::Value(v) => points.push(Point { t, v }),
                Slot::Omitted => {}
                Slot::Histogram => has_histograms = true,
            }
        }
        let new = LoadSeries { line: j + 1, labels, points, has_histograms };
        match series.iter_mut().find(|s| s.labels == new.labels) {
            Some(existing) => *existing = new,
            None => series.push(new),
        }
    }
    if let Some((p, _)) = pending_st {
        return Err(error(p, "@st line has no following sample line"));
    }
    Ok((Command::Load { line: i + 1, interval_ms, with_nhcb, series, unsupported }, j))
}

/// If `def` is a start-timestamp line (`metric@st <offsets…>` or a bare `@st <offsets…>`),
/// its labels (`None` for the bare form); the offsets are checked only loosely.
fn parse_st_line(def: &str) -> Result<Option<Option<Labels>>, String> {
    let Some(space) = def.find([' ', '\t']) else { return Ok(None) };
    let Some(metric) = def[..space].strip_suffix("@st") else { return Ok(None) };
    let offsets = def[space..].trim();
    for item in offsets.split_whitespace() {
        let ok = item.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'*' | b'+' | b'-'));
        if !ok {
            return Err(format!("invalid @st sequence: invalid ST item {item:?}"));
        }
    }
    if metric.is_empty() {
        return Ok(Some(None));
    }
    let (labels, rest) = split_series_labels(metric)?;
    if !rest.is_empty() {
        return Err(format!("invalid @st line metric {metric:?}"));
    }
    Ok(Some(Some(labels)))
}

/// What an `eval_*` suffix adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvalModifier {
    None,
    Fail,
    Warn,
    Info,
    Ordered,
}

/// The words of an `expect` line's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpectType {
    Ordered,
    Fail,
    Annotation(AnnotationKindExpect),
}

/// Parses the `eval` at `lines[i]` and its body; returns the index of its last line.
fn parse_eval(lines: &[&str], i: usize) -> Result<(Eval, usize), ScriptError> {
    let l = lines[i];
    let invalid = || {
        error(
            i,
            "invalid evaluation command. Must be either 'eval[_fail|_warn|_info|_ordered] instant at \
             <offset:duration> <query>' or 'eval[_fail|_warn|_info] range from <from> to <to> step \
             <step> <query>'",
        )
    };
    let (command, rest) = split_word(l).ok_or_else(invalid)?;
    let modifier = match command {
        "eval" => EvalModifier::None,
        "eval_fail" => EvalModifier::Fail,
        "eval_warn" => EvalModifier::Warn,
        "eval_info" => EvalModifier::Info,
        "eval_ordered" => EvalModifier::Ordered,
        _ => return Err(invalid()),
    };
    let time = |text: &str, what: &str| {
        parse_duration(text).map_err(|e| error(i, format!("invalid {what} definition {text:?}: {e}")))
    };
    let (kind, query) = match split_word(rest) {
        Some(("instant", rest)) => {
            let ("at", rest) = split_word(rest).ok_or_else(invalid)? else { return Err(invalid()) };
            let (at, query) = split_word(rest).ok_or_else(invalid)?;
            (EvalKind::Instant { at: time(at, "timestamp")? }, query.trim())
        }
        Some(("range", rest)) if modifier != EvalModifier::Ordered => {
            let mut words = [""; 6];
            let mut rest = rest;
            for w in &mut words {
                (*w, rest) = split_word(rest).ok_or_else(invalid)?;
            }
            let [kw_from, from, kw_to, to, kw_step, step] = words;
            if (kw_from, kw_to, kw_step) != ("from", "to", "step") {
                return Err(invalid());
            }
            let TimeRange { start, end, step } = parse_range(from, to, step).map_err(|e| error(i, e))?;
            (EvalKind::Range { start, end, step }, rest.trim())
        }
        _ => return Err(invalid()),
    };
    if query.is_empty() {
        return Err(invalid());
    }

    let mut eval = Eval {
        line: i + 1,
        query: query.to_owned(),
        kind,
        expect_fail: (modifier == EvalModifier::Fail).then_some(MessageMatch::Any),
        annotations: Vec::new(),
        ordered: modifier == EvalModifier::Ordered,
        result: ExpectedResult::Empty,
    };
    let mut range_vector: Option<TimeRange> = None;
    let mut series: Vec<ExpectedSeries> = Vec::new();
    let mut scalar: Option<(usize, f64)> = None;
    let mut string: Option<(usize, String)> = None;
    let mut expect_fail_lines = 0;

    let mut j = i;
    while j + 1 < lines.len() && !lines[j + 1].is_empty() {
        j += 1;
        let def = lines[j];
        let err = |message: String| error(j, message);

        if modifier == EvalModifier::Fail {
            if let Some(message) = def.strip_prefix("expected_fail_message") {
                let message = message.trim();
                if !message.is_empty() {
                    merge_fail(&mut eval.expect_fail, MessageMatch::Exact(message.to_owned()))
                        .map_err(err)?;
                }
                break;
            }
            if let Some(pattern) = def.strip_prefix("expected_fail_regexp") {
                let pattern = pattern.trim();
                check_regex(pattern)
                    .map_err(|e| err(format!("invalid regexp '{pattern}' for expected_fail_regexp: {e}")))?;
                merge_fail(&mut eval.expect_fail, MessageMatch::Regex(pattern.to_owned())).map_err(err)?;
                break;
            }
        }

        if def.starts_with("expect range vector") {
            let range = parse_expect_range(def).map_err(err)?;
            let TimeRange { start, end, step } = range;
            match eval.kind {
                // As in Prometheus, the directive overrides a range eval's range.
                EvalKind::Range { .. } => eval.kind = EvalKind::Range { start, end, step },
                EvalKind::Instant { .. } => {
                    eval.kind = EvalKind::Instant { at: end };
                    range_vector = Some(range);
                }
            }
            continue;
        }

        if def.starts_with("expect string") {
            let literal = def.strip_prefix("expect string ").and_then(go_unquote).ok_or_else(|| {
                err("expected string literal not valid - a correctly quoted string literal is required"
                    .into())
            })?;
            string = Some((j, literal));
            continue;
        }

        if def.split(' ').next() == Some("expect") {
            let (expect, message) = parse_expect(def).map_err(err)?;
            match expect {
                ExpectType::Ordered => eval.ordered = true,
                ExpectType::Fail => {
                    expect_fail_lines += 1;
                    if expect_fail_lines > 1 {
                        return Err(err(
                            "invalid expect lines, multiple expect fail lines are not allowed".into()
                        ));
                    }
                    merge_fail(&mut eval.expect_fail, message).map_err(err)?;
                }
                ExpectType::Annotation(kind) => {
                    eval.annotations.push(AnnotationExpectation { kind, message });
                    let has = |k: AnnotationKindExpect| eval.annotations.iter().any(|a| a.kind == k);
                    if has(AnnotationKindExpect::Info) && has(AnnotationKindExpect::NoInfo) {
                        return Err(err(
                            "invalid expect lines, info and no_info cannot be used together".into()
                        ));
                    }
                    if has(AnnotationKindExpect::Warn) && has(AnnotationKindExpect::NoWarn) {
                        return Err(err(
                            "invalid expect lines, warn and no_warn cannot be used together".into()
                        ));
                    }
                }
            }
            continue;
        }

        if let Some(v) = go_parse_number(def) {
            // As in Prometheus, a scalar line ends the block.
            scalar = Some((j, v));
            break;
        }

        let (labels, slots) = parse_series_desc(def).map_err(err)?;
        let is_instant = matches!(eval.kind, EvalKind::Instant { .. });
        if slots.len() > 1 && is_instant && range_vector.is_none() {
            return Err(err("expecting multiple values in instant evaluation not allowed. consider using \
                 'expect range vector' directive to enable a range vector result for an instant query"
                .into()));
        }
        let has_histograms = slots.iter().any(|s| matches!(s, Slot::Histogram));
        let values = slots
            .iter()
            .map(|s| match *s {
                Slot::Value(v) => Some(v),
                Slot::Omitted | Slot::Histogram => None,
            })
            .collect();
        let expected = ExpectedSeries { line: j + 1, labels, values, has_histograms };
        match series.iter_mut().find(|s| s.labels == expected.labels) {
            Some(existing) => *existing = expected,
            None => series.push(expected),
        }
    }

    match modifier {
        EvalModifier::Warn => eval
            .annotations
            .push(AnnotationExpectation { kind: AnnotationKindExpect::Warn, message: MessageMatch::Any }),
        EvalModifier::Info => eval
            .annotations
            .push(AnnotationExpectation { kind: AnnotationKindExpect::Info, message: MessageMatch::Any }),
        _ => {}
    }

    let mixed = |line: usize| error(line, "an eval can expect only one of: a scalar, a string, series");
    eval.result = match (scalar, string) {
        (Some(_), Some((line, _))) => return Err(mixed(line)),
        (Some((line, _)), None) | (None, Some((line, _))) if !series.is_empty() || range_vector.is_some() => {
            return Err(mixed(line));
        }
        (Some((_, v)), None) => ExpectedResult::Scalar(v),
        (None, Some((_, s))) => ExpectedResult::String(s),
        (None, None) => match (eval.kind, range_vector) {
            (EvalKind::Instant { .. }, Some(TimeRange { start, end, step })) => {
                ExpectedResult::Matrix { series, start, end, step }
            }
            _ if series.is_empty() => ExpectedResult::Empty,
            (EvalKind::Range { start, end, step }, _) => ExpectedResult::Matrix { series, start, end, step },
            (EvalKind::Instant { .. }, None) => ExpectedResult::Vector(series),
        },
    };
    Ok((eval, j))
}

/// Adds a failure-message matcher to what is already expected.
fn merge_fail(current: &mut Option<MessageMatch>, new: MessageMatch) -> Result<(), String> {
    match current {
        None | Some(MessageMatch::Any) => *current = Some(new),
        Some(_) if new == MessageMatch::Any => {}
        Some(_) => return Err("only one failure message or pattern is supported per eval".into()),
    }
    Ok(())
}

/// `expect <type> [msg:|regex: <text>]`.
fn parse_expect(def: &str) -> Result<(ExpectType, MessageMatch), String> {
    let invalid =
        || "invalid expect statement, must match `expect <type> <match_type>: <string>` format".to_owned();
    let rest = def.strip_prefix("expect").ok_or_else(invalid)?;
    let (word, rest) = split_word(rest).ok_or_else(invalid)?;
    let expect = match word {
        "ordered" => ExpectType::Ordered,
        "fail" => ExpectType::Fail,
        "warn" => ExpectType::Annotation(AnnotationKindExpect::Warn),
        "no_warn" => ExpectType::Annotation(AnnotationKindExpect::NoWarn),
        "info" => ExpectType::Annotation(AnnotationKindExpect::Info),
        "no_info" => ExpectType::Annotation(AnnotationKindExpect::NoInfo),
        _ => return Err(invalid()),
    };
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Ok((expect, MessageMatch::Any));
    }
    if let Some(message) = rest.strip_prefix("msg:").filter(|m| !m.is_empty()) {
        return Ok((expect, MessageMatch::Exact(message.trim().to_owned())));
    }
    if let Some(pattern) = rest.strip_prefix("regex:").filter(|m| !m.is_empty()) {
        let pattern = pattern.trim();
        check_regex(pattern).map_err(|_| format!("invalid regex {pattern} for {word}"))?;
        return Ok((expect, MessageMatch::Regex(pattern.to_owned())));
    }
    Err(invalid())
}

fn check_regex(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern).map(|_| ()).map_err(|e| e.to_string())
}

/// `expect range vector from <t> to <t> step <d>`.
fn parse_expect_range(def: &str) -> Result<TimeRange, String> {
    let invalid = || format!("invalid range vector definition {def:?}");
    let rest = def.strip_prefix("expect range vector").ok_or_else(invalid)?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    if !rest.starts_with(char::is_whitespace) {
        return Err(invalid());
    }
    match words[..] {
        ["from", from, "to", to, "step", step] => parse_range(from, to, step),
        _ => Err(invalid()),
    }
}

/// Start, end and step of a range, with `end ≥ start`.
fn parse_range(from: &str, to: &str, step: &str) -> Result<TimeRange, String> {
    let start =
        parse_duration(from).map_err(|e| format!("invalid start timestamp definition {from:?}: {e}"))?;
    let end = parse_duration(to).map_err(|e| format!("invalid end timestamp definition {to:?}: {e}"))?;
    if end < start {
        return Err(format!(
            "invalid test definition, end timestamp ({to}) is before start timestamp ({from})"
        ));
    }
    let step = parse_duration(step).map_err(|e| format!("invalid step definition {step:?}: {e}"))?;
    Ok(TimeRange { start, end, step })
}

/// Milliseconds of a Prometheus duration (`model.ParseDuration`): `0`, or units
/// `y w d h m s ms` in that order.
fn parse_duration(text: &str) -> Result<i64, String> {
    match text {
        "0" => Ok(0),
        "" => Err("empty duration string".into()),
        _ => duration_ms(text),
    }
}

/// The first word (up to a space or tab) of `s` after leading whitespace, and the rest.
fn split_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], &s[end..]))
}

/// Go's `strconv.Unquote`: a `"…"` or `'…'` literal with Go escapes (a `'…'` literal
/// holds one character), or a raw `` `…` `` literal.
fn go_unquote(s: &str) -> Option<String> {
    let quote = s.chars().next()?;
    if s.len() < 2 || !s.ends_with(quote) {
        return None;
    }
    let body = &s[1..s.len() - 1];
    match quote {
        '`' => (!body.contains('`')).then(|| body.replace('\r', "")),
        '"' | '\'' => {
            let bytes = body.as_bytes();
            let mut k = 0;
            while k < bytes.len() {
                match bytes[k] {
                    b'\\' => k += 2,
                    b'\n' => return None,
                    b if b == quote as u8 => return None,
                    _ => k += 1,
                }
            }
            if k > bytes.len() {
                return None; // The closing quote is escaped.
            }
            let text = unquote(s, 0).ok()?;
            (quote == '"' || text.chars().count() == 1).then_some(text)
        }
        _ => None,
    }
}

/// Go's `ParseInt(s, 0, 64)`, falling back to `ParseFloat(s, 64)`, as promqltest reads
/// a scalar result line. Hexadecimal floats are not supported.
fn go_parse_number(s: &str) -> Option<f64> {
    let (negative, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" {
        return Some(if negative { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if lower == "nan" {
        // Go accepts no sign on NaN.
        return (body.len() == s.len()).then_some(f64::NAN);
    }
    if body.is_empty() || !go_underscores_ok(body) {
        return None;
    }
    let digits: String = body.chars().filter(|&c| c != '_').collect();
    if let Some(n) = go_parse_uint(&digits) {
        let n = if negative { -i128::from(n) } else { i128::from(n) };
        if let Ok(n) = i64::try_from(n) {
            return Some(n as f64);
        }
    }
    // Decimal float: digits, one dot, an exponent with an optional sign.
    let b = digits.as_bytes();
    let well_formed = b.iter().enumerate().all(|(k, &c)| match c {
        b'0'..=b'9' | b'.' | b'e' | b'E' => true,
        b'+' | b'-' => k > 0 && matches!(b[k - 1], b'e' | b'E'),
        _ => false,
    });
    let v: f64 = if well_formed { digits.parse().ok()? } else { return None };
    Some(if negative { -v } else { v })
}

/// An unsigned integer literal with Go's base prefixes (`0x`, `0o`, `0b`, leading `0`
/// for octal), underscores already removed.
fn go_parse_uint(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Go's rule for `_` in number literals: only between digits (or after a base prefix).
fn go_underscores_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().all(|(k, &c)| {
        c != b'_'
            || (k > 0
                && k + 1 < b.len()
                && b[k - 1].is_ascii_alphanumeric()
                && b[k + 1].is_ascii_alphanumeric()
                && !matches!(b[k + 1], b'e' | b'E'))
    })
}

/// One value slot of a series line.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    /// `_`.
    Omitted,
    /// A float (a stale marker for `stale`).
    Value(f64),
    /// A native histogram (not decoded).
    Histogram,
}

/// A series description line: labels, then values.
fn parse_series_desc(def: &str) -> Result<(Labels, Vec<Slot>), String> {
    let (labels, rest) = split_series_labels(def)?;
    let slots = parse_values(rest)?;
    Ok((labels, slots))
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The label set at the start of a series line (`name`, `name{…}` or `{…}`) and the
/// rest of the line, which is empty or starts with whitespace.
fn split_series_labels(def: &str) -> Result<(Labels, &str), String> {
    let name_len = if def.starts_with(is_ident_start) {
        def.find(|c| !is_ident_char(c)).unwrap_or(def.len())
    } else {
        0
    };
    let name = &def[..name_len];
    let after_name = &def[name_len..];
    let braces_len = if after_name.starts_with('{') { braces_len(after_name)? } else { 0 };
    if name.is_empty() && braces_len == 0 {
        let found = def.chars().next().map_or("end of line".to_owned(), |c| format!("{c:?}"));
        return Err(format!("expected a metric name or label set at the start of a series, found {found}"));
    }
    let braces = &after_name[..braces_len];
    let rest = &after_name[braces_len..];
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return Err(format!("unexpected {:?} after the series labels", rest.chars().next().unwrap_or(' ')));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !braces.is_empty() {
        let parsed = crate::parser::parse_syntax(braces, crate::Features::all())
            .map_err(|e| format!("invalid label set {braces}: {e}"))?;
        let Expr::VectorSelector(vs) = parsed else {
            return Err(format!("invalid label set {braces}"));
        };
        for m in vs.matchers {
            if m.op != MatchOp::Equal {
                return Err(format!("label set {braces} may only use `=`"));
            }
            pairs.push((m.name, m.value));
        }
        if let Some(n) = vs.name {
            pairs.push((crate::METRIC_NAME.to_owned(), n));
        }
    }
    if !name.is_empty() {
        pairs.push((crate::METRIC_NAME.to_owned(), name.to_owned()));
    }
    Ok((Labels::from_pairs(pairs), rest))
}

/// Length of the `{…}` at the start of `s`, skipping quoted strings.
fn braces_len(s: &str) -> Result<usize, String> {
    let bytes = s.as_bytes();
    let mut k = 1;
    while k < bytes.len() {
        match bytes[k] {
            b'}' => return Ok(k + 1),
            b'{' => return Err("unexpected '{' inside a label set".into()),
            q @ (b'"' | b'\'' | b'`') => {
                k += 1;
                while k < bytes.len() && bytes[k] != q {
                    k += if bytes[k] == b'\\' && q != b'`' { 2 } else { 1 };
                }
                if k >= bytes.len() {
                    return Err("unterminated quoted string in label set".into());
                }
                k += 1;
            }
            _ => k += 1,
        }
    }
    Err("unclosed label set".into())
}

/// The values of a series line: whitespace-separated items, where a `{{…}}` histogram
/// may contain spaces.
fn parse_values(text: &str) -> Result<Vec<Slot>, String> {
    let mut slots = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let mut end = 0;
        while end < rest.len() {
            let tail = &rest[end..];
            if tail.starts_with("{{") {
                let close = tail.find("}}").ok_or("unclosed histogram description {{…}}")?;
                end += close + 2;
            } else if tail.starts_with(char::is_whitespace) {
                break;
            } else {
                end += tail.chars().next().map_or(1, char::len_utf8);
            }
        }
        let item = &rest[..end];
        parse_item(item, &mut slots).map_err(|e| format!("invalid series value {item:?}: {e}"))?;
        rest = rest[end..].trim_start();
    }
    Ok(slots)
}

/// Appends the slots of one value item.
fn parse_item(item: &str, slots: &mut Vec<Slot>) -> Result<(), String> {
    let mut push = |slot: Slot, n: u64| -> Result<(), String> {
        if slots.len() as u64 + n > MAX_SLOTS_PER_LINE {
            return Err(format!("more than {MAX_SLOTS_PER_LINE} values"));
        }
        slots.extend(std::iter::repeat_n(slot, n as usize));
        Ok(())
    };
    if item.starts_with("{{") {
        // `H`, `HxN`, `H+HxN` or `H-HxN`: one or N+1 histograms.
        let rest = skip_histogram(item)?;
        if rest.is_empty() {
            return push(Slot::Histogram, 1);
        }
        let rest = match rest.strip_prefix(['+', '-']) {
            Some(second) => skip_histogram(second)?,
            None => rest,
        };
        let n = parse_times(rest)?.ok_or("expected x<count> after the histograms")?;
        return push(Slot::Histogram, n.saturating_add(1));
    }
    if let Some(rest) = item.strip_prefix('_') {
        return match parse_times(rest)? {
            None => push(Slot::Omitted, 1),
            Some(n) => push(Slot::Omitted, n),
        };
    }
    let (first, rest) = series_value(item, true)?;
    if rest.is_empty() {
        return push(Slot::Value(first), 1);
    }
    if rest.starts_with('x') {
        let n = parse_times(rest)?.ok_or("expected x<count>")?;
        return push(Slot::Value(first), n.saturating_add(1));
    }
    if !rest.starts_with(['+', '-']) {
        return Err(format!("unexpected {rest:?}"));
    }
    // `v+dxN` / `v-dxN`: N+1 values by repeated addition, as Prometheus computes them.
    let (delta, rest) = series_value(rest, false)?;
    let n = parse_times(rest)?.ok_or("expected x<count> after the increment")?;
    if slots.len() as u64 + n >= MAX_SLOTS_PER_LINE {
        return Err(format!("more than {MAX_SLOTS_PER_LINE} values"));
    }
    let mut v = first;
    for _ in 0..=n {
        slots.push(Slot::Value(v));
        v += delta;
    }
    Ok(())
}

/// What follows the `}}` of the histogram description at the start of `s`.
fn skip_histogram(s: &str) -> Result<&str, String> {
    let body = s.strip_prefix("{{").ok_or("expected a histogram description {{…}}")?;
    let close = body.find("}}").ok_or("unclosed histogram description {{…}}")?;
    Ok(&body[close + 2..])
}

/// `xN` (the count N), or `None` for an empty string.
fn parse_times(s: &str) -> Result<Option<u64>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let digits = s.strip_prefix('x').ok_or_else(|| format!("unexpected {s:?}"))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid repetition count {digits:?}"));
    }
    digits.parse().map(Some).map_err(|e| format!("invalid repetition count {digits:?}: {e}"))
}

/// A value at the start of `s`: an optionally signed number (`Inf` and `NaN` included,
/// any case), or, if `allow_stale`, `stale`. Returns it and what follows.
fn series_value(s: &str, allow_stale: bool) -> Result<(f64, &str), String> {
    let (sign, body) = match s.as_bytes().first() {
        Some(b'+') => (1.0, &s[1..]),
        Some(b'-') => (-1.0, &s[1..]),
        _ => (0.0, s),
    };
    if body.starts_with(is_ident_start) {
        // A word, as Prometheus' lexer takes it (so `Infx2` is one unknown word).
        let len = body.find(|c| !is_ident_char(c)).unwrap_or(body.len());
        let (word, rest) = body.split_at(len);
        let v = match word.to_ascii_lowercase().as_str() {
            "inf" => f64::INFINITY,
            "nan" => f64::NAN,
            _ if word == "stale" && allow_stale && sign == 0.0 => return Ok((stale_marker(), rest)),
            _ => return Err(format!("unexpected {word:?}, expected a number or \"stale\"")),
        };
        return Ok((if sign < 0.0 { -v } else { v }, rest));
    }
    let len = scan_number(body).ok_or_else(|| format!("bad number syntax: {body:?}"))?;
    let (text, rest) = body.split_at(len);
    let v = number_value(text).ok_or_else(|| format!("bad number syntax: {text:?}"))?;
    Ok((if sign < 0.0 { -v } else { v }, rest))
}

/// Length of the decimal number at the start of `s`, scanned like Prometheus' lexer in
/// a series description (no hexadecimal; `_` between digits; followed by `x` or a
/// non-alphanumeric character).
fn scan_number(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let at = |k: usize| b.get(k).copied();
    let mut k = 0;
    if at(k) == Some(b'.') {
        k += 1;
    }
    if at(k).is_some_and(|c| c.is_ascii_digit()) {
        k += 1;
    }
    let (mut dot, mut exponent) = (false, false);
    while let Some(c) = at(k) {
        match c {
            b'0'..=b'9' => k += 1,
            b'.' => {
                if dot {
                    return None;
                }
                dot = true;
                k += 1;
                if matches!(at(k), Some(b'_' | b'.')) {
                    return None;
                }
            }
            b'e' | b'E' => {
                if exponent {
                    return None;
                }
                exponent = true;
                k += 1;
                if matches!(at(k), Some(b'+' | b'-')) {
                    k += 1;
                }
                if matches!(at(k), None | Some(b'.' | b'_' | b'e' | b'E')) {
                    return None;
                }
            }
            b'_' => {
                k += 1;
                if matches!(at(k), None | Some(b'.' | b'_' | b'e' | b'E')) {
                    return None;
                }
            }
            _ => break,
        }
    }
    if k == 0 {
        return None;
    }
    match at(k) {
        Some(b'x') | None => Some(k),
        Some(c) if !(c.is_ascii_alphanumeric() || c == b'_') => Some(k),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::is_stale_marker;

    fn values(text: &str) -> Vec<Slot> {
        parse_values(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn floats(text: &str) -> Vec<Option<f64>> {
        values(text)
            .into_iter()
            .map(|s| match s {
                Slot::Value(v) => Some(v),
                Slot::Omitted => None,
                Slot::Histogram => panic!("histogram in {text:?}"),
            })
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn only_eval(script: &str) -> Eval {
        let parsed = parse_script(script).unwrap_or_else(|e| panic!("{e}"));
        match parsed.commands.into_iter().next() {
            Some(Command::Eval(e)) => e,
            other => panic!("expected an eval, got {other:?}"),
        }
    }

    fn err_of(script: &str) -> ScriptError {
        match parse_script(script) {
            Ok(s) => panic!("expected an error, parsed {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn series_values_notation() {
        assert_eq!(floats("1 2 3"), [Some(1.0), Some(2.0), Some(3.0)]);
        assert_eq!(floats("  1\t 2  "), [Some(1.0), Some(2.0)]);
        assert_eq!(floats("_"), [None]);
        assert_eq!(floats("_x3"), [None, None, None]);
        assert_eq!(floats("_x0"), []);
        assert_eq!(floats("7x2"), [Some(7.0); 3]);
        assert_eq!(floats("1+2x3"), [Some(1.0), Some(3.0), Some(5.0), Some(7.0)]);
        assert_eq!(floats("10-2.5x2"), [Some(10.0), Some(7.5), Some(5.0)]);
        assert_eq!(floats("-1-1x1"), [Some(-1.0), Some(-2.0)]);
        assert_eq!(
            floats("+1 -2 .5 2. 1e3 1.5e-1 1_000"),
            [Some(1.0), Some(-2.0), Some(0.5), Some(2.0), Some(1000.0), Some(0.15), Some(1000.0)]
        );
        assert_eq!(
            floats("Inf -Inf +inf"),
            [Some(f64::INFINITY), Some(f64::NEG_INFINITY), Some(f64::INFINITY)]
        );
        assert!(floats("NaN")[0].is_some_and(f64::is_nan));
        assert!(floats("nan")[0].is_some_and(f64::is_nan));
        assert_eq!(floats("Inf+1x1"), [Some(f64::INFINITY); 2]);
        assert_eq!(floats("1 _ 3"), [Some(1.0), None, Some(3.0)]);
        // No hexadecimal in series: `0x10` is 0 repeated 11 times.
        assert_eq!(floats("0x10"), [Some(0.0); 11]);
        // A leading 0 is octal, as Go's ParseInt(s, 0, 64) reads it.
        assert_eq!(floats("010"), [Some(8.0)]);
        assert_eq!(floats(""), []);
    }

    #[test]
    fn repeated_addition_rounding() {
        let v = floats("0+0.1x10");
        let mut acc = 0.0;
        for (k, got) in v.iter().enumerate() {
            assert_eq!(got.map(f64::to_bits), Some(f64::to_bits(acc)), "slot {k}");
            acc += 0.1;
        }
        // Repeated addition is not multiplication: 0.1+0.1+0.1 != 0.3.
        assert_eq!(v[3], Some(0.30000000000000004));
        assert_eq!(
            floats("1-0.1x10")[10],
            Some(1.0 - 0.1 - 0.1 - 0.1 - 0.1 - 0.1 - 0.1 - 0.1 - 0.1 - 0.1 - 0.1)
        );
    }

    #[test]
    fn stale_and_histograms() {
        let v = values("1 stale 3");
        assert!(matches!(v[1], Slot::Value(x) if is_stale_marker(x)));
        let v = values("{{schema:0 sum:1 count:1 buckets:[1 2]}} 5 {{}}x2 {{count:1}}+{{count:1 sum:2}}x3 _");
        let kinds: Vec<&str> = v
            .iter()
            .map(|s| match s {
                Slot::Histogram => "h",
                Slot::Value(_) => "f",
                Slot::Omitted => "_",
            })
            .collect();
        assert_eq!(kinds.concat(), "hfhhhhhhh_");
        assert_eq!(values("{{ schema:0 }}-{{count:1}}x0").len(), 1);
    }

    #[test]
    fn series_value_errors() {
        for bad in [
            "1+2",
            "5m",
            "foo",
            "Infx2",
            "stalex2",
            "x3",
            "1x",
            "1x2.5",
            "1xx",
            "- 1",
            "1..2",
            "1e",
            "1__0",
            "{{schema:0",
            "{{}}+3x2",
            "{{}}y",
            "_3",
            "-stale",
            "1 2#",
            "1+stale x1",
        ] {
            assert!(parse_values(bad).is_err(), "{bad:?} should not parse: {:?}", parse_values(bad));
        }
    }

    #[test]
    fn series_labels() {
        let (l, rest) = split_series_labels(r#"metric{a="b"} 1"#).unwrap();
        assert_eq!(l, labels(&[("__name__", "metric"), ("a", "b")]));
        assert_eq!(rest, " 1");
        let (l, _) = split_series_labels(r#"{__name__="m", x="y"}"#).unwrap();
        assert_eq!(l, labels(&[("__name__", "m"), ("x", "y")]));
        assert_eq!(split_series_labels("{}").unwrap().0, Labels::empty());
        assert_eq!(split_series_labels("up").unwrap().0, labels(&[("__name__", "up")]));
        assert_eq!(split_series_labels("a:b_c 1").unwrap().0, labels(&[("__name__", "a:b_c")]));
        let (l, _) = split_series_labels(r#"{"foo.bar", "a.b"="x}"} 1"#).unwrap();
        assert_eq!(l, labels(&[("__name__", "foo.bar"), ("a.b", "x}")]));
        // Keywords are fine as metric names.
        assert_eq!(
            split_series_labels(r#"sum{by="x"}"#).unwrap().0,
            labels(&[("__name__", "sum"), ("by", "x")])
        );
        // The bare name wins over a `__name__` label.
        assert_eq!(split_series_labels(r#"a{__name__="b"}"#).unwrap().0, labels(&[("__name__", "a")]));
        for bad in [r#"m{a=~"b"}"#, r#"m {a="b"}"#, "m{a=\"b\"", "1 2", r#"m{a="b"}1"#, "{{}}"] {
            assert!(parse_series_desc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn load_block() {
        let script = "# comment\nload 5m\n  a{x=\"1\"} 1 _ 3\n  b 0+1x2\n  a{x=\"1\"} 9 stale\n\n\
                      load_with_nhcb 10s\n  h_bucket{le=\"1\"} {{count:1}} 1\n";
        let parsed = parse_script(script).unwrap();
        assert_eq!(parsed.commands.len(), 2);
        let Command::Load { line, interval_ms, with_nhcb, series, .. } = &parsed.commands[0] else {
            panic!()
        };
        assert_eq!((*line, *interval_ms, *with_nhcb), (2, 300_000, false));
        assert_eq!(series.len(), 2);
        // Redefinition replaces the earlier line.
        let a = &series[0];
        assert_eq!((a.line, a.points.len()), (5, 2));
        assert_eq!(a.points[0], Point { t: 0, v: 9.0 });
        assert!(a.points[1].t == 300_000 && is_stale_marker(a.points[1].v));
        let b = &series[1];
        assert_eq!(
            b.points.iter().map(|p| (p.t, p.v)).collect::<Vec<_>>(),
            [(0, 0.0), (300_000, 1.0), (600_000, 2.0)]
        );
        let Command::Load { with_nhcb, series, unsupported, .. } = &parsed.commands[1] else { panic!() };
        assert!(*with_nhcb && series[0].has_histograms);
        assert_eq!(series[0].points, [Point { t: 10_000, v: 1.0 }]);
        assert!(unsupported.is_none());
    }

    #[test]
    fn start_timestamp_lines() {
        let script = "load 1m\n  m{t=\"a\"}@st _ _ -30s-1mx2\n  m{t=\"a\"} _ _ 0+60x2\n  @st -1mx3\n  n 1\n";
        let parsed = parse_script(script).unwrap();
        let Command::Load { series, unsupported, .. } = &parsed.commands[0] else { panic!() };
        assert_eq!(series.len(), 2);
        assert!(unsupported.as_deref().is_some_and(|u| u.contains("line 2")));
        assert_eq!(series[0].points.len(), 3);
        assert_eq!(err_of("load 1m\n  m@st 0\n  n 1\n").line, 2);
        assert_eq!(err_of("load 1m\n  m 1\n  m@st 0\n").line, 3);
    }

    #[test]
    fn eval_headers() {
        let e = only_eval("eval instant at 5m sum(up)\n");
        assert_eq!((e.line, e.query.as_str()), (1, "sum(up)"));
        assert_eq!(e.kind, EvalKind::Instant { at: 300_000 });
        assert_eq!(e.result, ExpectedResult::Empty);
        assert_eq!(only_eval("eval instant at 0 1").kind, EvalKind::Instant { at: 0 });
        assert_eq!(only_eval("eval instant at 1h30m x").kind, EvalKind::Instant { at: 5_400_000 });
        let e = only_eval("eval range from 0 to 10m step 1m  rate(x[5m])  ");
        assert_eq!(e.kind, EvalKind::Range { start: 0, end: 600_000, step: 60_000 });
        assert_eq!(e.query, "rate(x[5m])");
        assert_eq!(e.slot_timestamp(3), 180_000);
        let e = only_eval("eval_fail instant at 1m foo\n");
        assert_eq!(e.expect_fail, Some(MessageMatch::Any));
        let e = only_eval("eval_warn range from 0 to 1m step 30s foo\n");
        assert_eq!(
            e.annotations,
            [AnnotationExpectation { kind: AnnotationKindExpect::Warn, message: MessageMatch::Any }]
        );
        let e = only_eval("eval_info instant at 1m foo\n");
        assert_eq!(e.annotations[0].kind, AnnotationKindExpect::Info);
        assert!(only_eval("eval_ordered instant at 1m sort(foo)\n").ordered);
        let e = only_eval(
            "eval_fail instant at 0 foo\n  expected_fail_message  vector cannot contain metrics \n",
        );
        assert_eq!(e.expect_fail, Some(MessageMatch::Exact("vector cannot contain metrics".into())));
        let e = only_eval("eval_fail instant at 0 foo\n  expected_fail_regexp vector .* metrics\n");
        assert_eq!(e.expect_fail, Some(MessageMatch::Regex("vector .* metrics".into())));
    }

    #[test]
    fn expect_lines() {
        let e = only_eval(
            "eval instant at 1m foo\n  expect fail msg: some error \n  expect warn\n  expect warn msg:w1\n  \
             expect info regex: ^bad (value|thing)$\n  expect ordered\n",
        );
        assert_eq!(e.expect_fail, Some(MessageMatch::Exact("some error".into())));
        assert_eq!(
            e.annotations,
            [
                AnnotationExpectation { kind: AnnotationKindExpect::Warn, message: MessageMatch::Any },
                AnnotationExpectation {
                    kind: AnnotationKindExpect::Warn,
                    message: MessageMatch::Exact("w1".into())
                },
                AnnotationExpectation {
                    kind: AnnotationKindExpect::Info,
                    message: MessageMatch::Regex("^bad (value|thing)$".into())
                },
            ]
        );
        assert!(e.ordered);
        assert!(e.annotations[2].message.matches("bad thing"));
        assert!(!e.annotations[1].message.matches("w1 "));
        let e = only_eval(
            "eval instant at 1m foo\n  expect no_warn\n  expect no_info\n  expect fail regex:a|b\n",
        );
        assert_eq!(
            e.annotations.iter().map(|a| a.kind).collect::<Vec<_>>(),
            [AnnotationKindExpect::NoWarn, AnnotationKindExpect::NoInfo]
        );
        assert_eq!(e.expect_fail, Some(MessageMatch::Regex("a|b".into())));

        // Results.
        let e = only_eval("eval instant at 1m 1+1\n  2\n");
        assert_eq!(e.result, ExpectedResult::Scalar(2.0));
        for (line, want) in
            [("-Inf", f64::NEG_INFINITY), ("+Inf", f64::INFINITY), ("0x10", 16.0), ("1e-3", 1e-3)]
        {
            let e = only_eval(&format!("eval instant at 1m x\n  {line}\n"));
            assert_eq!(e.result, ExpectedResult::Scalar(want), "{line}");
        }
        let e = only_eval("eval instant at 1m nan\n  NaN\n");
        assert!(matches!(e.result, ExpectedResult::Scalar(v) if v.is_nan()));
        let e = only_eval("eval instant at 1m \" Foo \"\n  expect string \" Foo \"\n");
        assert_eq!(e.result, ExpectedResult::String(" Foo ".into()));
        let e = only_eval("eval instant at 1m \"\"\n  expect string `a\\n`\n");
        assert_eq!(e.result, ExpectedResult::String("a\\n".into()));
        let e = only_eval("eval instant at 1m x\n  expect string \"a\\tb\"\n");
        assert_eq!(e.result, ExpectedResult::String("a\tb".into()));

        let e = only_eval("eval instant at 1m x\n  x{a=\"1\"} 5\n  {} _\n  x{a=\"2\"} {{count:1}}\n");
        let ExpectedResult::Vector(series) = &e.result else { panic!("{:?}", e.result) };
        assert_eq!(series.len(), 3);
        assert_eq!((series[0].line, series[0].values.as_slice()), (2, &[Some(5.0)][..]));
        assert_eq!(series[1].labels, Labels::empty());
        assert_eq!(series[1].values, [None]);
        assert!(series[2].has_histograms && e.has_histograms());

        let e = only_eval(
            "eval instant at 1m x[1m]\n  expect range vector from 10s to 1m step 10s\n  x{a=\"1\"} 1 2 _ 4\n",
        );
        assert!(e.expects_range_vector());
        assert_eq!(e.kind, EvalKind::Instant { at: 60_000 });
        assert_eq!(e.slot_timestamp(3), 40_000);
        let ExpectedResult::Matrix { series, start, end, step } = &e.result else { panic!("{:?}", e.result) };
        assert_eq!((*start, *end, *step), (10_000, 60_000, 10_000));
        assert_eq!(series[0].values, [Some(1.0), Some(2.0), None, Some(4.0)]);
        // With no series lines, an empty range vector is still expected.
        let e = only_eval("eval instant at 2m x[1m]\n  expect range vector from 1m to 2m step 1m\n");
        assert!(
            matches!(&e.result, ExpectedResult::Matrix { series, start: 60_000, .. } if series.is_empty())
        );

        let e = only_eval("eval range from 1m to 3m step 1m x\n  x 1x2\n  y _ 2\n");
        assert!(!e.expects_range_vector());
        let ExpectedResult::Matrix { series, start: 60_000, end: 180_000, step: 60_000 } = &e.result else {
            panic!("{:?}", e.result)
        };
        assert_eq!(series[0].values, [Some(1.0); 3]);
        assert_eq!(series[1].labels, labels(&[("__name__", "y")]));

        // Redefining an expected series replaces it.
        let e = only_eval("eval instant at 1m x\n  x 1\n  x 2\n");
        assert!(matches!(&e.result, ExpectedResult::Vector(s) if s.len() == 1 && s[0].values == [Some(2.0)]));
    }

    #[test]
    fn blocks_and_commands() {
        let script = "load 1m\n  a 1\n\nclear\nCLEAR\n\n eval instant at 1m a\n\t{} 1\n\n\
                      eval instant at 1m b\n  3\n";
        let parsed = parse_script(script).unwrap();
        let kinds: Vec<&str> = parsed
            .commands
            .iter()
            .map(|c| match c {
                Command::Load { .. } => "load",
                Command::Clear { .. } => "clear",
                Command::Eval(_) => "eval",
            })
            .collect();
        assert_eq!(kinds, ["load", "clear", "clear", "eval", "eval"]);
        assert!(matches!(parsed.commands[1], Command::Clear { line: 4 }));
        let Command::Eval(e) = &parsed.commands[3] else { panic!() };
        assert_eq!(e.line, 7);
    }

    #[test]
    fn errors_with_line_numbers() {
        let cases: &[(&str, usize, &str)] = &[
            ("load 5m\n  a 1\n\nfoo bar\n", 4, "invalid command"),
            ("\n\nload\n", 3, "invalid load command"),
            ("load_foo 1m\n", 1, "invalid load command"),
            ("load 5x\n", 1, "invalid step definition"),
            ("load 1m\n  a 1\n  b 1+1\n", 3, "invalid series value"),
            ("load 1m\n  a 1\n  {a=~\"x\"} 1\n", 3, "may only use `=`"),
            // A comment ends a block, as in Prometheus.
            ("load 1m\n  a 1\n# c\n  b 2\n", 4, "invalid command"),
            ("eval instant 5m x\n", 1, "invalid evaluation command"),
            ("eval instant at 5m\n", 1, "invalid evaluation command"),
            ("eval_ordered range from 0 to 1m step 1m x\n", 1, "invalid evaluation command"),
            ("eval_foo instant at 1m x\n", 1, "invalid evaluation command"),
            ("eval instant at -1m x\n", 1, "invalid timestamp definition"),
            ("eval range from 2m to 1m step 1m x\n", 1, "end timestamp (1m) is before start timestamp (2m)"),
            ("eval range from 0 to 1m step x y\n", 1, "invalid step definition"),
            ("eval instant at 1m x\n  x 1 2\n", 2, "expecting multiple values"),
            ("eval instant at 1m x\n  x 1\n  expect range vector from 0 to 1m\n", 3, "invalid range vector"),
            ("eval instant at 1m x\n  expect warn\n  expect no_warn\n", 3, "warn and no_warn"),
            ("eval instant at 1m x\n  expect info\n\n  expect no_info\n", 4, "invalid command"),
            ("eval instant at 1m x\n  expect no_info\n  expect info msg:a\n", 3, "info and no_info"),
            ("eval instant at 1m x\n  expect fail\n  expect fail\n", 3, "multiple expect fail"),
            ("eval instant at 1m x\n  expect fail regex: (\n", 2, "invalid regex"),
            ("eval instant at 1m x\n  expect warn msg:\n", 2, "invalid expect statement"),
            ("eval instant at 1m x\n  expect bogus\n", 2, "invalid expect statement"),
            ("eval instant at 1m x\n  expect string foo\n", 2, "expected string literal"),
            ("eval instant at 1m x\n  expect string\n", 2, "expected string literal"),
            ("eval_fail instant at 1m x\n  expected_fail_regexp (\n", 2, "invalid regexp"),
            // A scalar line ends the block.
            ("eval instant at 1m x\n  1\n  2\n", 3, "invalid command"),
            ("eval instant at 1m x\n  x 1\n  2\n", 3, "only one of"),
            ("eval instant at 1m x\n  1x\n", 2, "expected a metric name"),
        ];
        for &(script, line, message) in cases {
            let e = err_of(script);
            assert_eq!(e.line, line, "{script:?}: {e}");
            assert!(e.message.contains(message), "{script:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")));
        }
    }

    #[test]
    fn numbers_like_go() {
        assert_eq!(go_parse_number("12"), Some(12.0));
        assert_eq!(go_parse_number("-0x1F"), Some(-31.0));
        assert_eq!(go_parse_number("010"), Some(8.0));
        assert_eq!(go_parse_number("08"), Some(8.0));
        assert_eq!(go_parse_number("1_000"), Some(1000.0));
        assert_eq!(go_parse_number("12.34e+6"), Some(12_340_000.0));
        assert_eq!(go_parse_number("-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(go_parse_number("99999999999999999999"), Some(1e20));
        for bad in ["", "-", "-NaN", "1e", "1-2", "_1", "1_", "x", "stale", "{} 1", "1 2", "0x"] {
            assert_eq!(go_parse_number(bad).map(|_| ()), None, "{bad:?}");
        }
    }

    #[test]
    fn unquote_like_go() {
        assert_eq!(go_unquote(r#""a\"b""#).as_deref(), Some("a\"b"));
        assert_eq!(go_unquote("`a\\`").as_deref(), Some("a\\"));
        assert_eq!(go_unquote("'x'").as_deref(), Some("x"));
        for bad in ["\"", "\"a", "'ab'", r#""a"b""#, r#""a\""#, "`a`b`", "a"] {
            assert_eq!(go_unquote(bad), None, "{bad:?}");
        }
    }

    /// Every script of the corpus parses, with plausible totals.
    #[test]
    fn corpus_parses() {
        let dir = std::env::var("PROMQLTEST_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/promqltest").to_owned());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "test"))
            .collect();
        files.sort();
        assert_eq!(files.len(), 21, "{dir}");
        let (mut loads, mut clears, mut evals, mut ranges, mut scalars, mut strings) = (0, 0, 0, 0, 0, 0);
        let (mut fails, mut annotated, mut ordered, mut range_vectors, mut with_histograms) = (0, 0, 0, 0, 0);
        let (mut unsupported, mut nhcb, mut unparsable_queries) = (0, 0, 0);
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let script = parse_script(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for command in &script.commands {
                match command {
                    Command::Load { with_nhcb, unsupported: u, .. } => {
                        loads += 1;
                        nhcb += usize::from(*with_nhcb);
                        unsupported += usize::from(u.is_some());
                    }
                    Command::Clear { .. } => clears += 1,
                    Command::Eval(e) => {
                        evals += 1;
                        ranges += usize::from(matches!(e.kind, EvalKind::Range { .. }));
                        scalars += usize::from(matches!(e.result, ExpectedResult::Scalar(_)));
                        strings += usize::from(matches!(e.result, ExpectedResult::String(_)));
                        fails += usize::from(e.expect_fail.is_some());
                        annotated += usize::from(!e.annotations.is_empty());
                        ordered += usize::from(e.ordered);
                        range_vectors += usize::from(e.expects_range_vector());
                        with_histograms += usize::from(e.has_histograms());
                        if crate::parser::parse_syntax(&e.query, crate::Features::all()).is_err() {
                            unparsable_queries += 1;
                            eprintln!("{}:{}: query does not parse: {}", file.display(), e.line, e.query);
                        }
                    }
                }
            }
        }
        eprintln!(
            "loads {loads} (nhcb {nhcb}, unsupported {unsupported}), clears {clears}, evals {evals} \
             (range {ranges}, scalar {scalars}, string {strings}, fail {fails}, annotated {annotated}, \
             ordered {ordered}, range vector {range_vectors}, histograms {with_histograms}, \
             unparsable {unparsable_queries})"
        );
        assert_eq!(evals, 2214);
        assert_eq!(clears, 231);
        assert_eq!(loads, 310);
        assert_eq!(nhcb, 33);
        assert_eq!(ranges, 329);
        assert_eq!(strings, 5);
        assert_eq!(range_vectors, 5);
        assert!(unsupported >= 1);
        assert!(fails >= 20 && annotated >= 300 && ordered >= 20 && scalars >= 30, "implausible totals");
    }
}
