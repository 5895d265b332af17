//! CSV rows, and the delimiter guess: `,`, `;`, tab or `|`, whichever
//! splits the first lines into the same number of fields.

use super::{InputError, Next};
use std::io::Read;

/// The delimiters [`sniff_delimiter`] chooses from, most likely first.
const CANDIDATES: [u8; 4] = [b',', b';', b'\t', b'|'];

/// Guesses the delimiter from the start of a file: of `,`, `;`, tab and `|`,
/// the one that occurs in the header and the same number of times on every
/// one of the first lines (outside quotes), the most often; failing that,
/// the one most frequent in the header; `,` if none occurs.
pub fn sniff_delimiter(prefix: &[u8]) -> u8 {
    let complete = match prefix.iter().rposition(|&b| b == b'\n') {
        // The last line may be cut off, unless the prefix is the whole file.
        Some(end) if prefix.len() >= 1 << 16 => &prefix[..end],
        _ => prefix,
    };
    let lines: Vec<&[u8]> = complete
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .take(50)
        .collect();
    let Some(header) = lines.first() else {
        return b',';
    };
    let counts = |delimiter: u8| -> Vec<usize> {
        lines
            .iter()
            .map(|line| count_outside_quotes(line, delimiter))
            .collect()
    };
    let mut best: Option<(bool, usize, u8)> = None;
    for delimiter in CANDIDATES {
        let per_line = counts(delimiter);
        let in_header = count_outside_quotes(header, delimiter);
        if in_header == 0 {
            continue;
        }
        let consistent = per_line.iter().all(|&n| n == in_header);
        let candidate = (consistent, in_header, delimiter);
        let better = best.is_none_or(|(c, n, _)| (consistent, in_header) > (c, n));
        if better {
            best = Some(candidate);
        }
    }
    best.map_or(b',', |(_, _, d)| d)
}

fn count_outside_quotes(line: &[u8], delimiter: u8) -> usize {
    let mut quoted = false;
    let mut count = 0;
    for &b in line {
        if b == b'"' {
            quoted = !quoted;
        } else if b == delimiter && !quoted {
            count += 1;
        }
    }
    count
}

/// A CSV reader and the record it reuses.
pub(super) struct CsvRows {
    reader: csv::Reader<Box<dyn Read>>,
    record: csv::StringRecord,
}

impl CsvRows {
    /// Reads the header.
    pub(super) fn open(
        source: Box<dyn Read>,
        delimiter: u8,
        name: &str,
    ) -> Result<(Self, Vec<String>), InputError> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(true)
            .buffer_capacity(1 << 16)
            .from_reader(source);
        let header = reader.headers().map_err(|e| InputError::Format {
            name: name.to_string(),
            message: format!("cannot read the header: {e}"),
        })?;
        let columns: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
        if columns.iter().all(|c| c.is_empty()) {
            return Err(InputError::Format {
                name: name.to_string(),
                message: "no header: the first line must name the columns".into(),
            });
        }
        Ok((
            Self {
                reader,
                record: csv::StringRecord::new(),
            },
            columns,
        ))
    }

    pub(super) fn position(&self) -> u64 {
        self.reader.position().byte()
    }

    pub(super) fn next(&mut self, name: &str, line: &mut usize) -> Result<Next<'_>, InputError> {
        match self.reader.read_record(&mut self.record) {
            Ok(true) => {
                *line = self
                    .record
                    .position()
                    .map_or(*line + 1, |p| p.line() as usize);
                Ok(Next::Row(super::Row::Csv(&self.record)))
            }
            Ok(false) => Ok(Next::End),
            Err(error) => {
                *line = error.position().map_or(*line + 1, |p| p.line() as usize);
                match error.kind() {
                    csv::ErrorKind::Io(_) => Err(InputError::Format {
                        name: name.to_string(),
                        message: error.to_string(),
                    }),
                    _ => Ok(Next::Unreadable(error.to_string())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delimiter_that_splits_every_line_alike_wins() {
        assert_eq!(sniff_delimiter(b"a,b,c\n1,2,3\n"), b',');
        // Decimal commas: more commas in the rows, but only ';' agrees with the header.
        assert_eq!(
            sniff_delimiter(b"time;a;b;label\n2024-01-01;1,5;2,25;0\n2024-01-02;1,5;2;1\n"),
            b';'
        );
        assert_eq!(sniff_delimiter(b"a\tb\n1\t2\n"), b'\t');
        assert_eq!(sniff_delimiter(b"a|b\n1|2\n"), b'|');
        // Quoted delimiters do not count.
        assert_eq!(sniff_delimiter(b"a;b\n\"x;y;z\";2\n"), b';');
        assert_eq!(sniff_delimiter(b"single\n1\n"), b',');
        assert_eq!(sniff_delimiter(b""), b',');
    }
}
