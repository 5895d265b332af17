//! The Markdown the evaluations print, as HTML for their reports: pipe
//! tables become tables, other lines paragraphs, and `code` spans code.
//! Only that subset: it is what the summaries are written in.

use std::fmt::Write as _;

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Inline Markdown of one cell or paragraph: escaped, with `code` spans.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(text).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn cells(line: &str) -> Vec<&str> {
    let line = line.trim();
    let inner = line.strip_prefix('|').unwrap_or(line);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(str::trim).collect()
}

/// Markdown (paragraphs and pipe tables) as HTML.
pub fn markdown_to_html(markdown: &str) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = markdown.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if line.starts_with('|') {
            // A table: header, alignment row, body.
            let header = cells(line);
            let aligns: Vec<&str> = lines
                .get(i + 1)
                .map(|l| cells(l))
                .unwrap_or_default()
                .into_iter()
                .map(|a| if a.ends_with(':') { "right" } else { "left" })
                .collect();
            out.push_str("<table><tr>");
            for h in &header {
                let _ = write!(out, "<th>{}</th>", inline(h));
            }
            out.push_str("</tr>\n");
            i += 2;
            while i < lines.len() && lines[i].trim().starts_with('|') {
                out.push_str("<tr>");
                for (c, cell) in cells(lines[i]).iter().enumerate() {
                    let align = aligns.get(c).copied().unwrap_or("left");
                    let _ = write!(
                        out,
                        "<td style=\"text-align:{align}\">{}</td>",
                        inline(cell)
                    );
                }
                out.push_str("</tr>\n");
                i += 1;
            }
            out.push_str("</table>\n");
            continue;
        }
        if !line.is_empty() {
            let _ = writeln!(out, "<p>{}</p>", inline(line));
        }
        i += 1;
    }
    out
}

/// The page around a report's body.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse;margin:8px 0}}\
         td,th{{border:1px solid #ccc;padding:2px 6px}}img{{width:100%}}</style>\
         <h1>{title}</h1>\n{body}",
        title = escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_become_html_tables_not_text() {
        let html = markdown_to_html(
            "Run of `anomalyd` on <file>.\n\n| a | b |\n|---|---:|\n| x | 1.5 |\n| y | 2 |\n",
        );
        assert!(
            html.contains("<p>Run of <code>anomalyd</code> on &lt;file&gt;.</p>"),
            "{html}"
        );
        assert!(
            html.contains("<table><tr><th>a</th><th>b</th></tr>"),
            "{html}"
        );
        assert!(
            html.contains("<td style=\"text-align:right\">1.5</td>"),
            "{html}"
        );
        assert_eq!(html.matches("<tr>").count(), 3);
        assert!(!html.contains('|'), "{html}");
    }
}
