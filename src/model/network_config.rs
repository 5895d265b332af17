//! Shape of the autoencoder: shared by the Burn network, the ONNX exporter and the scorer.

use serde::{Deserialize, Serialize};

/// Hyper-parameters that fix the network's tensors.
///
/// The encoder is `len(widths)` strided convolutions (each halves the time
/// axis), a flatten and a linear layer to the latent code; the decoder mirrors
/// it with a linear layer, transposed convolutions (each doubles the time axis)
/// and a final same-padded convolution back to the input channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Input channels, in the model's channel order.
    pub channels: usize,
    /// Samples per window; must be divisible by `2^len(widths)`.
    pub window_len: usize,
    /// Output channels of each encoder convolution.
    pub widths: Vec<usize>,
    /// Kernel size of the encoder convolutions and the output convolution (odd).
    pub kernel_size: usize,
    /// Size of the latent code.
    pub latent_size: usize,
}

impl NetworkConfig {
    /// Checks that the shapes fit together; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.channels == 0 {
            return Err("network.channels must be at least 1".into());
        }
        if self.widths.is_empty() || self.widths.contains(&0) {
            return Err("network.widths must list at least one width, each > 0".into());
        }
        if self.kernel_size == 0 || self.kernel_size.is_multiple_of(2) {
            return Err(format!(
                "network.kernel_size must be odd, got {}",
                self.kernel_size
            ));
        }
        if self.latent_size == 0 {
            return Err("network.latent_size must be at least 1".into());
        }
        let factor = 1usize << self.widths.len();
        if self.window_len < factor * 2 || !self.window_len.is_multiple_of(factor) {
            return Err(format!(
                "window_len {} must be a multiple of {factor} (2^number of widths) and at least {}",
                self.window_len,
                factor * 2
            ));
        }
        Ok(())
    }

    /// Length of the time axis after the encoder convolutions.
    pub fn encoded_len(&self) -> usize {
        self.window_len >> self.widths.len()
    }

    /// Width of the last encoder convolution.
    pub fn encoded_width(&self) -> usize {
        *self.widths.last().expect("validated: widths is not empty")
    }

    /// Input/output widths of each decoder transposed convolution, in order.
    /// For widths `[16, 32]` this is `[(32, 16), (16, 16)]`.
    pub fn decoder_layers(&self) -> Vec<(usize, usize)> {
        let reversed: Vec<usize> = self.widths.iter().rev().copied().collect();
        (0..reversed.len())
            .map(|i| {
                let input = reversed[i];
                let output = reversed
                    .get(i + 1)
                    .copied()
                    .unwrap_or(*self.widths.first().unwrap());
                (input, output)
            })
            .collect()
    }

    /// Padding that keeps the time axis length for a stride-1 convolution.
    pub fn same_padding(&self) -> usize {
        self.kernel_size / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NetworkConfig {
        NetworkConfig {
            channels: 3,
            window_len: 64,
            widths: vec![16, 32],
            kernel_size: 5,
            latent_size: 8,
        }
    }

    #[test]
    fn shapes_of_a_valid_config() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.encoded_len(), 16);
        assert_eq!(c.decoder_layers(), vec![(32, 16), (16, 16)]);
    }

    #[test]
    fn window_len_must_divide() {
        let mut c = config();
        c.window_len = 62;
        let message = c.validate().unwrap_err();
        assert!(message.contains("window_len 62"), "{message}");
        c.window_len = 64;
        c.kernel_size = 4;
        assert!(c.validate().unwrap_err().contains("kernel_size"));
    }
}
