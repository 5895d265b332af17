//! `anomalyd ablation`: trains every loss variant on the synthetic set and writes the comparison table.

use crate::evaluate::ablation::{
    markdown, nab_markdown, run as run_ablation, run_nab, standard_variants,
};
use crate::evaluate::nab::run::NabOptions;
use crate::evaluate::nab::Corpus;
use crate::recipe::{default_loss, ModelRecipe};
use crate::synthetic::{generate, SyntheticConfig};
use crate::train::TrainingBackend;
use clap::Args;
use std::path::PathBuf;

/// Options of `anomalyd ablation`.
#[derive(Debug, Args)]
pub struct AblationArgs {
    /// Markdown file to write the tables to (also printed).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seeds to average over, comma-separated.
    #[arg(long, default_value = "1,2")]
    pub seeds: String,
    /// Maximum epochs per run.
    #[arg(long, default_value_t = 40)]
    pub max_epochs: usize,
    /// Perceptual weight b in the variants that use it.
    #[arg(long, default_value_t = default_loss().perceptual_weight)]
    pub perceptual_weight: f32,
    /// Sparsity weight c in the variants that use it.
    #[arg(long, default_value_t = default_loss().sparsity_weight)]
    pub sparsity_weight: f32,
    /// Burn backend.
    #[arg(long, value_enum, default_value_t = TrainingBackend::Flex)]
    pub backend: TrainingBackend,
    /// Also run every variant over the NAB corpus in this folder (the NAB table).
    #[arg(long)]
    pub nab: Option<PathBuf>,
    /// Skip the synthetic tables (with --nab: only the NAB table).
    #[arg(long)]
    pub skip_synthetic: bool,
}

/// Runs `anomalyd ablation`.
pub fn run(args: AblationArgs) -> anyhow::Result<()> {
    let seeds: Vec<u64> = super::comma_list(&args.seeds)
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--seeds: {e}"))?;
    let data = generate(&SyntheticConfig::default());
    let defaults = default_loss();
    let variants = standard_variants(
        args.perceptual_weight,
        args.sparsity_weight,
        defaults.noise_std,
        defaults.mask_probability,
    );
    let mut recipe = ModelRecipe::default();
    recipe.training.max_epochs = args.max_epochs;
    recipe.training.backend = args.backend;
    let mut table = String::new();
    if !args.skip_synthetic {
        let rows = run_ablation(
            &recipe,
            &variants,
            &seeds,
            &data.clean_part(),
            &data.test_part(),
            4,
        )?;
        table = format!(
            "Synthetic set: `anomalyd generate` defaults (6 entities, 5 channels, 28 days; test part = second half), windows every 4 rows; perceptual weight {}, sparsity weight {}, noise std {}, mask probability {}.\n\n{}",
            args.perceptual_weight, args.sparsity_weight, defaults.noise_std, defaults.mask_probability, markdown(&rows)
        );
    }
    if let Some(root) = &args.nab {
        let corpus = Corpus::load(root)?;
        let options = NabOptions::default();
        let rows = run_nab(&corpus, &variants, &options, |name| {
            eprintln!("NAB: {name}");
        })?;
        table.push_str(&format!(
            "NAB: `anomalyd eval nab` defaults (window {}, at most {} epochs, seed {}) with each loss.\n\n{}",
            options.recipe.window_len,
            options.recipe.training.max_epochs,
            options.recipe.training.seed,
            nab_markdown(&rows)
        ));
    }
    println!("{table}");
    if let Some(path) = args.out {
        std::fs::write(&path, &table)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
