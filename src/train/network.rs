//! The 1-D convolutional autoencoder in Burn (training side; the ONNX exporter mirrors it).
//!
//! Burn 0.22 dispatches backends at run time through `Device` (the `B:
//! Backend` type parameter of earlier versions is gone), so this network and
//! the training loop run unchanged on any Burn backend: `flex`, `ndarray`, or
//! a GPU backend if one is compiled in.

use crate::model::NetworkConfig;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::conv::{Conv1d, Conv1dConfig, ConvTranspose1d, ConvTranspose1dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig1d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// Encoder, latent code, decoder. The exporter writes it with Conv, Relu,
/// Flatten, Gemm, Reshape and Transpose (each transposed convolution as a
/// convolution plus an interleave: `export::onnx::upsample`).
#[derive(Module, Debug)]
pub struct Autoencoder {
    /// Strided convolutions, each followed by ReLU; each halves the time axis.
    pub encoder_convolutions: Vec<Conv1d>,
    /// Flattened features to the latent code (no activation).
    pub encoder_linear: Linear,
    /// Latent code back to flattened features (followed by ReLU).
    pub decoder_linear: Linear,
    /// Transposed convolutions, each followed by ReLU; each doubles the time axis.
    pub decoder_convolutions: Vec<ConvTranspose1d>,
    /// Same-padded convolution to the input channels (no activation).
    pub output_convolution: Conv1d,
    /// Width and length of the time axis at the bottleneck, for the reshape.
    pub encoded_width: usize,
    /// Length of the time axis at the bottleneck.
    pub encoded_len: usize,
}

/// Transposed convolution settings that exactly double the length: kernel 4, stride 2, padding 1.
pub const UPSAMPLE_KERNEL: usize = 4;
/// Padding of the upsampling transposed convolutions.
pub const UPSAMPLE_PADDING: usize = 1;

/// Reads every float parameter, which makes Burn draw a lazy one's weights.
struct DrawWeights;

impl ModuleVisitor for DrawWeights {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

impl Autoencoder {
    /// Draws every weight now. Burn initialises a parameter lazily, on its
    /// first use, from its process-wide generator: a training that seeds
    /// that generator must draw all its weights before another training (on
    /// another thread) can seed or draw, or neither is reproducible.
    pub fn draw_weights(self) -> Self {
        self.visit(&mut DrawWeights);
        self
    }

    /// A freshly initialised network (seed the device first for reproducibility).
    pub fn new(config: &NetworkConfig, device: &Device) -> Self {
        let padding = config.same_padding();
        let mut encoder_convolutions = Vec::new();
        let mut input = config.channels;
        for &width in &config.widths {
            encoder_convolutions.push(
                Conv1dConfig::new(input, width, config.kernel_size)
                    .with_stride(2)
                    .with_padding(PaddingConfig1d::Explicit(padding, padding))
                    .init(device),
            );
            input = width;
        }
        let flat = config.encoded_width() * config.encoded_len();
        let decoder_convolutions = config
            .decoder_layers()
            .into_iter()
            .map(|(from, to)| {
                ConvTranspose1dConfig::new([from, to], UPSAMPLE_KERNEL)
                    .with_stride(2)
                    .with_padding(UPSAMPLE_PADDING)
                    .init(device)
            })
            .collect();
        let first_width = config.widths[0];
        Self {
            encoder_convolutions,
            encoder_linear: LinearConfig::new(flat, config.latent_size).init(device),
            decoder_linear: LinearConfig::new(config.latent_size, flat).init(device),
            decoder_convolutions,
            output_convolution: Conv1dConfig::new(first_width, config.channels, config.kernel_size)
                .with_padding(PaddingConfig1d::Explicit(padding, padding))
                .init(device),
            encoded_width: config.encoded_width(),
            encoded_len: config.encoded_len(),
        }
    }

    /// Encodes windows `[batch, channels, window_len]` to latent codes `[batch, latent]`.
    pub fn encode(&self, windows: Tensor<3>) -> Tensor<2> {
        let mut x = windows;
        for convolution in &self.encoder_convolutions {
            x = relu(convolution.forward(x));
        }
        let [batch, width, len] = x.dims();
        self.encoder_linear.forward(x.reshape([batch, width * len]))
    }

    /// Decodes latent codes `[batch, latent]` to reconstructions `[batch, channels, window_len]`.
    pub fn decode(&self, latent: Tensor<2>) -> Tensor<3> {
        let [batch, _] = latent.dims();
        let flat = relu(self.decoder_linear.forward(latent));
        let mut x = flat.reshape([batch, self.encoded_width, self.encoded_len]);
        for convolution in &self.decoder_convolutions {
            x = relu(convolution.forward(x));
        }
        self.output_convolution.forward(x)
    }

    /// Reconstruction and latent code of a batch of windows.
    pub fn forward(&self, windows: Tensor<3>) -> (Tensor<3>, Tensor<2>) {
        let latent = self.encode(windows);
        (self.decode(latent.clone()), latent)
    }
}
