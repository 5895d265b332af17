//! Shared fixtures: a small synthetic data set and a quickly trained model.

use anomalyd::recipe::{BuiltModel, ModelRecipe};
use anomalyd::synthetic::{generate, SyntheticConfig, SyntheticData};
use std::sync::OnceLock;

/// A small synthetic set: 3 entities, 4 channels, 28 days (half clean).
pub fn small_data() -> &'static SyntheticData {
    static DATA: OnceLock<SyntheticData> = OnceLock::new();
    DATA.get_or_init(|| {
        generate(&SyntheticConfig {
            entities: 3,
            channels: 4,
            days: 28,
            seed: 11,
            ..Default::default()
        })
    })
}

/// The recipe of the test model: the shipped defaults, fewer epochs.
pub fn small_recipe() -> ModelRecipe {
    let mut recipe = ModelRecipe {
        name: "test".into(),
        ..Default::default()
    };
    recipe.training.max_epochs = 25;
    recipe.training.patience = 4;
    recipe.training.seed = 5;
    recipe
}

/// A model trained once per test run on the clean part of [`small_data`].
pub fn small_model() -> &'static BuiltModel {
    static MODEL: OnceLock<BuiltModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        small_recipe()
            .build(&small_data().clean_part(), "synthetic-small")
            .expect("the small model trains")
    })
}

/// Writes the small model to a fresh temporary folder; returns the folder and ONNX path.
pub fn written_model() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = anomalyd::export::write_artefact(&small_model().artefact, dir.path()).unwrap();
    (dir, path)
}
