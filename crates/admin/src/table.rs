//! Aligned plain-text tables for the CLI's human output.

/// Renders `headers` and `rows` as aligned columns separated by two spaces,
/// each line ending in `\n`, with no trailing spaces.
///
/// Widths count characters. Rows may be shorter or longer than the header
/// (missing cells are empty). Control characters in cells (newlines, tabs,
/// terminal escapes, e.g. in a remote server's error text) are shown as
/// spaces, so one cell can neither break the layout nor drive the terminal.
/// With no headers and no rows the result is empty.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = headers.iter().map(|h| sanitize(h)).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| sanitize(c)).collect())
        .collect();
    let lines: Vec<&[String]> = std::iter::once(header.as_slice())
        .filter(|h| !h.is_empty())
        .chain(body.iter().map(Vec::as_slice))
        .collect();
    let columns = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = line.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end_matches(' '));
        out.push('\n');
    }
    out
}

fn sanitize(cell: &str) -> String {
    cell.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn columns_are_aligned_with_two_spaces_and_no_trailing_spaces() {
        let table = render_table(
            &["ID", "SENDER", "SIZE"],
            &[
                row(&["A1", "alice@example.test", "1200"]),
                row(&["B22222", "<>", "7"]),
            ],
        );
        assert_eq!(
            table,
            "ID      SENDER              SIZE\n\
             A1      alice@example.test  1200\n\
             B22222  <>                  7\n"
        );
    }

    #[test]
    fn empty_last_cells_and_ragged_rows_leave_no_trailing_spaces() {
        let table = render_table(
            &["A", "B"],
            &[row(&["x", ""]), row(&["yy"]), row(&["", "", "z"])],
        );
        assert_eq!(table, "A   B\nx\nyy\n       z\n");
        for line in table.lines() {
            assert!(!line.ends_with(' '), "{line:?}");
        }
    }

    #[test]
    fn widths_count_characters_and_control_characters_are_neutralised() {
        let table = render_table(
            &["N", "V"],
            &[row(&["ü", "a\nb\x1b[2J"]), row(&["xy", "1"])],
        );
        assert_eq!(table, "N   V\nü   a b [2J\nxy  1\n");
    }

    #[test]
    fn nothing_renders_nothing() {
        assert_eq!(render_table(&[], &[]), "");
        assert_eq!(render_table(&["A"], &[]), "A\n");
    }
}
