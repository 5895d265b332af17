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
//!   sequence with each window's padding in place (`fold_convolution`):
//!   tract convolves a batch window by window, with narrow matrix products.
//!
//! The batch dimension is symbolic (`batch`), so one file serves any batch size.

use crate::model::metadata::{INPUT_NAME, OUTPUT_NAME};
use crate::model::NetworkConfig;
use crate::train::network::{Autoencoder, UPSAMPLE_KERNEL, UPSAMPLE_PADDING};
use burn::nn::conv::{Conv1d, ConvTranspose1d};
use burn::tensor::Tensor;
use prost::Message;
use tract_onnx::pb;

/// ONNX opset the graph is written for.
pub const OPSET_VERSION: i64 = 13;
/// ONNX IR version of the file.
pub const IR_VERSION: i64 = 8;

/// Serialises the network to ONNX bytes.
///
/// Inside, activations are laid out `[channels, batch, time]` so that each
/// convolution can run over the whole batch as one long sequence
/// ([`fold_convolution`]); the file's input and output are still
/// `[batch, channels, window_len]`.
pub fn export_onnx(
    network: &Autoencoder,
    config: &NetworkConfig,
    producer_version: &str,
) -> Vec<u8> {
    let mut graph = GraphBuilder::default();
    let mut x = graph.node("Transpose", &[INPUT_NAME], vec![ints("perm", &[1, 0, 2])]);
    let mut len = config.window_len;
    for (i, convolution) in network.encoder_convolutions.iter().enumerate() {
        (x, len) = same_padded(
            &mut graph,
            &format!("encoder.conv{i}"),
            &x,
            convolution,
            len,
            2,
            true,
        );
    }
    // [width, batch, len] -> [batch, width · len], in the order Burn flattens.
    let batch_first = graph.node("Transpose", &[&x], vec![ints("perm", &[1, 0, 2])]);
    let flat_shape = graph.int64_constant(
        "encoder.flatten.shape",
        &[-1, (network.encoded_width * network.encoded_len) as i64],
    );
    let flat = graph.node("Reshape", &[&batch_first, &flat_shape], vec![]);
    let latent = gemm(
        &mut graph,
        "encoder.linear",
        &flat,
        network.encoder_linear.weight.val(),
        network.encoder_linear.bias.as_ref().map(|b| b.val()),
    );
    let expanded = gemm(
        &mut graph,
        "decoder.linear",
        &latent,
        network.decoder_linear.weight.val(),
        network.decoder_linear.bias.as_ref().map(|b| b.val()),
    );
    let activated = graph.node("Relu", &[&expanded], vec![]);
    let shape = graph.int64_constant(
        "decoder.reshape.shape",
        &[-1, network.encoded_width as i64, network.encoded_len as i64],
    );
    let unflat = graph.node("Reshape", &[&activated, &shape], vec![]);
    x = graph.node("Transpose", &[&unflat], vec![ints("perm", &[1, 0, 2])]);
    len = network.encoded_len;
    for (i, convolution) in network.decoder_convolutions.iter().enumerate() {
        x = upsample(
            &mut graph,
            &format!("decoder.deconv{i}"),
            &x,
            convolution,
            len,
        );
        len *= 2;
    }
    let output = &network.output_convolution;
    (x, _) = same_padded(&mut graph, "decoder.output", &x, output, len, 1, false);
    graph.node("Transpose", &[&x], vec![ints("perm", &[1, 0, 2])]);
    // Name the graph output.
    graph.nodes.last_mut().expect("output node").output = vec![OUTPUT_NAME.to_string()];

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
    let model = pb::ModelProto {
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
    };
    model.encode_to_vec()
}

/// `ReLU(ConvTranspose1d(x))` with kernel 4, stride 2, padding 1, written as
/// a convolution and an interleave. Output sample `2m` of the transposed
/// convolution takes `x[m]·W[.., 1] + x[m-1]·W[.., 3]`, and sample `2m + 1`
/// takes `x[m+1]·W[.., 0] + x[m]·W[.., 2]`. So a convolution of kernel 3
/// (taps at `m-1, m, m+1`, padding 1) to `2 × out` channels computes the even
/// samples in its first `out` channels and the odd ones in the rest; ReLU
/// goes there, where tract fuses it; then `[2, out, batch, len]` is
/// transposed to `[out, batch, len, 2]` and flattened to `[out, batch, 2·len]`
/// (the `[channels, batch, time]` layout of [`fold_convolution`]).
fn upsample(
    graph: &mut GraphBuilder,
    name: &str,
    input: &str,
    convolution: &ConvTranspose1d,
    len: usize,
) -> String {
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
    let bias = convolution
        .bias
        .as_ref()
        .expect("every layer of the autoencoder has a bias")
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 bias");
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
        len,
        kernel: 3,
        stride: 1,
        padding: 1,
        relu: true,
    };
    let (activated, _) = fold_convolution(graph, name, input, &weight, &bias, &fold);
    // [2 · out, batch, len] -> [out, batch, len, 2] -> [out, batch, 2 · len].
    let (outputs, len) = (outputs as i64, len as i64);
    let split = graph.int64_constant(&format!("{name}.split"), &[2, outputs, -1, len]);
    let split = graph.node("Reshape", &[&activated, &split], vec![]);
    let interleaved = graph.node("Transpose", &[&split], vec![ints("perm", &[1, 2, 3, 0])]);
    let joined = graph.int64_constant(&format!("{name}.join"), &[outputs, -1, 2 * len]);
    graph.node("Reshape", &[&interleaved, &joined], vec![])
}

/// One of the network's same-padded `Conv1d` layers (weights `{name}.weight`
/// and `{name}.bias`), folded over the batch: `[channels, batch, len]` ->
/// `[out, batch, len / stride]`, with ReLU after it if `relu`.
fn same_padded(
    graph: &mut GraphBuilder,
    name: &str,
    input: &str,
    convolution: &Conv1d,
    len: usize,
    stride: usize,
    relu: bool,
) -> (String, usize) {
    let weight = graph.weight(&format!("{name}.weight"), convolution.weight.val());
    let bias = graph.bias(
        &format!("{name}.bias"),
        convolution.bias.as_ref().map(|b| b.val()),
    );
    let [out_channels, channels, kernel] = convolution.weight.dims();
    let fold = Fold {
        channels,
        out_channels,
        len,
        kernel,
        stride,
        padding: kernel / 2,
        relu,
    };
    fold_convolution(graph, name, input, &weight, &bias, &fold)
}

/// One convolution of [`fold_convolution`]: input and output channels, length
/// of each window, kernel, stride, zero padding on each side, and whether
/// ReLU follows.
struct Fold {
    channels: usize,
    out_channels: usize,
    len: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    relu: bool,
}

/// A convolution of every window of a batch, `[channels, batch, len]` ->
/// `[out, batch, out_len]`, run as one convolution over the batch laid end to
/// end. Each window gets its zero padding on both sides (Pad), the batch
/// becomes one sequence `[1, channels, batch · (len + 2·padding)]`, and an
/// unpadded convolution slides over it. Output `j` of window `b` sits at
/// `b · period + j`, with `period = (len + 2·padding) / stride`; the
/// `period - out_len` outputs after each window straddle two windows and are
/// cut (the sequence evened to whole periods, Reshape, Slice). Every kept
/// output sees exactly the taps it sees in a per-window convolution, so the
/// result is the same.
///
/// Why: tract convolves each window of a batch on its own, with a
/// matrix product only `out_len` columns wide. Laid end to end, the batch
/// is one im2col and one matrix product `batch · period` columns wide. That
/// pays only when tract knows the batch when it optimises (the scorer's
/// fixed-batch plans): with a symbolic batch it picks narrow kernels and
/// this graph ran slower than the per-window one (BENCHMARKS.md, section 1).
fn fold_convolution(
    graph: &mut GraphBuilder,
    name: &str,
    input: &str,
    weight: &str,
    bias: &str,
    fold: &Fold,
) -> (String, usize) {
    let &Fold {
        channels,
        out_channels,
        len,
        kernel,
        stride,
        padding,
        relu,
    } = fold;
    let padded = len + 2 * padding;
    assert!(
        padded.is_multiple_of(stride) && padded >= kernel,
        "{name}: each padded window ({padded}) must hold whole strides and one kernel"
    );
    let period = padded / stride;
    let out_len = (padded - kernel) / stride + 1;
    // The sequence's end is padded so that the strides fit it exactly
    // (`batch · padded + end - kernel` a multiple of the stride): the output
    // length is then a plain multiple of the batch that tract's symbolic
    // shapes can divide back into windows (it cannot prove that
    // `(68·batch + 1) / 2` is `34·batch`). The end padding only reaches
    // outputs that are cut below.
    let end = kernel % stride;
    // Outputs of the whole sequence, minus `batch · period`.
    let surplus = (end as i64 - kernel as i64) / stride as i64 + 1;
    let (period, out_len, padding) = (period as i64, out_len as i64, padding as i64);
    let mut x = input.to_string();
    if padding > 0 {
        let pads = graph.int64_constant(&format!("{name}.pads"), &[0, 0, padding, 0, 0, padding]);
        x = graph.node("Pad", &[&x, &pads], vec![]);
    }
    let sequence = graph.int64_constant(&format!("{name}.sequence"), &[1, channels as i64, -1]);
    x = graph.node("Reshape", &[&x, &sequence], vec![]);
    x = graph.node(
        "Conv",
        &[&x, weight, bias],
        vec![
            ints("kernel_shape", &[kernel as i64]),
            ints("strides", &[stride as i64]),
            ints("pads", &[0, end as i64]),
        ],
    );
    if relu {
        x = graph.node("Relu", &[&x], vec![]);
    }
    // Bring the sequence to `batch · period` outputs: the last window's
    // straddling outputs are missing (pad them) or one too many (cut it).
    if surplus < 0 {
        let tail = graph.int64_constant(&format!("{name}.tail"), &[0, 0, 0, 0, 0, -surplus]);
        x = graph.node("Pad", &[&x, &tail], vec![]);
    } else if surplus > 0 {
        x = slice_time(graph, &format!("{name}.whole"), &x, -surplus);
    }
    let windows = graph.int64_constant(
        &format!("{name}.windows"),
        &[out_channels as i64, -1, period],
    );
    x = graph.node("Reshape", &[&x, &windows], vec![]);
    if period > out_len {
        x = slice_time(graph, &format!("{name}.keep"), &x, out_len);
    }
    (x, out_len as usize)
}

/// `x[.., .., ..end]`: the first `end` samples of the last axis, or all but
/// the last `-end` if `end` is negative.
fn slice_time(graph: &mut GraphBuilder, name: &str, x: &str, end: i64) -> String {
    let starts = graph.int64_constant(&format!("{name}.start"), &[0]);
    let ends = graph.int64_constant(&format!("{name}.end"), &[end]);
    let axes = graph.int64_constant(&format!("{name}.axis"), &[2]);
    graph.node("Slice", &[x, &starts, &ends, &axes], vec![])
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

#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

impl GraphBuilder {
    fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attribute: Vec<pb::AttributeProto>,
    ) -> String {
        let output = format!("{}_{}", op_type.to_lowercase(), self.nodes.len());
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: output.clone(),
            op_type: op_type.into(),
            attribute,
            ..Default::default()
        });
        output
    }

    fn weight<const D: usize>(&mut self, name: &str, tensor: Tensor<D>) -> String {
        let dims = tensor.dims().iter().map(|&d| d as i64).collect();
        let values = tensor.into_data().try_to_vec::<f32>().expect("f32 weights");
        self.float_initializer(name, dims, values)
    }

    fn bias(&mut self, name: &str, tensor: Option<Tensor<1>>) -> String {
        let tensor = tensor.expect("every layer of the autoencoder has a bias");
        self.weight(name, tensor)
    }

    fn float_initializer(&mut self, name: &str, dims: Vec<i64>, values: Vec<f32>) -> String {
        self.initializers.push(pb::TensorProto {
            dims,
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: values,
            name: name.into(),
            ..Default::default()
        });
        name.into()
    }

    fn int64_constant(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(pb::TensorProto {
            dims: vec![values.len() as i64],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: values.to_vec(),
            name: name.into(),
            ..Default::default()
        });
        name.into()
    }
}

fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn dim_value(value: i64) -> pb::tensor_shape_proto::Dimension {
    pb::tensor_shape_proto::Dimension {
        denotation: String::new(),
        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(value)),
    }
}

fn dim_param(name: &str) -> pb::tensor_shape_proto::Dimension {
    pb::tensor_shape_proto::Dimension {
        denotation: String::new(),
        value: Some(pb::tensor_shape_proto::dimension::Value::DimParam(
            name.into(),
        )),
    }
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
                let values: Vec<f32> = (0..batch * channels * window_len)
                    .map(|i| ((i * 7919 % 113) as f32 / 113.0 - 0.5) * 4.0)
                    .collect();
                let shape = [batch, channels, window_len];
                let input = tract_ndarray::Array3::from_shape_vec(shape, values.clone()).unwrap();
                let outputs = plan
                    .run(tvec!(tract_onnx::prelude::Tensor::from(input).into_tvalue()))
                    .unwrap();
                let from_tract: Vec<f32> = outputs[0]
                    .to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect();
                let windows =
                    burn::tensor::Tensor::<3>::from_data(TensorData::new(values, shape), &device);
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
            }
        }
    }
}
