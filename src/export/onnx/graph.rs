//! A small builder for the ONNX protobuf graph the exporter writes: nodes
//! with generated output names, initialisers, attributes.

use crate::model::metadata::INPUT_NAME;
use burn::tensor::Tensor;
use tract_onnx::pb;

#[derive(Default)]
pub(super) struct GraphBuilder {
    pub(super) nodes: Vec<pb::NodeProto>,
    pub(super) initializers: Vec<pb::TensorProto>,
    /// `[1, 1, batch]`, once written.
    batch_repeats: Option<String>,
}

impl GraphBuilder {
    /// `[1, 1, batch]` from the input's shape: Tile's repeats for a
    /// per-window constant over the whole batch.
    pub(super) fn batch_repeats(&mut self) -> String {
        if let Some(repeats) = &self.batch_repeats {
            return repeats.clone();
        }
        let shape = self.node("Shape", &[INPUT_NAME], vec![]);
        let first = self.int64_constant("batch.start", &[0]);
        let second = self.int64_constant("batch.end", &[1]);
        let batch = self.node("Slice", &[&shape, &first, &second], vec![]);
        let ones = self.int64_constant("batch.ones", &[1, 1]);
        let axis = pb::AttributeProto {
            name: "axis".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: 0,
            ..Default::default()
        };
        let repeats = self.node("Concat", &[&ones, &batch], vec![axis]);
        self.batch_repeats = Some(repeats.clone());
        repeats
    }

    pub(super) fn node(
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

    pub(super) fn weight<const D: usize>(&mut self, name: &str, tensor: Tensor<D>) -> String {
        let dims = tensor.dims().iter().map(|&d| d as i64).collect();
        let values = tensor.into_data().try_to_vec::<f32>().expect("f32 weights");
        self.float_initializer(name, dims, values)
    }

    pub(super) fn bias(&mut self, name: &str, tensor: Option<Tensor<1>>) -> String {
        let tensor = tensor.expect("every layer of the autoencoder has a bias");
        self.weight(name, tensor)
    }

    pub(super) fn float_initializer(
        &mut self,
        name: &str,
        dims: Vec<i64>,
        values: Vec<f32>,
    ) -> String {
        self.initializers.push(pb::TensorProto {
            dims,
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: values,
            name: name.into(),
            ..Default::default()
        });
        name.into()
    }

    pub(super) fn int64_constant(&mut self, name: &str, values: &[i64]) -> String {
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

pub(super) fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

pub(super) fn dim_value(value: i64) -> pb::tensor_shape_proto::Dimension {
    pb::tensor_shape_proto::Dimension {
        denotation: String::new(),
        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(value)),
    }
}

pub(super) fn dim_param(name: &str) -> pb::tensor_shape_proto::Dimension {
    pb::tensor_shape_proto::Dimension {
        denotation: String::new(),
        value: Some(pb::tensor_shape_proto::dimension::Value::DimParam(
            name.into(),
        )),
    }
}
