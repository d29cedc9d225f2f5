//! The PromQL parser: nom lexemes (the private `lexer` module) driven by a precedence-climbing
//! recursive descent that mirrors Prometheus' yacc grammar, including its error
//! messages. Type rules are not checked here; see [`crate::check`].

use std::cell::Cell;

use crate::ast::*;
use crate::error::{ErrorKind, ParseError};
use crate::features::{Feature, Features};
use crate::functions;
use crate::lexer::{self, Tok, Token};

/// How deep expressions may nest (parentheses, calls, operator chains) before the
/// parser gives up. It bounds the recursion of every tree walk, so hostile input
/// cannot overflow the stack.
pub const MAX_DEPTH: usize = 256;

/// Parses a query into a syntax tree without type checking. Most callers want
/// [`crate::parse`], which also runs [`crate::check`].
///
/// ```
/// use promql::{parser::parse_syntax, Features};
/// // Syntactically fine, although `rate` needs a range vector:
/// assert!(parse_syntax("rate(x)", Features::none()).is_ok());
/// assert!(parse_syntax("rate(x[5m]", Features::none()).is_err());
/// ```
pub fn parse_syntax(query: &str, features: Features) -> Result<Expr, ParseError> {
    parse_inner(query, features).map_err(|e| e.with_query(query))
}

fn parse_inner(query: &str, features: Features) -> Result<Expr, ParseError> {
    if u32::try_from(query.len()).is_err() {
        return Err(ParseError::new(ErrorKind::Syntax("query is longer than 4 GiB".into()), Span::default()));
    }
    let mut p = Parser {
        src: query,
        pos: 0,
        features,
        depth: 0,
        in_brackets: false,
        open: [0; 3],
        cache: Cell::new(None),
    };
    let first = p.peek()?;
    if first.kind == Tok::Eof {
        return Err(ParseError::new(ErrorKind::Empty, Span::default()));
    }
    let expr = p.expr(0)?;
    let t = p.peek()?;
    if t.kind != Tok::Eof {
        return Err(p.unexpected(t, None, None));
    }
    Ok(expr)
}

type PResult<T> = Result<T, ParseError>;

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    features: Features,
    depth: usize,
    in_brackets: bool,
    /// Open parentheses, brackets and braces, to name what end of input left unclosed.
    open: [u32; 3],
    /// The last token read, keyed by position and bracket mode: the grammar peeks at
    /// the same token several times.
    cache: Cell<Option<(usize, bool, Token)>>,
}

fn err<T>(kind: ErrorKind, span: Span) -> PResult<T> {
    Err(ParseError::new(kind, span))
}

fn syntax<T>(msg: impl Into<String>, span: Span) -> PResult<T> {
    err(ErrorKind::Syntax(msg.into()), span)
}

/// Go's `%.10q...` abbreviation of long token values in messages.
fn quote_abbreviated(s: &str) -> String {
    if s.chars().count() > 10 {
        let head: String = s.chars().take(10).collect();
        format!("{head:?}...")
    } else {
        format!("{s:?}")
    }
}

impl<'a> Parser<'a> {
    // ---- token plumbing ----

    fn token_at(&self, pos: usize) -> PResult<Token> {
        if let Some((p, b, t)) = self.cache.get() {
            if p == pos && b == self.in_brackets {
                return Ok(t);
            }
        }
        let t = lexer::next_token(self.src, pos, self.in_brackets)?;
        self.cache.set(Some((pos, self.in_brackets, t)));
        Ok(t)
    }

    fn peek(&self) -> PResult<Token> {
        self.token_at(self.pos)
    }

    /// The token after `t`.
    fn peek_after(&self, t: Token) -> PResult<Token> {
        lexer::next_token(self.src, t.span.end as usize, self.in_brackets)
    }

    fn bump(&mut self, t: Token) {
        self.pos = t.span.end as usize;
        match t.kind {
            Tok::LParen => self.open[0] += 1,
            Tok::RParen => self.open[0] = self.open[0].saturating_sub(1),
            Tok::LBracket => self.open[1] += 1,
            Tok::RBracket => self.open[1] = self.open[1].saturating_sub(1),
            Tok::LBrace => self.open[2] += 1,
            Tok::RBrace => self.open[2] = self.open[2].saturating_sub(1),
            _ => {}
        }
    }

    fn text(&self, t: Token) -> &'a str {
        &self.src[t.span.range()]
    }

    /// Whether `t` is the identifier `word`, in any case (keywords are case-insensitive).
    fn is_word(&self, t: Token, word: &str) -> bool {
        t.kind == Tok::Ident && self.text(t).eq_ignore_ascii_case(word)
    }

    fn expect(&mut self, kind: Tok, context: &'static str, expected: &'static str) -> PResult<Token> {
        let t = self.peek()?;
        if t.kind == kind {
            self.bump(t);
            return Ok(t);
        }
        Err(self.unexpected(t, Some(context), Some(expected)))
    }

    fn enter(&mut self, at: Span) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(ErrorKind::TooDeep(MAX_DEPTH), at);
        }
        Ok(())
    }

    /// Describes a token the way Prometheus' messages do.
    fn describe(&self, t: Token) -> String {
        let text = self.text(t);
        match t.kind {
            Tok::Eof => "end of input".into(),
            Tok::Ident if ["and", "or", "unless", "atan2"].iter().any(|w| w.eq_ignore_ascii_case(text)) => {
                format!("<op:{text}>")
            }
            Tok::Ident if AggregateOp::from_keyword(text).is_some() => format!("<aggr:{text}>"),
            Tok::Ident if is_keyword(text) => format!("<{text}>"),
            Tok::Ident if text.eq_ignore_ascii_case("inf") || text.eq_ignore_ascii_case("nan") => {
                format!("number {}", quote_abbreviated(text))
            }
            Tok::Ident => format!("identifier {text:?}"),
            Tok::MetricIdent => format!("metric identifier {text:?}"),
            Tok::Number => format!("number {}", quote_abbreviated(text)),
            Tok::Duration => format!("duration {}", quote_abbreviated(text)),
            Tok::String => format!("string {}", quote_abbreviated(text)),
            Tok::Add
            | Tok::Sub
            | Tok::Mul
            | Tok::Div
            | Tok::Mod
            | Tok::Pow
            | Tok::Eqlc
            | Tok::Neq
            | Tok::Gtr
            | Tok::Gte
            | Tok::Lss
            | Tok::Lte
            | Tok::TrimUpper
            | Tok::TrimLower
            | Tok::At
            | Tok::RegexMatch
            | Tok::RegexNoMatch => format!("<op:{text}>"),
            _ => format!("{text:?}"),
        }
    }

    fn unexpected(
        &self,
        t: Token,
        context: Option<&'static str>,
        expected: Option<&'static str>,
    ) -> ParseError {
        let kind = match (t.kind, context) {
            // Like Prometheus' lexer, name the unclosed delimiter at end of input.
            (Tok::Eof, _) if self.open[2] > 0 => {
                ErrorKind::Syntax("unexpected end of input inside braces".into())
            }
            (Tok::Eof, _) if self.open[1] > 0 => ErrorKind::Syntax("unclosed left bracket".into()),
            (Tok::Eof, _) if self.open[0] > 0 => ErrorKind::Syntax("unclosed left parenthesis".into()),
            (Tok::RParen, None) => ErrorKind::Syntax("unexpected right parenthesis ')'".into()),
            (Tok::RBracket, None) => ErrorKind::Syntax("unexpected right bracket ']'".into()),
            _ => ErrorKind::Unexpected { found: self.describe(t), context, expected },
        };
        ParseError::new(kind, t.span)
    }

    // ---- expressions ----

    /// Binary expressions by precedence climbing; `min_prec` is the weakest operator
    /// this level may consume.
    fn expr(&mut self, min_prec: u8) -> PResult<Expr> {
        grow_stack(|| self.expr_inner(min_prec))
    }

    fn expr_inner(&mut self, min_prec: u8) -> PResult<Expr> {
        let start = self.peek()?.span;
        self.enter(start)?;
        let depth_before = self.depth;
        let mut lhs = self.unary()?;
        loop {
            let t = self.peek()?;
            let Some(op) = self.binary_op(t) else { break };
            if op.precedence() < min_prec {
                break;
            }
            self.bump(t);
            // A chain `a + b + c …` nests to the left: count it like any nesting.
            self.enter(t.span)?;
            let (return_bool, matching, fill) = self.bin_modifiers()?;
            let next = if op.is_right_associative() { op.precedence() } else { op.precedence() + 1 };
            let rhs = self.expr(next)?;
            let span = lhs.span().to(rhs.span());
            if fill.is_some() && !self.features.is_enabled(Feature::BinopFillModifiers) {
                return err(
                    ErrorKind::FeatureDisabled(
                        "binop fill modifiers are experimental and not enabled".into(),
                    ),
                    span,
                );
            }
            lhs = Expr::Binary(BinaryExpr {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                return_bool,
                matching,
                fill,
                span,
            });
        }
        self.depth = depth_before - 1;
        Ok(lhs)
    }

    fn binary_op(&self, t: Token) -> Option<BinaryOp> {
        Some(match t.kind {
            Tok::Add => BinaryOp::Add,
            Tok::Sub => BinaryOp::Sub,
            Tok::Mul => BinaryOp::Mul,
            Tok::Div => BinaryOp::Div,
            Tok::Mod => BinaryOp::Mod,
            Tok::Pow => BinaryOp::Pow,
            Tok::Eqlc => BinaryOp::Eql,
            Tok::Neq => BinaryOp::Neq,
            Tok::Gtr => BinaryOp::Gtr,
            Tok::Gte => BinaryOp::Gte,
            Tok::Lss => BinaryOp::Lss,
            Tok::Lte => BinaryOp::Lte,
            Tok::TrimUpper => BinaryOp::TrimUpper,
            Tok::TrimLower => BinaryOp::TrimLower,
            Tok::Ident => {
                let w = self.text(t);
                if w.eq_ignore_ascii_case("and") {
                    BinaryOp::And
                } else if w.eq_ignore_ascii_case("or") {
                    BinaryOp::Or
                } else if w.eq_ignore_ascii_case("unless") {
                    BinaryOp::Unless
                } else if w.eq_ignore_ascii_case("atan2") {
                    BinaryOp::Atan2
                } else {
                    return None;
                }
            }
            _ => return None,
        })
    }

    /// `[bool] [on|ignoring (…) [group_left|group_right [(…)]]] [fill…]`.
    fn bin_modifiers(&mut self) -> PResult<(bool, Option<VectorMatching>, Option<FillModifier>)> {
        let mut t = self.peek()?;
        let return_bool = self.is_word(t, "bool");
        if return_bool {
            self.bump(t);
            t = self.peek()?;
        }
        let mut matching = None;
        if self.is_word(t, "on") || self.is_word(t, "ignoring") {
            let on = self.is_word(t, "on");
            self.bump(t);
            let labels = self.label_list()?;
            let mut group = None;
            let g = self.peek()?;
            if self.is_word(g, "group_left") || self.is_word(g, "group_right") {
                let side = if self.is_word(g, "group_left") { GroupSide::Left } else { GroupSide::Right };
                self.bump(g);
                let include = if self.peek()?.kind == Tok::LParen { self.label_list()? } else { Vec::new() };
                group = Some((side, include));
            }
            matching = Some(VectorMatching { on, labels, group });
        }
        Ok((return_bool, matching, self.fill_modifiers()?))
    }

    /// `fill(v)`, `fill_left(v)`, `fill_right(v)`, or `fill_left(v) fill_right(v)` in
    /// either order. These words are keywords only when a `(` follows.
    fn fill_modifiers(&mut self) -> PResult<Option<FillModifier>> {
        let mut fill: Option<FillModifier> = None;
        loop {
            let t = self.peek()?;
            let which = ["fill", "fill_left", "fill_right"].into_iter().find(|w| self.is_word(t, w));
            let Some(which) = which else { break };
            if self.peek_after(t)?.kind != Tok::LParen {
                break;
            }
            let f = fill.get_or_insert_with(FillModifier::default);
            let taken = match which {
                "fill" => f.left.is_some() || f.right.is_some(),
                "fill_left" => f.left.is_some(),
                _ => f.right.is_some(),
            };
            if taken {
                return Err(self.unexpected(t, None, None));
            }
            self.bump(t);
            self.expect(Tok::LParen, "fill modifier", "\"(\"")?;
            let v = self.signed_number("fill modifier")?;
            self.expect(Tok::RParen, "fill modifier", "\")\"")?;
            match which {
                "fill" => *f = FillModifier { left: Some(v), right: Some(v) },
                "fill_left" => f.left = Some(v),
                _ => f.right = Some(v),
            }
        }
        Ok(fill)
    }

    /// `[+|-] (number | duration)` as a float (durations in seconds).
    fn signed_number(&mut self, context: &'static str) -> PResult<f64> {
        let mut t = self.peek()?;
        let mut sign = 1.0;
        if matches!(t.kind, Tok::Add | Tok::Sub) {
            if t.kind == Tok::Sub {
                sign = -1.0;
            }
            self.bump(t);
            t = self.peek()?;
        }
        match self.number_token(t)? {
            Some(n) => {
                self.bump(t);
                Ok(sign * n.value)
            }
            None => Err(self.unexpected(t, Some(context), Some("number or duration"))),
        }
    }

    /// The literal of a number, duration, `Inf` or `NaN` token; `None` for other tokens.
    fn number_token(&self, t: Token) -> PResult<Option<NumberLiteral>> {
        let text = self.text(t);
        match t.kind {
            Tok::Number => match lexer::number_value(text) {
                Some(value) => Ok(Some(NumberLiteral { value, duration: false, span: t.span })),
                None => syntax(format!("error parsing number: {text:?}"), t.span),
            },
            Tok::Ident if text.eq_ignore_ascii_case("inf") || text.eq_ignore_ascii_case("nan") => {
                let value = lexer::number_value(text).unwrap_or(f64::NAN);
                Ok(Some(NumberLiteral { value, duration: false, span: t.span }))
            }
            Tok::Duration => match lexer::duration_ms(text) {
                Ok(ms) => Ok(Some(NumberLiteral { value: ms as f64 / 1000.0, duration: true, span: t.span })),
                Err(msg) => err(ErrorKind::Lexical(msg), t.span),
            },
            _ => Ok(None),
        }
    }

    /// Unary `+`/`-`, which binds like `*`: only `^` and postfix modifiers bind tighter.
    fn unary(&mut self) -> PResult<Expr> {
        let t = self.peek()?;
        let op = match t.kind {
            Tok::Sub => UnaryOp::Neg,
            Tok::Add => UnaryOp::Pos,
            _ => return self.postfix(),
        };
        self.bump(t);
        let operand = self.expr(BinaryOp::Pow.precedence())?;
        let span = t.span.to(operand.span());
        Ok(match operand {
            // Prometheus folds a sign into a number literal.
            Expr::Number(mut n) => {
                if op == UnaryOp::Neg {
                    n.value = -n.value;
                }
                n.span = span;
                Expr::Number(n)
            }
            operand => Expr::Unary(UnaryExpr { op, expr: Box::new(operand), span }),
        })
    }

    /// A primary expression followed by any `[range]`, `[range:step]`, `offset`, `@`,
    /// `anchored` or `smoothed`.
    fn postfix(&mut self) -> PResult<Expr> {
        let mut e = self.primary()?;
        let depth_before = self.depth;
        loop {
            let t = self.peek()?;
            e = match t.kind {
                Tok::LBracket => {
                    // `x[1m:][1m:]…` nests subqueries: count them.
                    self.enter(t.span)?;
                    self.range_or_subquery(e, t)?
                }
                Tok::At => self.at_modifier(e, t)?,
                Tok::Ident if self.is_word(t, "offset") => self.offset_modifier(e, t)?,
                Tok::Ident if self.is_word(t, "anchored") => {
                    self.anchoring(e, t, RangeAnchoring::Anchored)?
                }
                Tok::Ident if self.is_word(t, "smoothed") => {
                    self.anchoring(e, t, RangeAnchoring::Smoothed)?
                }
                _ => {
                    self.depth = depth_before;
                    return Ok(e);
                }
            };
        }
    }

    fn primary(&mut self) -> PResult<Expr> {
        let t = self.peek()?;
        if let Some(n) = self.number_token(t)? {
            self.bump(t);
            return Ok(Expr::Number(n));
        }
        match t.kind {
            Tok::String => {
                self.bump(t);
                let raw = lexer::unquote_bytes(self.text(t), t.span.start as usize)?;
                let (value, bytes) = match String::from_utf8(raw) {
                    Ok(value) => (value, None),
                    Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), Some(e.into_bytes())),
                };
                Ok(Expr::String(StringLiteral { value, bytes, span: t.span }))
            }
            Tok::LParen => {
                self.bump(t);
                let inner = self.expr(0)?;
                let close = self.close_paren()?;
                Ok(Expr::Paren(ParenExpr { expr: Box::new(inner), span: t.span.to(close.span) }))
            }
            Tok::LBrace => Ok(Expr::VectorSelector(self.selector(None, t.span)?)),
            Tok::Ident | Tok::MetricIdent => self.identifier_expr(t),
            _ => Err(self.unexpected(t, None, None)),
        }
    }

    fn close_paren(&mut self) -> PResult<Token> {
        let t = self.peek()?;
        match t.kind {
            Tok::RParen => {
                self.bump(t);
                Ok(t)
            }
            _ => Err(self.unexpected(t, None, Some("\")\""))),
        }
    }

    /// An identifier starts an aggregation, a function call or a selector.
    fn identifier_expr(&mut self, t: Token) -> PResult<Expr> {
        let text = self.text(t);
        if t.kind == Tok::Ident {
            let next = self.peek_after(t)?;
            if let Some(op) = AggregateOp::from_keyword(text) {
                if next.kind == Tok::LParen || self.is_word(next, "by") || self.is_word(next, "without") {
                    return self.aggregation(op, t);
                }
            }
            if next.kind == Tok::LParen && !is_keyword(text) {
                return self.call(t);
            }
            if is_reserved_word(text) {
                return Err(self.unexpected(t, None, None));
            }
        }
        self.bump(t);
        Ok(Expr::VectorSelector(self.selector(Some(text.to_owned()), t.span)?))
    }

    fn aggregation(&mut self, op: AggregateOp, t: Token) -> PResult<Expr> {
        self.bump(t);
        let mut grouping = None;
        let g = self.peek()?;
        if self.is_word(g, "by") || self.is_word(g, "without") {
            grouping = Some(self.grouping(g)?);
        }
        if self.peek()?.kind != Tok::LParen {
            let found = self.peek()?;
            return Err(self.unexpected(found, Some("aggregation"), None));
        }
        let (mut args, close) = self.call_args()?;
        let mut end = close;
        if grouping.is_none() {
            let g = self.peek()?;
            if self.is_word(g, "by") || self.is_word(g, "without") {
                let (gr, gend) = self.grouping_with_end(g)?;
                grouping = Some(gr);
                end = gend;
            }
        }
        let span = t.span.to(end);
        if op.is_experimental() && !self.features.is_enabled(Feature::ExperimentalFunctions) {
            return err(
                ErrorKind::FeatureDisabled(format!(
                    "{}() is experimental and must be enabled with --enable-feature=promql-experimental-functions",
                    op.as_str()
                )),
                span,
            );
        }
        if args.is_empty() {
            return syntax("no arguments for aggregate expression provided", span);
        }
        let want = if op.param_type().is_some() { 2 } else { 1 };
        if args.len() != want {
            return syntax(
                format!(
                    "wrong number of arguments for aggregate expression provided, expected {want}, got {}",
                    args.len()
                ),
                span,
            );
        }
        let Some(expr) = args.pop() else {
            return syntax("no arguments for aggregate expression provided", span);
        };
        let param = args.pop().map(Box::new);
        let expr = Box::new(expr);
        Ok(Expr::Aggregate(AggregateExpr { op, param, expr, grouping, span }))
    }

    fn grouping(&mut self, kw: Token) -> PResult<Grouping> {
        Ok(self.grouping_with_end(kw)?.0)
    }

    fn grouping_with_end(&mut self, kw: Token) -> PResult<(Grouping, Span)> {
        self.bump(kw);
        let without = self.is_word(kw, "without");
        let start = self.pos;
        let labels = self.label_list()?;
        Ok((Grouping { without, labels }, Span::new(start, self.pos)))
    }

    /// `( label, … )` for `by`, `without`, `on`, `ignoring`, `group_*`. A trailing
    /// comma is allowed; labels may be quoted.
    fn label_list(&mut self) -> PResult<Vec<String>> {
        self.expect(Tok::LParen, "grouping opts", "\"(\"")?;
        let mut labels = Vec::new();
        loop {
            let t = self.peek()?;
            match t.kind {
                Tok::RParen => {
                    self.bump(t);
                    return Ok(labels);
                }
                Tok::Ident if !is_number_word(self.text(t)) => labels.push(self.text(t).to_owned()),
                Tok::String => {
                    let name = lexer::unquote(self.text(t), t.span.start as usize)?;
                    if name.is_empty() {
                        return syntax(format!("invalid label name for grouping: {name:?}"), t.span);
                    }
                    labels.push(name);
                }
                _ => return Err(self.unexpected(t, Some("grouping opts"), Some("label"))),
            }
            self.bump(t);
            let sep = self.peek()?;
            match sep.kind {
                Tok::Comma => self.bump(sep),
                Tok::RParen => {}
                _ => return Err(self.unexpected(sep, Some("grouping opts"), Some("\",\" or \")\""))),
            }
        }
    }

    /// `(expr, …)`; returns the arguments and the span of the closing parenthesis.
    fn call_args(&mut self) -> PResult<(Vec<Expr>, Span)> {
        self.expect(Tok::LParen, "function call", "\"(\"")?;
        let mut args = Vec::new();
        let t = self.peek()?;
        if t.kind == Tok::RParen {
            self.bump(t);
            return Ok((args, t.span));
        }
        loop {
            args.push(self.expr(0)?);
            let t = self.peek()?;
            match t.kind {
                Tok::Comma => {
                    self.bump(t);
                    if self.peek()?.kind == Tok::RParen {
                        return syntax("trailing commas not allowed in function call args", t.span);
                    }
                }
                Tok::RParen => {
                    self.bump(t);
                    return Ok((args, t.span));
                }
                _ => return Err(self.unexpected(t, None, Some("\",\" or \")\""))),
            }
        }
    }

    fn call(&mut self, t: Token) -> PResult<Expr> {
        self.bump(t);
        let name = self.text(t);
        let (args, close) = self.call_args()?;
        let Some(func) = functions::function(name) else {
            let mut message = format!("unknown function with name {name:?}");
            if let Some(new) = functions::renamed(name) {
                message += &format!(" (renamed {new:?} in Prometheus 3");
                let experimental = functions::function(new).is_some_and(|f| f.experimental);
                if experimental && !self.features.is_enabled(Feature::ExperimentalFunctions) {
                    message += ", an experimental function: enable promql-experimental-functions";
                }
                message.push(')');
            }
            return syntax(message, t.span);
        };
        if func.experimental && !self.features.is_enabled(Feature::ExperimentalFunctions) {
            return err(ErrorKind::FeatureDisabled(format!("function {name:?} is not enabled")), t.span);
        }
        Ok(Expr::Call(Call { func, args, span: t.span.to(close) }))
    }

    /// `{matchers}` after an optional metric name.
    fn selector(&mut self, name: Option<String>, start: Span) -> PResult<VectorSelector> {
        let mut vs = VectorSelector {
            name,
            matchers: Vec::new(),
            offset: None,
            at: None,
            anchoring: None,
            span: start,
        };
        let open = self.peek()?;
        if open.kind != Tok::LBrace {
            return Ok(vs);
        }
        self.bump(open);
        loop {
            let t = self.peek()?;
            let matcher = match t.kind {
                Tok::RBrace => {
                    self.bump(t);
                    vs.span = start.to(t.span);
                    return Ok(vs);
                }
                Tok::Ident => {
                    self.bump(t);
                    self.matcher(self.text(t).to_owned(), t.span)?
                }
                Tok::String => {
                    self.bump(t);
                    let name = lexer::unquote(self.text(t), t.span.start as usize)?;
                    if self.match_op(self.peek()?).is_some() {
                        self.matcher(name, t.span)?
                    } else {
                        // A lone quoted string is the metric name.
                        Matcher { name: "__name__".into(), op: MatchOp::Equal, value: name, span: t.span }
                    }
                }
                _ => return Err(self.unexpected(t, Some("label matching"), Some("identifier or \"}\""))),
            };
            vs.matchers.push(matcher);
            let sep = self.peek()?;
            match sep.kind {
                Tok::Comma => self.bump(sep),
                Tok::RBrace => {}
                _ => return Err(self.unexpected(sep, Some("label matching"), Some("\",\" or \"}\""))),
            }
        }
    }

    fn match_op(&self, t: Token) -> Option<MatchOp> {
        match t.kind {
            Tok::Assign => Some(MatchOp::Equal),
            Tok::Neq => Some(MatchOp::NotEqual),
            Tok::RegexMatch => Some(MatchOp::Regex),
            Tok::RegexNoMatch => Some(MatchOp::NotRegex),
            _ => None,
        }
    }

    /// The operator and value after a label name.
    fn matcher(&mut self, name: String, name_span: Span) -> PResult<Matcher> {
        let t = self.peek()?;
        let Some(op) = self.match_op(t) else {
            return Err(self.unexpected(t, Some("label matching"), Some("label matching operator")));
        };
        self.bump(t);
        let v = self.peek()?;
        if v.kind != Tok::String {
            return Err(self.unexpected(v, Some("label matching"), Some("string")));
        }
        self.bump(v);
        let value = lexer::unquote(self.text(v), v.span.start as usize)?;
        let span = name_span.to(v.span);
        if matches!(op, MatchOp::Regex | MatchOp::NotRegex) {
            check_regex(&value, span)?;
        }
        Ok(Matcher { name, op, value, span })
    }

    // ---- postfix modifiers ----

    fn range_or_subquery(&mut self, e: Expr, open: Token) -> PResult<Expr> {
        self.bump(open);
        let outer = self.in_brackets;
        self.in_brackets = true;
        let result = self.bracket_body(e, open);
        self.in_brackets = outer;
        result
    }

    fn bracket_body(&mut self, e: Expr, open: Token) -> PResult<Expr> {
        let range = self.positive_duration("subquery or range selector")?;
        let t = self.peek()?;
        match t.kind {
            Tok::RBracket => {
                self.bump(t);
                let brackets = open.span.to(t.span);
                let Expr::VectorSelector(selector) = e else {
                    return syntax("ranges only allowed for vector selectors", brackets);
                };
                if selector.offset.is_some() {
                    return syntax("no offset modifiers allowed before range", brackets);
                }
                if selector.at.is_some() {
                    return syntax("no @ modifiers allowed before range", brackets);
                }
                let span = selector.span.to(t.span);
                Ok(Expr::MatrixSelector(MatrixSelector { selector, range, span }))
            }
            Tok::Colon => {
                self.bump(t);
                let mut step = None;
                let close = self.peek()?;
                if close.kind != Tok::RBracket {
                    step = Some(self.positive_duration("subquery selector")?);
                }
                let close = self.peek()?;
                match close.kind {
                    Tok::RBracket => self.bump(close),
                    _ => return Err(self.unexpected(close, Some("subquery selector"), Some("\"]\""))),
                }
                let span = e.span().to(close.span);
                Ok(Expr::Subquery(SubqueryExpr {
                    expr: Box::new(e),
                    range,
                    step,
                    offset: None,
                    at: None,
                    span,
                }))
            }
            _ => Err(self.unexpected(t, Some("subquery or range"), Some("\":\" or \"]\""))),
        }
    }

    /// A range or step: a duration expression whose literal form must be positive.
    fn positive_duration(&mut self, context: &'static str) -> PResult<DurationExpr> {
        let t = self.peek()?;
        if !self.starts_duration(t) {
            return Err(self.unexpected(t, Some(context), Some("number, duration, step(), or range()")));
        }
        let d = self.duration_expr(0)?;
        self.gate_duration(&d)?;
        if let DurationExpr::Number(n) = &d {
            if n.value.is_nan() || n.value <= 0.0 {
                return syntax("duration must be greater than 0", n.span);
            }
            check_duration_range(n)?;
        }
        Ok(d)
    }

    fn starts_duration(&self, t: Token) -> bool {
        matches!(t.kind, Tok::Number | Tok::Duration | Tok::LParen | Tok::Add | Tok::Sub)
            || ["step", "range", "min_of", "max_of"].iter().any(|w| self.is_word(t, w))
    }

    /// Anything beyond a (signed) literal needs `promql-duration-expr`.
    fn gate_duration(&self, d: &DurationExpr) -> PResult<()> {
        if matches!(d, DurationExpr::Number(_)) || self.features.is_enabled(Feature::DurationExpr) {
            return Ok(());
        }
        err(ErrorKind::FeatureDisabled("experimental duration expression is not enabled".into()), d.span())
    }

    fn duration_expr(&mut self, min_prec: u8) -> PResult<DurationExpr> {
        grow_stack(|| self.duration_expr_inner(min_prec))
    }

    fn duration_expr_inner(&mut self, min_prec: u8) -> PResult<DurationExpr> {
        let start = self.peek()?.span;
        self.enter(start)?;
        let depth_before = self.depth;
        let mut lhs = self.duration_unary()?;
        loop {
            let t = self.peek()?;
            let op = match t.kind {
                Tok::Add => BinaryOp::Add,
                Tok::Sub => BinaryOp::Sub,
                Tok::Mul => BinaryOp::Mul,
                Tok::Div => BinaryOp::Div,
                Tok::Mod => BinaryOp::Mod,
                Tok::Pow => BinaryOp::Pow,
                _ => break,
            };
            if op.precedence() < min_prec {
                break;
            }
            self.bump(t);
            self.enter(t.span)?;
            let next = if op.is_right_associative() { op.precedence() } else { op.precedence() + 1 };
            let rhs = self.duration_expr(next)?;
            if let DurationExpr::Number(n) = &rhs {
                if n.value == 0.0 && op == BinaryOp::Div {
                    return syntax("division by zero", t.span);
                }
                if n.value == 0.0 && op == BinaryOp::Mod {
                    return syntax("modulo by zero", t.span);
                }
            }
            let span = lhs.span().to(rhs.span());
            lhs = DurationExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), span };
        }
        self.depth = depth_before - 1;
        Ok(lhs)
    }

    fn duration_unary(&mut self) -> PResult<DurationExpr> {
        let t = self.peek()?;
        let op = match t.kind {
            Tok::Sub => UnaryOp::Neg,
            Tok::Add => UnaryOp::Pos,
            _ => return self.duration_atom(),
        };
        self.bump(t);
        let operand = self.duration_expr(BinaryOp::Pow.precedence())?;
        Ok(apply_sign(op, t.span, operand))
    }

    /// A literal, `(d)`, `step()`, `range()`, `min_of(a, b)` or `max_of(a, b)`.
    fn duration_atom(&mut self) -> PResult<DurationExpr> {
        let t = self.peek()?;
        if let Some(n) = self.number_token(t)? {
            self.bump(t);
            return Ok(DurationExpr::Number(n));
        }
        if t.kind == Tok::LParen {
            self.bump(t);
            let inner = self.duration_expr(0)?;
            let close = self.close_paren()?;
            return Ok(DurationExpr::Paren { expr: Box::new(inner), span: t.span.to(close.span) });
        }
        if self.is_word(t, "step") || self.is_word(t, "range") {
            self.bump(t);
            self.expect(Tok::LParen, "duration expression", "\"(\"")?;
            let close = self.expect(Tok::RParen, "duration expression", "\")\"")?;
            let span = t.span.to(close.span);
            return Ok(if self.is_word(t, "step") {
                DurationExpr::Step { span }
            } else {
                DurationExpr::Range { span }
            });
        }
        if self.is_word(t, "min_of") || self.is_word(t, "max_of") {
            let func = if self.is_word(t, "min_of") { DurationFunc::MinOf } else { DurationFunc::MaxOf };
            self.bump(t);
            self.expect(Tok::LParen, "duration expression", "\"(\"")?;
            let a = self.duration_expr(0)?;
            self.expect(Tok::Comma, "duration expression", "\",\"")?;
            let b = self.duration_expr(0)?;
            let close = self.close_paren()?;
            return Ok(DurationExpr::Call { func, args: Box::new([a, b]), span: t.span.to(close.span) });
        }
        Err(self.unexpected(t, Some("duration expression"), Some("number, duration, step(), or range()")))
    }

    fn offset_modifier(&mut self, mut e: Expr, kw: Token) -> PResult<Expr> {
        self.bump(kw);
        let t = self.peek()?;
        if !self.starts_duration(t) {
            return Err(self.unexpected(t, Some("offset"), Some("number, duration, step(), or range()")));
        }
        // Only a signed atom: `x offset 2 ^ 2` is `(x offset 2) ^ 2`.
        let offset = match t.kind {
            Tok::Add | Tok::Sub => {
                self.bump(t);
                let op = if t.kind == Tok::Sub { UnaryOp::Neg } else { UnaryOp::Pos };
                let atom = self.duration_atom()?;
                apply_sign(op, t.span, atom)
            }
            _ => self.duration_atom()?,
        };
        self.gate_duration(&offset)?;
        if let DurationExpr::Number(n) = &offset {
            check_duration_range(n)?;
        }
        let end = offset.span();
        let slot = match &mut e {
            Expr::VectorSelector(vs) => &mut vs.offset,
            Expr::MatrixSelector(ms) => &mut ms.selector.offset,
            Expr::Subquery(sq) => &mut sq.offset,
            _ => {
                return syntax(
                    "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery",
                    e.span(),
                )
            }
        };
        if slot.is_some() {
            return syntax("offset may not be set multiple times", e.span());
        }
        *slot = Some(offset);
        extend_span(&mut e, end);
        Ok(e)
    }

    fn at_modifier(&mut self, mut e: Expr, at: Token) -> PResult<Expr> {
        self.bump(at);
        let t = self.peek()?;
        let (modifier, end) = if self.is_word(t, "start") || self.is_word(t, "end") {
            self.bump(t);
            self.expect(Tok::LParen, "@", "\"(\"")?;
            let close = self.expect(Tok::RParen, "@", "\")\"")?;
            (if self.is_word(t, "start") { AtModifier::Start } else { AtModifier::End }, close.span)
        } else {
            if !matches!(t.kind, Tok::Add | Tok::Sub | Tok::Number | Tok::Duration | Tok::Ident) {
                return Err(self.unexpected(t, Some("@"), Some("timestamp")));
            }
            let secs = self.signed_number("@").map_err(|e| match e.kind {
                ErrorKind::Unexpected { .. } => ParseError::new(
                    ErrorKind::Unexpected {
                        found: self.describe(t),
                        context: Some("@"),
                        expected: Some("timestamp"),
                    },
                    t.span,
                ),
                _ => e,
            })?;
            let end = Span::new(self.pos, self.pos);
            if !secs.is_finite() || secs >= i64::MAX as f64 || secs <= i64::MIN as f64 {
                return syntax(
                    format!("timestamp out of bounds for @ modifier: {}", go_percent_f(secs)),
                    e.span(),
                );
            }
            (AtModifier::Timestamp((secs * 1000.0).round() as i64), end)
        };
        let slot = match &mut e {
            Expr::VectorSelector(vs) => &mut vs.at,
            Expr::MatrixSelector(ms) => &mut ms.selector.at,
            Expr::Subquery(sq) => &mut sq.at,
            _ => {
                return syntax(
                    "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery",
                    e.span(),
                )
            }
        };
        if slot.is_some() {
            return syntax("@ <timestamp> may not be set multiple times", e.span());
        }
        *slot = Some(modifier);
        extend_span(&mut e, end);
        Ok(e)
    }

    fn anchoring(&mut self, mut e: Expr, t: Token, which: RangeAnchoring) -> PResult<Expr> {
        let name = which.as_str();
        if !self.features.is_enabled(Feature::ExtendedRangeSelectors) {
            return err(
                ErrorKind::FeatureDisabled(format!("{name} modifier is experimental and not enabled")),
                e.span(),
            );
        }
        self.bump(t);
        let vs = match &mut e {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &mut ms.selector,
            Expr::Subquery(_) => {
                return syntax(format!("{name} modifier is not supported for subqueries"), e.span())
            }
            _ => return syntax(format!("{name} modifier not implemented"), e.span()),
        };
        if vs.anchoring.is_some_and(|a| a != which) {
            return syntax("anchored and smoothed modifiers cannot be used together", e.span());
        }
        vs.anchoring = Some(which);
        extend_span(&mut e, t.span);
        Ok(e)
    }
}

/// Runs a recursive step on a fresh stack segment when the current one runs low.
/// [`MAX_DEPTH`] bounds the recursion; this makes the bound safe for any thread's stack
/// size and for unoptimised builds, whose frames are several times larger.
pub(crate) fn grow_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(64 * 1024, 1024 * 1024, f)
}

/// Folds a sign into a literal, as Prometheus does; `+` on anything else is dropped
/// from the tree only for literals, so that printing keeps the expression's shape.
fn apply_sign(op: UnaryOp, sign: Span, operand: DurationExpr) -> DurationExpr {
    let span = sign.to(operand.span());
    match operand {
        DurationExpr::Number(mut n) => {
            if op == UnaryOp::Neg {
                n.value = -n.value;
            }
            n.span = span;
            DurationExpr::Number(n)
        }
        operand => DurationExpr::Unary { op, expr: Box::new(operand), span },
    }
}

fn check_duration_range(n: &NumberLiteral) -> PResult<()> {
    const LIMIT: f64 = 9_223_372_036.854_775; // ±2^63 ns, in seconds
    if n.value.is_nan() || n.value > LIMIT || n.value < -LIMIT {
        return syntax("duration out of range", n.span);
    }
    Ok(())
}

fn extend_span(e: &mut Expr, end: Span) {
    let span = match e {
        Expr::VectorSelector(vs) => &mut vs.span,
        Expr::MatrixSelector(ms) => &mut ms.span,
        Expr::Subquery(sq) => &mut sq.span,
        _ => return,
    };
    *span = span.to(end);
}

/// Go's `%f`: six decimals, `+Inf`, `-Inf`, `NaN`.
fn go_percent_f(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v:.6}")
    }
}

/// Validates a regex matcher as Prometheus 3 does: in Go's syntax (as translated for
/// the `regex` crate), parsed alone, then wrapped as it is compiled (`^(?s:…)$`, two
/// levels of nesting more). Valid patterns are remembered: parsing `5..` costs more
/// than parsing the rest of a query.
fn check_regex(pattern: &str, span: Span) -> PResult<()> {
    if crate::storage::plain_alternation(pattern).is_some() {
        return Ok(());
    }
    static VALID: crate::memo::Memo<()> = crate::memo::Memo::new(64 << 10, 1 << 10);
    VALID
        .get_or_try(pattern, |pattern| {
            // The parser's message ends with an `error:` line: that line alone.
            let last_line = |detail: String| {
                let last = detail.lines().rev().find(|l| l.starts_with("error:")).unwrap_or(&detail);
                last.trim_start_matches("error:").trim().to_owned()
            };
            let wrapped = crate::storage::matcher_pattern(pattern).map_err(last_line)?;
            regex_syntax::Parser::new().parse(&wrapped).map(drop).map_err(|e| last_line(e.to_string()))
        })
        .or_else(|last| syntax(format!("error parsing regexp: {last}: `{pattern}`"), span))
}

/// Words that are never function names or metric names at the start of a call.
fn is_keyword(word: &str) -> bool {
    [
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "anchored",
        "smoothed",
        "and",
        "or",
        "unless",
        "atan2",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(word))
}

fn is_number_word(word: &str) -> bool {
    word.eq_ignore_ascii_case("inf") || word.eq_ignore_ascii_case("nan")
}

use crate::lexer::is_reserved_word;
