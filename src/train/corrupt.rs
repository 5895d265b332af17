//! Denoising corruption: Gaussian noise and random masking of a batch of windows.
//!
//! Done on the CPU with a seeded generator before the batch becomes a tensor,
//! so it is reproducible and identical on every Burn backend.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Corrupts normalised windows in place: adds `N(0, noise_std²)` to every
/// sample, then sets each sample to 0 (the channel median after
/// normalisation) with probability `mask_probability`.
pub fn corrupt(windows: &mut [f32], noise_std: f32, mask_probability: f32, rng: &mut ChaCha8Rng) {
    if noise_std > 0.0 {
        let noise = Normal::new(0.0, noise_std).expect("noise_std is finite and > 0");
        for value in windows.iter_mut() {
            *value += noise.sample(rng);
        }
    }
    if mask_probability > 0.0 {
        for value in windows.iter_mut() {
            if rng.random::<f32>() < mask_probability {
                *value = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn noise_has_the_requested_strength() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut values = vec![0.0f32; 20_000];
        corrupt(&mut values, 0.5, 0.0, &mut rng);
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        let std =
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / values.len() as f32).sqrt();
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((std - 0.5).abs() < 0.02, "std {std}");
    }

    #[test]
    fn masking_zeroes_the_requested_fraction() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut values = vec![1.0f32; 20_000];
        corrupt(&mut values, 0.0, 0.1, &mut rng);
        let masked = values.iter().filter(|&&v| v == 0.0).count() as f32 / values.len() as f32;
        assert!((masked - 0.1).abs() < 0.01, "masked {masked}");
        assert!(values.iter().all(|&v| v == 0.0 || v == 1.0));
    }

    #[test]
    fn no_corruption_leaves_windows_alone_and_seeds_repeat() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut values = vec![0.25f32; 100];
        corrupt(&mut values, 0.0, 0.0, &mut rng);
        assert!(values.iter().all(|&v| v == 0.25));
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut v = vec![0.0f32; 10];
            corrupt(&mut v, 1.0, 0.2, &mut rng);
            v
        };
        assert_eq!(run(9), run(9));
    }
}
