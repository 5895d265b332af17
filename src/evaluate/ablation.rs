//! The loss ablation: trains the same network with each loss variant and
//! measures detection quality on labelled synthetic data.

use super::nab::report::Split;
use super::synthetic::{quality, score_labelled, Quality};
use crate::model::{LossConfig, PerceptualFeatures};
use crate::recipe::{ModelRecipe, RecipeError};
use crate::series::Series;
use crate::serve::{ModelError, Scorer};
use std::fmt::Write;

/// One loss configuration to compare.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Row name in the table.
    pub name: String,
    /// The loss.
    pub loss: LossConfig,
}

/// The variants of the issue: MSE only; + denoising; + perceptual (each
/// extractor); + sparsity; the full hybrid (each extractor).
pub fn standard_variants(
    perceptual_weight: f32,
    sparsity_weight: f32,
    noise_std: f32,
    mask_probability: f32,
) -> Vec<Variant> {
    let plain = LossConfig {
        pointwise_weight: 1.0,
        perceptual_weight: 0.0,
        sparsity_weight: 0.0,
        perceptual_features: PerceptualFeatures::Spectral,
        noise_std: 0.0,
        mask_probability: 0.0,
    };
    let denoising = LossConfig {
        noise_std,
        mask_probability,
        ..plain.clone()
    };
    let mut variants = vec![
        Variant {
            name: "MSE only".into(),
            loss: plain,
        },
        Variant {
            name: "MSE + denoising".into(),
            loss: denoising.clone(),
        },
    ];
    for features in [
        PerceptualFeatures::Differences,
        PerceptualFeatures::Spectral,
    ] {
        variants.push(Variant {
            name: format!("+ perceptual ({features})"),
            loss: LossConfig {
                perceptual_weight,
                perceptual_features: features,
                ..denoising.clone()
            },
        });
    }
    variants.push(Variant {
        name: "+ sparsity".into(),
        loss: LossConfig {
            sparsity_weight,
            ..denoising.clone()
        },
    });
    for features in [
        PerceptualFeatures::Differences,
        PerceptualFeatures::Spectral,
    ] {
        variants.push(Variant {
            name: format!("full hybrid ({features})"),
            loss: LossConfig {
                perceptual_weight,
                sparsity_weight,
                perceptual_features: features,
                ..denoising.clone()
            },
        });
    }
    variants
}

/// The outcome of one variant.
#[derive(Debug, Clone)]
pub struct AblationRow {
    /// The variant.
    pub variant: Variant,
    /// Mean over seeds of each quality row (overall first, then per kind).
    pub quality: Vec<Quality>,
    /// Seeds run.
    pub seeds: usize,
    /// Mean training seconds per seed.
    pub seconds: f64,
}

/// Why an ablation stopped.
#[derive(Debug, thiserror::Error)]
pub enum AblationError {
    /// A variant's model could not be trained or exported.
    #[error(transparent)]
    Training(#[from] RecipeError),
    /// A trained model could not be loaded or failed on a window.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A NAB run failed.
    #[error(transparent)]
    Nab(#[from] super::nab::run::NabRunError),
}

/// Trains every variant with every seed on `train` and evaluates on `test`.
pub fn run(
    recipe: &ModelRecipe,
    variants: &[Variant],
    seeds: &[u64],
    train: &[Series],
    test: &[Series],
    evaluation_stride: usize,
) -> Result<Vec<AblationRow>, AblationError> {
    let mut rows = Vec::new();
    for variant in variants {
        let mut sums: Vec<Quality> = Vec::new();
        let mut seconds = 0.0;
        for &seed in seeds {
            let mut recipe = recipe.clone();
            recipe.training.loss = variant.loss.clone();
            recipe.training.seed = seed;
            let built = recipe.build(train, "synthetic")?;
            seconds += built.trained.seconds;
            let scorer = Scorer::from_parts(
                &built.artefact.onnx,
                built.artefact.metadata.clone(),
                "ablation model",
            )?;
            let scored = score_labelled(&scorer, test, evaluation_stride)?;
            let measured = quality(&scored);
            tracing::info!(variant = %variant.name, seed, auc_pr = measured[0].auc_pr, "ablation run");
            if sums.is_empty() {
                sums = measured;
            } else {
                for (sum, q) in sums.iter_mut().zip(measured) {
                    sum.auc_pr += q.auc_pr;
                    sum.best_f1 += q.best_f1;
                }
            }
        }
        for q in &mut sums {
            q.auc_pr /= seeds.len() as f64;
            q.best_f1 /= seeds.len() as f64;
        }
        rows.push(AblationRow {
            variant: variant.clone(),
            quality: sums,
            seeds: seeds.len(),
            seconds: seconds / seeds.len() as f64,
        });
    }
    Ok(rows)
}

/// Two markdown tables: AUC-PR and best F1, overall and per kind.
pub fn markdown(rows: &[AblationRow]) -> String {
    let mut out = String::new();
    let Some(first) = rows.first() else {
        return out;
    };
    let kinds: Vec<&str> = first.quality.iter().map(|q| q.kind.as_str()).collect();
    for (title, pick) in [("AUC-PR", 0), ("best F1", 1)] {
        let _ = writeln!(
            out,
            "**{title}** (mean of {} seed(s); higher is better)\n",
            first.seeds
        );
        let _ = writeln!(out, "| loss | {} | train s |", kinds.join(" | "));
        let _ = writeln!(out, "|---|{}---:|", "---:|".repeat(kinds.len()));
        for row in rows {
            let best_in_column = |i: usize| {
                rows.iter()
                    .map(|r| metric(&r.quality[i], pick))
                    .fold(f64::MIN, f64::max)
            };
            let cells: Vec<String> = row
                .quality
                .iter()
                .enumerate()
                .map(|(i, q)| {
                    let value = metric(q, pick);
                    if (value - best_in_column(i)).abs() < 1e-9 {
                        format!("**{value:.3}**")
                    } else {
                        format!("{value:.3}")
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} |",
                row.variant.name,
                cells.join(" | "),
                row.seconds
            );
        }
        out.push('\n');
    }
    out
}

fn metric(q: &Quality, pick: usize) -> f64 {
    if pick == 0 {
        q.auc_pr
    } else {
        q.best_f1
    }
}

/// One variant's NAB result.
#[derive(Debug, Clone)]
pub struct NabAblationRow {
    /// The variant.
    pub variant: Variant,
    /// Oracle-threshold scores per profile (standard, low FP, low FN).
    pub oracle: Vec<f64>,
    /// Own-alert scores per profile, whole corpus.
    pub own: Vec<f64>,
    /// Own-alert scores per profile on the tuning half and on the held-out
    /// half (files at even and at odd positions).
    pub halves: [Vec<f64>; 2],
    /// Wall-clock seconds for the corpus.
    pub seconds: f64,
}

/// Runs the NAB corpus once per variant (same detector settings, the variant's loss).
pub fn run_nab(
    corpus: &super::nab::Corpus,
    variants: &[Variant],
    options: &super::nab::run::NabOptions,
    progress: impl Fn(&str),
) -> Result<Vec<NabAblationRow>, AblationError> {
    let mut rows = Vec::new();
    for variant in variants {
        progress(&variant.name);
        let started = std::time::Instant::now();
        let mut options = options.clone();
        options.recipe.training.loss = variant.loss.clone();
        let runs = super::nab::run::run_corpus(corpus, &options, |_, _| {})?;
        let seconds = started.elapsed().as_secs_f64();
        let summary = super::nab::report::summarise(
            corpus,
            &runs,
            "ablation",
            seconds,
            options.workers,
            serde_json::Value::Null,
        );
        let half = |split: Split| {
            summary
                .splits
                .iter()
                .find(|s| s.split == split)
                .map(|s| s.own.clone())
                .unwrap_or_default()
        };
        rows.push(NabAblationRow {
            variant: variant.clone(),
            oracle: summary.profiles.iter().map(|p| p.oracle_score).collect(),
            own: summary.profiles.iter().map(|p| p.own_score).collect(),
            halves: [half(Split::Tuning), half(Split::HeldOut)],
            seconds,
        });
    }
    Ok(rows)
}

/// The NAB table of the ablation: own alerts on the tuning half, the
/// held-out half and the whole corpus, and the oracle threshold's scores.
pub fn nab_markdown(rows: &[NabAblationRow]) -> String {
    let mut out = String::from(
        "**NAB** (58 files, a fresh model per file; standard / low FP / low FN; higher is better)\n\n\
         | loss | tuning half, own alerts | held-out half, own alerts | whole, own alerts | whole, oracle threshold | run s |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let profiles = |scores: &[f64]| {
        scores
            .iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} |",
            row.variant.name,
            profiles(&row.halves[0]),
            profiles(&row.halves[1]),
            profiles(&row.own),
            profiles(&row.oracle),
            row.seconds
        );
    }
    out
}
