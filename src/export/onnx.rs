//! Writes the trained Burn autoencoder as an ONNX graph, by hand, from its weights.
//!
//! Burn 0.22 ships no ONNX *exporter* (burn-import only reads ONNX), so the
//! graph is written directly with the ONNX protobuf types that tract-onnx
//! exposes (`tract_onnx::pb`), node for node as in [`Autoencoder::forward`],
//! with one substitution: each upsampling transposed convolution (kernel 4,
//! stride 2, padding 1) is written as the same computation in operators
//! tract runs faster, a convolution to twice the channels followed by an
//! interleave (`upsample`). tract ran ConvTranspose as a generic loop
//! plus separate bias and ReLU passes, about 29 % of its instructions on
//! this network (BENCHMARKS.md, section 1).
//! The batch dimension is symbolic (`batch`), so one file serves any batch size.

use crate::model::metadata::{INPUT_NAME, OUTPUT_NAME};
use crate::model::NetworkConfig;
use crate::train::network::{Autoencoder, UPSAMPLE_KERNEL, UPSAMPLE_PADDING};
use burn::nn::conv::ConvTranspose1d;
use burn::tensor::Tensor;
use prost::Message;
use tract_onnx::pb;

/// ONNX opset the graph is written for.
pub const OPSET_VERSION: i64 = 13;
/// ONNX IR version of the file.
pub const IR_VERSION: i64 = 8;

/// Serialises the network to ONNX bytes.
pub fn export_onnx(
    network: &Autoencoder,
    config: &NetworkConfig,
    producer_version: &str,
) -> Vec<u8> {
    let mut graph = GraphBuilder::default();
    let padding = config.same_padding() as i64;
    let kernel = config.kernel_size as i64;

    let mut x = INPUT_NAME.to_string();
    for (i, convolution) in network.encoder_convolutions.iter().enumerate() {
        let weight = graph.weight(&format!("encoder.conv{i}.weight"), convolution.weight.val());
        let bias = graph.bias(
            &format!("encoder.conv{i}.bias"),
            convolution.bias.as_ref().map(|b| b.val()),
        );
        let convolved = graph.node(
            "Conv",
            &[&x, &weight, &bias],
            vec![
                ints("kernel_shape", &[kernel]),
                ints("strides", &[2]),
                ints("pads", &[padding, padding]),
            ],
        );
        x = graph.node("Relu", &[&convolved], vec![]);
    }
    let flat = graph.node("Flatten", &[&x], vec![int("axis", 1)]);
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
    x = graph.node("Reshape", &[&activated, &shape], vec![]);
    let mut len = network.encoded_len;
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
    let weight = graph.weight("decoder.output.weight", output.weight.val());
    let bias = graph.bias("decoder.output.bias", output.bias.as_ref().map(|b| b.val()));
    graph.node(
        "Conv",
        &[&x, &weight, &bias],
        vec![
            ints("kernel_shape", &[kernel]),
            ints("pads", &[padding, padding]),
        ],
    );
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
/// goes there, where tract fuses it; then `[batch, 2, out, len]` is
/// transposed to `[batch, out, len, 2]` and flattened to `[batch, out, 2·len]`.
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
    let convolved = graph.node(
        "Conv",
        &[input, &weight, &bias],
        vec![ints("kernel_shape", &[3]), ints("pads", &[1, 1])],
    );
    let activated = graph.node("Relu", &[&convolved], vec![]);
    let (outputs, len) = (outputs as i64, len as i64);
    let split = graph.int64_constant(&format!("{name}.split"), &[-1, 2, outputs, len]);
    let split = graph.node("Reshape", &[&activated, &split], vec![]);
    let interleaved = graph.node("Transpose", &[&split], vec![ints("perm", &[0, 2, 3, 1])]);
    let joined = graph.int64_constant(&format!("{name}.join"), &[-1, outputs, 2 * len]);
    graph.node("Reshape", &[&interleaved, &joined], vec![])
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

fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
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
