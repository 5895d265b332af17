//! The hybrid reconstruction loss `a·pointwise + b·perceptual + c·sparsity`, in Burn.
//!
//! - pointwise: mean squared error between the clean window and the reconstruction;
//! - perceptual: mean squared error between the two windows as the frozen
//!   [`FeatureExtractor`] sees them (a constant matrix: no gradient flows into it);
//! - sparsity: mean absolute value of the latent code. The penalty sits on the
//!   latent code, not on the reconstruction: an L1 on the reconstruction would
//!   only pull every output towards the channel median (0 after normalisation),
//!   while an L1 on the code makes the network describe normal windows with few
//!   active units, so windows unlike the training data reconstruct worse.

use crate::model::{FeatureExtractor, LossConfig};
use burn::tensor::{Device, Tensor, TensorData};

/// The three terms and their weighted sum for one batch (each a 1-element tensor).
pub struct LossTerms {
    /// `a·pointwise + b·perceptual + c·sparsity`.
    pub total: Tensor<1>,
    /// Mean squared error.
    pub pointwise: Tensor<1>,
    /// Mean squared feature difference.
    pub perceptual: Tensor<1>,
    /// Mean absolute latent value.
    pub sparsity: Tensor<1>,
}

/// The loss, with its frozen feature matrix on the training device.
pub struct HybridLoss {
    config: LossConfig,
    /// `[window_len, columns]`.
    feature_matrix: Tensor<2>,
    magnitude_half: Option<usize>,
}

impl HybridLoss {
    /// Builds the loss for windows of `window_len` samples.
    pub fn new(config: &LossConfig, window_len: usize, device: &Device) -> Self {
        let extractor = FeatureExtractor::new(config.perceptual_features, window_len);
        let feature_matrix = Tensor::<2>::from_data(
            TensorData::new(
                extractor.matrix().to_vec(),
                [window_len, extractor.columns()],
            ),
            device,
        );
        Self {
            config: config.clone(),
            feature_matrix,
            magnitude_half: extractor
                .takes_magnitude()
                .then_some(extractor.columns() / 2),
        }
    }

    /// Mean squared error between reconstruction and clean windows.
    pub fn pointwise(reconstruction: Tensor<3>, clean: Tensor<3>) -> Tensor<1> {
        (reconstruction - clean).powi_scalar(2).mean()
    }

    /// Frozen features of windows `[batch, channels, len]` -> `[batch * channels, features]`.
    pub fn features(&self, windows: Tensor<3>) -> Tensor<2> {
        let [batch, channels, len] = windows.dims();
        let linear = windows
            .reshape([batch * channels, len])
            .matmul(self.feature_matrix.clone());
        match self.magnitude_half {
            None => linear,
            Some(half) => {
                let rows = batch * channels;
                let real = linear.clone().slice([0..rows, 0..half]);
                let imaginary = linear.slice([0..rows, half..2 * half]);
                (real.powi_scalar(2) + imaginary.powi_scalar(2))
                    .add_scalar(crate::model::features::MAGNITUDE_EPSILON)
                    .sqrt()
            }
        }
    }

    /// Mean squared difference of frozen features.
    pub fn perceptual(&self, reconstruction: Tensor<3>, clean: Tensor<3>) -> Tensor<1> {
        (self.features(reconstruction) - self.features(clean))
            .powi_scalar(2)
            .mean()
    }

    /// Mean absolute value of the latent code.
    pub fn sparsity(latent: Tensor<2>) -> Tensor<1> {
        latent.abs().mean()
    }

    /// All terms and the weighted total.
    pub fn terms(
        &self,
        reconstruction: Tensor<3>,
        clean: Tensor<3>,
        latent: Tensor<2>,
    ) -> LossTerms {
        let pointwise = Self::pointwise(reconstruction.clone(), clean.clone());
        let perceptual = self.perceptual(reconstruction, clean);
        let sparsity = Self::sparsity(latent);
        let total = pointwise.clone().mul_scalar(self.config.pointwise_weight)
            + perceptual.clone().mul_scalar(self.config.perceptual_weight)
            + sparsity.clone().mul_scalar(self.config.sparsity_weight);
        LossTerms {
            total,
            pointwise,
            perceptual,
            sparsity,
        }
    }
}

/// Reads a one-element tensor as `f32`.
pub fn scalar(tensor: Tensor<1>) -> f32 {
    tensor.into_data().try_to_vec::<f32>().expect("f32 tensor")[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PerceptualFeatures;

    fn loss_config(features: PerceptualFeatures) -> LossConfig {
        LossConfig {
            pointwise_weight: 1.0,
            perceptual_weight: 0.5,
            sparsity_weight: 0.25,
            perceptual_features: features,
            noise_std: 0.0,
            mask_probability: 0.0,
        }
    }

    fn tensor3(values: Vec<f32>, shape: [usize; 3]) -> Tensor<3> {
        Tensor::from_data(TensorData::new(values, shape), &Device::flex())
    }

    #[test]
    fn pointwise_is_the_mean_squared_error() {
        let a = tensor3(vec![0.0, 0.0, 0.0, 0.0], [1, 1, 4]);
        let b = tensor3(vec![1.0, 3.0, 0.0, 0.0], [1, 1, 4]);
        assert_eq!(scalar(HybridLoss::pointwise(a, b)), 2.5);
    }

    #[test]
    fn sparsity_is_the_mean_absolute_latent() {
        let latent = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, -3.0, 0.0, 4.0], [2, 2]),
            &Device::flex(),
        );
        assert_eq!(scalar(HybridLoss::sparsity(latent)), 2.0);
    }

    #[test]
    fn perceptual_matches_the_serving_feature_distance() {
        // Burn (training) and plain Rust (serving) must compute the same distance.
        let len = 16;
        for kind in [
            PerceptualFeatures::Differences,
            PerceptualFeatures::Spectral,
        ] {
            let loss = HybridLoss::new(&loss_config(kind), len, &Device::flex());
            let a: Vec<f32> = (0..2 * len).map(|t| (t as f32 * 0.7).sin()).collect();
            let b: Vec<f32> = (0..2 * len).map(|t| (t as f32 * 0.3).cos()).collect();
            let burn = scalar(loss.perceptual(
                tensor3(a.clone(), [1, 2, len]),
                tensor3(b.clone(), [1, 2, len]),
            ));
            let extractor = FeatureExtractor::new(kind, len);
            let rust = (extractor.distance(&a[..len], &b[..len])
                + extractor.distance(&a[len..], &b[len..]))
                / 2.0;
            assert!(
                (burn - rust).abs() < 1e-4 * rust.max(1.0),
                "{kind}: {burn} vs {rust}"
            );
            let same =
                scalar(loss.perceptual(tensor3(a.clone(), [1, 2, len]), tensor3(a, [1, 2, len])));
            assert!(same < 1e-6, "{kind}: {same}");
        }
    }

    #[test]
    fn total_is_the_weighted_sum() {
        let loss = HybridLoss::new(
            &loss_config(PerceptualFeatures::Differences),
            4,
            &Device::flex(),
        );
        let clean = tensor3(vec![0.0, 1.0, 0.0, 1.0], [1, 1, 4]);
        let reconstruction = tensor3(vec![0.5, 0.5, 0.5, 0.5], [1, 1, 4]);
        let latent =
            Tensor::<2>::from_data(TensorData::new(vec![2.0f32, -2.0], [1, 2]), &Device::flex());
        let terms = loss.terms(reconstruction, clean, latent);
        let expected = scalar(terms.pointwise.clone())
            + 0.5 * scalar(terms.perceptual.clone())
            + 0.25 * scalar(terms.sparsity.clone());
        assert!((scalar(terms.total) - expected).abs() < 1e-6);
        assert_eq!(scalar(terms.sparsity), 2.0);
        assert_eq!(scalar(terms.pointwise), 0.25);
    }
}
