//! The JUnit XML report of `medic test --junit FILE`, the format CI systems read (the
//! same shape `promtool test rules --junit` writes): one `<testsuite>` per test file, one
//! `<testcase>` per test, a `<failure>` with the whole report of each failed test. A file
//! that could not be read is one failed test case named after the file.

use std::fmt::Write as _;

use super::harness::FileReport;

/// The report for `files`.
pub fn report(files: &[FileReport]) -> String {
    let tests: usize = files
        .iter()
        .map(|f| f.tests.len() + usize::from(!f.problems.is_empty()))
        .sum();
    let failures: usize = files.iter().map(FileReport::failed).sum();
    let total: f64 = files
        .iter()
        .flat_map(|f| &f.tests)
        .map(|t| t.duration.as_secs_f64())
        .sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"medic test\" tests=\"{tests}\" failures=\"{failures}\" time=\"{total:.3}\">"
    );
    for f in files {
        let file = f.path.display().to_string();
        let time: f64 = f.tests.iter().map(|t| t.duration.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" time=\"{time:.3}\">",
            escape(&file),
            f.tests.len() + usize::from(!f.problems.is_empty()),
            f.failed()
        );
        if !f.problems.is_empty() {
            let text = f.problems.join("\n");
            let _ = writeln!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"0.000\">\n      <failure message=\"{}\" type=\"file\">{}</failure>\n    </testcase>",
                escape(&file),
                escape(&file),
                escape(first_line(&text)),
                escape_text(&text)
            );
        }
        for t in &f.tests {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                escape(&t.name),
                escape(&file),
                t.duration.as_secs_f64()
            );
            if t.passed() {
                out.push_str("/>\n");
                continue;
            }
            let text = t.failures.join("\n");
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\" type=\"test\">{}</failure>\n    </testcase>",
                escape(first_line(&text)),
                escape_text(&text)
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Text as XML character data: line breaks kept.
fn escape_text(s: &str) -> String {
    escape(s).replace("&#10;", "\n")
}

/// Text as an XML attribute value. Characters XML 1.0 cannot carry at all (most control
/// characters) become `?`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authoring::harness::TestReport;
    use crate::config::Location;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn failures_and_problems_are_escaped() {
        let files = vec![
            FileReport {
                path: PathBuf::from("t/a.toml"),
                problems: Vec::new(),
                tests: vec![
                    TestReport {
                        name: "ok <1>".into(),
                        location: Location { line: 1, column: 1 },
                        failures: Vec::new(),
                        duration: Duration::from_millis(2),
                    },
                    TestReport {
                        name: "bad".into(),
                        location: Location { line: 9, column: 1 },
                        failures: vec!["steps differ & \"so\"\n  - exec x\u{1}".into()],
                        duration: Duration::ZERO,
                    },
                ],
            },
            FileReport {
                path: PathBuf::from("t/b.toml"),
                problems: vec!["t/b.toml:2:1: invalid table header".into()],
                tests: Vec::new(),
            },
        ];
        let xml = report(&files);
        assert!(
            xml.contains("<testsuites name=\"medic test\" tests=\"3\" failures=\"2\""),
            "{xml}"
        );
        assert!(
            xml.contains("<testcase name=\"ok &lt;1&gt;\" classname=\"t/a.toml\" time=\"0.002\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<failure message=\"steps differ &amp; &quot;so&quot;\" type=\"test\">steps differ &amp; &quot;so&quot;\n  - exec x?</failure>"), "{xml}");
        assert!(
            xml.contains("<testsuite name=\"t/b.toml\" tests=\"1\" failures=\"1\""),
            "{xml}"
        );
    }
}
