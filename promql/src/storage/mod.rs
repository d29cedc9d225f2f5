//! Where samples come from: the [`SampleSource`] plug point and [`MemoryStore`], the
//! in-memory reference source.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use regex::Regex;

use crate::ast::{MatchOp, Matcher};
use crate::labels::{Label, Labels};
use crate::value::{is_stale_marker, Point, Series, Timestamp};

mod write;
pub use write::write_openmetrics;

pub mod exposition;
pub mod fixture;
pub use exposition::{Dialect, ExpositionParser, LoadError, ParsedSample};
pub use fixture::{
    detect_file_format, detect_format, load_fixture, load_fixture_with_progress, load_reader, FixtureFormat,
    LoadStats,
};

/// A compiled label matcher.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Value or pattern as written.
    pub value: String,
    pattern: Option<Arc<Pattern>>,
}

impl LabelMatcher {
    /// Compiles a matcher; regexes are fully anchored and `.` matches newlines, as in
    /// Prometheus 3.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, regex::Error> {
        let pattern = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(go_pattern(value)?),
            _ => None,
        };
        Ok(LabelMatcher { name: name.to_owned(), op, value: value.to_owned(), pattern })
    }

    /// Compiles a matcher of the syntax tree.
    pub fn from_ast(m: &Matcher) -> Result<Self, regex::Error> {
        Self::new(&m.name, m.op, &m.value)
    }

    /// Whether a label value (empty for an absent label) matches.
    pub fn matches(&self, value: &str) -> bool {
        match (&self.op, &self.pattern) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(p)) => p.is_match(value),
            (MatchOp::NotRegex, Some(p)) => !p.is_match(value),
            _ => false,
        }
    }

    /// Every value an `=~` matcher accepts, when they are few (an alternation of
    /// values): selection then looks them up instead of trying each value of the label.
    fn literals(&self) -> Option<&HashSet<Box<str>>> {
        match (&self.op, self.pattern.as_deref()) {
            (MatchOp::Regex, Some(Pattern::Literals(set))) => Some(set),
            _ => None,
        }
    }
}

/// A regex matcher's compiled pattern. A pattern that matches a small, finite set of
/// strings (an alternation of values, as dashboards write for a multi-value variable;
/// `50[0-3]`; `https?`) is matched by looking the value up in that set: compiling a
/// long alternation into an automaton cost more than selecting a thousand series with
/// it (0.7 ms for 500 pod names), and a pattern over 1 KiB is compiled again at every
/// query. The set is read off the same syntax tree the `regex` crate would compile, so
/// both accept the same strings.
#[derive(Debug)]
pub(crate) enum Pattern {
    /// Every string the pattern matches, and no other.
    Literals(HashSet<Box<str>>),
    Regex(Regex),
}

impl Pattern {
    /// Whether the whole of `value` matches.
    pub(crate) fn is_match(&self, value: &str) -> bool {
        match self {
            Pattern::Literals(set) => set.contains(value),
            Pattern::Regex(re) => re.is_match(value),
        }
    }
}

/// The most strings a [`Pattern::Literals`] read off a syntax tree holds, and their
/// most bytes together; a pattern matching more is compiled (`(L|M){8}` of two long
/// literals would otherwise spell out hundreds of megabytes).
const MAX_LITERALS: usize = 4096;
const MAX_LITERAL_BYTES: usize = 64 << 10;

/// Whether `strings` are within [`MAX_LITERALS`] and [`MAX_LITERAL_BYTES`].
fn within_budget(strings: &[String]) -> bool {
    strings.len() <= MAX_LITERALS && bytes(strings) <= MAX_LITERAL_BYTES
}

/// The bytes of `strings` together.
fn bytes(strings: &[String]) -> usize {
    strings.iter().map(String::len).sum()
}

/// A matcher's pattern, compiled as Prometheus 3 compiles one: parsed alone, then
/// wrapped as [`go_regex`] wraps a pattern (unlike `label_replace`'s, a pattern whose
/// parentheses close the wrapping is refused, and a `\Q` without `\E` quotes to the
/// end of the pattern, not of the wrapping); kept the same way.
pub(crate) fn go_pattern(pattern: &str) -> Result<Arc<Pattern>, regex::Error> {
    static COMPILED: crate::memo::Memo<Arc<Pattern>> = crate::memo::Memo::new(16 << 10, 1 << 10);
    COMPILED.get_or_try(pattern, |p| {
        if let Some(values) = plain_alternation(p) {
            return Ok(Arc::new(Pattern::Literals(values.into_iter().map(String::into_boxed_str).collect())));
        }
        let anchored = matcher_pattern(p).map_err(regex::Error::Syntax)?;
        Ok(Arc::new(match finite_language(&anchored) {
            Some(set) => Pattern::Literals(set),
            None => Pattern::Regex(build_regex(&anchored)?),
        }))
    })
}

/// A matcher's pattern as Prometheus 3 reads it: translated and parsed alone, so that a
/// `\Q` without `\E` ends with the pattern, not in the wrapping; then wrapped in
/// `^(?s:…)$` for the caller to parse or compile. The error is the translation's or the
/// parser's message of the pattern alone.
pub(crate) fn matcher_pattern(pattern: &str) -> Result<String, String> {
    let alone = translate_go_pattern(pattern, false)?;
    regex_syntax::Parser::new().parse(&alone).map_err(|e| e.to_string())?;
    Ok(format!("^(?s:{alone})$"))
}

/// The values of a pattern made only of values separated by `|`, with punctuation
/// escaped by `\` as Go reads it (`10\.0\.0\.1|db-1`): a valid pattern that matches
/// exactly those strings, read without a syntax tree (parsing 500 pod names took the
/// `regex_syntax` parser 0.4 ms). `None` for a pattern with any other syntax.
pub(crate) fn plain_alternation(pattern: &str) -> Option<Vec<String>> {
    let mut values = vec![String::new()];
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '|' => values.push(String::new()),
            // Go takes any escaped ASCII punctuation as itself; letters and digits
            // after `\` are classes, assertions or codes.
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() => values.last_mut()?.push(e),
                _ => return None,
            },
            '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' => return None,
            c => values.last_mut()?.push(c),
        }
    }
    Some(values)
}

/// Every string the anchored pattern `^(?s:…)$` matches, if that is at most
/// [`MAX_LITERALS`] strings and its syntax tree shows them: literals, small classes,
/// alternations, groups, repetitions of at most eight. `None` for anything else, an
/// invalid pattern included (its compilation then reports the error); and for a
/// pattern with an anchor or a word boundary of its own, which a set of strings cannot
/// express (`a$b` matches nothing).
fn finite_language(anchored: &str) -> Option<HashSet<Box<str>>> {
    use regex_syntax::hir::{HirKind, Look};
    let hir = regex_syntax::Parser::new().parse(anchored).ok()?;
    let HirKind::Concat(parts) = hir.kind() else { return None };
    let (first, rest) = parts.split_first()?;
    let (last, middle) = rest.split_last()?;
    if !matches!(first.kind(), HirKind::Look(Look::Start)) || !matches!(last.kind(), HirKind::Look(Look::End))
    {
        return None;
    }
    let strings =
        middle.iter().try_fold(vec![String::new()], |heads, part| concat(heads, language(part)?))?;
    Some(strings.into_iter().map(String::into_boxed_str).collect())
}

/// The strings `hir` matches, if finite and at most [`MAX_LITERALS`] (with repeats).
fn language(hir: &regex_syntax::hir::Hir) -> Option<Vec<String>> {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Empty => Some(vec![String::new()]),
        HirKind::Literal(lit) if lit.0.len() <= MAX_LITERAL_BYTES => {
            Some(vec![String::from_utf8(lit.0.to_vec()).ok()?])
        }
        HirKind::Literal(_) => None,
        HirKind::Class(Class::Unicode(class)) => {
            let width: u64 =
                class.ranges().iter().map(|r| u64::from(r.end()) - u64::from(r.start()) + 1).sum();
            if width > MAX_LITERALS as u64 {
                return None;
            }
            Some(class.ranges().iter().flat_map(|r| r.start()..=r.end()).map(String::from).collect())
        }
        // Byte classes (`(?-u:…)`) may hold bytes that are no text on their own.
        HirKind::Class(Class::Bytes(_)) | HirKind::Look(_) => None,
        HirKind::Repetition(rep) => {
            let max = rep.max.filter(|&max| max <= 8)?;
            let once = language(&rep.sub)?;
            let mut out = Vec::new();
            let mut power = vec![String::new()];
            for n in 0..=max {
                if n >= rep.min {
                    out.extend(power.iter().cloned());
                    if !within_budget(&out) {
                        return None;
                    }
                }
                if n < max {
                    power = concat(power, once.clone())?;
                }
            }
            Some(out)
        }
        HirKind::Capture(capture) => language(&capture.sub),
        HirKind::Concat(parts) => {
            parts.iter().try_fold(vec![String::new()], |heads, part| concat(heads, language(part)?))
        }
        HirKind::Alternation(alternatives) => {
            let mut out = Vec::new();
            for alternative in alternatives {
                out.extend(language(alternative)?);
                if !within_budget(&out) {
                    return None;
                }
            }
            Some(out)
        }
    }
}

/// Each of `heads` followed by each of `tails`, if within [`within_budget`]'s bounds
/// (checked before the strings are made).
fn concat(heads: Vec<String>, tails: Vec<String>) -> Option<Vec<String>> {
    let total =
        bytes(&heads).checked_mul(tails.len())?.checked_add(bytes(&tails).checked_mul(heads.len())?)?;
    if heads.len().checked_mul(tails.len())? > MAX_LITERALS || total > MAX_LITERAL_BYTES {
        return None;
    }
    Some(heads.iter().flat_map(|h| tails.iter().map(move |t| format!("{h}{t}"))).collect())
}

/// Compiles a pattern the way Prometheus does: `^(?s:pattern)$`, read as Go reads it
/// ([`anchored_go_pattern`]).
///
/// Compiled patterns are kept ([`crate::memo::Memo`]: 16 KiB of patterns, each up to
/// 1 KiB), shared with their match caches: compiling `5..` costs more than the rest of
/// a one-series query, and a clone of a `Regex` would start a match cache of its own.
/// Since kept caches outlive queries, each is held to [`REGEX_DFA_CACHE`] bytes.
pub(crate) fn go_regex(pattern: &str) -> Result<Arc<Regex>, regex::Error> {
    static COMPILED: crate::memo::Memo<Arc<Regex>> = crate::memo::Memo::new(16 << 10, 1 << 10);
    COMPILED.get_or_try(pattern, |p| {
        let anchored = anchored_go_pattern(p).map_err(regex::Error::Syntax)?;
        build_regex(&anchored).map(Arc::new)
    })
}

/// The lazy DFA cache of a compiled pattern, per thread that uses it (the `regex`
/// crate's default is 2 MiB): label patterns need a few kilobytes; one that needs more
/// falls back to slower matching instead of holding memory in the pattern cache.
const REGEX_DFA_CACHE: usize = 256 << 10;

/// `^(?s:pattern)$` in the `regex` crate's syntax, read as Go reads it: Go's ASCII
/// classes and boundaries spelled out; `\<`, `\>`, `\Q…\E` and a `{` that starts no
/// repetition (`a{,3}`) taken literally; octal escapes (`\101`) as the characters;
/// a repetition after groups of flags (`a(?U)*`) of what is before them, with their
/// greed. An error for what only Go refuses: a repetition of a repetition (`a**`),
/// nested counts over 1000 copies (`(a{2}){600}`).
pub(crate) fn anchored_go_pattern(pattern: &str) -> Result<String, String> {
    translate_go_pattern(pattern, true)
}

/// [`anchored_go_pattern`] without the `^(?s:…)$` around it, if not `wrapped`.
/// Prometheus parses a matcher's pattern alone, so that one whose parentheses close
/// the wrapping (`a)|(b`) is refused there, though `label_replace` takes it.
fn translate_go_pattern(pattern: &str, wrapped: bool) -> Result<String, String> {
    let mut translated = String::with_capacity(pattern.len() + 16);
    if wrapped {
        translated.push_str("^(?s:");
    }
    let mut chars = pattern.chars().peekable();
    // The repetition operator just read (with its `?` of laziness), if the last token
    // was one: Go refuses another right after it.
    let mut last_repeat: Option<String> = None;
    // Groups of flags only, `(?i)`, held back: a repetition right after them repeats
    // what came before them in Go, so they go after the repetition.
    let mut held_flags: Option<Flags> = None;
    // Whether `U` (ungreedy) is set, per open group (the wrapping's too), as flags end
    // with their group: a repetition written before held flags must have its greed
    // under theirs.
    let mut ungreedy = vec![false; if wrapped { 2 } else { 1 }];
    // Held flags once their repetition is written, with the `U` the translation has
    // before them: written when something else comes (another repetition repeats the
    // one before them in Go, `a(?i)+(?m)?`).
    let mut pending: Option<(String, bool)> = None;
    // Where the translation ended after the last repetition written: a `?` written
    // right after it would make it lazy, where Go repeats it (`a+(?i)?`, `a+\Q\E?`).
    let mut repeat_end = None;
    // Repetitions with a count of 2 or more: Go limits the product of nested ones.
    let mut counted = 0;
    // Whether a `\Q` without `\E` quoted the rest, the wrapping's end included.
    let mut quoted_to_end = false;
    // Whether no `:]` is left to close a `[:name:]` in a class.
    let mut no_colon_bracket = false;
    while let Some(c) = chars.next() {
        if c == '(' {
            // Groups of flags only, read as one run (each once: a pattern of many).
            let run = flag_run(chars.clone())?;
            if !run.groups.is_empty() {
                advance(&mut chars, run.read);
                last_repeat = None;
                if run.repeats {
                    held_flags = Some(Flags::joined(run.groups));
                    continue;
                }
                write_pending(&mut translated, &mut pending);
                // Their flags hold to the end of the group around them.
                for flags in run.groups {
                    translated.push_str(&flags.text);
                    if let (Some(u), Some(state)) = (flags.ungreedy, ungreedy.last_mut()) {
                        *state = u;
                    }
                }
                continue;
            }
            write_pending(&mut translated, &mut pending);
            let outer = ungreedy.last().copied().unwrap_or(false);
            match flag_group(chars.clone())? {
                Some((flags, _)) => {
                    advance(&mut chars, flags.read);
                    translated.push_str(&flags.text);
                    ungreedy.push(flags.ungreedy.unwrap_or(outer));
                    last_repeat = None;
                    continue;
                }
                None => {
                    // A capture: named as Go names them (a name Go takes and the
                    // `regex` crate does not, `(?P<1>`, is a plain capture, numbered
                    // the same).
                    if let Some(skip) = group_name(chars.clone())? {
                        advance(&mut chars, skip);
                    }
                    ungreedy.push(outer);
                }
            }
        } else if c == ')' && ungreedy.len() > 1 {
            ungreedy.pop();
        }
        let repeat = match c {
            '*' | '+' | '?' => Some(c.to_string()),
            '{' if let Some((min, max)) = repetition_counts(chars.clone()) => {
                // Go refuses counts over 1000, and a maximum below the minimum.
                if min > 1000 || max.is_some_and(|max| max > 1000 || max < min) {
                    let op: String =
                        std::iter::once('{').chain(chars.clone().take_while(|&c| c != '}')).collect();
                    return Err(format!("invalid repeat count: `{op}}}`"));
                }
                if min >= 2 || max.is_some_and(|max| max >= 2) {
                    counted += 1;
                }
                let mut op = String::from('{');
                for c in chars.by_ref() {
                    op.push(c);
                    if c == '}' {
                        break;
                    }
                }
                Some(op)
            }
            _ => None,
        };
        if let Some(mut op) = repeat {
            if let Some(last) = last_repeat.take() {
                return Err(format!("invalid nested repetition operator: `{last}{op}`"));
            }
            // A repetition of a repetition (Go's, after flags or an empty quote).
            if op == "?" && repeat_end == Some(translated.len()) {
                translated.push_str("{0,1}");
            } else {
                translated.push_str(&op);
            }
            let lazy = chars.next_if_eq(&'?').is_some();
            if lazy {
                op.push('?');
            }
            // Go reads the greed under the held flags, the `regex` crate under what the
            // translation has where the repetition is written.
            let before = ungreedy.last().copied().unwrap_or(false);
            let written = pending.as_ref().map_or(before, |&(_, u)| u);
            let after = held_flags.as_ref().and_then(|f| f.ungreedy).unwrap_or(before);
            if lazy ^ written ^ after {
                translated.push('?');
            }
            repeat_end = Some(translated.len());
            if let Some(flags) = held_flags.take() {
                pending.get_or_insert_with(|| (String::new(), written)).0.push_str(&flags.text);
                if let Some(state) = ungreedy.last_mut() {
                    *state = after;
                }
            }
            last_repeat = Some(op);
            continue;
        }
        last_repeat = None;
        write_pending(&mut translated, &mut pending);
        match c {
            '[' => {
                translate_go_class(&mut chars, &mut translated, &mut no_colon_bracket)?;
                continue;
            }
            '{' => {
                translated.push_str("\\{");
                continue;
            }
            _ => {}
        }
        if c != '\\' {
            translated.push(c);
            continue;
        }
        match chars.next() {
            Some(e) if let Some(class) = perl_class(e) => translated.push_str(class),
            Some('b') => translated.push_str("(?-u:\\b)"),
            Some('B') => translated.push_str("(?-u:\\B)"),
            // Word boundaries to the `regex` crate, the characters themselves to Go.
            Some(c @ ('<' | '>')) => translated.push(c),
            // `\x{e9}`, `\p{Greek}`: braces that are no repetition.
            Some(e @ ('x' | 'p' | 'P')) if chars.peek() == Some(&'{') => {
                translated.push('\\');
                chars.next();
                copy_braced_escape(e, &mut chars, &mut translated);
            }
            // Literal text up to `\E`. Without one, Go's literal runs to the end of the
            // wrapped pattern, the `)$` of `^(?s:…)$` included, as Prometheus wraps it.
            Some('Q') => {
                let mut literal = String::new();
                let mut ended = false;
                while let Some(c) = chars.next() {
                    if c == '\\' && chars.next_if_eq(&'E').is_some() {
                        ended = true;
                        break;
                    }
                    literal.push(c);
                }
                if !ended {
                    literal.push_str(if wrapped { ")$" } else { "" });
                    quoted_to_end = true;
                }
                translated.push_str(&regex::escape(&literal));
                if quoted_to_end {
                    break;
                }
            }
            Some(first @ '0'..='7') if starts_octal(first, &mut chars) => {
                let code = octal(first, &mut chars);
                translated.push_str(&format!("\\x{{{code:x}}}"));
            }
            Some(other) => {
                translated.push('\\');
                translated.push(other);
            }
            None => translated.push('\\'),
        }
    }
    write_pending(&mut translated, &mut pending);
    if wrapped && !quoted_to_end {
        translated.push_str(")$");
    }
    if counted >= 2 {
        check_repeat_sizes(&translated)?;
    }
    Ok(translated)
}

/// Go's limit on nested counted repetitions: no more than 1000 copies of what the
/// innermost repeats (`(a{2}){600}` is refused), checked for each counted repetition
/// in the order Go parses them, so that the same one is named.
fn check_repeat_sizes(translated: &str) -> Result<(), String> {
    use regex_syntax::ast::{Ast, RepetitionKind, RepetitionRange};
    // The copies a repetition makes as Go counts them: `None` for `{0}` (Go does not
    // look inside), 1 for `*`, `+` and `?` (which Go does not count).
    fn copies(kind: &RepetitionKind) -> Option<u32> {
        match kind {
            RepetitionKind::Range(RepetitionRange::Exactly(0) | RepetitionRange::Bounded(_, 0)) => None,
            RepetitionKind::Range(
                RepetitionRange::Exactly(n) | RepetitionRange::AtLeast(n) | RepetitionRange::Bounded(_, n),
            ) => Some(*n),
            _ => Some(1),
        }
    }
    fn within(ast: &Ast, n: u32) -> bool {
        match ast {
            Ast::Repetition(rep) => {
                copies(&rep.op.kind).is_none_or(|m| m <= n && within(&rep.ast, n / m.max(1)))
            }
            Ast::Group(group) => within(&group.ast, n),
            Ast::Alternation(alt) => alt.asts.iter().all(|a| within(a, n)),
            Ast::Concat(concat) => concat.asts.iter().all(|a| within(a, n)),
            _ => true,
        }
    }
    fn check(ast: &Ast, text: &str) -> Result<(), String> {
        match ast {
            Ast::Repetition(rep) => {
                check(&rep.ast, text)?;
                if copies(&rep.op.kind).is_some_and(|m| m >= 2) && !within(ast, 1000) {
                    let op = &text[rep.op.span.start.offset..rep.op.span.end.offset];
                    return Err(format!("invalid repeat count: `{op}`"));
                }
                Ok(())
            }
            Ast::Group(group) => check(&group.ast, text),
            Ast::Alternation(alt) => alt.asts.iter().try_for_each(|a| check(a, text)),
            Ast::Concat(concat) => concat.asts.iter().try_for_each(|a| check(a, text)),
            _ => Ok(()),
        }
    }
    // A pattern the parser refuses is reported when it is compiled.
    match regex_syntax::ast::parse::Parser::new().parse(translated) {
        Ok(ast) => check(&ast, translated),
        Err(_) => Ok(()),
    }
}

/// The rest of a class after its `[`, read as Go reads it (`]` first is a character,
/// `[:name:]` only where a `:]` follows, `-` a range only between two characters, Perl
/// and Unicode classes, escapes) and written for the `regex` crate with every
/// character as `\x{…}`: its own class syntax (`--`, `&&`, `~~`, nested `[…]`) then
/// cannot read anything into Go's characters.
fn translate_go_class(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut String,
    no_colon_bracket: &mut bool,
) -> Result<(), String> {
    out.push('[');
    if chars.next_if_eq(&'^').is_some() {
        out.push('^');
    }
    let mut first = true;
    loop {
        let Some(&c) = chars.peek() else { return Err("missing closing ]".into()) };
        if c == ']' && !first {
            chars.next();
            out.push(']');
            return Ok(());
        }
        first = false;
        // `[:alpha:]`, where a `:]` follows somewhere; a name Go does not know is an error.
        // Once no `:]` follows, none is looked for again (a pattern of many `[:`).
        if c == '[' && chars.clone().nth(1) == Some(':') && !*no_colon_bracket {
            let mut text: String = chars.clone().take(2).collect();
            let mut ahead = chars.clone().skip(2);
            let mut closed = false;
            while let Some(c) = ahead.next() {
                text.push(c);
                if c == ':' && ahead.clone().next() == Some(']') {
                    text.push(']');
                    closed = true;
                    break;
                }
            }
            *no_colon_bracket = !closed;
            if closed {
                let name = text.as_str();
                let known = name.trim_start_matches("[:").trim_start_matches('^').trim_end_matches(":]");
                const POSIX: [&str; 14] = [
                    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
                    "space", "upper", "word", "xdigit",
                ];
                if !POSIX.contains(&known) {
                    return Err(format!("invalid character class range: `{name}`"));
                }
                out.push_str(name);
                advance(chars, name.chars().count());
                continue;
            }
        }
        if c == '\\' {
            let escaped = chars.clone().nth(1);
            if let Some(class) = escaped.and_then(perl_class) {
                out.push_str(class);
                chars.next();
                chars.next();
                continue;
            }
            if let Some(e @ ('p' | 'P')) = escaped {
                chars.next();
                chars.next();
                out.push('\\');
                if chars.next_if_eq(&'{').is_some() {
                    copy_braced_escape(e, chars, out);
                } else {
                    out.push(e);
                    out.extend(chars.next());
                }
                continue;
            }
        }
        let lo = class_char(chars)?;
        let mut hi = lo;
        // `a-` before the closing `]` is `a` and `-`.
        let mut ahead = chars.clone();
        if ahead.next() == Some('-') && ahead.next().is_some_and(|c| c != ']') {
            chars.next();
            hi = class_char(chars)?;
            if hi < lo {
                return Err(format!("invalid character class range: `{lo}-{hi}`"));
            }
        }
        out.push_str(&format!("\\x{{{:x}}}", u32::from(lo)));
        if hi != lo {
            out.push_str(&format!("-\\x{{{:x}}}", u32::from(hi)));
        }
    }
}

/// After `\x{`, `\p{` or `\P{` (read up to the `{`): the letter, Go's `\p{^Greek}`
/// turned into `\P{Greek}` (and `\P{^…}` into `\p{…}`), then `{` and the text through
/// the closing `}`.
fn copy_braced_escape(letter: char, chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String) {
    let negated = letter != 'x' && chars.next_if_eq(&'^').is_some();
    out.push(match (letter, negated) {
        ('p', true) => 'P',
        ('P', true) => 'p',
        _ => letter,
    });
    out.push('{');
    for c in chars.by_ref() {
        out.push(c);
        if c == '}' {
            break;
        }
    }
}

/// Go's Perl classes, ASCII only (Rust's are Unicode), spelt out for `\<letter>`.
fn perl_class(letter: char) -> Option<&'static str> {
    Some(match letter {
        'd' => "[0-9]",
        'D' => "[^0-9]",
        'w' => "[0-9A-Za-z_]",
        'W' => "[^0-9A-Za-z_]",
        's' => "[\\t\\n\\f\\r ]",
        'S' => "[^\\t\\n\\f\\r ]",
        _ => return None,
    })
}

/// Whether `\<first>` starts an octal escape: `\0`, or `\1`…`\7` before another
/// octal digit (a lone `\1` is a back reference, which neither Go nor Rust supports).
fn starts_octal(first: char, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    first == '0' || chars.peek().is_some_and(|d| ('0'..='7').contains(d))
}

/// The code of the octal escape starting with `first`: up to two more digits.
fn octal(first: char, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> u32 {
    let mut code = u32::from(first) - u32::from('0');
    for _ in 0..2 {
        let Some(d) = chars.next_if(|d| ('0'..='7').contains(d)) else { break };
        code = code * 8 + (u32::from(d) - u32::from('0'));
    }
    code
}

/// One character of a class, escapes read as Go reads them.
fn class_char(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let c = chars.next().ok_or("missing closing ]")?;
    if c != '\\' {
        return Ok(c);
    }
    let e = chars.next().ok_or("trailing backslash at end of expression")?;
    let code = match e {
        'a' => 7,
        'f' => 12,
        'n' => 10,
        'r' => 13,
        't' => 9,
        'v' => 11,
        '0'..='7' if starts_octal(e, chars) => octal(e, chars),
        'x' => {
            let hex: String = if chars.next_if_eq(&'{').is_some() {
                let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                hex
            } else {
                chars.by_ref().take(2).collect()
            };
            u32::from_str_radix(&hex, 16).map_err(|_| format!("invalid escape sequence: `\\x{hex}`"))?
        }
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => u32::from(c),
        c => return Err(format!("invalid escape sequence: `\\{c}`")),
    };
    char::from_u32(code).ok_or_else(|| format!("invalid escape sequence: code {code:x}"))
}

/// Groups' flags as Go reads them (`(?i-s)`, `(?U:`), written for the `regex` crate.
struct Flags {
    /// The group in the `regex` crate's syntax, each flag once (`(?ii)` and `(?i-i)`
    /// are Go's, not the crate's); nothing for a group of flags that sets none.
    text: String,
    /// How many characters after the `(` Go read.
    read: usize,
    /// Whether `U` is set or cleared, if either.
    ungreedy: Option<bool>,
}

/// Writes held flags whose repetition is written ([`translate_go_pattern`]).
fn write_pending(translated: &mut String, pending: &mut Option<(String, bool)>) {
    if let Some((text, _)) = pending.take() {
        translated.push_str(&text);
    }
}

/// Skips `n` characters.
fn advance(chars: &mut impl Iterator<Item = char>, n: usize) {
    if n > 0 {
        chars.nth(n - 1);
    }
}

impl Flags {
    /// Groups of flags written one after the other, as one.
    fn joined(groups: Vec<Flags>) -> Flags {
        groups.into_iter().fold(Flags { text: String::new(), read: 0, ungreedy: None }, |mut all, f| {
            all.text.push_str(&f.text);
            all.read += f.read;
            all.ungreedy = f.ungreedy.or(all.ungreedy);
            all
        })
    }
}

/// The groups of flags only (`(?i)(?m)`) that the text after a `(` starts.
struct FlagRun {
    groups: Vec<Flags>,
    /// How many characters after the first `(` the groups take.
    read: usize,
    /// Whether a repetition follows them (`(?i)*`): it repeats what is before them.
    repeats: bool,
}

/// The [`FlagRun`] of the text after a `(` (no groups where it starts no group of
/// flags only).
fn flag_run(mut rest: impl Iterator<Item = char> + Clone) -> Result<FlagRun, String> {
    let mut run = FlagRun { groups: Vec::new(), read: 0, repeats: false };
    loop {
        let Some((flags, ')')) = flag_group(rest.clone())? else {
            // The `(` read after the last group starts no group of flags only.
            run.read = run.read.saturating_sub(1);
            return Ok(run);
        };
        advance(&mut rest, flags.read);
        run.read += flags.read;
        run.groups.push(flags);
        // Empty quotes, `\Q\E`, are nothing to Go: what follows them counts.
        let mut after = rest.clone();
        let mut quotes = 0;
        loop {
            let mut probe = after.clone();
            let next: [Option<char>; 4] = std::array::from_fn(|_| probe.next());
            if next != [Some('\\'), Some('Q'), Some('\\'), Some('E')] {
                break;
            }
            after = probe;
            quotes += 4;
        }
        match after.next() {
            Some('*' | '+' | '?') => run.repeats = true,
            Some('{') => run.repeats = repetition_counts(after).is_some(),
            Some('(') => {
                advance(&mut rest, quotes + 1);
                run.read += quotes + 1;
                continue;
            }
            _ => {}
        }
        if run.repeats {
            run.read += quotes;
        }
        return Ok(run);
    }
}

/// How many characters a capture's name takes after its `(` (`?P<name>`, `?<name>`)
/// when the `regex` crate is to see no name: a name Go takes but the crate does not
/// (starting with a digit). An error for a name Go refuses (empty, or other than
/// ASCII letters, digits and `_`).
fn group_name(mut rest: impl Iterator<Item = char> + Clone) -> Result<Option<usize>, String> {
    let mut prefix = String::new();
    for c in rest.by_ref() {
        prefix.push(c);
        if c == '<' || prefix.len() > 2 {
            break;
        }
    }
    if prefix != "?<" && prefix != "?P<" {
        return Ok(None);
    }
    let mut name = String::new();
    for c in rest {
        if c == '>' {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid named capture: `({prefix}{name}>`"));
            }
            let digit_first = name.starts_with(|c: char| c.is_ascii_digit());
            return Ok(digit_first.then(|| prefix.chars().count() + name.chars().count() + 1));
        }
        name.push(c);
    }
    Err(format!("invalid named capture: `({prefix}{name}`"))
}

/// The flags of a group that the text after a `(` starts with `?` (`(?i)`, `(?s:`),
/// read as Go reads them, and the `)` or `:` after them; `None` for other groups
/// (`(`, `(?P<name>`, `(?<name>`). An error for what Go refuses (`(?x)`, `(?i-)`).
fn flag_group(mut rest: impl Iterator<Item = char> + Clone) -> Result<Option<(Flags, char)>, String> {
    if rest.next() != Some('?') {
        return Ok(None);
    }
    let mut ahead = rest.clone();
    if matches!((ahead.next(), ahead.next()), (Some('<'), _) | (Some('P'), Some('<'))) {
        return Ok(None);
    }
    // Per flag of `imsU`, set or cleared, as Go applies them in order.
    let mut set: [Option<bool>; 4] = [None; 4];
    let (mut negated, mut since_minus, mut read) = (false, false, 1);
    let invalid = |read: usize, rest: &mut dyn Iterator<Item = char>| {
        let text: String = "(?".chars().chain(rest.take(read.saturating_sub(1))).collect();
        format!("invalid or unsupported Perl syntax: `{text}`")
    };
    let mut seen = rest.clone();
    loop {
        let Some(c) = rest.next() else { return Err(invalid(read, &mut seen)) };
        read += 1;
        match c {
            'i' | 'm' | 's' | 'U' => {
                let at = "imsU".find(c).unwrap_or(0);
                set[at] = Some(!negated);
                since_minus = true;
            }
            '-' if !negated => (negated, since_minus) = (true, false),
            ')' | ':' if !negated || since_minus => {
                let flags = |on: bool| -> String {
                    "imsU".chars().zip(set).filter(|&(_, s)| s == Some(on)).map(|(f, _)| f).collect()
                };
                let (on, off) = (flags(true), flags(false));
                let text = match (on.is_empty() && off.is_empty(), off.is_empty(), c) {
                    (true, _, ')') => String::new(),
                    (true, _, _) => "(?:".to_owned(),
                    (false, true, _) => format!("(?{on}{c}"),
                    (false, false, _) => format!("(?{on}-{off}{c}"),
                };
                return Ok(Some((Flags { text, read, ungreedy: set[3] }, c)));
            }
            _ => return Err(invalid(read, &mut seen)),
        }
    }
}

/// The counts of the repetition the text after a `{` makes, as Go reads them: digits
/// without leading zeros, then `}`, `,}` or `,` digits `}` (`None` for no repetition:
/// the `{` is then a character).
fn repetition_counts(mut rest: impl Iterator<Item = char>) -> Option<(u64, Option<u64>)> {
    let (min, next) = count(&mut rest, None);
    let min = min?;
    match next {
        Some('}') => Some((min, Some(min))),
        Some(',') => match rest.next() {
            Some('}') => Some((min, None)),
            after => match count(&mut rest, after) {
                (Some(max), Some('}')) => Some((min, Some(max))),
                _ => None,
            },
        },
        _ => None,
    }
}

/// The number whose digits start with `first` (or the next character) in `rest`, as
/// Go reads a repeat count (no leading zeros; past `u64`, the largest), and the
/// character after its digits.
fn count(rest: &mut impl Iterator<Item = char>, first: Option<char>) -> (Option<u64>, Option<char>) {
    let mut digits = String::new();
    let mut next = first.or_else(|| rest.next());
    while let Some(c) = next.filter(char::is_ascii_digit) {
        digits.push(c);
        next = rest.next();
    }
    let leading_zero = digits.len() > 1 && digits.starts_with('0');
    let value =
        if digits.is_empty() || leading_zero { None } else { Some(digits.parse().unwrap_or(u64::MAX)) };
    (value, next)
}

fn build_regex(anchored: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(anchored).dfa_size_limit(REGEX_DFA_CACHE).build()
}

/// What a source is asked for: the series matching all matchers, with their samples
/// in `[start, end]` (inclusive, milliseconds).
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    /// The matchers as written, including any on `__name__`.
    pub matchers: &'a [LabelMatcher],
    /// First timestamp needed.
    pub start: Timestamp,
    /// Last timestamp needed.
    pub end: Timestamp,
}

/// An error of a sample source (the backend's fault, not the query's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// The plug point for samples. Implementations return each matching series once,
/// with its samples in time order, staleness markers included; in label order to give
/// results in the order Prometheus gives them.
pub trait SampleSource {
    /// The series matching `sel`.
    fn select(&self, sel: &Selection<'_>) -> Result<Vec<Series>, SourceError>;

    /// The series matching `sel`, their samples possibly shared with the source rather
    /// than copied. The evaluator selects through this; a source that holds its samples
    /// in [`SharedPoints`] buffers overrides it to lend them.
    fn select_shared(&self, sel: &Selection<'_>) -> Result<Vec<SelectedSeries>, SourceError> {
        Ok(self.select(sel)?.into_iter().map(SelectedSeries::from).collect())
    }

    /// At most how many series and label values selecting `matchers` looks at, if the
    /// source can tell at once (an index lookup, no scan); `None` if not. An engine with
    /// an [`offload`](crate::eval::EngineOptions::offload) selects in place only when
    /// this is small.
    fn series_bound(&self, matchers: &[LabelMatcher]) -> Option<usize> {
        let _ = matchers;
        None
    }
}

/// A window of a shared, immutable buffer of samples: a selection costs a reference
/// count instead of a copy.
///
/// ```
/// use promql::{storage::SharedPoints, value::Point};
/// let all = SharedPoints::from(vec![Point { t: 0, v: 1.0 }, Point { t: 15_000, v: 2.0 }]);
/// let newest = all.window(1..2);
/// assert_eq!(newest.len(), 1);
/// assert_eq!(newest[0].v, 2.0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct SharedPoints {
    all: Arc<Buffer>,
    range: std::ops::Range<usize>,
}

impl SharedPoints {
    /// The part `range` (relative to this window) of the samples.
    ///
    /// # Panics
    /// If `range` is not within the window, as slicing would.
    pub fn window(&self, range: std::ops::Range<usize>) -> SharedPoints {
        let _ = &self[range.clone()];
        SharedPoints {
            all: self.all.clone(),
            range: self.range.start + range.start..self.range.start + range.end,
        }
    }

    /// How many values of the part `range` (relative to this window) are lower than the
    /// value before them in that part: the counter resets of `rate` and `resets`. `None`
    /// when the buffer does not keep them (its values fall often: a gauge) and the part
    /// must be scanned.
    ///
    /// ```
    /// use promql::{storage::SharedPoints, value::Point};
    /// let all = SharedPoints::from([5.0, 9.0, 2.0, 4.0, 1.0].map(|v| Point { t: 0, v }).to_vec());
    /// assert_eq!(all.decreases_in(0..5), Some(2));
    /// assert_eq!(all.decreases_in(2..4), Some(0));
    /// assert_eq!(all.window(1..5).decreases_in(0..2), Some(1));
    /// ```
    pub fn decreases_in(&self, range: std::ops::Range<usize>) -> Option<usize> {
        let Decreases::Few(at) = &self.all.decreases else {
            return None;
        };
        let (start, end) = (self.range.start + range.start, self.range.start + range.end);
        if end <= start + 1 {
            return Some(0);
        }
        // A decrease at `i` is the pair `(i - 1, i)`: inside when start < i < end.
        let from = at.partition_point(|&i| i as usize <= start);
        let to = at.partition_point(|&i| (i as usize) < end);
        Some(to - from)
    }

    /// Whether the part `range` (relative to this window) holds a stale marker: a scan
    /// only when the buffer holds one somewhere.
    ///
    /// ```
    /// use promql::{storage::SharedPoints, value::{Point, STALE_NAN_BITS}};
    /// let all = SharedPoints::from([1.0, f64::from_bits(STALE_NAN_BITS), 2.0].map(|v| Point { t: 0, v }).to_vec());
    /// assert!(all.stale_markers_in(0..3));
    /// assert!(!all.stale_markers_in(2..3));
    /// ```
    pub fn stale_markers_in(&self, range: std::ops::Range<usize>) -> bool {
        self.all.stale && self[range].iter().any(|p| is_stale_marker(p.v))
    }
}

impl std::ops::Deref for SharedPoints {
    type Target = [Point];
    fn deref(&self) -> &[Point] {
        &self.all.points[self.range.clone()]
    }
}

impl From<Vec<Point>> for SharedPoints {
    fn from(points: Vec<Point>) -> Self {
        SharedPoints { range: 0..points.len(), all: Arc::new(Buffer::new(points)) }
    }
}

/// A series' samples in time order, and where its values fall.
#[derive(Debug, Clone, Default)]
struct Buffer {
    points: Vec<Point>,
    decreases: Decreases,
    /// Whether a value is (or was, before an overwrite) a stale marker: windows of the
    /// other buffers need no look for one.
    stale: bool,
}

/// The positions `i` where `v[i] < v[i - 1]`, the comparison `rate` and `resets` make:
/// a counter's resets then cost a search instead of a scan of every window. Kept while
/// they are rare (counters); a series whose values fall often (a gauge) scans.
#[derive(Debug, Clone)]
enum Decreases {
    Few(Vec<u32>),
    Many,
}

impl Default for Decreases {
    fn default() -> Self {
        Decreases::Few(Vec::new())
    }
}

impl Buffer {
    fn new(points: Vec<Point>) -> Self {
        let mut b = Buffer { points, decreases: Decreases::default(), stale: false };
        b.index();
        b
    }

    /// Appends a sample newer than every other.
    fn push(&mut self, p: Point) {
        let falls = self.points.last().is_some_and(|last| p.v < last.v);
        self.stale |= is_stale_marker(p.v);
        self.points.push(p);
        if falls {
            self.note_decrease(self.points.len() - 1);
        }
    }

    /// Inserts a sample at position `i`, or overwrites the value there when `replace`.
    /// Only the pairs around `i` change: no pass over the buffer, so that loading
    /// duplicates or late samples stays linear.
    fn put(&mut self, i: usize, p: Point, replace: bool) {
        if replace {
            self.points[i].v = p.v;
        } else {
            self.points.insert(i, p);
            if let Decreases::Few(at) = &mut self.decreases {
                let from = at.partition_point(|&x| (x as usize) < i);
                // Positions stay below the length, which u32 held before the insert.
                match u32::try_from(self.points.len()) {
                    Ok(_) => at[from..].iter_mut().for_each(|x| *x += 1),
                    Err(_) => self.decreases = Decreases::Many,
                }
            }
        }
        // An overwritten stale marker may leave the flag set: a scan then finds none.
        self.stale |= is_stale_marker(p.v);
        self.recheck(i);
        self.recheck(i + 1);
    }

    /// Notes or forgets a decrease at `i` after its pair changed.
    fn recheck(&mut self, i: usize) {
        if i == 0 || i >= self.points.len() {
            return;
        }
        let falls = self.points[i].v < self.points[i - 1].v;
        let len = self.points.len();
        if let Decreases::Few(at) = &mut self.decreases {
            let Ok(pos) = u32::try_from(i) else {
                self.decreases = Decreases::Many;
                return;
            };
            match (at.binary_search(&pos), falls) {
                (Ok(k), false) => {
                    at.remove(k);
                }
                (Err(k), true) if Self::room_for_one_more(at.len(), len) => at.insert(k, pos),
                (Err(_), true) => self.decreases = Decreases::Many,
                _ => {}
            }
        }
    }

    fn index(&mut self) {
        self.stale = self.points.iter().any(|p| is_stale_marker(p.v));
        self.decreases = Decreases::default();
        for i in 1..self.points.len() {
            if self.points[i].v < self.points[i - 1].v {
                self.note_decrease(i);
            }
        }
    }

    /// Notes a decrease at `i`, the newest position.
    fn note_decrease(&mut self, i: usize) {
        let len = self.points.len();
        if let Decreases::Few(at) = &mut self.decreases {
            match u32::try_from(i) {
                Ok(i) if Self::room_for_one_more(at.len(), len) => at.push(i),
                _ => self.decreases = Decreases::Many,
            }
        }
    }

    /// At most one position per 16 samples (past the first 8): 2% more memory.
    fn room_for_one_more(positions: usize, samples: usize) -> bool {
        positions < 8 || positions * 16 < samples
    }

    fn shrink_to_fit(&mut self) {
        self.points.shrink_to_fit();
        // A counter whose first samples held several resets gave its positions up
        // while it was short; counted over the whole series they may be few.
        if matches!(self.decreases, Decreases::Many) {
            self.index();
        }
        if let Decreases::Few(at) = &mut self.decreases {
            at.shrink_to_fit();
        }
    }
}

/// A selected series: labels and a window of samples shared with the source.
#[derive(Debug, Clone)]
pub struct SelectedSeries {
    /// The series.
    pub labels: Labels,
    /// Its samples in the selection's time range, in time order.
    pub points: SharedPoints,
}

impl From<Series> for SelectedSeries {
    fn from(s: Series) -> Self {
        SelectedSeries { labels: s.labels, points: s.points.into() }
    }
}

#[derive(Debug, Clone, Default)]
struct StoredSeries {
    labels: Labels,
    /// Samples in time order. Selections share the buffer; an append while one is alive
    /// copies it first (`Arc::make_mut`), so a query never sees samples change.
    points: Arc<Buffer>,
}

/// The in-memory reference source: each series' samples in one buffer that selections
/// share instead of copying, and an inverted index from `name=value` to series ids so that selection
/// does not scan every series.
///
/// ```
/// use promql::{storage::MemoryStore, Labels};
/// let mut store = MemoryStore::new();
/// let up = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
/// store.append(&up, 0, 1.0);
/// store.append(&up, 15_000, 1.0);
/// assert_eq!(store.series_count(), 1);
/// assert_eq!(store.sample_count(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    series: Vec<StoredSeries>,
    by_labels: HashMap<Labels, u32>,
    postings: HashMap<(Arc<str>, Arc<str>), Vec<u32>>,
    /// Every value of each label name, for regex matchers: they are tried on the few
    /// distinct values, not on every candidate series.
    values: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// Every label name and value once: series share the strings.
    strings: HashSet<Arc<str>>,
    /// Each series' position in label order, computed when first needed after a series
    /// was added: selections come out in label order without comparing label sets.
    rank: std::sync::OnceLock<Vec<u32>>,
    samples: usize,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sample. A sample at a time the series already has replaces it.
    pub fn append(&mut self, labels: &Labels, t: Timestamp, v: f64) {
        let id = match self.by_labels.get(labels) {
            Some(&id) => id,
            None => {
                let id = self.series.len() as u32;
                let labels = self.intern(labels);
                for l in labels.iter() {
                    let list = self.postings.entry((l.name.clone(), l.value.clone())).or_default();
                    if list.is_empty() {
                        self.values.entry(l.name.clone()).or_default().push(l.value.clone());
                    }
                    list.push(id);
                }
                self.by_labels.insert(labels.clone(), id);
                self.series.push(StoredSeries { labels, ..Default::default() });
                self.rank = std::sync::OnceLock::new();
                id
            }
        };
        let buffer = Arc::make_mut(&mut self.series[id as usize].points);
        let p = Point { t, v };
        match buffer.points.last() {
            Some(last) if last.t >= t => match buffer.points.binary_search_by_key(&t, |p| p.t) {
                Ok(i) => buffer.put(i, p, true),
                Err(i) => {
                    buffer.put(i, p, false);
                    self.samples += 1;
                }
            },
            _ => {
                buffer.push(p);
                self.samples += 1;
            }
        }
    }

    /// Each series' position in label order, by id.
    fn label_rank(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..self.series.len() as u32).collect();
        ids.sort_unstable_by(|&a, &b| self.series[a as usize].labels.cmp(&self.series[b as usize].labels));
        let mut rank = vec![0; ids.len()];
        for (pos, id) in ids.into_iter().enumerate() {
            rank[id as usize] = pos as u32;
        }
        rank
    }

    /// The label set with its strings taken from (or added to) the store's pool.
    fn intern(&mut self, labels: &Labels) -> Labels {
        let mut pooled = |s: &Arc<str>| match self.strings.get(s) {
            Some(p) => p.clone(),
            None => {
                self.strings.insert(s.clone());
                s.clone()
            }
        };
        let interned: Vec<Label> =
            labels.iter().map(|l| Label { name: pooled(&l.name), value: pooled(&l.value) }).collect();
        Labels::from_interned(interned)
    }

    /// Every series: labels and samples.
    pub fn series(&self) -> impl Iterator<Item = (&Labels, &[Point])> + '_ {
        self.series.iter().map(|s| (&s.labels, s.points.points.as_slice()))
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &MemoryStore) {
        for (labels, points) in other.series() {
            for p in points {
                self.append(labels, p.t, p.v);
            }
        }
    }

    /// Releases spare capacity of the series' buffers (after loading, appends left up to
    /// half of it unused) and numbers the series in label order, so that selections
    /// come out in label order without sorting them at each query.
    pub fn shrink_to_fit(&mut self) {
        for s in &mut self.series {
            Arc::make_mut(&mut s.points).shrink_to_fit();
        }
        // rank[id] is the series' position in label order: its id from now on.
        let new_id = match self.rank.take() {
            Some(rank) => rank,
            None => self.label_rank(),
        };
        if !new_id.iter().enumerate().all(|(i, &id)| i as u32 == id) {
            // Placed by rank: no label set compared a second time.
            let mut ranked: Vec<(u32, StoredSeries)> =
                new_id.iter().copied().zip(std::mem::take(&mut self.series)).collect();
            ranked.sort_unstable_by_key(|&(rank, _)| rank);
            self.series = ranked.into_iter().map(|(_, s)| s).collect();
            for id in self.by_labels.values_mut() {
                *id = new_id[*id as usize];
            }
            for list in self.postings.values_mut() {
                for id in list.iter_mut() {
                    *id = new_id[*id as usize];
                }
                list.sort_unstable();
            }
        }
        self.rank = std::sync::OnceLock::from((0..self.series.len() as u32).collect::<Vec<u32>>());
        self.series.shrink_to_fit();
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// How many series are stored.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// How many samples are stored.
    pub fn sample_count(&self) -> usize {
        self.samples
    }

    /// The values of label `name` among the series with samples in `start..=end`
    /// (milliseconds, inclusive), unsorted. Read from the index: each value's series are
    /// looked at only until one has a sample in range, where selecting every series
    /// looked at all of them.
    ///
    /// ```
    /// use promql::{storage::MemoryStore, Labels};
    /// let mut store = MemoryStore::new();
    /// store.append(&Labels::from_pairs([("__name__", "up"), ("job", "api")]), 0, 1.0);
    /// store.append(&Labels::from_pairs([("__name__", "up"), ("job", "db")]), 60_000, 1.0);
    /// assert_eq!(store.label_values("job", 30_000, i64::MAX), ["db"]);
    /// ```
    pub fn label_values(&self, name: &str, start: Timestamp, end: Timestamp) -> Vec<&str> {
        let Some((name, values)) = self.values.get_key_value(name) else { return Vec::new() };
        values
            .iter()
            .filter(|v| self.any_in_range(&(name.clone(), Arc::clone(v)), start, end))
            .map(|v| &**v)
            .collect()
    }

    /// The label names of the series with samples in `start..=end`, unsorted; from the
    /// index, as [`label_values`](Self::label_values).
    pub fn label_names(&self, start: Timestamp, end: Timestamp) -> Vec<&str> {
        (self.values.iter())
            .filter(|(name, values)| {
                values.iter().any(|v| self.any_in_range(&(Arc::clone(name), Arc::clone(v)), start, end))
            })
            .map(|(name, _)| &**name)
            .collect()
    }

    /// Whether a series of the postings list `key` has a sample in `start..=end`.
    fn any_in_range(&self, key: &(Arc<str>, Arc<str>), start: Timestamp, end: Timestamp) -> bool {
        let ids = self.postings.get(key).map_or(&[][..], Vec::as_slice);
        ids.iter().any(|&id| {
            let points = &self.series[id as usize].points.points;
            let first = partition_point_near(points, start, |t| t < start);
            points.get(first).is_some_and(|p| p.t <= end)
        })
    }

    /// Candidate series ids: the intersection of the postings of the `=` matchers with
    /// non-empty values and of the `=~` matchers that cannot match an absent label (the
    /// union of the postings of the values they match), or every series when there is
    /// no such matcher.
    fn candidates(&self, matchers: &[LabelMatcher]) -> Vec<u32> {
        let mut equal: Vec<&[u32]> = Vec::new();
        // Per `=~` matcher, the postings of the values it matches.
        let mut alternatives: Vec<Vec<&[u32]>> = Vec::new();
        for m in matchers.iter().filter(|m| indexed(m)) {
            let name: Arc<str> = Arc::from(m.name.as_str());
            match m.op {
                MatchOp::Equal => match self.postings.get(&(name, Arc::from(m.value.as_str()))) {
                    Some(list) => equal.push(list),
                    None => return Vec::new(),
                },
                MatchOp::Regex => {
                    let values = self.values.get(m.name.as_str()).map_or(&[][..], Vec::as_slice);
                    let postings =
                        |v: &Arc<str>| self.postings.get(&(name.clone(), v.clone())).map(Vec::as_slice);
                    let lists: Vec<&[u32]> = match m.literals() {
                        // Fewer accepted values than values of the label: each looked up.
                        Some(set) if set.len() < values.len() => {
                            set.iter().filter_map(|v| self.strings.get(&**v)).filter_map(postings).collect()
                        }
                        _ => values.iter().filter(|v| m.matches(v)).filter_map(postings).collect(),
                    };
                    if lists.is_empty() {
                        return Vec::new();
                    }
                    alternatives.push(lists);
                }
                _ => {}
            }
        }
        equal.sort_by_key(|l| l.len());
        let mut out: Option<Vec<u32>> = equal
            .split_first()
            .map(|(first, rest)| rest.iter().fold(first.to_vec(), |out, list| intersect(&out, list)));
        let total = |lists: &[&[u32]]| lists.iter().map(|l| l.len()).sum::<usize>();
        alternatives.sort_by_key(|lists| total(lists));
        for lists in alternatives {
            out = Some(match out {
                // Few candidates against long lists (`code=~"5.."` within one workload):
                // look each up in each list instead of merging the lists. A series has
                // one value per label, so the lists are disjoint and so are the hits.
                Some(few) if few.len() * lists.len() < total(&lists) => {
                    let mut hits: Vec<u32> = lists.iter().flat_map(|list| intersect(&few, list)).collect();
                    hits.sort_unstable();
                    hits.dedup();
                    hits
                }
                Some(some) => intersect(&some, &union(&lists)),
                None => union(&lists),
            });
        }
        out.unwrap_or_else(|| (0..self.series.len() as u32).collect())
    }
}

/// The ids of sorted lists, sorted.
fn union(lists: &[&[u32]]) -> Vec<u32> {
    let mut all = lists.concat();
    // A stable sort merges the sorted runs instead of partitioning them again.
    all.sort();
    all.dedup();
    all
}

impl SampleSource for MemoryStore {
    fn select(&self, sel: &Selection<'_>) -> Result<Vec<Series>, SourceError> {
        Ok(self
            .select_shared(sel)?
            .into_iter()
            .map(|s| Series { labels: s.labels, points: s.points.to_vec() })
            .collect())
    }

    fn select_shared(&self, sel: &Selection<'_>) -> Result<Vec<SelectedSeries>, SourceError> {
        let rank = self.rank.get_or_init(|| self.label_rank());
        // In label order, as a Prometheus TSDB returns series: aggregation groups and
        // results then come out in the same order as Prometheus'.
        let mut ids = self.candidates(sel.matchers);
        // Stores loaded in label order need no sort.
        if !ids.is_sorted_by_key(|&id| rank[id as usize]) {
            ids.sort_unstable_by_key(|&id| rank[id as usize]);
        }
        let mut out = Vec::with_capacity(ids.len());
        // Candidates already satisfy the matchers their postings came from.
        let residual: Vec<&LabelMatcher> = sel.matchers.iter().filter(|m| !indexed(m)).collect();
        for id in ids {
            let s = &self.series[id as usize];
            if !residual.iter().all(|m| m.matches(s.labels.get(&m.name).unwrap_or(""))) {
                continue;
            }
            let points = &s.points.points;
            let hi = partition_point_near(points, sel.end, |t| t <= sel.end);
            let lo = partition_point_near(&points[..hi], sel.start, |t| t < sel.start);
            // A series without samples in the window adds nothing to a query but work
            // at every step (`rate(m[5m] offset 1w)` before the data: every series).
            if lo == hi {
                continue;
            }
            out.push(SelectedSeries {
                labels: s.labels.clone(),
                points: SharedPoints { all: s.points.clone(), range: lo..hi },
            });
        }
        Ok(out)
    }

    /// The candidates of the `=` matchers (the shortest of their postings lists, or every
    /// series), and per regex matcher the values of its label, which selection tries one
    /// by one, and what it then does with the lists of the values that match: looks each
    /// candidate up in each list, or merges the lists (at most every series).
    fn series_bound(&self, matchers: &[LabelMatcher]) -> Option<usize> {
        let indexed: Vec<&LabelMatcher> = matchers.iter().filter(|m| indexed(m)).collect();
        let few = indexed
            .iter()
            .filter(|m| m.op == MatchOp::Equal)
            .map(|m| {
                let key = (Arc::from(m.name.as_str()), Arc::from(m.value.as_str()));
                self.postings.get(&key).map_or(0, Vec::len)
            })
            .fold(self.series.len(), usize::min);
        let regex_work = |m: &&LabelMatcher| {
            let values = self.values.get(m.name.as_str()).map_or(0, Vec::len);
            let tried = m.literals().map_or(values, |set| set.len().min(values));
            tried.saturating_add(few.saturating_mul(tried).min(self.series.len()))
        };
        Some(
            indexed
                .iter()
                .filter(|m| m.op == MatchOp::Regex)
                .map(regex_work)
                .fold(few, usize::saturating_add),
        )
    }
}

/// Whether the postings answer a matcher: `=` with a value, and `=~` that cannot match
/// an absent label (whose series are in no postings list of that name).
fn indexed(m: &LabelMatcher) -> bool {
    match m.op {
        MatchOp::Equal => !m.value.is_empty(),
        MatchOp::Regex => !m.matches(""),
        MatchOp::NotEqual | MatchOp::NotRegex => false,
    }
}

/// The ids in both strictly increasing lists (postings and what is made of them): a
/// merge that gallops through the longer one, so that a short list costs little against
/// a long one.
fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    debug_assert!(a.is_sorted_by(|x, y| x < y) && b.is_sorted_by(|x, y| x < y));
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    // Ids are numbered in label order, so a metric name's series are usually one run of
    // ids: then the answer is the part of `small` within the run.
    if let (Some(&first), Some(&last)) = (large.first(), large.last()) {
        if (last - first) as usize + 1 == large.len() {
            let lo = small.partition_point(|&id| id < first);
            let hi = small.partition_point(|&id| id <= last);
            return small[lo..hi].to_vec();
        }
    }
    let mut out = Vec::with_capacity(small.len());
    let mut rest = large;
    for &id in small {
        // Gallop to the first element >= id, then search the last stride.
        let mut step = 1;
        while step < rest.len() && rest[step] < id {
            step *= 2;
        }
        let window = &rest[..rest.len().min(step + 1)];
        let at = window.partition_point(|&x| x < id);
        rest = &rest[at..];
        match rest.first() {
            Some(&x) if x == id => out.push(id),
            Some(_) => {}
            None => break,
        }
    }
    out
}

/// `ps.partition_point(|p| pred(p.t))` for a `pred` that turns false at about `near`,
/// starting where `near` would be if the samples were evenly spaced, then widening
/// steps. Series are scraped at a steady interval, so the guess is off by a sample or
/// two: a probe or two, where a binary search over a long series that is not in the
/// cache takes a miss per probe (a dozen on an hour of 15 s samples), and a window at
/// either end of a series costs no more than one in the middle.
pub(crate) fn partition_point_near(ps: &[Point], near: Timestamp, pred: impl Fn(Timestamp) -> bool) -> usize {
    let (Some(first), Some(last)) = (ps.first(), ps.last()) else {
        return 0;
    };
    let n = ps.len();
    let guess = if near <= first.t {
        0
    } else if near >= last.t {
        n - 1
    } else {
        // first.t < near < last.t: within 0..n-1, and no overflow in 128 bits.
        let span = i128::from(last.t) - i128::from(first.t);
        ((i128::from(near) - i128::from(first.t)) * (n as i128 - 1) / span) as usize
    };
    if pred(ps[guess].t) {
        // The answer is past `guess`: step forward over samples that hold.
        let (mut lo, mut width) = (guess + 1, 1);
        while lo + width <= n && pred(ps[lo + width - 1].t) {
            lo += width;
            width *= 2;
        }
        lo + ps[lo..(lo + width).min(n)].partition_point(|p| pred(p.t))
    } else {
        // The answer is at or before `guess`: step back over samples that do not hold.
        let (mut hi, mut width) = (guess, 1);
        while hi >= width && !pred(ps[hi - width].t) {
            hi -= width;
            width *= 2;
        }
        let lo = hi.saturating_sub(width);
        lo + ps[lo..hi].partition_point(|p| pred(p.t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound is the shortest `=` postings list, or every series, plus per regex
    /// matcher the values of its label and the lookups or merge that follow; it is
    /// never below what a selection finds.
    #[test]
    fn series_bounds_hold_and_cost_no_scan() {
        let mut st = MemoryStore::new();
        for (job, code) in [("a", "200"), ("a", "500"), ("a", "503"), ("b", "200"), ("c", "404")] {
            st.append(&Labels::from_pairs([("__name__", "req_total"), ("job", job), ("code", code)]), 0, 1.0);
        }
        st.append(&Labels::from_pairs([("__name__", "up"), ("job", "a")]), 0, 1.0);
        let m = |name: &str, op, value: &str| LabelMatcher::new(name, op, value).unwrap();
        let cases = [
            (vec![m("__name__", MatchOp::Equal, "req_total"), m("job", MatchOp::Equal, "a")], 4),
            (vec![m("__name__", MatchOp::Equal, "req_total"), m("job", MatchOp::Equal, "nope")], 0),
            // One candidate, four `code` values tried, then one lookup in each list.
            (vec![m("job", MatchOp::Equal, "b"), m("code", MatchOp::Regex, "5..")], 1 + 4 + 4),
            // Every series a candidate: the lists merged are at most every series.
            (vec![m("code", MatchOp::Regex, "5..")], 6 + 4 + 6),
            (vec![m("job", MatchOp::NotEqual, "b")], 6),
            (vec![m("job", MatchOp::Equal, "")], 6),
            (vec![], 6),
        ];
        for (matchers, bound) in cases {
            assert_eq!(st.series_bound(&matchers), Some(bound), "{matchers:?}");
            let found = st.select(&Selection { matchers: &matchers, start: 0, end: 0 }).unwrap().len();
            assert!(found <= bound, "{matchers:?}: {found} > {bound}");
        }
    }

    /// The store's decrease positions give the counts a scan of each window gives, for
    /// samples appended in order, out of order and overwritten, with NaNs and stale
    /// markers; gauges that fall too often to keep them answer `None`. The same for
    /// whether a window holds a stale marker.
    #[test]
    fn decreases_are_counted_as_a_scan_counts_them() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let scan = |p: &[Point]| p.windows(2).filter(|w| w[1].v < w[0].v).count();
        let (mut kept, mut many) = (0, 0);
        for case in 0..300 {
            let mut st = MemoryStore::new();
            let labels = Labels::from_pairs([("__name__", "c")]);
            let n = 1 + next(120) as i64;
            let reset_odds = [3, 20, 1000][case % 3];
            let mut v = 0.0;
            for i in 0..n {
                v = if next(reset_odds) == 0 { 0.0 } else { v + next(5) as f64 };
                let v = match next(80) {
                    0 => f64::NAN,
                    1 if case % 2 == 0 => f64::from_bits(crate::value::STALE_NAN_BITS),
                    _ => v,
                };
                // Now and then a sample for an earlier time, or one overwritten.
                let t =
                    if i > 3 && next(25) == 0 { (i - 1 - next(3) as i64) * 1_000 + 500 } else { i * 1_000 };
                st.append(&labels, t, v);
            }
            let sel = st.select_shared(&Selection { matchers: &[], start: i64::MIN, end: i64::MAX }).unwrap();
            let p = &sel[0].points;
            for a in 0..=p.len() {
                for b in a..=p.len() {
                    let stale = p[a..b].iter().any(|p| is_stale_marker(p.v));
                    assert_eq!(p.stale_markers_in(a..b), stale, "case {case}: {a}..{b}");
                    match (p.decreases_in(a..b), p.window(a..b).decreases_in(0..b - a)) {
                        (Some(k), Some(w)) => {
                            assert_eq!((k, w), (scan(&p[a..b]), k), "case {case}: {a}..{b}");
                            kept += 1;
                        }
                        (None, None) => many += 1,
                        other => panic!("case {case}: {a}..{b}: {other:?}"),
                    }
                }
            }
        }
        assert!(kept > 0 && many > 0, "{kept} {many}");
    }

    /// Nine resets in the first 20 samples give the positions up; once the series is
    /// long, `shrink_to_fit` counts them again.
    #[test]
    fn early_resets_are_indexed_again_after_loading() {
        let mut st = MemoryStore::new();
        let labels = Labels::from_pairs([("__name__", "c")]);
        for i in 0..400 {
            let v = if i < 20 { (i % 2) as f64 } else { i as f64 };
            st.append(&labels, i * 1_000, v);
        }
        let all = Selection { matchers: &[], start: i64::MIN, end: i64::MAX };
        assert_eq!(st.select_shared(&all).unwrap()[0].points.decreases_in(0..400), None);
        st.shrink_to_fit();
        assert_eq!(st.select_shared(&all).unwrap()[0].points.decreases_in(0..400), Some(9));
    }

    #[test]
    fn intersect_agrees_with_a_set_intersection() {
        let lists: Vec<Vec<u32>> = vec![
            vec![],
            vec![5],
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            vec![1, 3, 5, 7, 9, 11, 13],
            (0..1000).step_by(7).collect(),
            (0..1000).step_by(3).collect(),
            vec![999, 1000, 1001],
            (10..500).collect(),
            (0..2000).collect(),
            (3..10).collect(),
            (0..7).map(|i| i * 3).collect(),
        ];
        for a in &lists {
            for b in &lists {
                let want: Vec<u32> = a.iter().copied().filter(|x| b.contains(x)).collect();
                assert_eq!(intersect(a, b), want, "{a:?} & {b:?}");
            }
        }
    }

    /// Both ways of applying a `=~` matcher to the index (looking the few candidates up
    /// in each value's list, or merging the lists) select what the matchers say.
    #[test]
    fn index_selection_agrees_with_matching_every_series() {
        let mut st = MemoryStore::new();
        for i in 0..2_000 {
            let l = Labels::from_pairs([
                ("__name__", "requests"),
                ("workload", &format!("w{}", i % 40)),
                ("code", ["200", "404", "500", "503", "504"][i / 40 % 5]),
                ("pod", &format!("p{}", i / 200)),
            ]);
            st.append(&l, 0, i as f64);
        }
        st.shrink_to_fit();
        let cases: &[&[(&str, MatchOp, &str)]] = &[
            &[("workload", MatchOp::Equal, "w7"), ("code", MatchOp::Regex, "5..")],
            &[
                ("workload", MatchOp::Equal, "w7"),
                ("pod", MatchOp::Equal, "p3"),
                ("code", MatchOp::Regex, "50."),
            ],
            &[("code", MatchOp::Regex, "5.."), ("pod", MatchOp::Regex, "p[1-3]")],
            &[("code", MatchOp::Regex, "5..|200"), ("workload", MatchOp::Regex, "w1.*")],
            &[("__name__", MatchOp::Equal, "requests"), ("code", MatchOp::Regex, "404")],
            &[
                ("workload", MatchOp::Regex, "w3."),
                ("code", MatchOp::NotRegex, "5.."),
                ("pod", MatchOp::Equal, "p9"),
            ],
            &[("workload", MatchOp::Equal, "w7"), ("code", MatchOp::Regex, "6..")],
        ];
        for case in cases {
            let ms: Vec<LabelMatcher> =
                case.iter().map(|&(name, op, value)| LabelMatcher::new(name, op, value).unwrap()).collect();
            let selected: Vec<Labels> = st
                .select(&Selection { matchers: &ms, start: 0, end: 0 })
                .unwrap()
                .into_iter()
                .map(|s| s.labels)
                .collect();
            let mut want: Vec<Labels> = st
                .series()
                .map(|(labels, _)| labels)
                .filter(|l| ms.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
                .cloned()
                .collect();
            want.sort();
            assert_eq!(selected, want, "{case:?}");
            assert!(!want.is_empty() || case.iter().any(|m| m.2 == "6.."), "{case:?} selects nothing");
        }
    }

    #[test]
    fn regex_matchers_select_through_the_index() {
        let mut st = MemoryStore::new();
        for (i, code) in ["200", "404", "500", "503", ""].iter().enumerate() {
            let l = Labels::from_pairs([("__name__", "x"), ("code", code), ("i", &i.to_string())]);
            st.append(&l, 0, i as f64);
        }
        let select = |op: MatchOp, pattern: &str| -> Vec<f64> {
            let ms = [
                LabelMatcher::new("__name__", MatchOp::Equal, "x").unwrap(),
                LabelMatcher::new("code", op, pattern).unwrap(),
            ];
            let mut vs: Vec<f64> = st
                .select(&Selection { matchers: &ms, start: 0, end: 0 })
                .unwrap()
                .iter()
                .map(|s| s.points[0].v)
                .collect();
            vs.sort_by(f64::total_cmp);
            vs
        };
        assert_eq!(select(MatchOp::Regex, "5.."), [2.0, 3.0]);
        assert_eq!(select(MatchOp::Regex, "4.*|2.."), [0.0, 1.0]);
        assert_eq!(select(MatchOp::Regex, "6.."), Vec::<f64>::new());
        // Matching the empty value includes the series without the label.
        assert_eq!(select(MatchOp::Regex, "5..|"), [2.0, 3.0, 4.0]);
        assert_eq!(select(MatchOp::Regex, ".*"), [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(select(MatchOp::NotRegex, "5.."), [0.0, 1.0, 4.0]);
    }

    #[test]
    fn shrinking_numbers_series_in_label_order_and_selects_the_same() {
        let mut st = MemoryStore::new();
        for (i, pod) in ["c", "a", "d", "b"].iter().enumerate() {
            for name in ["y", "x"] {
                let l = Labels::from_pairs([("__name__", name), ("pod", pod)]);
                st.append(&l, 0, i as f64);
                st.append(&l, 10, i as f64 + 0.5);
            }
        }
        let ms = [LabelMatcher::new("__name__", MatchOp::Equal, "x").unwrap()];
        let sel = Selection { matchers: &ms, start: 0, end: 10 };
        let before = st.select(&sel).unwrap();
        st.shrink_to_fit();
        assert_eq!(st.select(&sel).unwrap(), before);
        let pods: Vec<_> = before.iter().map(|s| s.labels.get("pod").unwrap_or("")).collect();
        assert_eq!(pods, ["a", "b", "c", "d"]);
        let ids: Vec<_> = st.series().map(|(l, _)| l.to_string()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "series in label order");
        // Appending after renumbering finds the same series.
        st.append(&Labels::from_pairs([("__name__", "x"), ("pod", "a")]), 20, 9.0);
        assert_eq!(st.series_count(), 8);
        let at_20: Vec<_> = st
            .select(&Selection { matchers: &ms, start: 20, end: 20 })
            .unwrap()
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect();
        assert_eq!(at_20.len(), 1);
        assert_eq!((at_20[0].labels.get("pod"), at_20[0].points[0].v), (Some("a"), 9.0));
    }

    /// Patterns read as Go reads them, kept or compiled anew.
    #[test]
    fn patterns_read_as_go_reads_them() {
        for _ in 0..2 {
            let re = go_regex("5..|\\d+x").unwrap();
            assert!(re.is_match("503") && re.is_match("12x") && !re.is_match("5030"));
            assert!(!go_regex("\\d").unwrap().is_match("\u{0663}"), "ASCII digits only, as in Go");
            assert!(go_regex("a(").is_err());
            assert!(go_regex("a\\<b\\>.").unwrap().is_match("a<b>c"), "Go's escaped < and >");
            // Answers of Prometheus 2.42 (Go's regexp) to `label_replace` with these.
            for (pattern, text, matches) in [
                ("a\\Q.*\\E(b)", "a.*b", true),
                ("a\\Q.*\\E(b)", "axxb", false),
                ("a\\101(b)", "aAb", true),
                ("a\\012(b)", "a\nb", true),
                ("\\0", "\0", true),
                ("\\1234", "S4", true),
                ("\\0012", "\u{1}2", true),
                ("(a{,3})", "a{,3}", true),
                ("a{2}", "aa", true),
                ("a{2,}x{1,2}", "aaax", true),
                ("{x}", "{x}", true),
                ("a{1", "a{1", true),
                ("[a[]", "[", true),
                ("[a&&b]", "&", true),
                ("[a~~b]", "~", true),
                ("[]a]", "]", true),
                ("[^]a]", "b", true),
                ("[[:digit:]x]", "7", true),
                ("[\\d.]", ".", true),
                ("[{]", "{", true),
                ("[\\101]", "A", true),
                ("\\x{e9}|\\p{Greek}", "é", true),
                ("a(?i)*b", "aaB", true),
                ("a*(?s)*b", "aab", true),
                ("[[:x]]", "x]", true),
                ("[[:x]]", "x", false),
                ("[[:]", ":", true),
                ("[a-z--]", "-", true),
                ("[!--]", "#", true),
                ("[--a]", "0", true),
                ("[\\x41-\\x{43}]", "B", true),
                ("[\\pL\\d]", "7", true),
                ("[^\\n]", "\n", false),
                ("(?i)[a-c]", "B", true),
                ("a{01}", "a{01}", true),
                ("a{1,01}", "a{1,01}", true),
                ("a{0}b", "b", true),
                ("\\p{^Greek}", "a", true),
                ("\\P{^Greek}", "α", true),
            ] {
                assert_eq!(go_regex(pattern).unwrap().is_match(text), matches, "{pattern} on {text:?}");
                assert_eq!(go_pattern(pattern).unwrap().is_match(text), matches, "{pattern} on {text:?}");
            }
            for invalid in [
                "a\\1(b)",
                "a[\\Q]\\E](b)",
                "\\8",
                "{2}",
                "a\\Q+",
                "a{1001}",
                "a{2,1}",
                "[[:loower:]]",
                "[z-a]",
                "[\\b]",
                "[a",
            ] {
                assert!(go_regex(invalid).is_err(), "{invalid}");
            }
            // `label_replace` takes a pattern that closes the wrapping; a matcher not.
            assert!(go_regex("a)|(b").is_ok() && go_pattern("a)|(b").is_err());
            assert!(go_regex(">)\\Q").is_ok() && go_pattern(">)\\Q").is_err());
            assert!(go_pattern("a\\<b\\>.").unwrap().is_match("a<b>c"));
            // Prometheus 3 parses a matcher alone: `\Q` without `\E` ends with it.
            assert!(go_regex("a\\Q.*").is_err(), "the wrapping's `)` is literal");
            let quoted = go_pattern("a\\Q.*").unwrap();
            assert!(quoted.is_match("a.*") && !quoted.is_match("axx"));
            assert!(go_pattern("a\\Q+").unwrap().is_match("a+"));
        }
    }

    /// A repetition after groups of flags repeats what is before them, with the greed
    /// their `U` gives it; Go's limit on nested counts. Captures as Prometheus 2.42's
    /// `label_replace` gives them.
    #[test]
    fn repetitions_after_flags_and_nested_counts_as_in_go() {
        for (pattern, text, first) in [
            ("(a(?U)+)(a*)", "aaa", "a"),
            ("(a(?U)+?)(a*)", "aaa", "aaa"),
            ("(?U)(a(?-U)+)(a*)", "aaa", "aaa"),
            ("(?U)(a+)(a*)", "aaa", "a"),
            ("(?U:(a(?U)+))(a*)", "aaa", "a"),
            ("(a(?i)(?U)*)(a*)", "aaa", ""),
            ("(a(?i)(?m)*)b", "aab", "aa"),
            ("(a(?U)*)((?-U)a*)", "aa", ""),
            ("(a(?U){1,2})(a*)", "aaa", "a"),
            ("((?U)a+)(a*)", "aaa", "a"),
            ("((?U)a)(a+)", "aaa", "a"),
            ("((?U)(a(?-U)+))(a*)", "aaa", "aaa"),
            // A repetition after flags or an empty quote that follow a repetition
            // repeats it (`?` is no laziness there).
            ("(a+(?i)?)", "", ""),
            ("(a{2}(?i)?)", "", ""),
            ("(a+\\Q\\E?)", "", ""),
            ("(a+(?U)??)(a*)", "aaa", "aaa"),
            ("(a(?m)+(?i)?)", "aa", "aa"),
            ("(a(?U)+(?-U)?)(a*)", "aaa", "a"),
            ("(a(?U)+(?-U)??)(a*)", "aaa", ""),
            // Flags as Go reads them: repeated, set and cleared, none.
            ("(?ii)(a)", "A", "A"),
            ("(?)(a)", "a", "a"),
            ("(a(?)*)", "aa", "aa"),
            // Empty quotes between them are nothing.
            ("(a(?i)\\Q\\E+)", "aa", "aa"),
            ("(a+(?i)\\Q\\E?)", "", ""),
            ("(a(?i)\\Q\\E(?m)*)", "aa", "aa"),
            ("((?U)x|(a(?-U)+))(a*)", "aaa", "aaa"),
            ("(?U)((?-U)a|(a(?i)+))(a*)", "aaa", "a"),
        ] {
            let re = go_regex(pattern).unwrap();
            let captures = re.captures(text).unwrap_or_else(|| panic!("{pattern} on {text:?}"));
            assert_eq!(&captures[1], first, "{pattern} on {text:?}");
        }
        // Flags end with the wrapping that a pattern for `label_replace` closes.
        let re = go_regex("x(?U))|((a(?U)+)(a*)").unwrap();
        assert_eq!(re.captures("aaa").map(|c| c[2].to_owned()).as_deref(), Some("a"));
        assert!(!go_regex("(?i-i)a").unwrap().is_match("A"));
        for refused in ["(?x)a", "(?-)a", "(?i-)a", "(?i--s)a", "(?P=n)", "(?u)a"] {
            assert!(go_regex(refused).is_err() && go_pattern(refused).is_err(), "{refused}");
        }
        for valid in [
            "(a{2}){500}",
            "(a{0}){1000}",
            "(a{1000}){1}",
            "(a{2}){2}(b{3}){300}",
            "(b{3}){333}",
            "(a{1,}){600}",
        ] {
            assert!(go_regex(valid).is_ok() && go_pattern(valid).is_ok(), "{valid}");
        }
        for (invalid, named) in [
            ("(a{2}){600}", "{600}"),
            ("((a{2}){2}){300}", "{300}"),
            ("(a{2}|b){501}", "{501}"),
            ("(?:a{2,}){501}", "{501}"),
            ("((a{2}){600}){2}", "{600}"),
            ("(a{1,2}){501}", "{501}"),
            ("(b{3}){334}", "{334}"),
            ("(a{2}){2}(b{4}){300}", "{300}"),
        ] {
            let error = go_regex(invalid).unwrap_err().to_string();
            assert!(error.contains(&format!("invalid repeat count: `{named}`")), "{invalid}: {error}");
            assert!(go_pattern(invalid).is_err(), "{invalid}");
        }
    }

    /// Capture names as Go takes them; and patterns of many groups of flags, quotes or
    /// `[:` in a class, each read once (read again at each, these took minutes).
    #[test]
    fn capture_names_and_long_patterns_as_in_go() {
        let re = go_regex("(?P<1>a)(b)").unwrap();
        assert_eq!(re.captures("ab").map(|c| c[1].to_owned()).as_deref(), Some("a"));
        assert!(go_regex("(?<n_1>a)").unwrap().is_match("a") && go_pattern("(?P<x>a)").is_ok());
        for refused in ["(?P<a.b>a)", "(?P<>a)", "(?P<\u{e9}>a)", "(?P<a", "(?<a[0]>a)"] {
            assert!(go_regex(refused).is_err() && go_pattern(refused).is_err(), "{refused}");
        }
        let n = 50_000;
        let flags = format!("{}a", "(?i)".repeat(n));
        assert!(go_regex(&flags).unwrap().is_match("A"));
        let quotes = "\\Q.\\E".repeat(n);
        let re = go_regex(&quotes).unwrap();
        assert!(re.is_match(&".".repeat(n)) && !re.is_match(&"x".repeat(n)));
        let named = format!("[{}]", "[:digit:]".repeat(n));
        assert!(go_regex(&named).unwrap().is_match("7"));
        let unclosed = format!("[{}x]", "[:".repeat(n));
        assert!(go_regex(&unclosed).is_ok_and(|re| re.is_match(":")), "many `[:` and no `:]`");
    }

    /// Patterns whose strings are few match as a set, and every pattern, set or not,
    /// accepts exactly what its compiled regex accepts.
    #[test]
    fn finite_patterns_match_as_their_regexes() {
        let sets = [
            "",
            "a|b|c",
            "pod-(1|2)",
            "50[0-3]",
            "https?",
            "a|",
            "|",
            "(?i)ab",
            "foo\\.bar",
            "a\\|b",
            "\\d",
            "a{2}",
            "a{2,3}x?",
            "(a|b)(c|d)",
            "é|ü",
            "10\\.0\\.0\\.1|db-1",
            "x\\<y",
        ];
        let regexes = ["a$b", "^a$", "5..", "a*", "[^a]", "\\bx", ".", "a{1,9}"];
        let probes = [
            "", "a", "b", "c", "ab", "AB", "aB", "Ab", "pod-1", "pod-2", "pod-3", "500", "503", "504",
            "http", "https", "httpss", "foo.bar", "fooxbar", "a|b", "aa", "aaa", "aax", "aaax", "aaaa", "ac",
            "bd", "ad", "é", "ü", "0", "7", "٣", "10.0.0.1", "10x0.0.1", "db-1", "x<y", "x", "A", "\n",
            "a)|(b",
        ];
        for pattern in sets.iter().chain(&regexes) {
            let p = go_pattern(pattern).unwrap();
            let literal = matches!(*p, Pattern::Literals(_));
            assert_eq!(literal, sets.contains(pattern), "{pattern:?} as a set: {literal}");
            let re = build_regex(&anchored_go_pattern(pattern).unwrap()).unwrap();
            for probe in probes {
                assert_eq!(p.is_match(probe), re.is_match(probe), "{pattern:?} on {probe:?}");
            }
        }
        assert!(go_pattern("a(").is_err() && go_pattern("a\\").is_err());
        // Two long literals repeated: matched by the regex, not spelt out.
        let long = format!("({}|{}){{8}}", "a".repeat(4_000), "b".repeat(4_000));
        assert!(matches!(*go_pattern(&long).unwrap(), Pattern::Regex(_)));
        let small = format!("({}|{}){{2}}", "a".repeat(100), "b".repeat(100));
        assert!(matches!(*go_pattern(&small).unwrap(), Pattern::Literals(_)));
        assert!(plain_alternation("a\\d").is_none() && plain_alternation("a\\").is_none());
    }

    proptest::proptest! {
        /// Alternations of values, written as a dashboard writes a multi-value variable
        /// (each value's metacharacters escaped), match as sets and as regexes alike.
        #[test]
        fn alternations_of_values_are_sets(
            values in proptest::collection::vec("[a-c.|()*\\\\-]{0,3}", 1..6),
            probes in proptest::collection::vec("[a-c.|()*\\\\-]{0,3}", 8),
        ) {
            let pattern = values.iter().map(|v| regex::escape(v)).collect::<Vec<_>>().join("|");
            let p = go_pattern(&pattern).unwrap();
            proptest::prop_assert!(matches!(*p, Pattern::Literals(_)), "{}", pattern);
            let re = build_regex(&anchored_go_pattern(&pattern).unwrap()).unwrap();
            for probe in probes.iter().chain(&values) {
                proptest::prop_assert_eq!(p.is_match(probe), re.is_match(probe), "{} on {}", pattern, probe);
            }
        }
    }

    /// A generated pattern: literals, small classes, groups, alternations, bounded and
    /// unbounded repetitions, case folding, anchors and `.`.
    fn pattern_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            "[a-c]{0,2}",
            Just("[ab]".to_owned()),
            Just("[^a]".to_owned()),
            Just(".".to_owned()),
            Just("\\.".to_owned()),
            Just("\\d".to_owned()),
            Just("$".to_owned()),
            Just("^".to_owned()),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 1..3).prop_map(|v| v.join("")),
                proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| v.join("|")),
                inner.clone().prop_map(|p| format!("({p})")),
                (inner.clone(), prop_oneof![Just("?"), Just("*"), Just("{2}"), Just("{1,3}"), Just("+")])
                    .prop_map(|(p, r)| format!("(?:{p}){r}")),
                inner.prop_map(|p| format!("(?i:{p})")),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever the pattern, a set of strings accepts exactly what the compiled
        /// regex accepts: every string of the set matches it, and generated strings
        /// match both or neither.
        #[test]
        fn generated_patterns_match_as_their_regexes(
            pattern in pattern_strategy(),
            probes in proptest::collection::vec("[a-cA-C.0-9]{0,4}", 16),
        ) {
            let re = build_regex(&anchored_go_pattern(&pattern).unwrap()).unwrap();
            let p = go_pattern(&pattern).unwrap();
            if let Pattern::Literals(set) = &*p {
                for s in set {
                    proptest::prop_assert!(re.is_match(s), "{:?} is in the set of {:?}", s, pattern);
                }
            }
            for probe in &probes {
                proptest::prop_assert_eq!(p.is_match(probe), re.is_match(probe), "{:?} on {:?}", pattern, probe);
            }
        }
    }

    /// `=~` with an alternation of values looks each value up in the index; the same
    /// series as trying the pattern on every value of the label.
    #[test]
    fn alternations_select_through_the_index_by_value() {
        let mut st = MemoryStore::new();
        for i in 0..40 {
            let l =
                Labels::from_pairs([("__name__", "x"), ("pod", &format!("pod-{i}")), ("i", &i.to_string())]);
            st.append(&l, 0, i as f64);
        }
        for pattern in ["pod-1|pod-7|pod-39|nope", "pod-3(1|2)", "pod-1|job", "pod-\\d", "x|i"] {
            let ms = [
                LabelMatcher::new("__name__", MatchOp::Equal, "x").unwrap(),
                LabelMatcher::new("pod", MatchOp::Regex, pattern).unwrap(),
            ];
            let got: Vec<f64> = st
                .select(&Selection { matchers: &ms, start: 0, end: 0 })
                .unwrap()
                .iter()
                .map(|s| s.points[0].v)
                .collect();
            let re = build_regex(&anchored_go_pattern(pattern).unwrap()).unwrap();
            let mut want: Vec<f64> =
                (0..40).filter(|i| re.is_match(&format!("pod-{i}"))).map(|i| i as f64).collect();
            let mut got_sorted = got.clone();
            got_sorted.sort_by(f64::total_cmp);
            want.sort_by(f64::total_cmp);
            assert_eq!(got_sorted, want, "{pattern}");
        }
    }

    /// Label names and values from the index: those of the series with a sample in
    /// range, as selecting every series and reading its labels finds them.
    #[test]
    fn label_names_and_values_come_from_series_in_range() {
        let mut st = MemoryStore::new();
        let series = [
            (&[("__name__", "up"), ("job", "api")][..], [0, 10_000]),
            (&[("__name__", "up"), ("job", "db"), ("zone", "a")][..], [20_000, 30_000]),
            (&[("__name__", "down"), ("job", "db")][..], [50_000, 60_000]),
            (&[("__name__", "down"), ("job", "api"), ("le", "1")][..], [5_000, 5_000]),
        ];
        for (labels, times) in series {
            for t in times {
                st.append(&Labels::from_pairs(labels.iter().copied()), t, 1.0);
            }
        }
        st.shrink_to_fit();
        for (start, end) in
            [(i64::MIN, i64::MAX), (0, 0), (11_000, 19_000), (10_000, 20_000), (25_000, 55_000)]
        {
            let selected = st.select_shared(&Selection { matchers: &[], start, end }).unwrap();
            let in_range: Vec<&Labels> =
                selected.iter().filter(|s| !s.points.is_empty()).map(|s| &s.labels).collect();
            let mut want_names: Vec<&str> =
                in_range.iter().flat_map(|l| l.iter().map(|l| &*l.name)).collect();
            want_names.sort();
            want_names.dedup();
            let mut names = st.label_names(start, end);
            names.sort();
            assert_eq!(names, want_names, "{start}..{end}");
            for name in ["__name__", "job", "zone", "le", "nope"] {
                let mut want: Vec<&str> = in_range.iter().filter_map(|l| l.get(name)).collect();
                want.sort();
                want.dedup();
                let mut got = st.label_values(name, start, end);
                got.sort();
                assert_eq!(got, want, "{name} in {start}..{end}");
            }
        }
    }

    #[test]
    fn selections_keep_their_samples_while_the_store_appends() {
        let mut st = MemoryStore::new();
        let up = Labels::from_pairs([("__name__", "up")]);
        st.append(&up, 0, 1.0);
        st.append(&up, 10, 2.0);
        let ms = [LabelMatcher::new("__name__", MatchOp::Equal, "up").unwrap()];
        let held = st.select_shared(&Selection { matchers: &ms, start: 0, end: 100 }).unwrap();
        st.append(&up, 20, 3.0);
        st.append(&up, 10, 9.0);
        let vs = |pts: &[Point]| pts.iter().map(|p| p.v).collect::<Vec<_>>();
        assert_eq!(vs(&held[0].points), [1.0, 2.0]);
        let now = st.select_shared(&Selection { matchers: &ms, start: 5, end: 100 }).unwrap();
        assert_eq!(vs(&now[0].points), [9.0, 3.0]);
        assert_eq!(vs(&now[0].points.window(1..2)), [3.0]);
    }

    /// Evenly spaced or not, with gaps and repeated timestamps, and `near` right or
    /// far off: the same answer as a binary search.
    #[test]
    fn partition_point_near_agrees_with_binary_search() {
        let layouts: Vec<Vec<i64>> = vec![
            (0..40).map(|i| i * 10).collect(),
            (0..40).map(|i| i * i).collect(),
            (0..40).map(|i| if i < 20 { i } else { 1_000 + i }).collect(),
            vec![5, 5, 5, 7, 7, 9],
            vec![3],
            vec![],
        ];
        for ts in &layouts {
            let ps: Vec<Point> = ts.iter().map(|&t| Point { t, v: 0.0 }).collect();
            let (lo, hi) = (ts.first().copied().unwrap_or(0) - 5, ts.last().copied().unwrap_or(0) + 5);
            for cut in lo..=hi {
                for near in [cut, lo - 100, hi + 100, (lo + hi) / 2, cut + 3] {
                    assert_eq!(
                        partition_point_near(&ps, near, |t| t <= cut),
                        ps.partition_point(|p| p.t <= cut),
                        "{ts:?}: <= {cut}, near {near}"
                    );
                    assert_eq!(
                        partition_point_near(&ps, near, |t| t < cut),
                        ps.partition_point(|p| p.t < cut),
                        "{ts:?}: < {cut}, near {near}"
                    );
                }
            }
        }
    }

    /// A selection holds the series with samples in its window, and only those: one
    /// before, between or after a series' samples leaves it out.
    #[test]
    fn selections_leave_out_series_without_samples_in_the_window() {
        let mut st = MemoryStore::new();
        for (pod, times) in [("early", [0, 10]), ("late", [100, 110])] {
            for t in times {
                st.append(&Labels::from_pairs([("__name__", "x"), ("pod", pod)]), t, 1.0);
            }
        }
        let ms = [LabelMatcher::new("__name__", MatchOp::Equal, "x").unwrap()];
        for ((start, end), want) in [
            ((0, 110), &["early", "late"][..]),
            ((10, 100), &["early", "late"]),
            ((11, 99), &[]),
            ((-50, -1), &[]),
            ((105, 200), &["late"]),
        ] {
            let found = st.select_shared(&Selection { matchers: &ms, start, end }).unwrap();
            let pods: Vec<_> = found.iter().map(|s| s.labels.get("pod").unwrap_or("")).collect();
            assert_eq!(pods, want, "{start}..={end}");
            assert!(found.iter().all(|s| !s.points.is_empty()));
        }
    }
}
