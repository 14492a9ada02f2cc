//! Markdown output: tables, sections, and the whole `BENCHMARKS.md`.
//!
//! Each section sits between `<!-- section N -->` and `<!-- /section N -->` markers, so that
//! `--only N` can replace one section of an existing file and keep the others.

use std::fmt::Write as _;

/// A Markdown table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Column headings.
    pub headers: Vec<String>,
    /// Rows, each with one cell per heading.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headings and no rows.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row.
    ///
    /// # Panics
    /// If the row does not have one cell per heading.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        assert_eq!(
            cells.len(),
            self.headers.len(),
            "row {cells:?} does not match headings {:?}",
            self.headers
        );
        self.rows.push(cells);
    }

    /// The table as Markdown (pipes in cells are escaped).
    pub fn to_markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let mut out = String::new();
        let line = |cells: &[String]| {
            format!(
                "| {} |\n",
                cells.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
            )
        };
        out.push_str(&line(&self.headers));
        out.push_str(&format!(
            "|{}\n",
            self.headers.iter().map(|_| "---|").collect::<String>()
        ));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// Whether a section's goal was met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    /// Met, with the evidence.
    Met(String),
    /// Missed, with what limits it.
    Missed(String),
    /// Not a pass/fail section, or not measurable here; why.
    Info(String),
}

impl Goal {
    fn render(&self) -> String {
        match self {
            Goal::Met(s) => format!("**Goal met.** {s}"),
            Goal::Missed(s) => format!("**Goal missed.** {s}"),
            Goal::Info(s) => s.clone(),
        }
    }
}

/// One numbered section of the report.
#[derive(Debug, Clone)]
pub struct Section {
    /// 1..=6.
    pub number: u8,
    /// The heading.
    pub title: String,
    /// What was measured and how (Markdown).
    pub method: String,
    /// The tables.
    pub tables: Vec<Table>,
    /// The goal and whether it was met.
    pub goal: Goal,
    /// Further remarks (Markdown paragraphs).
    pub notes: Vec<String>,
    /// How long the section took and the load while it ran.
    pub context: String,
}

impl Section {
    /// The section as Markdown, with its markers.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "<!-- section {} -->", self.number);
        let _ = writeln!(s, "## {}. {}\n", self.number, self.title);
        let _ = writeln!(s, "{}\n", self.method.trim());
        for t in &self.tables {
            let _ = writeln!(s, "{}", t.to_markdown());
        }
        let _ = writeln!(s, "{}\n", self.goal.render());
        for n in &self.notes {
            let _ = writeln!(s, "{}\n", n.trim());
        }
        let _ = writeln!(s, "_{}_", self.context);
        let _ = writeln!(s, "<!-- /section {} -->", self.number);
        s
    }
}

fn markers(n: u8) -> (String, String) {
    (
        format!("<!-- section {n} -->"),
        format!("<!-- /section {n} -->\n"),
    )
}

/// The text of section `n` (with markers) in `doc`, if present.
pub fn find_section(doc: &str, n: u8) -> Option<&str> {
    let (open, close) = markers(n);
    let start = doc.find(&open)?;
    let end = doc[start..].find(&close)? + start + close.len();
    Some(&doc[start..end])
}

/// The number of the last section.
pub const LAST_SECTION: u8 = 12;

/// The whole document: `header`, then for each section 1..=[`LAST_SECTION`] the new one if
/// given, else the one in `previous` (if any), then `footer`.
pub fn document(
    header: &str,
    sections: &[Section],
    previous: Option<&str>,
    footer: &str,
) -> String {
    let mut out = String::new();
    out.push_str(header.trim_end());
    out.push_str("\n\n");
    for n in 1..=LAST_SECTION {
        if let Some(s) = sections.iter().find(|s| s.number == n) {
            out.push_str(&s.to_markdown());
        } else if let Some(old) = previous.and_then(|p| find_section(p, n)) {
            out.push_str(old);
        } else {
            continue;
        }
        out.push('\n');
    }
    out.push_str(footer.trim_end());
    out.push('\n');
    out
}

/// Checks that `md` holds well-formed Markdown tables: every table row has as many cells as
/// its heading row, and a separator row follows each heading row. Returns the tables found
/// (as rows of cells) or what is wrong.
pub fn parse_tables(md: &str) -> Result<Vec<Vec<Vec<String>>>, String> {
    let mut tables = Vec::new();
    let mut current: Vec<Vec<String>> = Vec::new();
    let split = |l: &str| -> Vec<String> {
        let inner = l.trim().trim_start_matches('|').trim_end_matches('|');
        let mut cells = Vec::new();
        let mut cell = String::new();
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\\' && chars.peek() == Some(&'|') {
                cell.push('|');
                chars.next();
            } else if c == '|' {
                cells.push(cell.trim().to_string());
                cell.clear();
            } else {
                cell.push(c);
            }
        }
        cells.push(cell.trim().to_string());
        cells
    };
    for (i, line) in md.lines().enumerate() {
        if line.trim_start().starts_with('|') {
            current.push(split(line));
            if current.len() == 2 && !current[1].iter().all(|c| c.chars().all(|ch| ch == '-')) {
                return Err(format!(
                    "line {}: no separator row under the headings",
                    i + 1
                ));
            }
            if current.len() > 1 && current.last().map(Vec::len) != Some(current[0].len()) {
                return Err(format!(
                    "line {}: {} cells, the headings have {}",
                    i + 1,
                    current.last().map_or(0, Vec::len),
                    current[0].len()
                ));
            }
        } else if !current.is_empty() {
            if current.len() < 3 {
                return Err(format!("line {}: a table without rows", i + 1));
            }
            tables.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tables.push(current);
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(n: u8, cell: &str) -> Section {
        let mut t = Table::new(["a", "b"]);
        t.row([cell, "x|y"]);
        Section {
            number: n,
            title: format!("S{n}"),
            method: "how".into(),
            tables: vec![t],
            goal: Goal::Met("yes".into()),
            notes: vec![],
            context: "ctx".into(),
        }
    }

    #[test]
    fn sections_are_replaced_and_kept() {
        let doc = document("# H", &[section(1, "one"), section(2, "two")], None, "end");
        let tables = parse_tables(&doc).unwrap();
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0][2], ["one", "x|y"]);
        let again = document("# H2", &[section(2, "new")], Some(&doc), "end");
        assert!(again.contains("one") && again.contains("new") && !again.contains("two"));
        assert_eq!(parse_tables(&again).unwrap().len(), 2);
    }

    #[test]
    fn malformed_tables_are_reported() {
        assert!(parse_tables("| a | b |\n|---|---|\n| 1 |\n").is_err());
        assert!(parse_tables("| a | b |\n| 1 | 2 |\n").is_err());
    }
}
