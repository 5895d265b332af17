//! `anomalyd eval labelled`: the daemon's detector over a labelled file
//! (through [`crate::offline`]), measured against the labels: point-wise,
//! event-wise, AUC-PR and a NAB-style score ([`score`]), with a report.

pub mod labels;
pub mod report;
pub mod score;

use crate::offline::{Decision, Results, RowReport};
use labels::LabelValues;
use score::EntityRows;
use std::collections::HashMap;

/// Collects what the measures need from each row, and passes every row and
/// event on to `inner` (the detect outputs).
pub struct Collector<'a> {
    inner: &'a mut dyn Results,
    channels: usize,
    /// Entities in order of first appearance.
    pub entities: Vec<EntityRows>,
    index: HashMap<String, usize>,
    /// The label values seen.
    pub labels: LabelValues,
}

impl<'a> Collector<'a> {
    /// A collector for a model with `channels` channels.
    pub fn new(inner: &'a mut dyn Results, channels: usize) -> Self {
        Self {
            inner,
            channels,
            entities: Vec::new(),
            index: HashMap::new(),
            labels: LabelValues::default(),
        }
    }
}

impl Results for Collector<'_> {
    fn row(&mut self, report: &RowReport<'_>) -> std::io::Result<()> {
        self.inner.row(report)?;
        let index = match self.index.get(report.entity) {
            Some(&i) => i,
            None => {
                self.index
                    .insert(report.entity.to_string(), self.entities.len());
                self.entities.push(EntityRows {
                    entity: report.entity.to_string(),
                    ..Default::default()
                });
                self.entities.len() - 1
            }
        };
        let label = self.labels.intern(report.label.unwrap_or(""));
        let e = &mut self.entities[index];
        let carried = e.scores.last().copied().unwrap_or(0.0);
        e.labels.push(label);
        e.skipped.push(report.decision == Decision::Skipped);
        e.alerting.push(report.decision == Decision::Alerting);
        e.scores.push(
            report
                .window
                .as_ref()
                .map_or(carried, |w| w.decision_score as f32),
        );
        e.timestamps.push(report.timestamp_ms);
        e.rows.push(report.row);
        if report.values.len() == self.channels {
            e.values.extend_from_slice(report.values);
        } else {
            e.values
                .extend(std::iter::repeat_n(f32::NAN, self.channels));
        }
        Ok(())
    }

    fn event(&mut self, json: &str) -> std::io::Result<()> {
        self.inner.event(json)
    }
}
