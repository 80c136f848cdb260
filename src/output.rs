//! Plain-text tables and number formats shared by the commands.

use std::io::Write;

/// Writes to stdout now. A closed pipe (`tandemn list | head`) is not an error worth a panic,
/// so write failures are ignored.
pub fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // Flushed: a progress line rewritten in place has no newline to flush it.
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

/// A line on stderr; like `print`, a closed stderr is not worth a panic.
pub fn eprintln(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Where logs go: stderr, or nowhere once stderr is gone (a closed pipe must not stop a
/// router in the middle of its streams).
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// `print` plus a newline.
pub fn println(text: &str) {
    print(&format!("{text}\n"));
}

/// A left-aligned text table with a header and a dashed rule under it.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Self { headers: headers.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..columns)
                .map(|i| {
                    let cell = cells.get(i).map_or("", String::as_str);
                    format!("{cell:<width$}", width = widths[i])
                })
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = line(&self.headers);
        out.push('\n');
        out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1)));
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(row));
        }
        out.push('\n');
        out
    }
}

pub fn usd_per_hour(price: f64) -> String {
    format!("${price:.2}/hr")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut table = Table::new(["A", "LONG HEADER", "C"]);
        table.row(vec!["wide cell".into(), "x".into(), "".into()]);
        table.row(vec!["y".into()]);
        assert_eq!(table.render(), "A          LONG HEADER  C\n-------------------------\nwide cell  x\ny\n");
    }
}
