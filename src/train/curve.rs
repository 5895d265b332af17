//! Writes the loss curve of a training run as CSV and as an SVG plot.

use super::trainer::EpochRecord;
use crate::report::{PlotResult, WriteError};
use plotters::prelude::*;
use std::path::Path;

/// Writes `history` to `csv_path` (one row per epoch).
pub fn write_csv(history: &[EpochRecord], csv_path: &Path) -> Result<(), WriteError> {
    let write = || -> Result<(), csv::Error> {
        let mut writer = csv::Writer::from_path(csv_path)?;
        for record in history {
            writer.serialize(record)?;
        }
        writer.flush()?;
        Ok(())
    };
    write().map_err(WriteError::at(csv_path))
}

/// Plots training and validation loss per epoch (log scale) to `svg_path`.
pub fn write_svg(history: &[EpochRecord], title: &str, svg_path: &Path) -> Result<(), WriteError> {
    draw(history, title, svg_path).map_err(WriteError::at(svg_path))
}

fn draw(history: &[EpochRecord], title: &str, svg_path: &Path) -> PlotResult {
    let root = SVGBackend::new(svg_path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let losses = history
        .iter()
        .flat_map(|r| [r.train_loss, r.validation_loss])
        .filter(|v| v.is_finite() && *v > 0.0);
    let (low, high) = losses.fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = if low <= high {
        (low * 0.9, high * 1.1)
    } else {
        (1e-3, 1.0)
    };
    let epochs = history.len().max(2) as u32;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(1u32..epochs, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("loss")
        .draw()?;
    let series = [
        (
            "training (corrupted input)",
            BLUE,
            history
                .iter()
                .map(|r| (r.epoch as u32, r.train_loss))
                .collect::<Vec<_>>(),
        ),
        (
            "validation (clean input)",
            RED,
            history
                .iter()
                .map(|r| (r.epoch as u32, r.validation_loss))
                .collect(),
        ),
    ];
    for (label, color, points) in series {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
