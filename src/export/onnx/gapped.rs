//! The gapped layout of the exported graph: activations `[channels, batch,
//! period]`, each window followed by the zeros that pad it, so that each
//! convolution runs over the whole batch as one sequence.

use super::graph::{ints, GraphBuilder};
use crate::model::NetworkConfig;

/// An activation `[channels, batch, period]`: each window's `len` samples,
/// then `period - len` zeros, its gap (none if `period == len`). A
/// convolution slides over the whole batch as one sequence
/// (`fold_convolution`), and the gaps are the zero padding each window
/// needs, after it and before the next.
///
/// The zeros are exact for finite inputs: gaps are zeroed by multiplying
/// with 0, which leaves a NaN a NaN, so a non-finite value in one window
/// could reach the next. The scorer only passes finite windows (decoded
/// values are checked finite, and normalisation keeps them so).
pub(super) struct Gapped {
    pub(super) name: String,
    pub(super) len: usize,
    pub(super) period: usize,
}

/// What a convolution does with its outputs that fall in the gaps (they
/// straddle two windows).
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Gaps {
    /// Multiplied by zero right after the convolution and its ReLU, where
    /// tract fuses the product into the convolution's matrix product: the
    /// output is ready for the next convolution.
    Zeroed,
    /// Cut off (a Slice): the output is `[channels, batch, len]`.
    Cut,
}

/// Pads each window of `[channels, batch, len]` at its end to `period`.
pub(super) fn pad_gaps(
    graph: &mut GraphBuilder,
    name: &str,
    x: &str,
    len: usize,
    period: usize,
) -> Gapped {
    let name = if period > len {
        let gap = (period - len) as i64;
        let pads = graph.int64_constant(&format!("{name}.pads"), &[0, 0, 0, 0, 0, gap]);
        graph.node("Pad", &[x, &pads], vec![])
    } else {
        x.to_string()
    };
    Gapped { name, len, period }
}

/// The gap a window needs after it for a same-padded convolution to see
/// only zeros outside the window: `padding` for the next window's first
/// outputs, and as far as its own last output reaches past its end.
fn gap_needed(kernel: usize, stride: usize, padding: usize, len: usize) -> usize {
    let out_len = (len + 2 * padding - kernel) / stride + 1;
    // The last tap of the last output, in the window's padded coordinates.
    let last_tap = (out_len - 1) * stride + kernel - 1;
    padding.max((last_tap + 1).saturating_sub(padding + len))
}

/// The period of each encoder convolution's input. Each is its stride (2)
/// times the period of its output, which is the next one's input, and
/// leaves the gap the convolution needs; worked back from the last, whose
/// output's gap is cut.
pub(super) fn encoder_periods(config: &NetworkConfig) -> Vec<usize> {
    let (kernel, padding) = (config.kernel_size, config.same_padding());
    let layers = config.widths.len();
    let mut periods = vec![0; layers];
    let mut out_period = config.encoded_len();
    for layer in (0..layers).rev() {
        let len = config.window_len >> layer;
        while 2 * out_period - len < gap_needed(kernel, 2, padding, len) {
            out_period += 1;
        }
        periods[layer] = 2 * out_period;
        out_period = periods[layer];
    }
    periods
}

/// The gap the decoder starts with: each upsampling doubles it, and each
/// convolution needs its `gap_needed`.
pub(super) fn decoder_gap(config: &NetworkConfig) -> usize {
    let fits = |gap: usize| {
        let (mut gap, mut len) = (gap, config.encoded_len());
        for _ in 0..config.widths.len() {
            if gap < gap_needed(3, 1, 1, len) {
                return false;
            }
            (gap, len) = (2 * gap, 2 * len);
        }
        gap >= gap_needed(config.kernel_size, 1, config.same_padding(), len)
    };
    (0..).find(|&gap| fits(gap)).expect("some gap fits")
}

/// One convolution of [`fold_convolution`]: input and output channels,
/// kernel, stride, zero padding on each side, and whether ReLU follows.
pub(super) struct Fold {
    pub(super) channels: usize,
    pub(super) out_channels: usize,
    pub(super) kernel: usize,
    pub(super) stride: usize,
    pub(super) padding: usize,
    pub(super) relu: bool,
}

/// A convolution of every window of a batch, run as one convolution over
/// the batch laid end to end: `[channels, batch, period]` is reshaped to one
/// sequence `[1, channels, batch · period]`. Each window's gap is its zero
/// padding after it and the next window's before it; the convolution's own
/// padding serves the first window's start. Output `j` of window `b` sits at
/// `b · period / stride + j` and sees exactly the taps it sees in a
/// per-window convolution; the outputs after each window's `out_len` read
/// into the next window, and `gaps` says what becomes of them.
///
/// Why: tract convolves each window of a batch on its own, with a matrix
/// product only `out_len` columns wide. Laid end to end, the batch is one
/// im2col and one matrix product `batch · period` columns wide. That pays
/// only when tract knows the batch when it optimises (the scorer's
/// fixed-batch plans): with a symbolic batch it picks narrow kernels
/// (BENCHMARKS.md, section 1). The gaps carry each window's padding from one
/// convolution to the next, zeroed inside the matrix product, where a Pad
/// and a Slice per convolution took two more copies.
pub(super) fn fold_convolution(
    graph: &mut GraphBuilder,
    name: &str,
    input: &Gapped,
    weight: &str,
    bias: &str,
    fold: &Fold,
    gaps: Gaps,
) -> Gapped {
    let &Fold {
        channels,
        out_channels,
        kernel,
        stride,
        padding,
        relu,
    } = fold;
    let (len, period) = (input.len, input.period);
    assert!(
        period.is_multiple_of(stride) && period - len >= gap_needed(kernel, stride, padding, len),
        "{name}: windows of {len} in periods of {period} for kernel {kernel}, stride {stride}"
    );
    let out_len = (len + 2 * padding - kernel) / stride + 1;
    let out_period = period / stride;
    // The sequence's end padding makes the output exactly `batch · period /
    // stride` long, a plain multiple of the batch that tract's symbolic
    // shapes divide back into windows (`(68·batch - 2) / 2 + 1`), or one
    // more, cut below, where the start padding alone overshoots. It only
    // reaches the last window's gap.
    let (mut end, mut surplus) = (kernel as i64 - padding as i64 - stride as i64, false);
    if end < 0 {
        (end, surplus) = (end + stride as i64, true);
    }
    let sequence = graph.int64_constant(&format!("{name}.sequence"), &[1, channels as i64, -1]);
    let mut x = graph.node("Reshape", &[&input.name, &sequence], vec![]);
    x = graph.node(
        "Conv",
        &[&x, weight, bias],
        vec![
            ints("kernel_shape", &[kernel as i64]),
            ints("strides", &[stride as i64]),
            ints("pads", &[padding as i64, end]),
        ],
    );
    if relu {
        x = graph.node("Relu", &[&x], vec![]);
    }
    if surplus {
        x = slice_time(graph, &format!("{name}.whole"), &x, -1);
    }
    if gaps == Gaps::Zeroed && out_period > out_len {
        x = zero_gaps(graph, name, &x, out_len, out_period);
    }
    let windows = graph.int64_constant(
        &format!("{name}.windows"),
        &[out_channels as i64, -1, out_period as i64],
    );
    x = graph.node("Reshape", &[&x, &windows], vec![]);
    match gaps {
        Gaps::Zeroed => Gapped {
            name: x,
            len: out_len,
            period: out_period,
        },
        Gaps::Cut if out_period > out_len => Gapped {
            name: slice_time(graph, &format!("{name}.keep"), &x, out_len as i64),
            len: out_len,
            period: out_len,
        },
        Gaps::Cut => Gapped {
            name: x,
            len: out_len,
            period: out_len,
        },
    }
}

/// Multiplies the outputs in each window's gap by 0: one window's mask,
/// repeated for each window of the batch, a constant once tract knows the
/// batch, multiplied in per column.
fn zero_gaps(
    graph: &mut GraphBuilder,
    name: &str,
    x: &str,
    out_len: usize,
    out_period: usize,
) -> String {
    let mask: Vec<f32> = (0..out_period)
        .map(|t| (t < out_len) as u8 as f32)
        .collect();
    let mask = graph.float_initializer(
        &format!("{name}.window"),
        vec![1, 1, out_period as i64],
        mask,
    );
    let repeats = graph.batch_repeats();
    let mask = graph.node("Tile", &[&mask, &repeats], vec![]);
    graph.node("Mul", &[x, &mask], vec![])
}

/// `x[.., .., ..end]`: the first `end` samples of the last axis, or all but
/// the last `-end` if `end` is negative.
fn slice_time(graph: &mut GraphBuilder, name: &str, x: &str, end: i64) -> String {
    let starts = graph.int64_constant(&format!("{name}.start"), &[0]);
    let ends = graph.int64_constant(&format!("{name}.end"), &[end]);
    let axes = graph.int64_constant(&format!("{name}.axis"), &[2]);
    graph.node("Slice", &[x, &starts, &ends, &axes], vec![])
}
