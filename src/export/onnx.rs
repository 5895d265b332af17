//! Writes the trained Burn autoencoder as an ONNX graph, by hand, from its weights.
//!
//! Burn 0.22 ships no ONNX *exporter* (burn-import only reads ONNX), so the
//! graph is written directly with the ONNX protobuf types that tract-onnx
//! exposes (`tract_onnx::pb`), computing what [`Autoencoder::forward`]
//! computes, in operators tract runs fast (BENCHMARKS.md, section 1):
//! - each upsampling transposed convolution (kernel 4, stride 2, padding 1)
//!   is a convolution to twice the channels and an interleave (`upsample`):
//!   tract ran ConvTranspose as a generic loop plus separate bias and ReLU
//!   passes, about 29 % of its instructions on this network;
//! - each convolution runs over the whole batch laid end to end, one long
//!   sequence in which a gap of zeros after each window pads it
//!   (`fold_convolution`, `Gapped`): tract convolves a batch window by
//!   window, with narrow matrix products. The outputs that fall in the gaps
//!   are zeroed inside the convolution's matrix product, so the gaps carry
//!   over to the next convolution with no Pad or Slice between.
//!
//! The batch dimension is symbolic (`batch`), so one file serves any batch size.

use crate::model::metadata::{INPUT_NAME, OUTPUT_NAME};
use crate::model::NetworkConfig;
use crate::train::network::{Autoencoder, UPSAMPLE_KERNEL, UPSAMPLE_PADDING};
use burn::module::Param;
use burn::nn::conv::{Conv1d, ConvTranspose1d};
use burn::tensor::Tensor;
use prost::Message;
use tract_onnx::pb;

mod gapped;
mod graph;

use gapped::{decoder_gap, encoder_periods, fold_convolution, pad_gaps, Fold, Gapped, Gaps};
use graph::{dim_param, dim_value, ints, GraphBuilder};

/// ONNX opset the graph is written for.
pub const OPSET_VERSION: i64 = 13;
/// ONNX IR version of the file.
pub const IR_VERSION: i64 = 8;

/// Serialises the network to ONNX bytes.
///
/// Inside, activations are laid out `[channels, batch, time]` so that each
/// convolution can run over the whole batch as one long sequence
/// (`fold_convolution`); the file's input and output are still
/// `[batch, channels, window_len]`.
pub fn export_onnx(
    network: &Autoencoder,
    config: &NetworkConfig,
    producer_version: &str,
) -> Vec<u8> {
    let mut graph = GraphBuilder::default();
    let latent = encode(&mut graph, network, config);
    decode(&mut graph, network, config, &latent);
    model_proto(graph, config, producer_version).encode_to_vec()
}

/// The encoder: input → gapped convolutions → the linear layer; returns
/// the code's node name.
fn encode(graph: &mut GraphBuilder, network: &Autoencoder, config: &NetworkConfig) -> String {
    // [batch, channels, len] -> [channels, batch, period]: each window
    // followed by the zeros the first convolution reads past its ends.
    let periods = encoder_periods(config);
    let x = graph.node("Transpose", &[INPUT_NAME], vec![ints("perm", &[1, 0, 2])]);
    let mut x = pad_gaps(graph, "encoder.input", &x, config.window_len, periods[0]);
    let layers = network.encoder_convolutions.len();
    for (i, convolution) in network.encoder_convolutions.iter().enumerate() {
        // The last one's gaps are cut for the linear layer.
        let gaps = if i + 1 < layers {
            Gaps::Zeroed
        } else {
            Gaps::Cut
        };
        let name = format!("encoder.conv{i}");
        x = same_padded(graph, &name, &x, convolution, 2, true, gaps);
    }
    let encoded = x.name;
    // [width, batch, len] -> [batch, width · len], in the order Burn flattens.
    let batch_first = graph.node("Transpose", &[&encoded], vec![ints("perm", &[1, 0, 2])]);
    let flat_shape = graph.int64_constant(
        "encoder.flatten.shape",
        &[-1, (network.encoded_width * network.encoded_len) as i64],
    );
    let flat = graph.node("Reshape", &[&batch_first, &flat_shape], vec![]);
    gemm(
        graph,
        "encoder.linear",
        &flat,
        network.encoder_linear.weight.val(),
        network.encoder_linear.bias.as_ref().map(|b| b.val()),
    )
}

/// The decoder: the code → gapped linear layer → upsampling → the output
/// convolution, named as the graph's output.
fn decode(graph: &mut GraphBuilder, network: &Autoencoder, config: &NetworkConfig, latent: &str) {
    // The decoder's first layer writes each window's gaps itself (zero
    // weights and bias there), so it needs no Pad.
    let (width, len) = (network.encoded_width, network.encoded_len);
    let period = len + decoder_gap(config);
    let expanded = gemm_gapped(
        graph,
        "decoder.linear",
        latent,
        &network.decoder_linear,
        width,
        len,
        period,
    );
    let activated = graph.node("Relu", &[&expanded], vec![]);
    let shape = graph.int64_constant("decoder.reshape.shape", &[-1, width as i64, period as i64]);
    let unflat = graph.node("Reshape", &[&activated, &shape], vec![]);
    // Zero weights give zero only for a finite code: a window whose code
    // is NaN would fill its gaps with NaN, which the next window reads.
    let mut x = Gapped {
        name: graph.node("Transpose", &[&unflat], vec![ints("perm", &[1, 0, 2])]),
        len,
        period,
    };
    for (i, convolution) in network.decoder_convolutions.iter().enumerate() {
        let name = format!("decoder.deconv{i}");
        x = upsample(graph, &name, &x, convolution);
    }
    let output = &network.output_convolution;
    let reconstructed = same_padded(graph, "decoder.output", &x, output, 1, false, Gaps::Cut);
    graph.node(
        "Transpose",
        &[&reconstructed.name],
        vec![ints("perm", &[1, 0, 2])],
    );
    // Name the graph output.
    graph.nodes.last_mut().expect("output node").output = vec![OUTPUT_NAME.to_string()];
}

/// The model around the graph: opset, producer, and the input and output
/// `[batch, channels, window_len]`.
fn model_proto(
    graph: GraphBuilder,
    config: &NetworkConfig,
    producer_version: &str,
) -> pb::ModelProto {
    let io = |name: &str| pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        dim_param("batch"),
                        dim_value(config.channels as i64),
                        dim_value(config.window_len as i64),
                    ],
                }),
            })),
        }),
        doc_string: String::new(),
    };
    pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET_VERSION,
        }],
        producer_name: "anomalyd".into(),
        producer_version: producer_version.into(),
        doc_string: "denoising 1-D convolutional autoencoder: window [batch, channels, window_len] -> reconstruction of the same shape".into(),
        graph: Some(pb::GraphProto {
            node: graph.nodes,
            name: "anomalyd_autoencoder".into(),
            initializer: graph.initializers,
            input: vec![io(INPUT_NAME)],
            output: vec![io(OUTPUT_NAME)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `ReLU(ConvTranspose1d(x))` with kernel 4, stride 2, padding 1, written as
/// a convolution and an interleave. Output sample `2m` of the transposed
/// convolution takes `x[m]·W[.., 1] + x[m-1]·W[.., 3]`, and sample `2m + 1`
/// takes `x[m+1]·W[.., 0] + x[m]·W[.., 2]`. So a convolution of kernel 3
/// (taps at `m-1, m, m+1`, padding 1) to `2 × out` channels computes the even
/// samples in its first `out` channels and the odd ones in the rest; ReLU
/// goes there, where tract fuses it; then `[2, out, batch, period]` is
/// transposed to `[out, batch, period, 2]` and flattened to
/// `[out, batch, 2·period]`: windows and gaps both double.
fn upsample(
    graph: &mut GraphBuilder,
    name: &str,
    input: &Gapped,
    convolution: &ConvTranspose1d,
) -> Gapped {
    assert_eq!(
        (UPSAMPLE_KERNEL, UPSAMPLE_PADDING),
        (4, 1),
        "the rewrite below is for kernel 4, stride 2, padding 1"
    );
    let weight = convolution.weight.val();
    let [inputs, outputs, kernel] = weight.dims();
    let w = weight.into_data().try_to_vec::<f32>().expect("f32 weights");
    let at = |i: usize, o: usize, k: usize| w[(i * outputs + o) * kernel + k];
    // [2 × outputs, inputs, 3]: taps (m-1, m, m+1) of even, then odd, samples.
    let mut taps = vec![0.0f32; 2 * outputs * inputs * 3];
    for o in 0..outputs {
        for i in 0..inputs {
            let even = (o * inputs + i) * 3;
            taps[even] = at(i, o, 3);
            taps[even + 1] = at(i, o, 1);
            let odd = ((outputs + o) * inputs + i) * 3;
            taps[odd + 1] = at(i, o, 2);
            taps[odd + 2] = at(i, o, 0);
        }
    }
    let bias = bias_values(convolution.bias.as_ref());
    let weight = graph.float_initializer(
        &format!("{name}.weight"),
        vec![2 * outputs as i64, inputs as i64, 3],
        taps,
    );
    let bias = graph.float_initializer(
        &format!("{name}.bias"),
        vec![2 * outputs as i64],
        [bias.clone(), bias].concat(),
    );
    let fold = Fold {
        channels: inputs,
        out_channels: 2 * outputs,
        kernel: 3,
        stride: 1,
        padding: 1,
        relu: true,
    };
    let activated = fold_convolution(graph, name, input, &weight, &bias, &fold, Gaps::Zeroed);
    // [2 · out, batch, period] -> [out, batch, period, 2] -> [out, batch, 2 · period].
    let (outputs, period) = (outputs as i64, activated.period as i64);
    let split = graph.int64_constant(&format!("{name}.split"), &[2, outputs, -1, period]);
    let split = graph.node("Reshape", &[&activated.name, &split], vec![]);
    let interleaved = graph.node("Transpose", &[&split], vec![ints("perm", &[1, 2, 3, 0])]);
    let joined = graph.int64_constant(&format!("{name}.join"), &[outputs, -1, 2 * period]);
    Gapped {
        name: graph.node("Reshape", &[&interleaved, &joined], vec![]),
        len: 2 * activated.len,
        period: 2 * activated.period,
    }
}

/// One of the network's same-padded `Conv1d` layers (weights `{name}.weight`
/// and `{name}.bias`), folded over the batch, with ReLU after it if `relu`.
fn same_padded(
    graph: &mut GraphBuilder,
    name: &str,
    input: &Gapped,
    convolution: &Conv1d,
    stride: usize,
    relu: bool,
    gaps: Gaps,
) -> Gapped {
    let weight = graph.weight(&format!("{name}.weight"), convolution.weight.val());
    let bias = graph.bias(
        &format!("{name}.bias"),
        convolution.bias.as_ref().map(|b| b.val()),
    );
    let [out_channels, channels, kernel] = convolution.weight.dims();
    let fold = Fold {
        channels,
        out_channels,
        kernel,
        stride,
        padding: kernel / 2,
        relu,
    };
    fold_convolution(graph, name, input, &weight, &bias, &fold, gaps)
}

/// The decoder's first linear layer, writing `[batch, width · period]`:
/// each of the `width` rows of `len` features, then `period - len` features
/// of zero weights and bias (zero for a finite code).
fn gemm_gapped(
    graph: &mut GraphBuilder,
    name: &str,
    input: &str,
    linear: &burn::nn::Linear,
    width: usize,
    len: usize,
    period: usize,
) -> String {
    let weight = linear.weight.val();
    let [inputs, outputs] = weight.dims();
    assert_eq!(
        outputs,
        width * len,
        "{name}: {outputs} features, not {width} × {len}"
    );
    let w = weight.into_data().try_to_vec::<f32>().expect("f32 weights");
    let bias = bias_values(linear.bias.as_ref());
    let gapped = |feature: usize| (feature / len) * period + feature % len;
    let mut weights = vec![0.0f32; inputs * width * period];
    for i in 0..inputs {
        for feature in 0..outputs {
            weights[i * width * period + gapped(feature)] = w[i * outputs + feature];
        }
    }
    let mut biases = vec![0.0f32; width * period];
    for (feature, b) in bias.into_iter().enumerate() {
        biases[gapped(feature)] = b;
    }
    let dims = vec![inputs as i64, (width * period) as i64];
    let weight = graph.float_initializer(&format!("{name}.weight"), dims, weights);
    let bias = graph.float_initializer(
        &format!("{name}.bias"),
        vec![(width * period) as i64],
        biases,
    );
    graph.node("Gemm", &[input, &weight, &bias], vec![])
}

fn gemm(
    graph: &mut GraphBuilder,
    name: &str,
    input: &str,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> String {
    // Burn stores linear weights as [d_input, d_output], which is Gemm's B without transpose.
    let weight = graph.weight(&format!("{name}.weight"), weight);
    let bias = graph.bias(&format!("{name}.bias"), bias);
    graph.node("Gemm", &[input, &weight, &bias], vec![])
}

/// A layer's bias values (every layer of the autoencoder has a bias).
fn bias_values(bias: Option<&Param<Tensor<1>>>) -> Vec<f32> {
    bias.expect("every layer of the autoencoder has a bias")
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 bias")
}

#[cfg(test)]
mod tests {
    use super::{export_onnx, Autoencoder, NetworkConfig};
    use burn::tensor::{Device, TensorData};
    use tract_onnx::prelude::*;

    /// The folded graph computes what Burn computes, for shapes other than
    /// the shipped model's: odd and even strides' leftovers, kernel 1 (no
    /// padding, nothing straddles), deeper encoders, batches of 1 and more.
    #[test]
    fn exported_graph_matches_burn_for_other_shapes() {
        let configs = [
            (3, 32, vec![4, 8, 8], 3),
            (2, 16, vec![4], 1),
            (1, 8, vec![2], 7),
            (4, 64, vec![8, 16], 5),
        ];
        for (channels, window_len, widths, kernel_size) in configs {
            let config = NetworkConfig {
                channels,
                window_len,
                widths,
                kernel_size,
                latent_size: 6,
            };
            config.validate().unwrap();
            let device = Device::flex();
            device.seed(3);
            let network = Autoencoder::new(&config, &device).draw_weights();
            let bytes = export_onnx(&network, &config, "test");
            let plan = tract_onnx::onnx()
                .model_for_read(&mut std::io::Cursor::new(&bytes))
                .and_then(|model| model.into_optimized())
                .and_then(|model| model.into_runnable())
                .unwrap_or_else(|e| panic!("{config:?}: {e:#}"));
            for batch in [1usize, 5] {
                let shape = [batch, channels, window_len];
                let run = |values: Vec<f32>| -> Vec<f32> {
                    let input = tract_ndarray::Array3::from_shape_vec(shape, values).unwrap();
                    let outputs = plan
                        .run(tvec!(tract_onnx::prelude::Tensor::from(input).into_tvalue()))
                        .unwrap();
                    let view = outputs[0].to_plain_array_view::<f32>().unwrap();
                    view.iter().copied().collect()
                };
                let values: Vec<f32> = (0..batch * channels * window_len)
                    .map(|i| ((i * 7919 % 113) as f32 / 113.0 - 0.5) * 4.0)
                    .collect();
                let from_tract = run(values.clone());
                let windows = burn::tensor::Tensor::<3>::from_data(
                    TensorData::new(values.clone(), shape),
                    &device,
                );
                let (from_burn, _) = network.forward(windows);
                let from_burn = from_burn.into_data().try_to_vec::<f32>().unwrap();
                assert_eq!(from_burn.len(), from_tract.len());
                let max_difference = from_burn
                    .iter()
                    .zip(&from_tract)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    max_difference <= 1e-5,
                    "{config:?}, batch {batch}: max |burn - tract| = {max_difference}"
                );
                if batch > 1 {
                    assert_windows_stay_apart(&run, values, shape, &config);
                }
            }
        }
    }

    /// The windows of a batch share one convolution over the whole batch,
    /// but nothing of one window reaches another: a large value in the
    /// middle window changes its reconstruction and leaves the others' as
    /// they were, to the bit. (Finite values: the scorer passes no others;
    /// see `Gapped`.)
    fn assert_windows_stay_apart(
        run: &dyn Fn(Vec<f32>) -> Vec<f32>,
        values: Vec<f32>,
        shape: [usize; 3],
        config: &NetworkConfig,
    ) {
        let size = shape[1] * shape[2];
        let changed_window = shape[0] / 2;
        let mut changed = values.clone();
        for value in &mut changed[changed_window * size..][..size] {
            *value = 1e4;
        }
        let (before, after) = (run(values), run(changed));
        for window in 0..shape[0] {
            let same = before[window * size..][..size]
                .iter()
                .zip(&after[window * size..][..size])
                .all(|(x, y)| x.to_bits() == y.to_bits());
            if window == changed_window {
                assert!(
                    !same,
                    "{config:?}: the changed window reconstructs as before"
                );
            } else {
                assert!(
                    same,
                    "{config:?}: window {window} changed with window {changed_window}"
                );
            }
        }
    }
}
