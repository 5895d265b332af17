//! A bad or mismatched model is refused before it serves, with a message that says what is wrong.

use super::common::written_model;
use anomalyd::serve::{ModelError, Scorer};

fn refusal(path: &std::path::Path) -> String {
    match Scorer::load(path) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn truncated_onnx_is_refused() {
    let (_dir, path) = written_model();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let message = refusal(&path);
    assert!(message.contains("is not a usable ONNX model"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn garbage_onnx_is_refused() {
    let (_dir, path) = written_model();
    std::fs::write(&path, b"this is not a protobuf at all").unwrap();
    let message = refusal(&path);
    assert!(message.contains("is not a usable ONNX model"), "{message}");
}

#[test]
fn metadata_of_another_version_is_refused() {
    let (_dir, path) = written_model();
    let json_path = path.with_extension("json");
    let text = std::fs::read_to_string(&json_path).unwrap();
    let text = text.replace("\"format_version\": 1", "\"format_version\": 99");
    std::fs::write(&json_path, text).unwrap();
    let message = refusal(&path);
    assert!(message.contains("format_version 99"), "{message}");
    assert!(message.contains("reads version 1"), "{message}");
}

#[test]
fn missing_metadata_is_refused() {
    let (_dir, path) = written_model();
    std::fs::remove_file(path.with_extension("json")).unwrap();
    let message = refusal(&path);
    assert!(message.contains("cannot read model metadata"), "{message}");
}

#[test]
fn metadata_that_disagrees_with_the_graph_is_refused() {
    let (_dir, path) = written_model();
    let json_path = path.with_extension("json");
    let mut metadata: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    // Claim a longer window than the graph takes.
    metadata["window_len"] = 128.into();
    metadata["network"]["window_len"] = 128.into();
    std::fs::write(&json_path, serde_json::to_string(&metadata).unwrap()).unwrap();
    let message = refusal(&path);
    assert!(message.contains("does not match its metadata"), "{message}");
    assert!(message.contains("128"), "{message}");
}

#[test]
fn nan_weights_are_refused() {
    let (_dir, path) = written_model();
    edit_initializer(&path, "decoder.output.bias", |bias| {
        bias.float_data[0] = f32::NAN
    });
    let message = refusal(&path);
    assert!(message.contains("NaN or infinity"), "{message}");
}

#[test]
fn input_without_a_model_channel_is_refused() {
    let (_dir, path) = written_model();
    let scorer = Scorer::load(&path).unwrap();
    let available = vec![
        "temperature".to_string(),
        "pressure".to_string(),
        "flow".to_string(),
        "rpm".to_string(),
    ];
    let error = scorer.map_channels(&available).unwrap_err();
    assert!(matches!(error, ModelError::ChannelMismatch { .. }));
    let message = error.to_string();
    assert!(
        message.contains("channel mismatch") && message.contains("\"vibration\""),
        "{message}"
    );
}

/// Rewrites the initializer `name` of the ONNX file at `path` with `edit`.
fn edit_initializer(
    path: &std::path::Path,
    name: &str,
    edit: impl FnOnce(&mut tract_onnx::pb::TensorProto),
) {
    use prost::Message;
    let mut model =
        tract_onnx::pb::ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    let tensor = model
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
        .expect("the initializer exists");
    edit(tensor);
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

#[test]
fn weights_of_the_wrong_shape_are_refused() {
    let (_dir, path) = written_model();
    edit_initializer(&path, "decoder.output.bias", |bias| {
        bias.dims[0] += 3;
        bias.float_data.extend([0.0; 3]);
    });
    let message = refusal(&path);
    assert!(message.contains("is not a usable ONNX model"), "{message}");
}

#[test]
fn a_model_changed_after_export_is_refused() {
    // Valid weights, but not the ones the metadata's version was computed from.
    let (_dir, path) = written_model();
    edit_initializer(&path, "decoder.output.bias", |bias| {
        bias.float_data[0] += 0.01
    });
    let message = refusal(&path);
    assert!(message.contains("changed after export"), "{message}");
}
