//! The browsable report of a NAB run: `report/index.html` with one plot
//! per file (value, labelled windows, own alerts, calibrated score).

use super::corpus::{Corpus, CorpusFile};
use super::report::Summary;
use super::run::FileRun;
use crate::report::{PlotResult, WriteError};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// Writes `<out>/report/index.html` and one SVG per file.
pub fn write_report(
    out: &Path,
    summary: &Summary,
    corpus: &Corpus,
    runs: &[FileRun],
) -> Result<(), WriteError> {
    let dir = out.join("report");
    std::fs::create_dir_all(&dir).map_err(WriteError::at(&dir))?;
    let threshold = summary.profiles.first().map_or(0.5, |p| p.threshold);
    let mut html = crate::evaluate::html::markdown_to_html(&summary.markdown());
    html.push_str(
        "<p>Each plot: the value (blue), labelled windows (red bands), alerts (orange bars), \
         and below it the calibrated score (black) with the oracle threshold of the standard profile (dashed).</p>",
    );
    html.push_str("<table><tr><th>file</th><th>windows</th><th>caught</th><th>false alarms</th><th>own raw (standard)</th></tr>");
    for f in &summary.per_file {
        let anchor = f.file.replace('/', "_");
        let _ = write!(
            html,
            "<tr><td style=\"text-align:left\"><a href=\"#{anchor}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td></tr>",
            f.file, f.windows, f.caught, f.false_alarms, f.own_raw_standard
        );
    }
    html.push_str("</table>");
    for ((file, run), f) in corpus.files.iter().zip(runs).zip(&summary.per_file) {
        let anchor = f.file.replace('/', "_");
        let svg = format!("{anchor}.svg").replace(".csv", "");
        let path = dir.join(&svg);
        plot_file(&path, file, run, threshold).map_err(WriteError::at(&path))?;
        let _ = write!(
            html,
            "<h3 id=\"{anchor}\">{}</h3><p>{} windows, {} caught, {} false alarms</p><img src=\"{svg}\" loading=\"lazy\">",
            f.file, f.windows, f.caught, f.false_alarms
        );
    }
    let index = dir.join("index.html");
    std::fs::write(
        &index,
        crate::evaluate::html::page("anomalyd on NAB", &html),
    )
    .map_err(WriteError::at(&index))?;
    Ok(())
}

fn plot_file(path: &Path, file: &CorpusFile, run: &FileRun, threshold: f64) -> PlotResult {
    let rows = file.values.len();
    let root = SVGBackend::new(path, (1000, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(240);
    let (low, high) = file
        .values
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    let pad = ((high - low) * 0.05).max(1e-9);
    let (low, high) = (low - pad, high + pad);
    let mut chart = ChartBuilder::on(&top)
        .caption(file.relative_path(), ("sans-serif", 16))
        .margin(5)
        .x_label_area_size(0)
        .y_label_area_size(60)
        .build_cartesian_2d(0..rows, low..high)?;
    chart.configure_mesh().disable_mesh().draw()?;
    for w in &file.windows {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(w[0], low), (w[1], high)],
            RGBColor(255, 0, 0).mix(0.15).filled(),
        )))?;
    }
    let probation = file.probationary_rows();
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0, low), (probation, high)],
        RGBColor(128, 128, 128).mix(0.12).filled(),
    )))?;
    chart.draw_series(LineSeries::new(
        file.values.iter().enumerate().map(|(i, &v)| (i, v)),
        BLUE.stroke_width(1),
    ))?;
    let bar = (high - low) * 0.04;
    for a in &run.alerts {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(a[0], high - bar), (a[1].max(a[0] + 1), high)],
            RGBColor(255, 140, 0).filled(),
        )))?;
    }
    let mut scores = ChartBuilder::on(&bottom)
        .margin(5)
        .x_label_area_size(20)
        .y_label_area_size(60)
        .build_cartesian_2d(0..rows, 0.0..1.0f64)?;
    scores.configure_mesh().disable_mesh().y_labels(3).draw()?;
    for w in &file.windows {
        scores.draw_series(std::iter::once(Rectangle::new(
            [(w[0], 0.0), (w[1], 1.0)],
            RGBColor(255, 0, 0).mix(0.15).filled(),
        )))?;
    }
    scores.draw_series(LineSeries::new(
        run.decision_scores.iter().enumerate().map(|(i, &s)| (i, s)),
        BLACK.stroke_width(1),
    ))?;
    scores.draw_series(DashedLineSeries::new(
        [(0, threshold), (rows, threshold)],
        4,
        4,
        BLACK.mix(0.5).stroke_width(1),
    ))?;
    root.present()?;
    Ok(())
}
