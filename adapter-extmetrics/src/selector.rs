//! Kubernetes label selectors, as sent in the `labelSelector=` query parameter.
//!
//! The syntax and validation follow apimachinery's `labels.Parse`:
//!
//! ```text
//! <selector>    ::= <requirement> | <requirement> "," <selector>
//! <requirement> ::= [!] KEY [ ("in" | "notin") "(" VALUE ("," VALUE)* ")" | ("=" | "==" | "!=" | ">" | "<") VALUE ]
//! ```
//!
//! Whitespace (space, tab, CR, LF) separates tokens and is otherwise ignored; the special symbols
//! are `= ! ( ) , < >`; anything else up to whitespace or a special symbol is an identifier, and
//! `in`/`notin` are keywords only where an operator is expected. Keys must be qualified names
//! (`[prefix/]name`, name at most 63 characters), values valid label values (empty or at most 63
//! alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric). `>`/`<` need an integer.
//! Requirements are sorted by key (stable), as apimachinery does, and ANDed.
//!
//! ```
//! use std::collections::BTreeMap;
//! use adapter_extmetrics::selector::Selector;
//!
//! let sel = Selector::parse("query-name=rps, env in (prod,canary),!debug").unwrap();
//! let labels = BTreeMap::from([
//!     ("query-name".to_string(), "rps".to_string()),
//!     ("env".to_string(), "prod".to_string()),
//! ]);
//! assert!(sel.matches(&labels));
//! assert_eq!(sel.to_string(), "!debug,env in (canary,prod),query-name=rps");
//!
//! let err = Selector::parse("a=b,,c").unwrap_err();
//! assert_eq!(err.column, 5);
//! assert_eq!(err.to_string(), "found ',', expected: identifier after ',' (at column 5)");
//! ```

use std::collections::BTreeMap;
use std::fmt;

/// A selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value` (also true when the label is absent)
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)` (also true when the label is absent)
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>5` (integer comparison)
    GreaterThan,
    /// `key<5` (integer comparison)
    LessThan,
}

/// One ANDed condition of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and deduplicated, as apimachinery's `sets.String.List()`.
    values: Vec<String>,
}

impl Requirement {
    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values (sorted, deduplicated; empty for `Exists`/`DoesNotExist`).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set satisfies this requirement (apimachinery `Requirement.Matches`).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                got.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotEquals | Operator::NotIn => got.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (
                    got.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one = || self.values.first().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={}", self.key, one()),
            Operator::DoubleEquals => write!(f, "{}=={}", self.key, one()),
            Operator::NotEquals => write!(f, "{}!={}", self.key, one()),
            Operator::GreaterThan => write!(f, "{}>{}", self.key, one()),
            Operator::LessThan => write!(f, "{}<{}", self.key, one()),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
        }
    }
}

/// A parsed label selector: requirements ANDed; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// A selector that does not parse or validate, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at column {column})")]
pub struct SelectorError {
    /// apimachinery's message, e.g. `unable to parse requirement: found ')', expected: identifier`.
    pub message: String,
    /// Byte offset of the offending token in the selector string.
    pub offset: usize,
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
}

impl Selector {
    /// The empty selector (`labels.Everything()`).
    pub fn everything() -> Self {
        Selector::default()
    }

    /// `k1=v1,k2=v2,…` from a label map (apimachinery `SelectorFromSet`).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Self {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement { key: k.clone(), operator: Operator::Equals, values: vec![v.clone()] })
            .collect();
        Selector { requirements }
    }

    /// Parses a selector string; the empty (or all-whitespace) string is [`Selector::everything`].
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let tokens = lex(input);
        let mut p = Parser { input, tokens, pos: 0 };
        let mut requirements = p.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector { requirements })
    }

    /// Whether it has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether every requirement matches the labels.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The single value `key` must have, if the selector pins it (`=`, `==`, or `in` with one
    /// value), as apimachinery's `RequiresExactMatch`.
    pub fn exact_match(&self, key: &str) -> Option<&str> {
        self.requirements.iter().find_map(|r| match r.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In
                if r.key == key && r.values.len() == 1 =>
            {
                r.values.first().map(String::as_str)
            }
            _ => None,
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    lit: String,
    offset: usize,
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn symbol_token(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "!=" => Tok::NotEquals,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "(" => Tok::OpenPar,
        "<" => Tok::LessThan,
        _ => return None,
    })
}

fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    loop {
        while chars.next_if(|&(_, c)| is_whitespace(c)).is_some() {}
        let Some(&(start, c)) = chars.peek() else {
            tokens.push(Token { tok: Tok::End, lit: String::new(), offset: input.len() });
            return tokens;
        };
        if is_special(c) {
            // Longest run of special symbols that is still a token (apimachinery scanSpecialSymbol).
            let mut buf = String::new();
            let mut last: Option<(Tok, String)> = None;
            while let Some(&(_, c)) = chars.peek() {
                if !is_special(c) {
                    break;
                }
                buf.push(c);
                if let Some(t) = symbol_token(&buf) {
                    last = Some((t, buf.clone()));
                } else if last.is_some() {
                    break;
                }
                chars.next();
            }
            match last {
                Some((tok, lit)) => tokens.push(Token { tok, lit, offset: start }),
                // Unreachable: every single special symbol is a token.
                None => tokens.push(Token { tok: Tok::End, lit: buf, offset: start }),
            }
        } else {
            let mut lit = String::new();
            while let Some((_, c)) = chars.next_if(|&(_, c)| !is_whitespace(c) && !is_special(c)) {
                lit.push(c);
            }
            let tok = match lit.as_str() {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Identifier,
            };
            tokens.push(Token { tok, lit, offset: start });
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token>,
    pos: usize,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Ctx {
    KeyAndOperator,
    Values,
}

impl Parser<'_> {
    fn peek(&self, ctx: Ctx) -> (Tok, String, usize) {
        let t = self.tokens.get(self.pos).or(self.tokens.last());
        let (mut tok, lit, off) =
            t.map_or((Tok::End, String::new(), self.input.len()), |t| (t.tok, t.lit.clone(), t.offset));
        if ctx == Ctx::Values && matches!(tok, Tok::In | Tok::NotIn) {
            tok = Tok::Identifier;
        }
        (tok, lit, off)
    }

    fn next(&mut self, ctx: Ctx) -> (Tok, String, usize) {
        let t = self.peek(ctx);
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn err(&self, offset: usize, message: String) -> SelectorError {
        let column = self.input.get(..offset).map_or(offset, |s| s.chars().count()) + 1;
        SelectorError { message, offset, column }
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut out = Vec::new();
        loop {
            let (tok, lit, off) = self.peek(Ctx::Values);
            match tok {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self.requirement().map_err(|mut e| {
                        e.message = format!("unable to parse requirement: {}", e.message);
                        e
                    })?;
                    out.push(r);
                    let (t, l, o) = self.next(Ctx::Values);
                    match t {
                        Tok::End => return Ok(out),
                        Tok::Comma => {
                            let (t2, l2, o2) = self.peek(Ctx::Values);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(
                                    self.err(o2, format!("found '{l2}', expected: identifier after ','"))
                                );
                            }
                        }
                        _ => {
                            return Err(self.err(o, format!("found '{l}', expected: ',' or 'end of string'")))
                        }
                    }
                }
                Tok::End => return Ok(out),
                _ => {
                    return Err(
                        self.err(off, format!("found '{lit}', expected: !, identifier, or 'end of string'"))
                    )
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (mut tok, mut lit, mut off) = self.next(Ctx::Values);
        let mut operator = None;
        if tok == Tok::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (tok, lit, off) = self.next(Ctx::Values);
        }
        if tok != Tok::Identifier {
            return Err(self.err(off, format!("found '{lit}', expected: identifier")));
        }
        validate_label_key(&lit).map_err(|m| self.err(off, format!("invalid label key {lit:?}: {m}")))?;
        let key = lit;
        if operator.is_none() && matches!(self.peek(Ctx::Values).0, Tok::End | Tok::Comma) {
            operator = Some(Operator::Exists);
        }
        if let Some(op) = operator {
            return Ok(Requirement { key, operator: op, values: Vec::new() });
        }
        let (tok, lit, off) = self.next(Ctx::KeyAndOperator);
        let op = match tok {
            Tok::In => Operator::In,
            Tok::NotIn => Operator::NotIn,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::NotEquals => Operator::NotEquals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            _ => {
                return Err(self.err(off, format!("found '{lit}', expected: in, notin, =, ==, !=, gt, lt")));
            }
        };
        let (mut values, value_off) = match op {
            Operator::In | Operator::NotIn => self.set_values()?,
            _ => self.exact_value()?,
        };
        values.sort();
        values.dedup();
        for v in &values {
            validate_label_value(v).map_err(|m| {
                self.err(value_off, format!("invalid label value {v:?} for key {key:?}: {m}"))
            })?;
        }
        if matches!(op, Operator::GreaterThan | Operator::LessThan)
            && values.first().is_none_or(|v| v.parse::<i64>().is_err())
        {
            return Err(
                self.err(value_off, "for 'Gt', 'Lt' operators, the value must be an integer".to_owned())
            );
        }
        Ok(Requirement { key, operator: op, values })
    }

    fn exact_value(&mut self) -> Result<(Vec<String>, usize), SelectorError> {
        let (tok, _, off) = self.peek(Ctx::Values);
        if matches!(tok, Tok::End | Tok::Comma) {
            return Ok((vec![String::new()], off));
        }
        let (tok, lit, off) = self.next(Ctx::Values);
        if tok == Tok::Identifier {
            return Ok((vec![lit], off));
        }
        Err(self.err(off, format!("found '{lit}', expected: identifier")))
    }

    fn set_values(&mut self) -> Result<(Vec<String>, usize), SelectorError> {
        let (tok, lit, off) = self.next(Ctx::Values);
        if tok != Tok::OpenPar {
            return Err(self.err(off, format!("found '{lit}' expected: '('")));
        }
        let (tok, lit, first_off) = self.peek(Ctx::Values);
        match tok {
            Tok::Identifier | Tok::Comma => {
                let values = self.identifiers()?;
                let (tok, l2, o2) = self.next(Ctx::Values);
                if tok != Tok::ClosedPar {
                    return Err(self.err(o2, format!("found '{l2}', expected: ')'")));
                }
                Ok((values, first_off))
            }
            Tok::ClosedPar => {
                self.next(Ctx::Values);
                Ok((vec![String::new()], first_off))
            }
            _ => Err(self.err(first_off, format!("found '{lit}', expected: ',', ')' or identifier"))),
        }
    }

    fn identifiers(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut values: Vec<String> = Vec::new();
        loop {
            let (tok, lit, off) = self.next(Ctx::Values);
            match tok {
                Tok::Identifier => {
                    values.push(lit);
                    let (t2, l2, o2) = self.peek(Ctx::Values);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(values),
                        _ => return Err(self.err(o2, format!("found '{l2}', expected: ',' or ')'"))),
                    }
                }
                Tok::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    let (t2, _, _) = self.peek(Ctx::Values);
                    if t2 == Tok::ClosedPar {
                        values.push(String::new());
                        return Ok(values);
                    }
                    if t2 == Tok::Comma {
                        self.next(Ctx::Values);
                        values.push(String::new());
                    }
                }
                _ => return Err(self.err(off, format!("found '{lit}', expected: ',', or identifier"))),
            }
        }
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    (f.is_ascii_lowercase() || f.is_ascii_digit())
                        && (l.is_ascii_lowercase() || l.is_ascii_digit())
                        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                }
                _ => false,
            }
        })
}

/// Validates a label key as a Kubernetes qualified name (`IsQualifiedName`): an optional DNS
/// subdomain prefix and `/`, then a name of 1–63 alphanumerics, `-`, `_`, `.`, starting and
/// ending alphanumeric.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                return Err("prefix part must be non-empty".to_owned());
            }
            if !is_dns1123_subdomain(prefix) {
                return Err(
                    "prefix part must be a lowercase RFC 1123 subdomain (at most 253 characters)".to_owned()
                );
            }
            name
        }
        _ => {
            return Err("a qualified name must consist of alphanumeric characters, '-', '_' or '.', \
                        with an optional DNS subdomain prefix and '/'"
                .to_owned())
        }
    };
    if name.is_empty() {
        return Err("name part must be non-empty".to_owned());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".to_owned());
    }
    if !is_label_name(name) {
        return Err("name part must consist of alphanumeric characters, '-', '_' or '.', \
                    and must start and end with an alphanumeric character"
            .to_owned());
    }
    Ok(())
}

/// Validates a label value (`IsValidLabelValue`): empty, or at most 63 alphanumerics, `-`, `_`,
/// `.`, starting and ending alphanumeric.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !is_label_name(value) {
        return Err("a valid label must be an empty string or consist of alphanumeric characters, \
                    '-', '_' or '.', and must start and end with an alphanumeric character"
            .to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn roundtrip(s: &str) -> String {
        Selector::parse(s).unwrap().to_string()
    }

    #[test]
    fn parses_all_forms() {
        assert_eq!(roundtrip("a=b"), "a=b");
        assert_eq!(roundtrip("a==b"), "a==b");
        assert_eq!(roundtrip("a!=b"), "a!=b");
        assert_eq!(roundtrip("a in (y,x)"), "a in (x,y)");
        assert_eq!(roundtrip("a notin (x)"), "a notin (x)");
        assert_eq!(roundtrip("a"), "a");
        assert_eq!(roundtrip("!a"), "!a");
        assert_eq!(roundtrip("a>5"), "a>5");
        assert_eq!(roundtrip("a<5"), "a<5");
        // As in apimachinery, the value must also be a valid label value.
        assert!(Selector::parse("a<-5").is_err());
        assert_eq!(roundtrip("x=a,y=b,z=c"), "x=a,y=b,z=c");
        assert_eq!(roundtrip("z=c,x=a"), "x=a,z=c");
        assert_eq!(roundtrip(""), "");
        assert_eq!(roundtrip("   "), "");
        assert_eq!(roundtrip("scaledobject.keda.sh/name=triton"), "scaledobject.keda.sh/name=triton");
    }

    #[test]
    fn whitespace_rules() {
        assert_eq!(roundtrip(" a = b , c in ( x , y ) , ! d "), "a=b,c in (x,y),!d");
        assert_eq!(roundtrip("a\t=\tb"), "a=b");
        assert_eq!(roundtrip("a in(x)"), "a in (x)");
        // "ain (x)" is a key "ain" followed by "(": not an operator.
        assert!(Selector::parse("ain (x)").is_err());
        // A value cannot contain a space.
        let e = Selector::parse("a=b c").unwrap_err();
        assert_eq!(e.message, "found 'c', expected: ',' or 'end of string'");
        assert_eq!(e.column, 5);
    }

    #[test]
    fn apimachinery_edge_cases() {
        assert_eq!(roundtrip("x in (foo,,baz),y,z notin ()"), "x in (,baz,foo),y,z notin ()");
        assert_eq!(roundtrip("x in (,)"), "x in ()");
        assert_eq!(roundtrip("a="), "a=");
        assert_eq!(roundtrip("a=,b=c"), "a=,b=c");
        // in/notin are identifiers in value position and as keys.
        assert_eq!(roundtrip("in=notin"), "in=notin");
        assert_eq!(roundtrip("a in (in,notin)"), "a in (in,notin)");
        assert!(Selector::parse("a===").is_err());
        assert!(Selector::parse("a=b=c").is_err());
    }

    #[test]
    fn errors_name_the_position() {
        let cases: &[(&str, &str, usize)] = &[
            ("a=b,,c", "found ',', expected: identifier after ','", 5),
            ("a=b,", "found '', expected: identifier after ','", 5),
            (",a", "found ',', expected: !, identifier, or 'end of string'", 1),
            ("a in x", "unable to parse requirement: found 'x' expected: '('", 6),
            ("a in (x", "unable to parse requirement: found '', expected: ',' or ')'", 8),
            ("a in (x y)", "unable to parse requirement: found 'y', expected: ',' or ')'", 9),
            ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier", 7),
            ("a (x)", "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt", 3),
            ("!", "unable to parse requirement: found '', expected: identifier", 2),
            ("!a=b", "found '=', expected: ',' or 'end of string'", 3),
            ("a=(", "unable to parse requirement: found '(', expected: identifier", 3),
            ("a>b", "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer", 3),
        ];
        for (input, msg, col) in cases {
            let e = Selector::parse(input).unwrap_err();
            assert_eq!((&e.message.as_str(), e.column), (msg, *col), "{input:?}");
        }
    }

    #[test]
    fn validates_keys_and_values() {
        assert!(Selector::parse("-a=b").unwrap_err().message.contains("invalid label key \"-a\""));
        assert!(Selector::parse("a/=b").unwrap_err().message.contains("name part must be non-empty"));
        assert!(Selector::parse("/a=b").unwrap_err().message.contains("prefix part must be non-empty"));
        assert!(Selector::parse("Example.com/a=b").unwrap_err().message.contains("prefix"));
        assert!(Selector::parse("a/b/c=d").is_err());
        assert!(Selector::parse(&format!("{}=b", "k".repeat(64))).is_err());
        assert!(Selector::parse(&format!("{}=b", "k".repeat(63))).is_ok());
        let e = Selector::parse("a=b-").unwrap_err();
        assert!(e.message.contains("invalid label value \"b-\""), "{}", e.message);
        assert_eq!(e.column, 3);
        assert!(Selector::parse(&format!("a={}", "v".repeat(64))).is_err());
        assert!(Selector::parse("a in (x,-y)").is_err());
        assert!(Selector::parse("a=b_c.d-E9").is_ok());
        assert!(Selector::parse("a=ü").is_err());
        assert_eq!(Selector::parse("ä=b").unwrap_err().column, 1);
        assert!(Selector::parse("x,ä=b").unwrap_err().column == 3);
        assert!(validate_label_key("example.com/name").is_ok());
        assert!(validate_label_value("").is_ok());
    }

    #[test]
    fn matching_semantics() {
        let l = labels(&[("query-name", "rps"), ("env", "prod"), ("n", "7")]);
        let m = |s: &str| Selector::parse(s).unwrap().matches(&l);
        assert!(m(""));
        assert!(m("query-name=rps"));
        assert!(m("query-name==rps"));
        assert!(!m("query-name=p99"));
        assert!(m("query-name!=p99"));
        assert!(m("missing!=x"));
        assert!(m("env in (prod,dev)"));
        assert!(!m("env in (dev)"));
        assert!(!m("missing in (dev)"));
        assert!(m("env notin (dev)"));
        assert!(m("missing notin (dev)"));
        assert!(!m("env notin (prod)"));
        assert!(m("env"));
        assert!(!m("missing"));
        assert!(m("!missing"));
        assert!(!m("!env"));
        assert!(m("n>5"));
        assert!(!m("n>7"));
        assert!(m("n<8"));
        assert!(!m("env>1"));
        assert!(!m("missing<1"));
        assert!(!m("missing="));
        assert!(!m("env="));
        assert!(m("query-name=rps,env=prod"));
        assert!(!m("query-name=rps,env=dev"));
    }

    #[test]
    fn from_labels_and_exact_match() {
        let l = labels(&[("b", "2"), ("a", "1")]);
        let s = Selector::from_labels(&l);
        assert_eq!(s.to_string(), "a=1,b=2");
        assert!(s.matches(&l));
        assert!(Selector::everything().is_empty());
        let s = Selector::parse("query-name in (rps),x==y,z!=w").unwrap();
        assert_eq!(s.exact_match("query-name"), Some("rps"));
        assert_eq!(s.exact_match("x"), Some("y"));
        assert_eq!(s.exact_match("z"), None);
        assert_eq!(s.requirements().len(), 3);
        assert_eq!(s.requirements()[0].operator(), Operator::In);
        assert_eq!(s.requirements()[0].key(), "query-name");
        assert_eq!(s.requirements()[0].values(), ["rps"]);
    }
}
