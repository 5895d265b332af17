//! Train → export → serve with tract: parity with Burn and detection of injected anomalies.

use super::common::{small_data, small_model, written_model};
use anomalyd::evaluate::{quality, score_labelled};
use anomalyd::serve::Scorer;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn burn_and_tract_agree_on_random_windows() {
    let built = small_model();
    let (_dir, path) = written_model();
    let scorer = Scorer::load(&path).unwrap();
    let metadata = scorer.metadata();
    let (channels, len) = (metadata.channels.len(), metadata.window_len);
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for batch in [1usize, 7, 64] {
        let windows: Vec<f32> = (0..batch * channels * len)
            .map(|_| rng.random_range(-3.0f32..3.0))
            .collect();
        let from_tract = scorer.reconstruct_normalised(&windows, batch).unwrap();
        let input = Tensor::<3>::from_data(
            TensorData::new(windows, [batch, channels, len]),
            &Device::flex(),
        );
        let (from_burn, _) = built.trained.network.forward(input);
        let from_burn = from_burn.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(from_burn.len(), from_tract.len());
        let max_difference = from_burn
            .iter()
            .zip(&from_tract)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("batch {batch}: max |burn - tract| = {max_difference:e}");
        assert!(
            max_difference <= 1e-4,
            "batch {batch}: max |burn - tract| = {max_difference}"
        );
    }
}

/// The floor for overall AUC-PR on the small set. Stated in models/README.md.
const AUC_PR_FLOOR: f64 = 0.75;

#[test]
fn injected_anomalies_rank_above_normal_windows() {
    let (_dir, path) = written_model();
    let scorer = Scorer::load(&path).unwrap();
    let scored = score_labelled(&scorer, &small_data().test_part(), 2).unwrap();
    let results = quality(&scored);
    let overall = &results[0];
    assert_eq!(overall.kind, "all");
    let base_rate = overall.positives as f64 / (overall.positives + overall.negatives) as f64;
    for q in &results {
        eprintln!(
            "{:<20} AUC-PR {:.3} best F1 {:.3} ({} positive, {} negative)",
            q.kind, q.auc_pr, q.best_f1, q.positives, q.negatives
        );
    }
    // The floor must mean something: well above what random scores would get.
    assert!(
        base_rate + 0.2 < AUC_PR_FLOOR,
        "base rate {base_rate:.3} makes the floor meaningless"
    );
    assert!(
        overall.auc_pr >= AUC_PR_FLOOR,
        "overall AUC-PR {:.3} is below the floor {AUC_PR_FLOOR} (base rate {base_rate:.3})",
        overall.auc_pr
    );
}

#[test]
fn metadata_records_the_contract() {
    let metadata = &small_model().artefact.metadata;
    assert_eq!(metadata.format_version, anomalyd::model::FORMAT_VERSION);
    assert_eq!(
        metadata.channels,
        vec!["temperature", "pressure", "flow", "vibration"]
    );
    assert!(metadata.model_version.starts_with("sha256:"));
    let quantiles = &metadata.validation_scores.quantiles;
    assert!(quantiles
        .windows(2)
        .all(|w| w[0].score <= w[1].score && w[0].q < w[1].q));
    assert!(metadata.validation_scores.count > 0);
    // The same recipe on the same data gives the same version.
    assert_eq!(
        metadata.model_version,
        metadata.compute_version(&small_model().artefact.onnx)
    );
}

#[test]
fn one_window_scores_the_same_alone_and_in_a_batch() {
    let (_dir, path) = written_model();
    let scorer = Scorer::load(&path).unwrap();
    let size = scorer.window_size();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let windows: Vec<f32> = (0..5 * size)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let batch = scorer.score_normalised(&windows, 5).unwrap();
    let alone = scorer
        .score_normalised(&windows[2 * size..3 * size], 1)
        .unwrap();
    assert!((batch[2].score - alone[0].score).abs() < 1e-5);
    let sum: f32 = batch[2].channel_contributions.iter().sum();
    assert!((sum - batch[2].score).abs() < 1e-5);
}

#[test]
fn the_same_seed_trains_the_same_model() {
    let data = anomalyd::synthetic::generate(&anomalyd::synthetic::SyntheticConfig {
        entities: 2,
        channels: 3,
        days: 10,
        seed: 21,
        ..Default::default()
    });
    let recipe = |seed| {
        let mut recipe = anomalyd::recipe::ModelRecipe {
            train_stride: 4,
            ..Default::default()
        };
        recipe.training.max_epochs = 2;
        recipe.training.seed = seed;
        recipe
    };
    let train = |seed| {
        recipe(seed)
            .build(&data.clean_part(), "tiny")
            .unwrap()
            .artefact
    };
    let first = train(1);
    let again = train(1);
    let other = train(2);
    assert_eq!(first.onnx, again.onnx, "same seed, different weights");
    assert_eq!(first.metadata.model_version, again.metadata.model_version);
    assert_ne!(first.onnx, other.onnx, "the seed has no effect");

    // Trainings on several threads at once (as `eval nab` runs them) give
    // each the model it gets alone: Burn's generator is process-wide, and
    // draws its weights lazily unless made to draw them under the seed lock.
    let seeds = [1, 2, 3, 4];
    let together: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = seeds
            .iter()
            .map(|&seed| scope.spawn(move || train(seed)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (seed, model) in seeds.iter().zip(&together) {
        let alone = match seed {
            1 => &first,
            2 => &other,
            _ => &train(*seed),
        };
        assert_eq!(
            model.metadata.model_version, alone.metadata.model_version,
            "seed {seed}: trained beside others, a different model than alone"
        );
    }
}
