//! Integration tests, in one binary so that the heavy dependencies link once.

mod bounded_fuzz;
mod checkpoints;
mod common;
mod daemon;
mod delivery_support;
mod deploy_files;
mod detect;
mod faults;
mod kafka_support;
mod model_refusal;
mod nab_golden;
mod nab_streaming;
mod round_trip;
mod score_command;
