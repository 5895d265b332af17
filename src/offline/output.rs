//! The results of `anomalyd detect` as files: one CSV row per input row
//! (scores as on the scores topic, the decision, the channels'
//! contributions, why a row was skipped) and the events as JSON lines.

use super::{Results, RowReport};
use std::fmt::Write as _;
use std::io::Write;

/// Writes the per-row CSV and the events.
pub struct FileResults {
    rows: csv::Writer<Box<dyn Write>>,
    events: Option<Box<dyn Write>>,
    channels: usize,
    field: String,
}

impl FileResults {
    /// Writes the rows to `rows` (after a header) and the events to `events`.
    pub fn new(
        rows: Box<dyn Write>,
        events: Option<Box<dyn Write>>,
        channels: &[String],
    ) -> std::io::Result<Self> {
        let mut writer = csv::Writer::from_writer(rows);
        let mut header = vec![
            "row".to_string(),
            "entity".into(),
            "time".into(),
            "raw_score".into(),
            "calibrated_score".into(),
            "decision_score".into(),
            "decision".into(),
        ];
        header.extend(channels.iter().map(|c| format!("{c}_contribution")));
        header.push("note".into());
        writer.write_record(&header)?;
        Ok(Self {
            rows: writer,
            events,
            channels: channels.len(),
            field: String::new(),
        })
    }

    fn number(&mut self, value: f64) -> std::io::Result<()> {
        self.field.clear();
        let _ = write!(self.field, "{value:.6}");
        self.rows.write_field(&self.field)?;
        Ok(())
    }

    /// Flushes both.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.rows.flush()?;
        if let Some(events) = &mut self.events {
            events.flush()?;
        }
        Ok(())
    }
}

impl Results for FileResults {
    fn row(&mut self, report: &RowReport<'_>) -> std::io::Result<()> {
        self.field.clear();
        let _ = write!(self.field, "{}", report.row);
        self.rows.write_field(&self.field)?;
        self.rows.write_field(report.entity)?;
        self.rows.write_field(report.time)?;
        match &report.window {
            Some(window) => {
                self.number(window.raw_score)?;
                self.number(window.calibrated_score)?;
                self.number(window.decision_score)?;
            }
            None => {
                for _ in 0..3 {
                    self.rows.write_field("")?;
                }
            }
        }
        self.rows.write_field(report.decision.as_str())?;
        match &report.window {
            Some(window) => {
                for &c in window.contributions {
                    self.number(c as f64)?;
                }
            }
            None => {
                for _ in 0..self.channels {
                    self.rows.write_field("")?;
                }
            }
        }
        match report.skip {
            Some(skip) => {
                self.field.clear();
                let _ = write!(self.field, "{}: {skip}", skip.reason.as_str());
                self.rows.write_field(&self.field)?;
            }
            None => self.rows.write_field("")?,
        }
        self.rows.write_record(None::<&[u8]>)?;
        Ok(())
    }

    fn event(&mut self, json: &str) -> std::io::Result<()> {
        if let Some(events) = &mut self.events {
            events.write_all(json.as_bytes())?;
            events.write_all(b"\n")?;
        }
        Ok(())
    }
}
