//! Prometheus Alertmanager label matchers: parsing, canonical display and evaluation.
//!
//! Owns the matcher syntax used by routing config, as Alertmanager accepts it (its UTF-8
//! parser with fallback to the classic parser): `alertname="DiskFull"`, `alertname=DiskFull`,
//! `severity=~"warning|critical"`, brace groups `{a="b", c!~"d",}` and bare lists `a=b,c!=d`.
//!
//! - Names: unquoted `[a-zA-Z_:][a-zA-Z0-9_:]*`, or any non-empty double-quoted UTF-8 string.
//! - Values: double-quoted, or unquoted up to the next `,` / `}` (trailing space trimmed, no `"`).
//! - Quoted strings decode `\"`, `\\` and `\n`; any other backslash is kept literally, so
//!   `=~"\d+"` means the regex `\d+` (Alertmanager's classic behaviour, which it falls back to).
//! - Regexes are anchored as `^(?:value)$`; `.` does not match `\n` unless `(?s)` is given, as
//!   with Go RE2 defaults. Unlike Go, `\d`, `\w`, `\s` are Unicode-aware in Rust's `regex`.
//! - A missing label counts as the empty string.
//!
//! Stricter than Alertmanager on purpose: empty input, unbalanced braces, unquoted values
//! starting with `=`, `~`, `!`, `<` or `>` (typos such as `foo==bar`, `foo=>bar`) and regexes
//! that only compile inside the anchors (`a)|(b`) are errors.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// Matcher operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`: the label value equals the matcher value.
    Eq,
    /// `!=`: the label value differs from the matcher value.
    NotEq,
    /// `=~`: the label value fully matches the regex.
    Re,
    /// `!~`: the label value does not fully match the regex.
    NotRe,
}

impl MatchOp {
    /// The operator as written in matcher syntax.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::NotEq => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A single label matcher. Build it with [`Matcher::new`] or [`parse_matchers`]; changing the
/// public fields afterwards does not recompile the regex.
#[derive(Clone)]
pub struct Matcher {
    /// Label name (never empty).
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Unescaped value (a regex source for `=~` / `!~`).
    pub value: String,
    /// `^(?:value)$`, present for regex operators.
    regex: Option<Regex>,
}

impl Matcher {
    /// Builds a matcher, compiling the anchored regex for `=~` / `!~`.
    /// Errors (column 0) on an empty name or an invalid regex.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, MatcherError> {
        if name.is_empty() {
            return Err(MatcherError::at(0, "empty label name"));
        }
        let regex = match op {
            MatchOp::Eq | MatchOp::NotEq => None,
            MatchOp::Re | MatchOp::NotRe => {
                let fail = |e: regex::Error| {
                    let text = render(name, op, value);
                    MatcherError::at(
                        0,
                        format!("invalid regex in matcher {text}: {}", reason(&e)),
                    )
                };
                // Compile the bare value too, so `a)|(b` cannot escape the anchors.
                Regex::new(value).map_err(fail)?;
                Some(Regex::new(&format!("^(?:{value})$")).map_err(fail)?)
            }
        };
        let (name, value) = (name.to_string(), value.to_string());
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    /// Missing label counts as the empty string, as in Alertmanager (so `foo=""` matches an
    /// alert without `foo`, `foo!=""` requires it).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.name).map_or("", String::as_str);
        let regex_match = || self.regex.as_ref().is_some_and(|re| re.is_match(actual));
        match self.op {
            MatchOp::Eq => actual == self.value,
            MatchOp::NotEq => actual != self.value,
            MatchOp::Re => regex_match(),
            MatchOp::NotRe => !regex_match(),
        }
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Eq for Matcher {}

/// Canonical form: `name`, operator, double-quoted value with `\"`, `\\`, `\n` escaped.
/// Names that are not classic identifiers are double-quoted the same way.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(&self.name, self.op, &self.value))
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A matcher parse or build error. The message is one line and ends with the column when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MatcherError {
    /// 1-based char offset in the input where the problem is (best effort; 0 if not positional).
    pub column: usize,
    /// Human-readable description.
    pub message: String,
}

impl MatcherError {
    fn at(column: usize, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match column {
            0 => message,
            _ => format!("{message} (column {column})"),
        };
        MatcherError { column, message }
    }
}

/// Parses one config string: a single matcher (`alertname="DiskFull"`, `alertname=DiskFull`,
/// `severity=~"a|b"`), or a brace group `{a="b", c=~"d"}` (trailing comma allowed, empty `{}`
/// allowed -> empty vec), or a comma-separated list without braces (`a="b",c!="d"`), as
/// Alertmanager's parser accepts.
pub fn parse_matchers(input: &str) -> Result<Vec<Matcher>, MatcherError> {
    let chars = input.chars().collect();
    Parser { chars, pos: 0 }.parse()
}

fn render(name: &str, op: MatchOp, value: &str) -> String {
    let escape = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('"', "\\\"")
    };
    match is_classic_name(name) {
        true => format!("{name}{op}\"{}\"", escape(value)),
        false => format!("\"{}\"{op}\"{}\"", escape(name), escape(value)),
    }
}

/// The last `error: ...` line of a (multi-line) regex error, or the whole text on one line.
fn reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error:"));
    last.map_or_else(
        || text.split_whitespace().collect::<Vec<_>>().join(" "),
        |s| s.trim().to_string(),
    )
}

fn is_classic_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Characters that end an unquoted label name (as in Alertmanager's lexer).
fn is_reserved(c: char) -> bool {
    c.is_whitespace() || "{}!=~,\"'`".contains(c)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn found(&self) -> String {
        self.peek()
            .map_or("end of input".to_string(), |c| format!("'{c}'"))
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, MatcherError> {
        Err(MatcherError::at(self.pos + 1, message))
    }

    fn text(&self, start: usize) -> String {
        self.chars[start..self.pos].iter().collect()
    }

    fn parse(mut self) -> Result<Vec<Matcher>, MatcherError> {
        self.skip_ws();
        if self.peek().is_none() {
            return self.fail("empty matcher: expected e.g. alertname=\"DiskFull\" or {...}");
        }
        let open = self.peek() == Some('{');
        self.pos += usize::from(open);
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            match (self.peek(), open) {
                (Some('}'), true) => break,
                (Some('}'), false) => return self.fail("unexpected '}' without a matching '{'"),
                (None, true) => return self.fail("missing closing '}' for the opening '{'"),
                (None, false) => return Ok(out),
                _ => {}
            }
            let matcher = self.matcher()?;
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') | None => {}
                Some(c) => {
                    let expected = "expected ',', '}' or end of input";
                    return self.fail(format!("unexpected '{c}' after {matcher}; {expected}"));
                }
            }
            out.push(matcher);
        }
        self.pos += 1;
        self.skip_ws();
        match self.peek() {
            None => Ok(out),
            Some(_) => self.fail(format!("unexpected {} after closing '}}'", self.found())),
        }
    }

    fn matcher(&mut self) -> Result<Matcher, MatcherError> {
        let name = self.name()?;
        self.skip_ws();
        let op = self.op(&name)?;
        self.skip_ws();
        let value_col = self.pos + 1;
        let value = self.value(&name, op)?;
        Matcher::new(&name, op, &value).map_err(|e| MatcherError::at(value_col, e.message))
    }

    fn name(&mut self) -> Result<String, MatcherError> {
        let start = self.pos;
        if self.peek() == Some('"') {
            let name = self.quoted()?;
            if name.is_empty() {
                return Err(MatcherError::at(start + 1, "empty label name"));
            }
            return Ok(name);
        }
        while self.peek().is_some_and(|c| !is_reserved(c)) {
            self.pos += 1;
        }
        let word = self.text(start);
        if word.is_empty() {
            return self.fail(format!("expected a label name, found {}", self.found()));
        }
        if !is_classic_name(&word) {
            let message =
                format!("invalid label name {word:?}: use [a-zA-Z_:][a-zA-Z0-9_:]* or quote it");
            return Err(MatcherError::at(start + 1, message));
        }
        Ok(word)
    }

    fn op(&mut self, name: &str) -> Result<MatchOp, MatcherError> {
        let (op, len) = match (self.peek(), self.chars.get(self.pos + 1)) {
            (Some('='), Some('~')) => (MatchOp::Re, 2),
            (Some('!'), Some('=')) => (MatchOp::NotEq, 2),
            (Some('!'), Some('~')) => (MatchOp::NotRe, 2),
            (Some('='), _) => (MatchOp::Eq, 1),
            _ => {
                let found = self.found();
                return self.fail(format!(
                    "expected an operator (=, !=, =~, !~) after {name:?}, found {found}"
                ));
            }
        };
        self.pos += len;
        Ok(op)
    }

    fn value(&mut self, name: &str, op: MatchOp) -> Result<String, MatcherError> {
        if self.peek() == Some('"') {
            return self.quoted();
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| c != ',' && c != '}') {
            self.pos += 1;
        }
        let value = self.text(start).trim_end().to_string();
        let fail = |message: String| Err(MatcherError::at(start + 1, message));
        match value.chars().next() {
            None => {
                let found = self.found();
                fail(format!(
                    "expected a value after '{op}', found {found} (use \"\" for empty)"
                ))
            }
            Some(c @ ('=' | '~' | '!' | '<' | '>')) => {
                let hint = format!("use =, !=, =~ or !~ (quote values starting with '{c}')");
                fail(format!("invalid operator '{op}{c}' after {name:?}: {hint}"))
            }
            Some(_) if value.contains('"') => fail(format!(
                "unquoted value {value:?} contains '\"': quote the value"
            )),
            Some(_) => Ok(value),
        }
    }

    /// Reads a double-quoted string at the cursor, decoding `\"`, `\\` and `\n`.
    fn quoted(&mut self) -> Result<String, MatcherError> {
        let open = self.pos + 1;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(MatcherError::at(
                        open,
                        "unterminated quoted string: missing closing '\"'",
                    ));
                }
                Some('"') => break,
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some('n') => out.push('\n'),
                        Some(c @ ('"' | '\\')) => out.push(c),
                        Some(c) => out.extend(['\\', c]),
                        None => continue,
                    }
                }
                Some(c) => out.push(c),
            }
            self.pos += 1;
        }
        self.pos += 1;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::MatchOp::{Eq, NotEq, NotRe, Re};
    use super::*;

    /// `expected` is the parsed matchers in display form joined by ", ", or `error: <part of
    /// the message>`.
    fn check(input: &str, expected: &str) {
        let got = match parse_matchers(input) {
            Ok(ms) => ms
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("error: {e}"),
        };
        assert!(
            !got.contains('\n'),
            "multi-line output for {input:?}: {got}"
        );
        match expected.strip_prefix("error: ") {
            Some(want) => assert!(
                got.starts_with("error: ") && got.contains(want),
                "{input:?}: {got}"
            ),
            None => assert_eq!(got, expected, "input {input:?}"),
        }
    }

    #[test]
    fn parses_valid_input() {
        let cases = [
            (r#"alertname="DiskFull""#, r#"alertname="DiskFull""#),
            ("alertname=DiskFull", r#"alertname="DiskFull""#),
            (r#"severity=~"a|b""#, r#"severity=~"a|b""#),
            (r#"{a="b", c=~"d"}"#, r#"a="b", c=~"d""#),
            (r#"{a="b",}"#, r#"a="b""#),
            ("{}", ""),
            ("  {  }  ", ""),
            (r#"a="b",c!="d""#, r#"a="b", c!="d""#),
            (r#"a="b","#, r#"a="b""#),
            ("  foo  !~  bar  ", r#"foo!~"bar""#),
            ("{foo=bar,bar!=baz}", r#"foo="bar", bar!="baz""#),
            (
                r#"{foo = "bar", dings != "bums", }"#,
                r#"foo="bar", dings!="bums""#,
            ),
            (
                r#"q != "\"" , c !~ "foo,bar" , "#,
                r#"q!="\"", c!~"foo,bar""#,
            ),
            (
                r#"{quote="She said: \"Hi!\""}"#,
                r#"quote="She said: \"Hi!\"""#,
            ),
            (r#"foo="a=b,c}d{""#, r#"foo="a=b,c}d{""#),
            (r#"foo="bar\\""#, r#"foo="bar\\""#),
            (r#"foo=~"\d+\.\w""#, r#"foo=~"\\d+\\.\\w""#),
            ("foo=\"🙂\"", "foo=\"🙂\""),
            (r#""foo bar"="x""#, r#""foo bar"="x""#),
            (r#""a\"b.c"!=c"#, r#""a\"b.c"!="c""#),
            ("_x:y=1", r#"_x:y="1""#),
            (r#"foo="""#, r#"foo="""#),
            ("foo=bar baz", r#"foo="bar baz""#),
            (r"foo=a\nb", r#"foo="a\\nb""#),
            (
                "\n{\n  a = \"b\",\n  c !~ \"x|y\"\n}\n",
                r#"a="b", c!~"x|y""#,
            ),
        ];
        for (input, want) in cases {
            check(input, want);
        }
        let m = parse_matchers(r#"foo="a\"b\\c\nd\e""#).expect("valid");
        assert_eq!(m[0].value, "a\"b\\c\nd\\e");
    }

    #[test]
    fn rejects_invalid_input() {
        let cases = [
            ("", "empty matcher"),
            ("   ", "empty matcher"),
            ("foo", "expected an operator"),
            ("foo bar", "expected an operator"),
            ("foo!bar", "expected an operator"),
            ("foo=>bar", "invalid operator '=>'"),
            ("foo==bar", "invalid operator '=='"),
            (r#"foo="bar"#, "unterminated quoted string"),
            (r#"foo="bar\""#, "unterminated quoted string"),
            (r#"{foo="bar""#, "missing closing '}'"),
            ("{", "missing closing '}'"),
            (r#"foo="bar"}"#, "without a matching '{'"),
            ("}", "without a matching '{'"),
            (r#"foo="bar" baz"#, r#"unexpected 'b' after foo="bar""#),
            (r#"{a="b"} x"#, "after closing '}'"),
            (r#"{a="b"}}"#, "after closing '}'"),
            (r#"="x""#, "expected a label name"),
            (r#"""="x""#, "empty label name"),
            (r#"1foo="x""#, r#"invalid label name "1foo""#),
            (r#"foo-bar="x""#, "invalid label name"),
            ("foo=", "expected a value"),
            ("foo=,bar=baz", "expected a value"),
            (r#"foo=bar""#, "contains '\"'"),
            (r#"a="b",,c="d""#, "expected a label name, found ','"),
            (r#"foo=~"(""#, r#"invalid regex in matcher foo=~"(": "#),
            (r#"foo=~"a)|(b""#, "invalid regex"),
        ];
        for (input, want) in cases {
            check(input, &format!("error: {want}"));
        }
    }

    #[test]
    fn error_columns() {
        let cases = [
            ("foo=>bar", 5),
            (r#"foo="bar"#, 5),
            (r#"1foo="x""#, 1),
            (r#"{a="b""#, 7),
            (r#"a=~"(""#, 4),
            ("", 1),
        ];
        for (input, column) in cases {
            let err = parse_matchers(input).expect_err(input);
            assert_eq!(err.column, column, "input {input:?}: {err}");
            assert!(
                err.to_string().ends_with(&format!("(column {column})")),
                "{err}"
            );
        }
        let err = Matcher::new("foo", Re, "[").expect_err("invalid regex");
        assert_eq!(err.column, 0);
        assert!(
            err.message
                .starts_with("invalid regex in matcher foo=~\"[\": "),
            "{err}"
        );
        assert_eq!(
            Matcher::new("", Eq, "x").expect_err("empty").message,
            "empty label name"
        );
    }

    #[test]
    fn evaluates_labels() {
        let cases = [
            (r#"foo="bar""#, "foo=bar", true),
            (r#"foo="bar""#, "foo=baz", false),
            (r#"foo="bar""#, "", false),
            (r#"foo!="bar""#, "foo=baz", true),
            (r#"foo!="bar""#, "foo=bar", false),
            (r#"foo!="bar""#, "", true),
            (r#"foo="""#, "", true),
            (r#"foo="""#, "foo=x", false),
            (r#"foo!="""#, "", false),
            (r#"foo!="""#, "foo=x", true),
            (r#"sev=~"warn""#, "sev=warning", false),
            (r#"sev=~"warn""#, "sev=warn", true),
            (r#"sev=~"warning|critical""#, "sev=critical", true),
            (r#"sev=~"warning|critical""#, "sev=info", false),
            (r#"sev!~"warn.*""#, "sev=warning", false),
            (r#"sev!~"warn.*""#, "sev=info", true),
            (r#"sev!~"warn.*""#, "", true),
            (r#"foo=~".*""#, "", true),
            (r#"foo=~".+""#, "", false),
            // `.` does not match a newline (Go RE2 defaults); `(?s)` or an explicit `\n` does.
            (r#"msg=~"line.*""#, "msg=line 1\nline 2", false),
            (r#"msg=~"(?s)line.*""#, "msg=line 1\nline 2", true),
            (r#"msg=~"a\nb""#, "msg=a\nb", true),
        ];
        for (input, label, want) in cases {
            let labels: BTreeMap<String, String> = label
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into_iter()
                .collect();
            let matchers = parse_matchers(input).expect(input);
            assert_eq!(matchers[0].matches(&labels), want, "{input} on {labels:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        let m = Matcher::new("severity", Re, "warning|critical").expect("valid");
        assert_eq!(m.to_string(), r#"severity=~"warning|critical""#);
        assert_eq!(format!("{m:?}"), m.to_string());
        let m = Matcher::new("foo bar", NotEq, "a\"b\\c\nd").expect("valid");
        assert_eq!(m.to_string(), r#""foo bar"!="a\"b\\c\nd""#);
        let cases = [
            ("foo", Eq, "a\"b"),
            ("foo", NotEq, r"back\slash\"),
            ("a\"b\\", Eq, "multi\nline\n"),
            ("x", Eq, r#"\"\n\\"#),
            ("x", Eq, ""),
            ("ünï", NotEq, "a,b}c{ 🙂 "),
            ("x", Re, r"a\.b|c\n"),
            ("x", NotRe, "(?s)\"quoted\".*"),
        ];
        for (name, op, value) in cases {
            let m = Matcher::new(name, op, value).expect("valid");
            assert_eq!(parse_matchers(&m.to_string()), Ok(vec![m.clone()]), "{m}");
        }
    }

    #[test]
    fn never_panics() {
        // Whitespace-separated odd inputs, plus a few that contain spaces or NUL.
        let odd = r#"\ { } " =~ !~ != = ! ~ , {,} {}} {{}} "\ a="\ a="\\ é=é "é"="ü" a="b","
            a=~ a! {a a=} a=b} {a=b 🙂=🙂 "" ""= a=""" a=b,, {a=b,,} a=~"[[:alpha:]" a=~"\Q""#;
        let odd = odd.split_whitespace().chain([
            " , ",
            "\0",
            "\0=\0",
            "a =~ \"x\" y",
            "a=~\"\u{10FFFF}\"",
            "\u{feff}=x",
        ]);
        let long = [
            "a".repeat(100_000),
            format!("a=~\"{}\"", "(".repeat(5_000)),
            format!("a=~\"{}\"", ")".repeat(5_000)),
            format!("{{{}}}", "a=\"b\",".repeat(5_000)),
            "\\".repeat(10_001),
        ];
        for input in odd.chain(long.iter().map(String::as_str)) {
            let _ = parse_matchers(input);
        }
    }
}
