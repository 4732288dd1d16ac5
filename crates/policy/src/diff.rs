//! A small line diff (longest common subsequence) for logging policy
//! changes. Policies are a handful of lines; larger inputs fall back to
//! "everything removed, everything added".

/// Above this many line pairs the LCS table is not built.
const MAX_CELLS: usize = 1_000_000;

/// The changed lines of `old` → `new`: `-line` for removed, `+line` for
/// added, one per line, in order; empty when the lines are equal (line ends
/// CRLF or LF do not count as a difference).
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().map(|l| l.trim_end_matches('\r')).collect();
    let b: Vec<&str> = new.lines().map(|l| l.trim_end_matches('\r')).collect();
    let mut out = Vec::new();
    if a.len().saturating_mul(b.len()) > MAX_CELLS {
        out.extend(a.iter().map(|l| format!("-{l}")));
        out.extend(b.iter().map(|l| format!("+{l}")));
        return out.join("\n");
    }
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(format!("-{}", a[i]));
            i += 1;
        } else {
            out.push(format!("+{}", b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| format!("-{l}")));
    out.extend(b[j..].iter().map(|l| format!("+{l}")));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(line_diff("a\nb\n", "a\r\nb\r\n"), "");
    }

    #[test]
    fn changed_mode_and_added_mx() {
        let old = "version: STSv1\nmode: testing\nmx: a.example\nmax_age: 5\n";
        let new = "version: STSv1\nmode: enforce\nmx: a.example\nmx: b.example\nmax_age: 5\n";
        assert_eq!(
            line_diff(old, new),
            "-mode: testing\n+mode: enforce\n+mx: b.example"
        );
    }

    #[test]
    fn removed_lines_at_the_end() {
        assert_eq!(line_diff("a\nb\nc", "a"), "-b\n-c");
        assert_eq!(line_diff("", "x"), "+x");
    }
}
