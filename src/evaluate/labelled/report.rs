//! The summary of `anomalyd eval labelled` (terminal, JSON) and its HTML
//! report: the summary's tables, then per entity a plot of the signal, the
//! labelled events, the alerts, the decision score and the threshold.

use super::score::{runs, EntityRows, Quality};
use crate::evaluate::html::{escape, markdown_to_html, page};
use crate::report::{PlotResult, WriteError};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// What the summary says besides the figures.
pub struct Context<'a> {
    /// The input's name.
    pub input: &'a str,
    /// The model version.
    pub model_version: &'a str,
    /// The label rule, as chosen.
    pub label_rule: &'a str,
    /// The alert threshold.
    pub threshold: f64,
    /// The model's channel names.
    pub channels: &'a [String],
}

fn rate(value: f64) -> String {
    format!("{value:.3}")
}

/// The summary as Markdown tables (printed as is on the terminal).
pub fn markdown(quality: &Quality, context: &Context<'_>, entities: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`{}`: {} rows ({} skipped, not judged), {} entities, {} anomalous rows; model `{}`.\n",
        context.input,
        quality.rows,
        quality.skipped_rows,
        entities,
        quality.anomalous_rows,
        context.model_version
    );
    let _ = writeln!(out, "Labels: {}.\n", context.label_rule);
    let p = &quality.point;
    let e = &quality.events;
    let optional =
        |v: Option<f64>, digits: usize| v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"));
    let _ = writeln!(out, "| measure | value |\n|---|---:|");
    for (name, value) in [
        ("point-wise precision", rate(p.precision)),
        ("point-wise recall", rate(p.recall)),
        ("point-wise F1", rate(p.f1)),
        (
            "false-alarm rate (FP / normal rows)",
            rate(p.false_alarm_rate),
        ),
        (
            "missed-alarm rate (FN / anomalous rows)",
            rate(p.missed_alarm_rate),
        ),
        (
            "events caught (event recall)",
            format!("{} of {} ({})", e.caught, e.events, rate(e.recall)),
        ),
        (
            "alerts on an event (event precision)",
            format!(
                "{} of {} ({})",
                e.alerts - e.false_alerts,
                e.alerts,
                rate(e.precision)
            ),
        ),
        (
            "median rows to detect",
            optional(e.median_rows_to_detect, 1),
        ),
        ("AUC-PR of the decision score", optional(quality.auc_pr, 3)),
        (
            "NAB-style score, standard profile",
            optional(quality.nab_standard, 1),
        ),
    ] {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    let _ = writeln!(
        out,
        "\nAn event is a run of anomalous rows; it is caught when an alert opens in it or within {} rows of its start. Rows are judged by whether an alert is open after them.\n",
        e.tolerance_rows
    );
    if quality.by_kind.len() > 1 || quality.by_kind.first().is_some_and(|k| k.kind != "1") {
        let _ = writeln!(
            out,
            "| kind | events | caught | rows | rows alerting |\n|---|---:|---:|---:|---:|"
        );
        for k in &quality.by_kind {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                k.kind, k.events, k.caught, k.rows, k.rows_alerting
            );
        }
    }
    out
}

/// Writes `<dir>/index.html` and one SVG per entity.
pub fn write_report(
    dir: &Path,
    summary_markdown: &str,
    quality: &Quality,
    entities: &[EntityRows],
    kinds: &[Option<String>],
    context: &Context<'_>,
) -> Result<(), WriteError> {
    std::fs::create_dir_all(dir).map_err(WriteError::at(dir))?;
    let mut body = markdown_to_html(summary_markdown);
    body.push_str(
        "<p>Each plot: the channels, each scaled to its own median and spread (thin lines), \
         labelled events (red bands) and alerts (orange bars); below, the decision score (black) \
         and the alert threshold (dashed).</p>",
    );
    body.push_str("<h2>Events</h2><table><tr><th>entity</th><th>kind</th><th>rows</th><th>length</th><th>caught after (rows)</th><th>rows alerting</th></tr>");
    for o in &quality.outcomes {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}–{}</td><td style=\"text-align:right\">{}</td><td style=\"text-align:right\">{}</td><td style=\"text-align:right\">{}</td></tr>",
            escape(&o.entity),
            escape(&o.kind),
            o.rows[0],
            o.rows[1],
            o.length,
            o.rows_to_detect.map_or("missed".into(), |r| r.to_string()),
            o.rows_alerting
        );
    }
    body.push_str("</table><h2>Entities</h2>");
    for (i, entity) in entities.iter().enumerate() {
        let svg = format!("entity-{i}.svg");
        let path = dir.join(&svg);
        plot_entity(&path, entity, kinds, context).map_err(WriteError::at(&path))?;
        let _ = write!(
            body,
            "<h3>{}</h3><img src=\"{svg}\" loading=\"lazy\">",
            escape(&entity.entity)
        );
    }
    let index = dir.join("index.html");
    std::fs::write(
        &index,
        page(&format!("anomalyd on {}", context.input), &body),
    )
    .map_err(WriteError::at(&index))?;
    Ok(())
}

/// At most this many points per line in a plot.
const PLOT_POINTS: usize = 2000;

/// Each bucket's value of largest magnitude (a spike survives the thinning).
fn thinned(values: impl Iterator<Item = f32>, n: usize) -> Vec<(usize, f32)> {
    let bucket = n.div_ceil(PLOT_POINTS).max(1);
    let mut out = Vec::new();
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in values.enumerate() {
        if v.is_finite() && best.is_none_or(|(_, b)| v.abs() > b.abs()) {
            best = Some((i, v));
        }
        if (i + 1) % bucket == 0 || i + 1 == n {
            if let Some((at, v)) = best.take() {
                out.push((at - at % bucket, v));
            }
        }
    }
    out
}

/// One channel's values around its median, in units of its 5–95 %
/// spread (clamped to ±5), thinned to the plot's width.
fn scaled_channel(entity: &EntityRows, c: usize, channels: usize, n: usize) -> Vec<(usize, f32)> {
    let values: Vec<f32> = entity
        .values
        .iter()
        .skip(c)
        .step_by(channels)
        .copied()
        .collect();
    let mut finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    finite.sort_by(f32::total_cmp);
    let q = |p: f64| {
        finite
            .get(((finite.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let (median, spread) = (q(0.5), (q(0.95) - q(0.05)).max(1e-6));
    thinned(
        values
            .iter()
            .map(|&v| ((v - median) / spread).clamp(-5.0, 5.0)),
        n,
    )
}

/// The calibrated scores below the values: labelled events shaded, the
/// alert threshold dashed.
fn plot_scores(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    entity: &EntityRows,
    events: &[[usize; 2]],
    threshold: f64,
    n: usize,
) -> PlotResult {
    let mut scores = ChartBuilder::on(area)
        .margin(5)
        .x_label_area_size(20)
        .y_label_area_size(50)
        .build_cartesian_2d(0..n, 0.0..1.0f64)?;
    scores.configure_mesh().disable_mesh().y_labels(3).draw()?;
    for event in events {
        scores.draw_series(std::iter::once(Rectangle::new(
            [(event[0], 0.0), (event[1] + 1, 1.0)],
            RGBColor(255, 0, 0).mix(0.15).filled(),
        )))?;
    }
    scores.draw_series(LineSeries::new(
        thinned(entity.scores.iter().copied(), n)
            .into_iter()
            .map(|(i, s)| (i, s as f64)),
        BLACK.stroke_width(1),
    ))?;
    scores.draw_series(DashedLineSeries::new(
        [(0, threshold), (n, threshold)],
        4,
        4,
        BLACK.mix(0.5).stroke_width(1),
    ))?;
    Ok(())
}

fn plot_entity(
    path: &Path,
    entity: &EntityRows,
    kinds: &[Option<String>],
    context: &Context<'_>,
) -> PlotResult {
    let n = entity.labels.len().max(2);
    let channels = context.channels.len();
    let root = SVGBackend::new(path, (1000, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(250);
    let scaled: Vec<_> = (0..channels)
        .map(|c| scaled_channel(entity, c, channels, n))
        .collect();
    let (low, high) = scaled
        .iter()
        .flatten()
        .fold((-0.6f32, 0.6f32), |(l, h), &(_, v)| (l.min(v), h.max(v)));
    let (low, high) = (low as f64 - 0.1, high as f64 + 0.1);
    let mut chart = ChartBuilder::on(&top)
        .caption(&entity.entity, ("sans-serif", 16))
        .margin(5)
        .x_label_area_size(0)
        .y_label_area_size(50)
        .build_cartesian_2d(0..n, low..high)?;
    chart.configure_mesh().disable_mesh().y_labels(3).draw()?;
    let events = runs(entity.labels.iter().map(|&l| kinds[l as usize].is_some()));
    let alerts = runs(entity.alerting.iter().copied());
    for event in &events {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(event[0], low), (event[1] + 1, high)],
            RGBColor(255, 0, 0).mix(0.15).filled(),
        )))?;
    }
    for (c, line) in scaled.iter().enumerate() {
        let color = Palette99::pick(c).mix(0.8);
        chart
            .draw_series(LineSeries::new(
                line.iter().map(|&(i, v)| (i, v as f64)),
                color.stroke_width(1),
            ))?
            .label(context.channels[c].clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], color));
    }
    let bar = (high - low) * 0.04;
    for a in &alerts {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(a[0], high - bar), (a[1] + 1, high)],
            RGBColor(255, 140, 0).filled(),
        )))?;
    }
    if channels <= 12 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.7))
            .label_font(("sans-serif", 10))
            .draw()?;
    }
    plot_scores(&bottom, entity, &events, context.threshold, n)?;
    root.present()?;
    Ok(())
}
