//! Scoring a batch on the model threads (`scoring.threads`): the windows
//! are split in order between them; entity state never leaves the scorer thread.

use super::super::config::MIN_WINDOWS_PER_THREAD;
use crate::serve::{ModelError, Scorer, WindowScore};
use crate::window::Window;
use rayon::prelude::*;

/// Scores the (normalised) windows of `items` in their order: split between the model
/// `threads` when each part gets at least [`MIN_WINDOWS_PER_THREAD`]
/// windows, else in one model call on this thread.
pub(super) fn score_in_parts<T: Sync>(
    scorer: &Scorer,
    threads: Option<&rayon::ThreadPool>,
    items: &[T],
    window: impl Fn(&T) -> &Window + Sync,
) -> Result<Vec<WindowScore>, ModelError> {
    let score = |part: &[T]| scorer.score_normalised_windows(part.iter().map(&window));
    let parts = threads.map_or(1, |pool| {
        pool.current_num_threads()
            .min(items.len() / MIN_WINDOWS_PER_THREAD)
    });
    match threads {
        Some(pool) if parts > 1 => {
            let per_part = items.len().div_ceil(parts);
            let scored: Vec<_> = pool.install(|| items.par_chunks(per_part).map(score).collect());
            let mut scores = Vec::with_capacity(items.len());
            for part in scored {
                scores.extend(part?);
            }
            Ok(scores)
        }
        _ => score(items),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::embedded::default_scorer;

    /// Windows whose scores differ widely, so that a mixed-up order shows.
    fn windows(scorer: &Scorer, count: usize) -> Vec<Window> {
        let size = scorer.window_size();
        (0..count)
            .map(|index| Window {
                start_ms: index as i64,
                end_ms: index as i64 + 1,
                values: (0..size)
                    .map(|i| ((i * 7 + index * 13) % 29) as f32 * (1.0 + index as f32))
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn model_threads_score_every_window_in_order() {
        let scorer = default_scorer().expect("the embedded model loads");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("two threads");
        for count in [1, 7, 15, 16, 17, 40] {
            let windows = windows(&scorer, count);
            let alone = score_in_parts(&scorer, None, &windows, |w| w).expect("scores");
            let split = score_in_parts(&scorer, Some(&pool), &windows, |w| w).expect("scores");
            assert_eq!(alone.len(), count);
            assert_eq!(split.len(), count);
            for (index, (a, b)) in alone.iter().zip(&split).enumerate() {
                let tolerance = 1e-5 * a.score.abs().max(1e-3);
                assert!(
                    (a.score - b.score).abs() <= tolerance,
                    "{count} windows, window {index}: {} alone, {} split",
                    a.score,
                    b.score
                );
            }
        }
    }
}
