//! anomalyd: streaming time-series anomaly detection with a denoising autoencoder.
//!
//! The modules follow the model's life and the pipeline (ARCHITECTURE.md
//! has the code map and the invariants):
//!
//! - [`series`]: reading CSV and JSON lines into per-entity, time-ordered series;
//! - [`synthetic`]: the seeded generator of the demo and test data;
//! - [`window`]: window assembly, streaming and batch, without I/O;
//! - [`model`]: the artefact contract: metadata, network shape, normalisation,
//!   the frozen feature extractor;
//! - [`train`]: the autoencoder, the hybrid loss and the training loop in Burn;
//! - [`recipe`]: every training setting in one place, prepare → train → export;
//! - [`export`]: the ONNX graph and the artefact;
//! - [`serve`]: the tract scorer and the embedded default model;
//! - [`settings`]: the typed error of a setting that fails its check, naming its key;
//! - [`calibrate`]: per-entity online calibration of raw scores;
//! - [`alert`]: the per-entity alert state machine;
//! - [`detect`]: `EntityDetector`, row → window → score → calibration → alert;
//! - [`daemon`]: the Kafka daemon, a folder per stage (source, entities,
//!   scoring, sinks, state, ledger, admin) and what crosses them (config,
//!   clients, failures);
//! - [`offline`]: the daemon's per-entity path over a file (`anomalyd detect`);
//! - [`evaluate`]: detection quality: labelled files, NAB, the loss ablation's measure;
//! - [`report`]: the error of a report, plot or curve file not written;
//! - [`demo`]: `anomalyd demo` on an embedded broker;
//! - [`cli`]: the subcommands.

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
pub mod report;
pub mod series;
pub mod serve;
pub mod settings;
pub mod synthetic;
pub mod train;
pub mod window;
