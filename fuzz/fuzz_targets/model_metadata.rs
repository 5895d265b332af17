//! Fuzz target: the model metadata loader (the JSON beside every ONNX file)
//! never panics, whatever the bytes.
#![no_main]

use anomalyd::model::ModelMetadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ModelMetadata::from_json(text, "fuzz");
    }
});
