//! The text form of rules: a small lexer and a recursive-descent parser
//! with positions in its errors.

use std::fmt;

use super::rule::{Agg, Compare, DEFAULT_CELL_LABEL, Expr, GeoClusterDef, Missing, Op, RuleDef, Selector, Severity};
use crate::time::Span;

/// The longest rule text the parser reads.
pub const MAX_RULE_TEXT: usize = 16 * 1024;

/// A rule text that does not parse, with where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: {message}")]
pub struct ParseError {
    /// Byte offset of the problem in the text.
    pub offset: usize,
    /// 1-based column (in characters) of the problem.
    pub column: usize,
    /// What is wrong, and what was expected.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Str(String),
    Num(f64, &'a str),
    Dur(Span, &'a str),
    Op(Op),
    LParen,
    RParen,
    Comma,
    Assign,
    End,
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Str(s) => write!(f, "{s:?}"),
            Tok::Num(_, s) => write!(f, "`{s}`"),
            Tok::Dur(_, s) => write!(f, "`{s}`"),
            Tok::Op(op) => write!(f, "`{}`", op.symbol()),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Assign => f.write_str("`=`"),
            Tok::End => f.write_str("the end of the rule"),
        }
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Whether `s` can be written without quotes.
fn is_plain(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.first().is_some_and(|&b| is_ident_start(b)) && bytes.iter().all(|&b| is_ident_byte(b))
}

/// Writes a label key or field name: bare when it is an identifier that
/// the parser would not take for a setting, quoted otherwise.
pub(crate) fn write_ident(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    if is_plain(s) && !SETTINGS.contains(&s) { f.write_str(s) } else { write_quoted(f, s) }
}

/// Writes a value: bare when it is an identifier, quoted otherwise.
pub(crate) fn write_value(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    if is_plain(s) { f.write_str(s) } else { write_quoted(f, s) }
}

fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Keys of `key=value` clauses that are settings, not labels.
const SETTINGS: [&str; 6] = ["severity", "missing", "tenant", "stream", "window", "notify"];

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn error(&self, offset: usize, message: impl Into<String>) -> ParseError {
        let column = self.text.get(..offset).map_or(offset, |s| s.chars().count()) + 1;
        ParseError { offset, column, message: message.into() }
    }

    fn peek_byte(&self, ahead: usize) -> Option<u8> {
        self.text.as_bytes().get(self.pos + ahead).copied()
    }

    /// The next token and its offset.
    fn next(&mut self) -> Result<(Tok<'a>, usize), ParseError> {
        while self.peek_byte(0).is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(b) = self.peek_byte(0) else { return Ok((Tok::End, start)) };
        let tok = match b {
            b'(' => {
                self.pos += 1;
                Tok::LParen
            }
            b')' => {
                self.pos += 1;
                Tok::RParen
            }
            b',' => {
                self.pos += 1;
                Tok::Comma
            }
            b'>' | b'<' | b'!' | b'=' => {
                let two = self.peek_byte(1) == Some(b'=');
                let len = if two { 2 } else { 1 };
                let symbol = self.text.get(start..start + len).unwrap_or_default();
                self.pos += len;
                match (symbol, Op::from_symbol(symbol)) {
                    ("=", _) => Tok::Assign,
                    (_, Some(op)) => Tok::Op(op),
                    _ => return Err(self.error(start, format!("unknown operator `{symbol}`"))),
                }
            }
            b'"' => self.string(start)?,
            b'0'..=b'9' | b'-' | b'+' | b'.' => self.number(start)?,
            b if is_ident_start(b) => {
                while self.peek_byte(0).is_some_and(is_ident_byte) {
                    self.pos += 1;
                }
                Tok::Ident(self.text.get(start..self.pos).unwrap_or_default())
            }
            _ => {
                let c = self.text.get(start..).and_then(|s| s.chars().next()).unwrap_or('?');
                return Err(self.error(start, format!("unexpected character {c:?}")));
            }
        };
        Ok((tok, start))
    }

    fn string(&mut self, start: usize) -> Result<Tok<'a>, ParseError> {
        self.pos += 1;
        let mut out = String::new();
        let rest = self.text.get(self.pos..).unwrap_or_default();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(Tok::Str(out));
                }
                '\\' => match chars.next() {
                    Some((_, '"')) => out.push('"'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    None => return Err(self.error(start, "unterminated string")),
                    _ => return Err(self.error(self.pos + i, "unknown escape (use \\\", \\\\, \\n or \\t)")),
                },
                c => out.push(c),
            }
        }
        Err(self.error(start, "unterminated string"))
    }

    fn number(&mut self, start: usize) -> Result<Tok<'a>, ParseError> {
        let bytes = self.text.as_bytes();
        let mut end = start;
        if matches!(bytes.get(end), Some(b'-' | b'+')) {
            end += 1;
        }
        while bytes.get(end).is_some_and(|b| b.is_ascii_digit() || *b == b'.') {
            end += 1;
        }
        if matches!(bytes.get(end), Some(b'e' | b'E'))
            && bytes.get(end + 1).is_some_and(|b| b.is_ascii_digit() || *b == b'-' || *b == b'+')
        {
            end += 2;
            while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
        }
        let number = self.text.get(start..end).unwrap_or_default();
        // A unit right after the digits makes a span: `2m`, `250ms`.
        let mut unit_end = end;
        while bytes.get(unit_end).is_some_and(u8::is_ascii_alphabetic) {
            unit_end += 1;
        }
        self.pos = unit_end;
        if unit_end > end {
            let text = self.text.get(start..unit_end).unwrap_or_default();
            return text
                .parse::<Span>()
                .map(|d| Tok::Dur(d, text))
                .map_err(|e| self.error(start, format!("`{text}` is not a duration: {e}")));
        }
        number
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(|v| Tok::Num(v, number))
            .ok_or_else(|| self.error(start, format!("`{number}` is not a number")))
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    tok: Tok<'a>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, ParseError> {
        let mut lexer = Lexer { text, pos: 0 };
        if text.len() > MAX_RULE_TEXT {
            return Err(lexer.error(0, format!("rule text longer than {MAX_RULE_TEXT} bytes")));
        }
        let (tok, at) = lexer.next()?;
        Ok(Parser { lexer, tok, at })
    }

    fn bump(&mut self) -> Result<Tok<'a>, ParseError> {
        let (next, at) = self.lexer.next()?;
        self.at = at;
        Ok(std::mem::replace(&mut self.tok, next))
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        self.lexer.error(self.at, message)
    }

    fn expected(&self, what: &str) -> ParseError {
        self.error(format!("expected {what}, found {}", self.tok))
    }

    fn expect(&mut self, tok: Tok<'static>, what: &str) -> Result<(), ParseError> {
        if self.tok == tok {
            self.bump()?;
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn eat(&mut self, tok: &Tok<'static>) -> Result<bool, ParseError> {
        if &self.tok == tok {
            self.bump()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// An identifier or a quoted string.
    fn name(&mut self, what: &str) -> Result<String, ParseError> {
        match &self.tok {
            Tok::Ident(s) => {
                let s = (*s).to_owned();
                self.bump()?;
                Ok(s)
            }
            Tok::Str(s) => {
                let s = s.clone();
                self.bump()?;
                Ok(s)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn number(&mut self, what: &str) -> Result<f64, ParseError> {
        match self.tok {
            Tok::Num(v, _) => {
                self.bump()?;
                Ok(v)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn integer(&mut self, what: &str) -> Result<u32, ParseError> {
        let at = self.at;
        let v = self.number(what)?;
        if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
            Ok(v as u32)
        } else {
            Err(self.lexer.error(at, format!("{what} must be a whole number")))
        }
    }

    fn span(&mut self, what: &str) -> Result<Span, ParseError> {
        match self.tok {
            Tok::Dur(d, _) => {
                self.bump()?;
                Ok(d)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn compare(&mut self) -> Result<Compare, ParseError> {
        let Tok::Op(op) = self.tok else {
            return Err(self.expected("a comparison (`>`, `>=`, `<`, `<=`, `==`, `!=`)"));
        };
        self.bump()?;
        let threshold = self.number("a threshold")?;
        Ok(Compare { op, threshold })
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let at = self.at;
        let Tok::Ident(name) = self.tok else { return Err(self.expected("an aggregate such as `avg(field)`")) };
        let agg = Agg::from_name(name).ok_or_else(|| {
            self.lexer.error(at, format!("unknown aggregate `{name}` (count, sum, min, max, avg, last, p50, p99, …)"))
        })?;
        self.bump()?;
        self.expect(Tok::LParen, "`(`")?;
        let field = if self.tok == Tok::RParen { None } else { Some(self.name("a field name")?) };
        self.expect(Tok::RParen, "`)`")?;
        Ok(Selector { agg, field })
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        match self.tok {
            Tok::Ident(kind @ ("change" | "pct_change")) => {
                self.bump()?;
                self.expect(Tok::LParen, "`(`")?;
                let of = self.selector()?;
                self.expect(Tok::Comma, "`,` and a number of windows")?;
                let windows = self.integer("the number of windows")?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(Expr::Change { of, windows, percent: kind == "pct_change" })
            }
            Tok::Ident("spike") => {
                self.bump()?;
                self.expect(Tok::LParen, "`(`")?;
                let of = self.selector()?;
                let (mut alpha, mut warmup, mut min_dev) = (None, None, None);
                while self.eat(&Tok::Comma)? {
                    let at = self.at;
                    let key = self.name("`alpha`, `warmup` or `min_dev`")?;
                    self.expect(Tok::Assign, "`=`")?;
                    match key.as_str() {
                        "alpha" => {
                            let v = self.number("a number")?;
                            self.set(&mut alpha, v, at, "alpha")?;
                        }
                        "warmup" => {
                            let v = self.integer("warmup")?;
                            self.set(&mut warmup, v, at, "warmup")?;
                        }
                        "min_dev" => {
                            let v = self.number("a number")?;
                            self.set(&mut min_dev, v, at, "min_dev")?;
                        }
                        _ => return Err(self.lexer.error(at, format!("unknown spike setting `{key}`"))),
                    }
                }
                self.expect(Tok::RParen, "`)` or `,`")?;
                Ok(Expr::Spike {
                    of,
                    alpha: alpha.unwrap_or(Expr::DEFAULT_ALPHA),
                    warmup: warmup.unwrap_or(Expr::DEFAULT_WARMUP),
                    min_dev: min_dev.unwrap_or(0.0),
                })
            }
            _ => Ok(Expr::Value(self.selector()?)),
        }
    }

    fn set<T>(&self, slot: &mut Option<T>, value: T, at: usize, what: &str) -> Result<(), ParseError> {
        if slot.is_some() {
            return Err(self.lexer.error(at, format!("{what} is given twice")));
        }
        *slot = Some(value);
        Ok(())
    }

    fn rule(&mut self) -> Result<RuleDef, ParseError> {
        let mut def = RuleDef::default();
        match self.tok {
            Tok::Ident("absent") => {
                self.bump()?;
                if self.eat(&Tok::LParen)? {
                    self.expect(Tok::RParen, "`)`: absent() takes no argument")?;
                }
                def.absent = Some(true);
            }
            Tok::Ident("geo_cluster") => {
                let head = self.at;
                self.bump()?;
                self.expect(Tok::LParen, "`(`")?;
                let expr = self.expr()?;
                let compare = self.compare()?;
                let (mut min_cells, mut label) = (None, None);
                while self.eat(&Tok::Comma)? {
                    let at = self.at;
                    let key = self.name("`min_cells` or `label`")?;
                    self.expect(Tok::Assign, "`=`")?;
                    match key.as_str() {
                        "min_cells" => {
                            let n = self.integer("min_cells")?;
                            self.set(&mut min_cells, n, at, "min_cells")?;
                        }
                        "label" => {
                            let l = self.name("a label name")?;
                            self.set(&mut label, l, at, "label")?;
                        }
                        _ => return Err(self.lexer.error(at, format!("unknown geo_cluster setting `{key}`"))),
                    }
                }
                self.expect(Tok::RParen, "`)` or `,`")?;
                let min_cells = min_cells.ok_or_else(|| self.lexer.error(head, "geo_cluster needs `min_cells=N`"))?;
                def.expr = Some(expr.to_string());
                def.op = Some(compare.op);
                def.threshold = Some(compare.threshold);
                def.geo_cluster =
                    Some(GeoClusterDef { min_cells, label: label.unwrap_or_else(|| DEFAULT_CELL_LABEL.to_owned()) });
            }
            _ => {
                let expr = self.expr()?;
                def.expr = Some(expr.to_string());
                if let Tok::Ident("by") = self.tok {
                    self.by(&mut def)?;
                }
                let compare = self.compare()?;
                def.op = Some(compare.op);
                def.threshold = Some(compare.threshold);
            }
        }
        self.clauses(&mut def)?;
        Ok(def)
    }

    fn by(&mut self, def: &mut RuleDef) -> Result<(), ParseError> {
        let at = self.at;
        self.bump()?;
        self.expect(Tok::LParen, "`(` after `by`")?;
        let mut labels = Vec::new();
        if self.tok != Tok::RParen {
            loop {
                labels.push(self.name("a label name")?);
                if !self.eat(&Tok::Comma)? {
                    break;
                }
            }
        }
        self.expect(Tok::RParen, "`)` or `,`")?;
        self.set(&mut def.by, labels, at, "`by`")
    }

    fn clauses(&mut self, def: &mut RuleDef) -> Result<(), ParseError> {
        loop {
            let at = self.at;
            let keyword = match &self.tok {
                Tok::End => return Ok(()),
                Tok::Ident(word) => Some(*word),
                Tok::Str(_) => None,
                _ => return Err(self.expected("a clause (`by`, `for`, `keep_firing_for`, `recover`, `key=value`)")),
            };
            // A word followed by `=` is a setting or a label.
            let assign = self.lexer.text.get(self.lexer.pos..).is_some_and(|rest| {
                let rest = rest.trim_start();
                rest.starts_with('=') && !rest.starts_with("==")
            });
            match keyword {
                Some("by") if !assign => self.by(def)?,
                Some("for") if !assign => {
                    self.bump()?;
                    let span = self.span("a duration such as `2m`")?;
                    self.set(&mut def.for_, span, at, "`for`")?;
                }
                Some("keep_firing_for") if !assign => {
                    self.bump()?;
                    let span = self.span("a duration such as `5m`")?;
                    self.set(&mut def.keep_firing_for, span, at, "`keep_firing_for`")?;
                }
                Some("recover") if !assign => {
                    self.bump()?;
                    let compare = self.compare()?;
                    self.set(&mut def.recover, compare, at, "`recover`")?;
                }
                _ if assign => self.setting(def, keyword.is_some(), at)?,
                _ => return Err(self.expected("a clause (`by`, `for`, `keep_firing_for`, `recover`, `key=value`)")),
            }
        }
    }

    fn setting(&mut self, def: &mut RuleDef, bare: bool, at: usize) -> Result<(), ParseError> {
        let key = self.name("a key")?;
        self.expect(Tok::Assign, "`=`")?;
        let value_at = self.at;
        let value = match &self.tok {
            Tok::Ident(s) => (*s).to_owned(),
            Tok::Str(s) => s.clone(),
            // Numbers and spans stay as written (`team=60s` is "60s").
            Tok::Num(_, s) | Tok::Dur(_, s) => (*s).to_owned(),
            _ => return Err(self.expected("a value")),
        };
        let window = if let Tok::Dur(d, _) = self.tok { Some(d) } else { None };
        self.bump()?;
        let bad = |what: &str| self.lexer.error(value_at, format!("`{value}` is not {what}"));
        match (bare, key.as_str()) {
            (true, "severity") => {
                let severity =
                    Severity::from_name(&value).ok_or_else(|| bad("a severity (info, warning, error, critical)"))?;
                self.set(&mut def.severity, severity, at, "severity")?;
            }
            (true, "missing") => {
                let missing = match value.as_str() {
                    "ok" => Missing::Ok,
                    "keep" => Missing::Keep,
                    "alerting" => Missing::Alerting,
                    _ => return Err(bad("a missing-data policy (ok, keep, alerting)")),
                };
                self.set(&mut def.missing, missing, at, "missing")?;
            }
            (true, "tenant") => self.set(&mut def.tenant, value, at, "tenant")?,
            (true, "stream") => self.set(&mut def.stream, value, at, "stream")?,
            (true, "window") => {
                let window = window.ok_or_else(|| bad("a duration"))?;
                self.set(&mut def.window, window, at, "window")?;
            }
            (true, "notify") => def.channels.push(value),
            _ => {
                if def.labels.insert(key.clone(), value).is_some() {
                    return Err(self.lexer.error(at, format!("label `{key}` is given twice")));
                }
            }
        }
        Ok(())
    }
}

/// Parses the text form of a rule (without its name).
pub(crate) fn parse_rule(text: &str) -> Result<RuleDef, ParseError> {
    let mut parser = Parser::new(text)?;
    parser.rule()
}

/// Parses an expression: `avg(x)`, `change(avg(x), 5)`, `spike(p99(x))`.
pub(crate) fn parse_expr(text: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser::new(text)?;
    let expr = parser.expr()?;
    if parser.tok != Tok::End {
        return Err(parser.expected("the end of the expression"));
    }
    Ok(expr)
}
