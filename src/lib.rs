//! anomalyd: streaming time-series anomaly detection with a denoising autoencoder.
//!
//! The modules follow the model's life and the pipeline: `series` reads
//! data, `window` assembles windows, `train` fits the network in Burn,
//! `export` writes the ONNX artefact, `serve` scores windows with tract,
//! `detect` decides per entity, `daemon` runs it on Kafka, `offline` runs
//! it over a file, and `evaluate` measures detection quality. See
//! ARCHITECTURE.md.

pub mod alert;
pub mod calibrate;
pub mod cli;
pub mod daemon;
pub mod demo;
pub mod detect;
pub mod evaluate;
pub mod export;
pub mod model;
pub mod offline;
pub mod recipe;
pub mod series;
pub mod serve;
pub mod synthetic;
pub mod train;
pub mod window;
