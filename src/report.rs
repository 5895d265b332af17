//! Files written for people to read (HTML reports, SVG plots, loss
//! curves): the error of one that could not be written, and what drawing
//! a plot returns.

use std::path::Path;

/// Why a report, plot or curve file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {message}")]
pub struct WriteError {
    /// The file or folder.
    pub path: String,
    /// Why.
    pub message: String,
}

impl WriteError {
    /// A failure writing `path`.
    pub fn at<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> Self + '_ {
        move |error| Self {
            path: path.display().to_string(),
            message: error.to_string(),
        }
    }
}

/// What drawing a plot returns (plotters' errors, boxed).
pub type PlotResult = Result<(), Box<dyn std::error::Error>>;
