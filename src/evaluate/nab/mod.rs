//! The Numenta Anomaly Benchmark: the corpus, its scoring rules and the streaming run of our detector over it.

pub mod corpus;
mod plots;
pub mod report;
pub mod run;
pub mod scoring;

pub use corpus::{Corpus, CorpusFile, Profile};
pub use scoring::{optimise_threshold, score_decisions, FileRows, Optimum};
