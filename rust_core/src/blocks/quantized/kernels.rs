//! The int8 passes over an NHWC map, each reading the int8 map once.
//!
//! pulp 0.22's generic `Simd` trait has int8 vectors for loads, stores and bit casts only: no
//! sign extension to wider integers and no integer-to-float conversion. So these loops are
//! plain element loops run inside [`Level::dispatch`], where they are compiled for the level's
//! instruction set and vectorised by the compiler (none of them reduces floats, which the
//! compiler would keep in order). Float work over a tile reuses the float kernels on a
//! dequantized copy of the tile, small enough to stay in the L1/L2 cache.

use crate::exec::Exec;
use crate::layout::{Dims, Layout};
use crate::pool::image_spatial_sum_max;
use crate::simd::Level;
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

/// Elements per tile dequantized into a float scratch buffer (16 KiB of floats).
const TILE_ELEMS: usize = 4096;

/// Rows summed in an `i32` before the sums move to `i64`: 127 * 2^16 cannot overflow.
const I32_ROWS: usize = 1 << 16;

/// `scale * (q - zero_point)`, the one dequantization every path uses.
#[inline(always)]
pub(super) fn dequantize_one(q: i8, scale: f32, zero_point: i32) -> f32 {
    (q as i32 - zero_point) as f32 * scale
}

/// `clamp(round_half_to_even(y / scale) + zero_point, -128, 127)`; NaN maps to the zero point.
#[inline(always)]
pub(super) fn quantize_one(y: f32, scale: f32, zero_point: i32) -> i8 {
    // Clamped first (every zero point saturates a value beyond +-256 anyway), so that the
    // float-to-int conversion needs no saturation: `as i32`'s saturating conversion keeps the
    // compiler from vectorising the loop (8x slower on AVX-512).
    let v = y / scale;
    let v = if v.is_nan() { 0.0 } else { v.clamp(-256.0, 256.0) };
    // SAFETY: `v` is finite and within +-256, so its rounded value fits an i32.
    let q = unsafe { v.round_ties_even().to_int_unchecked::<i32>() };
    (q + zero_point).clamp(-128, 127) as i8
}

/// Per-channel `(mean, max)` of the dequantized map (N * C each), from exact integer sums and
/// int8 maxima: `mean = s * (sum / HW - zp)`, `max = s * (max - zp)` since `s > 0`.
pub(super) fn channel_pool(exec: Exec, x: &[i8], dims: Dims, scale: f32, zero_point: i32) -> (Vec<f32>, Vec<f32>) {
    let (mut mean, mut max) = (Vec::with_capacity(dims.n * dims.c), Vec::with_capacity(dims.n * dims.c));
    for image in x.chunks_exact(dims.image_len()) {
        let (sums, maxima) = if exec.splits(image.len()) && dims.pixels() > 1 {
            let rows_per_task = dims.pixels().div_ceil(4 * exec.threads);
            image
                .par_chunks(rows_per_task * dims.c)
                .map(|part| sum_max(exec.level, part, dims.c))
                .reduce_with(|(mut s, mut m), (s2, m2)| {
                    s.iter_mut().zip(s2).for_each(|(a, b)| *a += b);
                    m.iter_mut().zip(m2).for_each(|(a, b)| *a = (*a).max(b));
                    (s, m)
                })
                .expect("at least one part")
        } else {
            sum_max(exec.level, image, dims.c)
        };
        let pixels = dims.pixels() as f64;
        mean.extend(sums.iter().map(|&s| (scale as f64 * (s as f64 / pixels - zero_point as f64)) as f32));
        max.extend(maxima.iter().map(|&m| dequantize_one(m, scale, zero_point)));
    }
    (mean, max)
}

/// Per-column sums and maxima of the rows (`c` long) of `x`.
fn sum_max(level: Level, x: &[i8], c: usize) -> (Vec<i64>, Vec<i8>) {
    let (mut total, mut max) = (vec![0i64; c], vec![i8::MIN; c]);
    let mut sum = vec![0i32; c];
    for block in x.chunks(I32_ROWS * c) {
        sum.fill(0);
        level.dispatch(SumMax { x: block, sum: &mut sum, max: &mut max });
        total.iter_mut().zip(&sum).for_each(|(t, &s)| *t += s as i64);
    }
    (total, max)
}

struct SumMax<'a> {
    x: &'a [i8],
    sum: &'a mut [i32],
    max: &'a mut [i8],
}

impl WithSimd for SumMax<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        for row in self.x.chunks_exact(self.sum.len()) {
            for ((s, m), &v) in self.sum.iter_mut().zip(self.max.iter_mut()).zip(row) {
                *s += v as i32;
                *m = (*m).max(v);
            }
        }
    }
}

/// `out = dequantize(q)` element-wise.
pub(super) fn dequantize(level: Level, q: &[i8], scale: f32, zero_point: i32, out: &mut [f32]) {
    level.dispatch(Dequantize { q, scale, zero_point, out });
}

struct Dequantize<'a> {
    q: &'a [i8],
    scale: f32,
    zero_point: i32,
    out: &'a mut [f32],
}

impl WithSimd for Dequantize<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        for (o, &q) in self.out.iter_mut().zip(self.q) {
            *o = dequantize_one(q, self.scale, self.zero_point);
        }
    }
}

/// `out = quantize(y)` element-wise.
pub(super) fn quantize(level: Level, y: &[f32], scale: f32, zero_point: i32, out: &mut [i8]) {
    level.dispatch(Quantize { y, scale, zero_point, out });
}

struct Quantize<'a> {
    y: &'a [f32],
    scale: f32,
    zero_point: i32,
    out: &'a mut [i8],
}

impl WithSimd for Quantize<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        for (o, &y) in self.out.iter_mut().zip(self.y) {
            *o = quantize_one(y, self.scale, self.zero_point);
        }
    }
}

/// A run of whole pixels of one image: image `n`, pixels `first..first + rows`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tile {
    pub n: usize,
    pub first: usize,
    pub rows: usize,
}

impl Tile {
    /// The tile as a one-image map of `rows` pixels (a 1 x rows image).
    pub fn dims(self, c: usize) -> Dims {
        Dims { n: 1, h: 1, w: self.rows, c, layout: Layout::ChannelsLast }
    }
}

/// The tiles of the map, in order, each with its slice of `x` and its item of `chunks` (the
/// matching part of an output, cut the same way).
fn tiles<T: Send>(x: &[i8], dims: Dims, chunks: impl Iterator<Item = T>) -> Vec<(Tile, &[i8], T)> {
    let rows = (TILE_ELEMS / dims.c).max(1);
    let starts = (0..dims.n).flat_map(|n| (0..dims.pixels()).step_by(rows).map(move |first| (n, first)));
    let tiles = starts.map(|(n, first)| Tile { n, first, rows: rows.min(dims.pixels() - first) });
    let mut rest = x;
    tiles
        .zip(chunks)
        .map(|(tile, chunk)| {
            let (head, tail) = rest.split_at(tile.rows * dims.c);
            rest = tail;
            (tile, head, chunk)
        })
        .collect()
}

/// Runs `f(item, scratch)` for every item, in parallel when the map is large enough, each
/// thread with its own float scratch buffer.
fn for_each_tile<T: Send>(exec: Exec, elems: usize, items: Vec<T>, f: impl Fn(T, &mut Vec<f32>) + Sync + Send) {
    if exec.splits(elems) && items.len() > 1 {
        items.into_par_iter().for_each_init(Vec::new, |scratch, item| f(item, scratch));
    } else {
        let mut scratch = Vec::new();
        items.into_iter().for_each(|item| f(item, &mut scratch));
    }
}

/// Sum and max over the channels of `dequantize(x) * gate[n, c]` (gate `None`: of the
/// dequantized map) for every pixel (`sum`, `max`: N * H * W), exactly as the float block
/// pools its dequantized map, a tile at a time.
#[allow(clippy::too_many_arguments)]
pub(super) fn spatial_sum_max(
    exec: Exec,
    x: &[i8],
    dims: Dims,
    scale: f32,
    zero_point: i32,
    gate: Option<&[f32]>,
    sum: &mut [f32],
    max: &mut [f32],
) {
    let rows = (TILE_ELEMS / dims.c).max(1);
    // Tiles never cross images: so neither do their output chunks.
    let sums = sum.chunks_mut(dims.pixels()).flat_map(|image| image.chunks_mut(rows));
    let maxima = max.chunks_mut(dims.pixels()).flat_map(|image| image.chunks_mut(rows));
    let items = tiles(x, dims, sums.zip(maxima));
    for_each_tile(exec, x.len(), items, |(tile, q, (sum, max)), scratch| {
        scratch.resize(q.len(), 0.0);
        dequantize(exec.level, q, scale, zero_point, scratch);
        let gate = gate.map(|g| &g[tile.n * dims.c..][..dims.c]);
        image_spatial_sum_max(exec.serial(), scratch, tile.dims(dims.c), gate, sum, max);
    });
}

/// Writes `out = quantize(f(tile, dequantize(x tile)))` for every tile, `f` writing the
/// tile's float result into its second buffer.
pub(super) fn apply(
    exec: Exec,
    x: &[i8],
    dims: Dims,
    input: (f32, i32),
    output: (f32, i32),
    out: &mut [i8],
    f: impl Fn(Tile, &[f32], &mut [f32]) + Sync + Send,
) {
    let rows = (TILE_ELEMS / dims.c).max(1);
    let outs = out.chunks_mut(dims.image_len()).flat_map(|image| image.chunks_mut(rows * dims.c));
    let items = tiles(x, dims, outs);
    for_each_tile(exec, x.len(), items, |(tile, q, out), scratch| {
        scratch.resize(2 * q.len(), 0.0);
        let (xf, yf) = scratch.split_at_mut(q.len());
        dequantize(exec.level, q, input.0, input.1, xf);
        f(tile, xf, yf);
        quantize(exec.level, yf, output.0, output.1, out);
    });
}
