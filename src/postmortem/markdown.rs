//! Putting untrusted text into Markdown so that it stays text.
//!
//! Everything a draft shows that came from an alert, a step or another system (labels,
//! annotations, argv, output, error messages, names) goes through [`code`] (one line, in
//! an inline code span) or [`fence`] (several lines, in a fenced code block). Inside a code
//! span or block CommonMark and GitHub's Markdown recognize no emphasis, heading, HTML,
//! link or bare URL; what is left to guard is the way out of them, which these functions
//! close: a backtick run as long as the fence, a line break (which would end a code span
//! and start a new block, such as `# heading`), and, in a table, a `|` (GitHub splits cells
//! on it even inside a code span). Control and invisible formatting characters (bidi
//! overrides, zero-width spaces) are written as escapes, so what a reader sees is what is
//! there.

/// Most characters of one value shown inline.
pub const INLINE_MAX: usize = 200;
/// Most lines and characters of a block (its end is kept: that is where errors are).
pub const BLOCK_LINES: usize = 40;
pub const BLOCK_CHARS: usize = 4000;

/// Characters that change how text around them is shown without being seen: the bidi
/// embeddings, overrides and isolates, the directional marks, zero-width characters and
/// the byte order mark.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}'
        | '\u{061C}' | '\u{FEFF}' | '\u{00AD}')
}

/// `c` as a visible escape (`\n`, `\u{202e}`), or `None` when it may be shown as is.
fn escaped(c: char, keep_newlines: bool) -> Option<String> {
    if keep_newlines && (c == '\n' || c == '\t') {
        return None;
    }
    if c.is_control() || invisible(c) {
        return Some(c.escape_default().collect());
    }
    None
}

/// The longest run of `c` in `s`.
fn longest_run(s: &str, c: char) -> usize {
    let (mut best, mut now) = (0, 0);
    for x in s.chars() {
        now = if x == c { now + 1 } else { 0 };
        best = best.max(now);
    }
    best
}

/// `s` on one line: escapes written out, at most [`INLINE_MAX`] characters, with the full
/// size said when it was cut.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(INLINE_MAX + 32));
    for (n, c) in s.chars().enumerate() {
        if n == INLINE_MAX {
            out.push_str(&format!("… ({} bytes)", s.len()));
            break;
        }
        match escaped(c, false) {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
    }
    out
}

/// `s` as an inline code span, on one line and bounded (see [`one_line`]).
pub fn code(s: &str) -> String {
    let text = one_line(s);
    if text.is_empty() {
        return "(empty)".to_string();
    }
    let ticks = "`".repeat(longest_run(&text, '`') + 1);
    // A value that begins or ends with a backtick would join the fence, and one that begins
    // and ends with a space would lose them: those get one space inside each side, which
    // CommonMark strips again.
    let edges = [text.chars().next(), text.chars().last()];
    if edges.iter().any(|c| matches!(c, Some('`' | ' '))) {
        format!("{ticks} {text} {ticks}")
    } else {
        format!("{ticks}{text}{ticks}")
    }
}

/// Markdown text for one cell of a table: every `|` escaped. Code spans keep their
/// content (GitHub removes the backslash before a `|` inside them), so this applies to the
/// whole cell as built from [`code`] spans and medic's own words.
pub fn cell(markdown: &str) -> String {
    markdown.replace('|', "\\|")
}

/// `s` as a fenced code block (with a line after): its last [`BLOCK_LINES`] lines, at most
/// [`BLOCK_CHARS`] characters, saying what was cut; a fence longer than any backtick run
/// inside, so no line of `s` can close it.
pub fn fence(s: &str) -> String {
    let mut text = String::with_capacity(s.len().min(BLOCK_CHARS + 64));
    for c in s.trim_end().chars() {
        match escaped(c, true) {
            Some(e) => text.push_str(&e),
            None => text.push(c),
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let skipped = lines.len().saturating_sub(BLOCK_LINES);
    let mut body = lines[skipped..].join("\n");
    let mut note = (skipped > 0).then(|| format!("… ({skipped} lines above)"));
    if body.len() > BLOCK_CHARS {
        let mut start = body.len() - BLOCK_CHARS;
        while !body.is_char_boundary(start) {
            start += 1;
        }
        body = body[start..].to_string();
        note = Some(format!("… (cut to its last {BLOCK_CHARS} bytes)"));
    }
    if let Some(n) = note {
        body = format!("{n}\n{body}");
    }
    let fence = "`".repeat((longest_run(&body, '`') + 1).max(3));
    format!("{fence}text\n{body}\n{fence}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_span_is_longer_than_any_backtick_run_inside() {
        assert_eq!(code("web1:80"), "`web1:80`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code(" a "), "`  a  `");
        assert_eq!(code("```"), "```` ``` ````");
        assert_eq!(code("`"), "`` ` ``");
        assert_eq!(code(""), "(empty)");
    }

    #[test]
    fn a_code_span_stays_on_one_line_and_shows_invisible_characters() {
        assert_eq!(code("a\n# b"), "`a\\n# b`");
        assert_eq!(code("x\u{202E}y\r"), "`x\\u{202e}y\\r`");
        let long = "x".repeat(500);
        let c = code(&long);
        assert!(c.ends_with("… (500 bytes)`"), "{c}");
        assert!(c.chars().count() < 240);
    }

    #[test]
    fn a_fence_cannot_be_closed_from_inside() {
        let f = fence("line\n```\n# not a heading\n````x");
        assert!(f.starts_with("`````text\n"), "{f}");
        assert!(f.ends_with("\n`````\n"), "{f}");
        assert_eq!(fence("ok"), "```text\nok\n```\n");
    }

    #[test]
    fn a_fence_keeps_the_end_of_long_output() {
        let many: Vec<String> = (1..=100).map(|i| format!("line {i}")).collect();
        let f = fence(&many.join("\n"));
        assert!(f.contains("… (60 lines above)\nline 61\n"), "{f}");
        assert!(f.contains("line 100\n```"), "{f}");
        let wide = "é".repeat(5000);
        let f = fence(&wide);
        assert!(f.contains("cut to its last 4000 bytes"), "{f}");
        assert!(f.len() < BLOCK_CHARS + 100);
    }

    #[test]
    fn cells_escape_pipes() {
        assert_eq!(cell("`a|b`"), "`a\\|b`");
    }
}
