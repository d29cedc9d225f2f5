//! Lexemes of PromQL, recognised with nom: whitespace and comments, identifiers,
//! numbers, durations, strings and operators. The parser pulls one token at a time.

use nom::{
    branch::alt,
    bytes::complete::{tag, take_while, take_while1},
    character::complete::{char, digit1, one_of, satisfy},
    combinator::{opt, recognize},
    IResult, Parser,
};

use crate::ast::Span;
use crate::error::{ErrorKind, ParseError};

/// The kind of a token; its text is `src[span]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// `[a-zA-Z_][a-zA-Z0-9_]*`: label names, keywords, function and metric names.
    Ident,
    /// An identifier with a `:`, only valid as a metric name.
    MetricIdent,
    Number,
    Duration,
    String,
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    /// `=` (only inside braces).
    Assign,
    /// `=~`
    RegexMatch,
    /// `!~`
    RegexNoMatch,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    /// `==`
    Eqlc,
    /// `!=`
    Neq,
    Gtr,
    Gte,
    Lss,
    Lte,
    /// `</`
    TrimUpper,
    /// `>/`
    TrimLower,
    At,
    Eof,
}

/// One token and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Tok,
    pub span: Span,
}

type Res<'a, T = &'a str> = IResult<&'a str, T, ()>;

/// Skips spaces, tabs, newlines and `#` comments.
fn skip_trivia(mut i: &str) -> &str {
    loop {
        let rest = i.trim_start_matches([' ', '\t', '\n', '\r']);
        match rest.strip_prefix('#') {
            Some(comment) => i = comment.find('\n').map_or("", |n| &comment[n..]),
            None => return rest,
        }
    }
}

fn identifier(i: &str) -> Res<'_> {
    recognize((
        satisfy(|c| c.is_ascii_alphabetic() || c == '_' || c == ':'),
        take_while(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
    ))
    .parse(i)
}

/// Digits with single `_` separators between them, as Go number literals allow.
fn digits_with_separators<'a>(
    is_digit: fn(char) -> bool,
) -> impl Parser<&'a str, Output = &'a str, Error = ()> {
    recognize((take_while1(is_digit), nom::multi::many0((char('_'), take_while1(is_digit)))))
}

fn dec_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn hex_digit(c: char) -> bool {
    c.is_ascii_hexdigit()
}

/// A number as Prometheus' lexer scans it: hex `0x1f`, decimal with optional fraction
/// and exponent, `_` between digits. The caller checks what follows.
fn number(i: &str) -> Res<'_> {
    let hex = recognize((char('0'), one_of("xX"), opt(char('_')), digits_with_separators(hex_digit)));
    let exponent = (one_of("eE"), opt(one_of("+-")), digits_with_separators(dec_digit));
    let mantissa = alt((
        recognize((
            digits_with_separators(dec_digit),
            opt((char('.'), opt(digits_with_separators(dec_digit)))),
        )),
        recognize((char('.'), digits_with_separators(dec_digit))),
    ));
    alt((hex, recognize((mantissa, opt(exponent))))).parse(i)
}

/// A duration: `[0-9]+` and a unit, repeated (`1h30m`). Unit order is checked later.
fn duration(i: &str) -> Res<'_> {
    let unit = alt((tag("ms"), tag("s"), tag("m"), tag("h"), tag("d"), tag("w"), tag("y")));
    recognize(nom::multi::many1((digit1, unit))).parse(i)
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `s` is a label name that can be written without quotes.
pub(crate) fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_') && chars.all(is_alnum)
}

/// Words the lexer never reads as a metric name: `bool`, `on`, `ignoring`,
/// `group_left`, `group_right`, `atan2` are keywords that `metric_identifier` excludes,
/// and `inf`/`nan` are numbers. Any case.
pub(crate) fn is_reserved_word(s: &str) -> bool {
    ["bool", "on", "ignoring", "group_left", "group_right", "atan2", "inf", "nan"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(s))
}

fn lex_error(msg: String, start: usize, end: usize) -> ParseError {
    ParseError::new(ErrorKind::Lexical(msg), Span::new(start, end))
}

/// Reads the token at byte offset `pos` of `src` (after any whitespace and comments).
/// Inside `[...]` (`in_brackets`) a `:` is always the subquery colon, never the start
/// of a metric name.
pub(crate) fn next_token(src: &str, pos: usize, in_brackets: bool) -> Result<Token, ParseError> {
    let rest = skip_trivia(&src[pos..]);
    let start = src.len() - rest.len();
    let tok = |kind, len: usize| Ok(Token { kind, span: Span::new(start, start + len) });
    let mut chars = rest.chars();
    let Some(c) = chars.next() else {
        return tok(Tok::Eof, 0);
    };
    let next = chars.next();
    match c {
        '(' => tok(Tok::LParen, 1),
        ')' => tok(Tok::RParen, 1),
        '{' => tok(Tok::LBrace, 1),
        '}' => tok(Tok::RBrace, 1),
        '[' => tok(Tok::LBracket, 1),
        ']' => tok(Tok::RBracket, 1),
        ',' => tok(Tok::Comma, 1),
        ':' if in_brackets || !matches!(next, Some(n) if n.is_ascii_alphabetic() || n == '_' || n == ':') => {
            tok(Tok::Colon, 1)
        }
        '+' => tok(Tok::Add, 1),
        '-' => tok(Tok::Sub, 1),
        '*' => tok(Tok::Mul, 1),
        '/' => tok(Tok::Div, 1),
        '%' => tok(Tok::Mod, 1),
        '^' => tok(Tok::Pow, 1),
        '@' => tok(Tok::At, 1),
        '=' => match next {
            Some('=') => tok(Tok::Eqlc, 2),
            Some('~') => tok(Tok::RegexMatch, 2),
            _ => tok(Tok::Assign, 1),
        },
        '!' => match next {
            Some('=') => tok(Tok::Neq, 2),
            Some('~') => tok(Tok::RegexNoMatch, 2),
            Some(n) => Err(lex_error(format!("unexpected character after '!': {n:?}"), start, start + 2)),
            None => Err(lex_error("unexpected end of input after '!'".into(), start, start + 1)),
        },
        '<' => match next {
            Some('=') => tok(Tok::Lte, 2),
            Some('/') => tok(Tok::TrimUpper, 2),
            _ => tok(Tok::Lss, 1),
        },
        '>' => match next {
            Some('=') => tok(Tok::Gte, 2),
            Some('/') => tok(Tok::TrimLower, 2),
            _ => tok(Tok::Gtr, 1),
        },
        '"' | '\'' | '`' => tok(Tok::String, string_len(rest, start)?),
        c if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) => {
            let (kind, len) = number_or_duration(rest, start)?;
            tok(kind, len)
        }
        c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
            let (_, word) =
                identifier(rest).map_err(|_| lex_error("invalid identifier".into(), start, start + 1))?;
            let kind = if word.contains(':') { Tok::MetricIdent } else { Tok::Ident };
            tok(kind, word.len())
        }
        c => Err(lex_error(format!("unexpected character: {c:?}"), start, start + c.len_utf8())),
    }
}

/// Length of the number or duration at the start of `rest`; `start` is its offset.
fn number_or_duration(rest: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let followed_by_alnum = |after: &str| after.chars().next().is_some_and(is_alnum);
    if let Ok((after, num)) = number(rest) {
        if !followed_by_alnum(after) {
            return Ok((Tok::Number, num.len()));
        }
    }
    if let Ok((after, dur)) = duration(rest) {
        if !followed_by_alnum(after) {
            return Ok((Tok::Duration, dur.len()));
        }
    }
    let bad = rest.find(|c: char| !(is_alnum(c) || c == '.')).unwrap_or(rest.len());
    Err(lex_error(format!("bad number or duration syntax: {:?}", &rest[..bad]), start, start + bad))
}

/// Length of the quoted string at the start of `rest`, quotes included.
fn string_len(rest: &str, start: usize) -> Result<usize, ParseError> {
    let quote = rest.as_bytes()[0];
    let body = &rest.as_bytes()[1..];
    if quote == b'`' {
        return match body.iter().position(|&b| b == b'`') {
            Some(i) => Ok(i + 2),
            None => Err(lex_error("unterminated raw string".into(), start, start + rest.len())),
        };
    }
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'\n' => break,
            b if b == quote => return Ok(i + 2),
            _ => i += 1,
        }
    }
    let end = start + 1 + i.min(body.len());
    Err(lex_error("unterminated quoted string".into(), start, end))
}

/// Unescapes a string token (quotes included) to text; bytes that are not UTF-8 are
/// replaced (label names and values are UTF-8 here).
pub(crate) fn unquote(token: &str, start: usize) -> Result<String, ParseError> {
    let bytes = unquote_bytes(token, start)?;
    Ok(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Unescapes a string token (quotes included) with Go's rules: `\a \b \f \n \r \t \v
/// \\`, the token's own quote, `\ooo`, `\xHH`, `\uHHHH`, `\UHHHHHHHH`. Backtick strings
/// are raw. Like Go, the result may be any bytes. `start` is the token's offset, for
/// error positions.
pub(crate) fn unquote_bytes(token: &str, start: usize) -> Result<Vec<u8>, ParseError> {
    let quote = token.as_bytes()[0];
    let body = &token[1..token.len() - 1];
    if quote == b'`' || !body.contains('\\') {
        return Ok(body.as_bytes().to_vec());
    }
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            let ch_len = utf8_len(bytes[i]);
            out.extend_from_slice(&bytes[i..i + ch_len]);
            i += ch_len;
            continue;
        }
        let at = start + 1 + i;
        let Some(&e) = bytes.get(i + 1) else {
            return Err(lex_error("escape sequence not terminated".into(), at, at + 1));
        };
        let simple = match e {
            b'a' => Some(7u8),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' => Some(b'\\'),
            q if q == quote => Some(q),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            i += 2;
            continue;
        }
        let hex_escape = |digits: usize| -> Result<u32, ParseError> {
            let s = body.get(i + 2..i + 2 + digits).filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()));
            let s = s.ok_or_else(|| lex_error("invalid hexadecimal escape sequence".into(), at, at + 2))?;
            u32::from_str_radix(s, 16)
                .map_err(|_| lex_error("invalid hexadecimal escape sequence".into(), at, at + 2))
        };
        match e {
            b'0'..=b'7' => {
                let s = body.get(i + 1..i + 4).filter(|s| s.bytes().all(|b| (b'0'..=b'7').contains(&b)));
                let v = s.and_then(|s| u32::from_str_radix(s, 8).ok()).filter(|&v| v <= 255);
                let v = v.ok_or_else(|| lex_error("invalid octal escape sequence".into(), at, at + 2))?;
                out.push(v as u8);
                i += 4;
            }
            b'x' => {
                out.push(hex_escape(2)? as u8);
                i += 4;
            }
            b'u' | b'U' => {
                let digits = if e == b'u' { 4 } else { 8 };
                let c = char::from_u32(hex_escape(digits)?).ok_or_else(|| {
                    lex_error("invalid Unicode code point in escape sequence".into(), at, at + 2)
                })?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += 2 + digits;
            }
            _ => {
                let c = body[i + 1..].chars().next().unwrap_or('\\');
                return Err(lex_error(format!("unknown escape sequence {c:?}"), at, at + 1 + c.len_utf8()));
            }
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// The value of a number token, as Prometheus computes it: Go's `ParseInt(s, 0, 64)`
/// (so a leading `0` means octal), falling back to `ParseFloat`.
pub(crate) fn number_value(text: &str) -> Option<f64> {
    if text.eq_ignore_ascii_case("inf") {
        return Some(f64::INFINITY);
    }
    if text.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    let digits: String = text.chars().filter(|&c| c != '_').collect();
    if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        return i64::from_str_radix(hex, 16).ok().map(|v| v as f64);
    }
    let is_int = digits.bytes().all(|b| b.is_ascii_digit());
    if is_int && digits.len() > 1 && digits.starts_with('0') {
        if let Ok(v) = i64::from_str_radix(&digits[1..], 8) {
            return Some(v as f64);
        }
    } else if is_int {
        if let Ok(v) = digits.parse::<i64>() {
            return Some(v as f64);
        }
    }
    digits.parse::<f64>().ok()
}

/// Prometheus' duration units, largest first, in milliseconds.
pub(crate) const DURATION_UNITS: [(&str, i64); 7] = [
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Milliseconds of a duration token (`1h30m`), checking Prometheus' unit order
/// (`y w d h m s ms`, each at most once).
pub(crate) fn duration_ms(text: &str) -> Result<i64, String> {
    const UNITS: [(&str, i64); 7] = DURATION_UNITS;
    let invalid = || format!("not a valid duration string: {text:?}");
    let mut rest = text;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
        let value: i64 = rest[..n].parse().map_err(|_| "duration out of range".to_owned())?;
        rest = &rest[n..];
        let unit = if rest.starts_with("ms") { "ms" } else { rest.get(..1).ok_or_else(invalid)? };
        let idx = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(invalid)?;
        if idx < next_unit {
            return Err(invalid());
        }
        next_unit = idx + 1;
        rest = &rest[unit.len()..];
        total = value
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration out of range".to_owned())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        let mut pos = 0;
        let mut out = vec![];
        loop {
            let t = next_token(src, pos, false).unwrap();
            out.push(t.kind);
            if t.kind == Tok::Eof {
                return out;
            }
            pos = t.span.end as usize;
        }
    }

    #[test]
    fn tokens() {
        use Tok::*;
        assert_eq!(
            kinds("a:b{c=~\"d\"}[5m] # comment\n"),
            [MetricIdent, LBrace, Ident, RegexMatch, String, RBrace, LBracket, Duration, RBracket, Eof]
        );
        assert_eq!(kinds("1 >= .5e3 != 0x1F"), [Number, Gte, Number, Neq, Number, Eof]);
        assert_eq!(kinds("1h30m 1_000 'x' `y`"), [Duration, Number, String, String, Eof]);
        assert!(next_token("5x", 0, false).is_err());
        assert!(next_token("\"abc", 0, false).is_err());
        assert!(next_token("$", 0, false).is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(number_value("010"), Some(8.0));
        assert_eq!(number_value("09"), Some(9.0));
        assert_eq!(number_value("0x1F"), Some(31.0));
        assert_eq!(number_value("1_000"), Some(1000.0));
        assert_eq!(number_value("1e3"), Some(1000.0));
        assert_eq!(number_value(".5"), Some(0.5));
        assert_eq!(number_value("5."), Some(5.0));
        assert_eq!(number_value("99999999999999999999"), Some(1e20));
        assert!(number_value("NaN").is_some_and(f64::is_nan));
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(duration_ms("1ms"), Ok(1));
        assert_eq!(duration_ms("2w1d"), Ok(15 * 86_400_000));
        assert!(duration_ms("30m1h").is_err());
        assert!(duration_ms("1m1m").is_err());
        assert!(duration_ms("99999999999y").is_err());
    }

    #[test]
    fn strings() {
        assert_eq!(unquote(r#""a\"b\n\x41\101\u00e9""#, 0).unwrap(), "a\"b\nAAé");
        assert_eq!(unquote(r"'it\'s'", 0).unwrap(), "it's");
        assert_eq!(unquote(r"`raw\n`", 0).unwrap(), r"raw\n");
        assert!(unquote(r#""\q""#, 0).is_err());
        assert!(unquote(r#""\'""#, 0).is_err());
        assert!(unquote(r#""\400""#, 0).is_err());
    }
}
