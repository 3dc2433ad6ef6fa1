//! Aligning what a test expected with what a runbook did, for readable diffs.

/// One line of an alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Expected `.0` matched actual `.1`.
    Same(usize, usize),
    /// Expected, not done.
    Missing(usize),
    /// Done, not expected.
    Extra(usize),
}

/// Beyond this many cells the alignment is by position (a runbook in a long loop).
const MAX_CELLS: usize = 4_000_000;

/// A longest-common-subsequence alignment of `expected` against `actual`.
pub fn align<E, A>(expected: &[E], actual: &[A], same: impl Fn(&E, &A) -> bool) -> Vec<Op> {
    let (n, m) = (expected.len(), actual.len());
    if n.saturating_mul(m) > MAX_CELLS {
        let mut ops = Vec::new();
        for i in 0..n.max(m) {
            match (i < n, i < m) {
                (true, true) if same(&expected[i], &actual[i]) => ops.push(Op::Same(i, i)),
                (true, true) => {
                    ops.push(Op::Missing(i));
                    ops.push(Op::Extra(i));
                }
                (true, false) => ops.push(Op::Missing(i)),
                (false, true) => ops.push(Op::Extra(i)),
                (false, false) => {}
            }
        }
        return ops;
    }
    // lcs[i][j]: the longest common subsequence of expected[i..] and actual[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if same(&expected[i], &actual[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::new();
    while i < n || j < m {
        if i < n && j < m && same(&expected[i], &actual[j]) {
            ops.push(Op::Same(i, j));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // On a tie the expected line goes first: "- expected" then "+ actual".
            ops.push(Op::Missing(i));
            i += 1;
        } else {
            ops.push(Op::Extra(j));
            j += 1;
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(expected: &str, actual: &str, want: &str) {
        let e: Vec<char> = expected.chars().collect();
        let a: Vec<char> = actual.chars().collect();
        let ops = align(&e, &a, |x, y| x == y);
        let got: String = ops
            .iter()
            .map(|op| match op {
                Op::Same(i, _) => format!(" {}", e[*i]),
                Op::Missing(i) => format!("-{}", e[*i]),
                Op::Extra(j) => format!("+{}", a[*j]),
            })
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(got, want, "{expected} vs {actual}");
    }

    #[test]
    fn alignments() {
        check("abc", "abc", " a  b  c");
        check("abc", "axc", " a -b +x  c");
        check("abc", "ab", " a  b -c");
        check("ab", "abc", " a  b +c");
        check("", "x", "+x");
        check("abcd", "acd", " a -b  c  d");
    }
}
