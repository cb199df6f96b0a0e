//! Channel pooling (mean and max over H and W for every (n, c)) and spatial pooling (max and mean
//! over C for every (n, h, w)), each in one pass over the map.
//!
//! An image is seen as rows (see [`Dims::rows`]) and reduced in one of two directions:
//! - [`columns`]: every row adds into per-column accumulators, vectorised along the row (NHWC
//!   channel pooling, NCHW spatial pooling);
//! - [`each_row`]: every row reduces to one value, vectorised within the row (NCHW channel
//!   pooling, NHWC spatial pooling).
//!
//! Sums are blocked and pairwise, so a mean over many elements keeps float32 accuracy.
//! SIMD max instructions drop NaN, so wherever a sum came out NaN the group is rescanned and its
//! max set to NaN if the group holds one: NaN then propagates through mean and max as in NumPy,
//! at no cost when there is none.

mod columns;

use columns::{columns, FROM_MEMORY_ELEMS};
use columns::scaled;

use crate::exec::Exec;
use crate::layout::{Dims, Layout};
use pulp::{Simd, WithSimd};

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
        Layout::ChannelsLast => columns(exec, x, dims.c, None, dims.len() >= FROM_MEMORY_ELEMS, sum, max),
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
        Layout::ChannelsFirst => columns(exec, x, dims.pixels(), gate, dims.len() >= FROM_MEMORY_ELEMS, sum, max),
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
        let parts: Vec<_> = x.chunks(rows_per_task * row_len).zip(sum.chunks_mut(rows_per_task).zip(max.chunks_mut(rows_per_task))).collect();
        exec.map(parts, |(x, (sum, max))| exec.level.dispatch(RowLeaf { x, row_len, scale, sum, max }));
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
        match self.scale {
            Some(scale) => self.run::<S, true>(simd, scale),
            None => self.run::<S, false>(simd, &[]),
        }
    }
}

impl RowLeaf<'_> {
    #[inline(always)]
    fn run<S: Simd, const SCALED: bool>(self, simd: S, scale: &[f32]) {
        let rows = self.x.chunks_exact(self.row_len).zip(self.sum.iter_mut()).zip(self.max.iter_mut());
        if self.row_len <= ROW_BLOCK {
            for ((row, sum), max) in rows {
                (*sum, *max) = block_sum_max::<S, SCALED>(simd, row, scale);
            }
            return;
        }
        for ((row, sum), max) in rows {
            let mut sums = Pairwise::new();
            let mut row_max = f32::NEG_INFINITY;
            for (b, block) in row.chunks(ROW_BLOCK).enumerate() {
                let block_scale = if SCALED { &scale[b * ROW_BLOCK..][..block.len()] } else { scale };
                let (s, m) = block_sum_max::<S, SCALED>(simd, block, block_scale);
                sums.push(s);
                row_max = row_max.max(m);
            }
            *sum = sums.total();
            *max = row_max;
        }
    }
}

/// Sum and max of `block` (times `scale` element-wise when `SCALED`), with four vector
/// accumulators of each.
#[inline(always)]
fn block_sum_max<S: Simd, const SCALED: bool>(simd: S, block: &[f32], scale: &[f32]) -> (f32, f32) {
    let (x_head, x_tail) = S::as_simd_f32s(block);
    let (g_head, g_tail) = if SCALED { S::as_simd_f32s(scale) } else { (&[][..], &[][..]) };
    let g_head = if SCALED { &g_head[..x_head.len()] } else { g_head };
    let one = simd.splat_f32s(1.0);
    let element = |i: usize| scaled::<S, SCALED>(simd, x_head[i], if SCALED { g_head[i] } else { one });
    let zero = simd.splat_f32s(0.0);
    let low = simd.splat_f32s(f32::NEG_INFINITY);
    let (mut s0, mut s1, mut s2, mut s3) = (zero, zero, zero, zero);
    let (mut m0, mut m1, mut m2, mut m3) = (low, low, low, low);
    let quads = x_head.len() / 4;
    for q in 0..quads {
        let i = 4 * q;
        let (a, b, c, d) = (element(i), element(i + 1), element(i + 2), element(i + 3));
        (s0, s1, s2, s3) = (simd.add_f32s(s0, a), simd.add_f32s(s1, b), simd.add_f32s(s2, c), simd.add_f32s(s3, d));
        (m0, m1, m2, m3) = (simd.max_f32s(m0, a), simd.max_f32s(m1, b), simd.max_f32s(m2, c), simd.max_f32s(m3, d));
    }
    for i in 4 * quads..x_head.len() {
        let v = element(i);
        s0 = simd.add_f32s(s0, v);
        m0 = simd.max_f32s(m0, v);
    }
    let sum_v = simd.add_f32s(simd.add_f32s(s0, s1), simd.add_f32s(s2, s3));
    let max_v = simd.max_f32s(simd.max_f32s(m0, m1), simd.max_f32s(m2, m3));
    let (mut sum, mut max) = (simd.reduce_sum_f32s(sum_v), simd.reduce_max_f32s(max_v));
    for (j, &v) in x_tail.iter().enumerate() {
        let v = if SCALED { v * g_tail[j] } else { v };
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

/// Rows whose sum came out NaN are rescanned; if one holds a NaN (after scaling), its max
/// becomes NaN. (A sum is also NaN for +inf plus -inf, whose max stays as computed.)
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
