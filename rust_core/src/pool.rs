//! Channel pooling (mean and max over H and W for every (n, c)) and spatial pooling (max and mean
//! over C for every (n, h, w)), each in one pass over the map.
//!
//! An image is seen as rows (see [`Dims::rows`]) and reduced in one of two directions:
//! - [`columns`]: every row adds into per-column accumulators, vectorised along the row (NHWC
//!   channel pooling, NCHW spatial pooling);
//! - [`each_row`]: every row reduces to one value, vectorised within the row (NCHW channel
//!   pooling, NHWC spatial pooling).
//!
//! Sums are pairwise over small blocks, so a mean over many elements keeps float32 accuracy.
//! SIMD max instructions drop NaN, so wherever a sum came out NaN the group is rescanned and its
//! max set to NaN if the group holds one: NaN then propagates through mean and max as in NumPy,
//! at no cost when there is none.

use crate::exec::Exec;
use crate::layout::{Dims, Layout};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

/// A column-reduction leaf covers about this many elements ...
const COLUMN_LEAF_ELEMS: usize = 4096;
/// ... and between this many rows (a column's sequential run, which bounds its rounding error).
const COLUMN_LEAF_ROWS: (usize, usize) = (16, 64);
/// A row is summed in blocks of this many elements, and the block sums pairwise.
const ROW_BLOCK: usize = 1024;

/// Mean and max over H and W for every (n, c); `mean` and `max` hold N * C values.
pub fn channel_pool(exec: Exec, x: &[f32], dims: Dims, mean: &mut [f32], max: &mut [f32]) {
    assert!(x.len() == dims.len() && mean.len() == dims.n * dims.c && max.len() == mean.len());
    if dims.is_empty() {
        return;
    }
    exec.run(|| {
        let images: Vec<_> = x
            .chunks_exact(dims.image_len())
            .zip(mean.chunks_exact_mut(dims.c).zip(max.chunks_exact_mut(dims.c)))
            .collect();
        exec.for_each(images, dims.image_len(), |(x, (mean, max)), exec| {
            image_channel_sum_max(exec, x, dims, mean, max);
            let count = dims.pixels() as f32;
            mean.iter_mut().for_each(|m| *m /= count);
        });
    });
}

/// Max and mean over C for every (n, h, w), max first: `out` holds N * H * W * 2 values laid
/// out (N, H, W, 2) for channels-last input and (N, 2, H, W) for channels-first input, the order
/// in which `SpatialAttention` stacks them.
pub fn spatial_pool(exec: Exec, x: &[f32], dims: Dims, out: &mut [f32]) {
    assert!(x.len() == dims.len() && out.len() == dims.n * dims.pixels() * 2);
    if dims.is_empty() {
        return;
    }
    exec.run(|| {
        let pixels = dims.pixels();
        let images: Vec<_> = x.chunks_exact(dims.image_len()).zip(out.chunks_exact_mut(2 * pixels)).collect();
        exec.for_each(images, dims.image_len(), |(x, out), exec| match dims.layout {
            Layout::ChannelsFirst => {
                let (max, mean) = out.split_at_mut(pixels);
                image_spatial_sum_max(exec, x, dims, None, mean, max);
                mean.iter_mut().for_each(|m| *m /= dims.c as f32);
            }
            Layout::ChannelsLast => {
                let (mut sum, mut max) = (vec![0.0; pixels], vec![0.0; pixels]);
                image_spatial_sum_max(exec, x, dims, None, &mut sum, &mut max);
                for ((pair, s), m) in out.chunks_exact_mut(2).zip(sum).zip(max) {
                    pair[0] = m;
                    pair[1] = s / dims.c as f32;
                }
            }
        });
    });
}

/// Sum and max over the pixels of one image, per channel (`sum`, `max`: C values).
pub(crate) fn image_channel_sum_max(exec: Exec, x: &[f32], dims: Dims, sum: &mut [f32], max: &mut [f32]) {
    match dims.layout {
        Layout::ChannelsLast => columns(exec, x, dims.c, None, sum, max),
        Layout::ChannelsFirst => each_row(exec, x, dims.pixels(), None, sum, max),
    }
}

/// Sum and max over the channels of `x * gate[c]` (gate `None`: of `x`) for every pixel of one
/// image, without writing the product (`sum`, `max`: H * W values).
pub(crate) fn image_spatial_sum_max(
    exec: Exec,
    x: &[f32],
    dims: Dims,
    gate: Option<&[f32]>,
    sum: &mut [f32],
    max: &mut [f32],
) {
    match dims.layout {
        Layout::ChannelsLast => each_row(exec, x, dims.c, gate, sum, max),
        Layout::ChannelsFirst => columns(exec, x, dims.pixels(), gate, sum, max),
    }
}

/// Per-column sum and max of the rows of `x` (`row_len` long, row `r` multiplied by
/// `row_scale[r]` when given) into `sum` and `max`. Pairwise: the two halves of the rows are
/// reduced separately (in parallel when large enough) and merged.
pub(crate) fn columns(
    exec: Exec,
    x: &[f32],
    row_len: usize,
    row_scale: Option<&[f32]>,
    sum: &mut [f32],
    max: &mut [f32],
) {
    let rows = x.len() / row_len;
    let leaf_rows = (COLUMN_LEAF_ELEMS / row_len).clamp(COLUMN_LEAF_ROWS.0, COLUMN_LEAF_ROWS.1);
    let mut depth = 0;
    let mut span = rows;
    while span > leaf_rows {
        span = span.div_ceil(2);
        depth += 1;
    }
    let mut scratch = vec![0.0; 2 * row_len * depth];
    let tree = ColumnTree { exec, row_len, leaf_rows };
    tree.reduce(x, row_scale, sum, max, &mut scratch);
    fix_nan_columns(x, row_len, row_scale, sum, max);
}

struct ColumnTree {
    exec: Exec,
    row_len: usize,
    leaf_rows: usize,
}

impl ColumnTree {
    /// `scratch` holds two rows per level of the tree below this node.
    fn reduce(&self, x: &[f32], scale: Option<&[f32]>, sum: &mut [f32], max: &mut [f32], scratch: &mut [f32]) {
        let rows = x.len() / self.row_len;
        if rows <= self.leaf_rows {
            self.exec.level.dispatch(ColumnLeaf { x, row_len: self.row_len, row_scale: scale, sum, max });
            return;
        }
        let mid = rows / 2;
        let (x_left, x_right) = x.split_at(mid * self.row_len);
        let (scale_left, scale_right) = match scale {
            Some(s) => (Some(&s[..mid]), Some(&s[mid..])),
            None => (None, None),
        };
        let (mine, deeper) = scratch.split_at_mut(2 * self.row_len);
        let (sum_right, max_right) = mine.split_at_mut(self.row_len);
        if self.exec.splits(x.len()) {
            // Both halves run at once, so the right one needs scratch of its own.
            let mut deeper_right = vec![0.0; deeper.len()];
            rayon::join(
                || self.reduce(x_left, scale_left, sum, max, deeper),
                || self.reduce(x_right, scale_right, sum_right, max_right, &mut deeper_right),
            );
        } else {
            self.reduce(x_left, scale_left, sum, max, deeper);
            self.reduce(x_right, scale_right, sum_right, max_right, deeper);
        }
        self.exec.level.dispatch(MergeColumns { sum, max, sum_right, max_right });
    }
}

/// Overwrites `sum` and `max` with the column sums and maxima of the rows of `x`.
struct ColumnLeaf<'a> {
    x: &'a [f32],
    row_len: usize,
    row_scale: Option<&'a [f32]>,
    sum: &'a mut [f32],
    max: &'a mut [f32],
}

impl WithSimd for ColumnLeaf<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { x, row_len, row_scale, sum, max } = self;
        for (r, row) in x.chunks_exact(row_len).enumerate() {
            let g = simd.splat_f32s(row_scale.map_or(1.0, |s| s[r]));
            let (x_head, x_tail) = S::as_simd_f32s(row);
            let (sum_head, sum_tail) = S::as_mut_simd_f32s(sum);
            let (max_head, max_tail) = S::as_mut_simd_f32s(max);
            let x_last = simd.mul_f32s(simd.partial_load_f32s(x_tail), g);
            if r == 0 {
                for ((xv, s), m) in x_head.iter().zip(sum_head).zip(max_head) {
                    let v = simd.mul_f32s(*xv, g);
                    *s = v;
                    *m = v;
                }
                simd.partial_store_f32s(sum_tail, x_last);
                simd.partial_store_f32s(max_tail, x_last);
            } else {
                for ((xv, s), m) in x_head.iter().zip(sum_head).zip(max_head) {
                    let v = simd.mul_f32s(*xv, g);
                    *s = simd.add_f32s(*s, v);
                    *m = simd.max_f32s(*m, v);
                }
                let s = simd.add_f32s(simd.partial_load_f32s(sum_tail), x_last);
                let m = simd.max_f32s(simd.partial_load_f32s(max_tail), x_last);
                simd.partial_store_f32s(sum_tail, s);
                simd.partial_store_f32s(max_tail, m);
            }
        }
    }
}

/// `sum += sum_right`, `max = max(max, max_right)`.
struct MergeColumns<'a> {
    sum: &'a mut [f32],
    max: &'a mut [f32],
    sum_right: &'a [f32],
    max_right: &'a [f32],
}

impl WithSimd for MergeColumns<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (sum_head, sum_tail) = S::as_mut_simd_f32s(self.sum);
        let (max_head, max_tail) = S::as_mut_simd_f32s(self.max);
        let (sum_r_head, sum_r_tail) = S::as_simd_f32s(self.sum_right);
        let (max_r_head, max_r_tail) = S::as_simd_f32s(self.max_right);
        for (s, r) in sum_head.iter_mut().zip(sum_r_head) {
            *s = simd.add_f32s(*s, *r);
        }
        for (m, r) in max_head.iter_mut().zip(max_r_head) {
            *m = simd.max_f32s(*m, *r);
        }
        let s = simd.add_f32s(simd.partial_load_f32s(sum_tail), simd.partial_load_f32s(sum_r_tail));
        simd.partial_store_f32s(sum_tail, s);
        let m = simd.max_f32s(simd.partial_load_f32s(max_tail), simd.partial_load_f32s(max_r_tail));
        simd.partial_store_f32s(max_tail, m);
    }
}

/// Sum and max of every row of `x` (`row_len` long, multiplied element-wise by `scale` when
/// given) into `sum[r]` and `max[r]`; rows are shared out among threads when large enough.
pub(crate) fn each_row(
    exec: Exec,
    x: &[f32],
    row_len: usize,
    scale: Option<&[f32]>,
    sum: &mut [f32],
    max: &mut [f32],
) {
    let rows = x.len() / row_len;
    if exec.splits(x.len()) && rows > 1 {
        let rows_per_task = rows.div_ceil(4 * exec.threads);
        x.par_chunks(rows_per_task * row_len)
            .zip(sum.par_chunks_mut(rows_per_task).zip(max.par_chunks_mut(rows_per_task)))
            .for_each(|(x, (sum, max))| exec.level.dispatch(RowLeaf { x, row_len, scale, sum, max }));
    } else {
        exec.level.dispatch(RowLeaf { x, row_len, scale, sum, max });
    }
    fix_nan_rows(x, row_len, scale, sum, max);
}

struct RowLeaf<'a> {
    x: &'a [f32],
    row_len: usize,
    scale: Option<&'a [f32]>,
    sum: &'a mut [f32],
    max: &'a mut [f32],
}

impl WithSimd for RowLeaf<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        for ((row, sum), max) in self.x.chunks_exact(self.row_len).zip(self.sum.iter_mut()).zip(self.max.iter_mut()) {
            let mut sums = Pairwise::new();
            let mut row_max = f32::NEG_INFINITY;
            for (b, block) in row.chunks(ROW_BLOCK).enumerate() {
                let block_scale = self.scale.map(|s| &s[b * ROW_BLOCK..][..block.len()]);
                let (s, m) = block_sum_max(simd, block, block_scale);
                sums.push(s);
                row_max = row_max.max(m);
            }
            *sum = sums.total();
            *max = row_max;
        }
    }
}

/// Sum and max of `block * scale`, with four vector accumulators of each.
#[inline(always)]
fn block_sum_max<S: Simd>(simd: S, block: &[f32], scale: Option<&[f32]>) -> (f32, f32) {
    let (x_head, x_tail) = S::as_simd_f32s(block);
    let (g_head, g_tail) = scale.map_or((&[][..], &[][..]), S::as_simd_f32s);
    let mut sums = [simd.splat_f32s(0.0); 4];
    let mut maxes = [simd.splat_f32s(f32::NEG_INFINITY); 4];
    for (i, xv) in x_head.iter().enumerate() {
        let v = match g_head.get(i) {
            Some(g) => simd.mul_f32s(*xv, *g),
            None => *xv,
        };
        sums[i % 4] = simd.add_f32s(sums[i % 4], v);
        maxes[i % 4] = simd.max_f32s(maxes[i % 4], v);
    }
    let sum_v = simd.add_f32s(simd.add_f32s(sums[0], sums[1]), simd.add_f32s(sums[2], sums[3]));
    let max_v = simd.max_f32s(simd.max_f32s(maxes[0], maxes[1]), simd.max_f32s(maxes[2], maxes[3]));
    let (mut sum, mut max) = (simd.reduce_sum_f32s(sum_v), simd.reduce_max_f32s(max_v));
    for (j, x) in x_tail.iter().enumerate() {
        let v = x * g_tail.get(j).copied().unwrap_or(1.0);
        sum += v;
        max = max.max(v);
    }
    (sum, max)
}

/// Pairwise summation of a stream of values: a binary counter of partial sums, where two sums
/// of the same number of values are added as soon as both exist.
struct Pairwise {
    partial: [f32; 64],
    depth: usize,
    pushed: u64,
}

impl Pairwise {
    #[inline(always)]
    fn new() -> Self {
        Pairwise { partial: [0.0; 64], depth: 0, pushed: 0 }
    }

    #[inline(always)]
    fn push(&mut self, value: f32) {
        self.partial[self.depth] = value;
        self.depth += 1;
        self.pushed += 1;
        let mut carry = self.pushed;
        while carry & 1 == 0 {
            self.depth -= 1;
            self.partial[self.depth - 1] += self.partial[self.depth];
            carry >>= 1;
        }
    }

    #[inline(always)]
    fn total(&self) -> f32 {
        self.partial[..self.depth].iter().rev().sum()
    }
}

/// Columns whose sum came out NaN are rescanned; if one holds a NaN (after scaling), its max
/// becomes NaN. (A sum is also NaN for +inf plus -inf, whose max stays as computed.)
fn fix_nan_columns(x: &[f32], row_len: usize, row_scale: Option<&[f32]>, sum: &[f32], max: &mut [f32]) {
    for j in (0..row_len).filter(|&j| sum[j].is_nan()) {
        let scaled = |(r, row): (usize, &[f32])| row[j] * row_scale.map_or(1.0, |s| s[r]);
        if x.chunks_exact(row_len).enumerate().map(scaled).any(f32::is_nan) {
            max[j] = f32::NAN;
        }
    }
}

/// Rows whose sum came out NaN are rescanned, as [`fix_nan_columns`] does for columns.
fn fix_nan_rows(x: &[f32], row_len: usize, scale: Option<&[f32]>, sum: &[f32], max: &mut [f32]) {
    for (r, row) in x.chunks_exact(row_len).enumerate().filter(|&(r, _)| sum[r].is_nan()) {
        let scaled = |(j, v): (usize, &f32)| v * scale.map_or(1.0, |s| s[j]);
        if row.iter().enumerate().map(scaled).any(f32::is_nan) {
            max[r] = f32::NAN;
        }
    }
}

#[cfg(test)]
mod tests;
