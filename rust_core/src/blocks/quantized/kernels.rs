//! The int8 passes over an NHWC map, each reading the int8 map once.
//!
//! pulp 0.22's generic `Simd` trait has int8 vectors for loads, stores and bit casts only: no
//! sign extension to wider integers and no integer-to-float conversion. So these loops are
//! plain element loops run inside [`Level::dispatch`], where they are compiled for the level's
//! instruction set and vectorised by the compiler. The compiler keeps a float reduction in
//! order, so the one float reduction (CBAM's spatial pooling) widens a row into an L1-resident
//! float buffer and reduces it with pulp's vectors and four accumulators. The output pass works
//! on the int8 values in registers: widened, converted to float, scaled by per-channel factors
//! folded ahead of time and rounded back to int8. On AVX-512 (the deployment target) the
//! channel pooling, the spatial pooling and the output pass use intrinsics instead (see
//! [`super::avx512`]).

use crate::apply::Epilogue;
use crate::exec::Exec;
use crate::layout::Dims;
use crate::simd::Level;
use pulp::{Simd, WithSimd};

/// Elements per tile: the unit of work shared out among threads.
const TILE_ELEMS: usize = 4096;

/// int8 maps of at least this many bytes are shared out among threads: lower than the float
/// kernels' threshold ([`crate::exec::MIN_PARALLEL_ELEMS`]) because the int8 passes are bound
/// by computation (widening, converting, rounding), not by memory. Measured on the 2-core
/// machine, int8 CBAM ResNet-50 in LiteRT at 2 threads: 17.0 ms with the float threshold, 15.1
/// ms with this one (every ResNet-50 stage's map, 1x7x7x2048 = 100 KB included, is split).
const MIN_PARALLEL_BYTES: usize = 1 << 16;

/// Whether a pass over `bytes` bytes of int8 map is shared out among threads.
fn splits(exec: Exec, bytes: usize) -> bool {
    exec.threads > 1 && bytes >= MIN_PARALLEL_BYTES
}

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
    round_to_int8(y / scale, zero_point)
}

/// `clamp(round_half_to_even(v) + zero_point, -128, 127)`; NaN maps to the zero point.
#[inline(always)]
fn round_to_int8(v: f32, zero_point: i32) -> i8 {
    // Clamped first (every zero point saturates a value beyond +-256 anyway), so that the
    // float-to-int conversion needs no saturation: `as i32`'s saturating conversion keeps the
    // compiler from vectorising the loop (8x slower on AVX-512).
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
        let (sums, maxima) = if splits(exec, image.len()) && dims.pixels() > 1 {
            let rows_per_task = dims.pixels().div_ceil(4 * exec.threads);
            let parts = exec.map(image.chunks(rows_per_task * dims.c).collect(), |part| sum_max(exec.level, part, dims.c));
            parts
                .into_iter()
                .reduce(|(mut s, mut m), (s2, m2)| {
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
        if uses_avx512(level) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `uses_avx512` checked that the CPU has AVX-512.
            unsafe {
                super::avx512::sum_max(block, &mut sum, &mut max)
            };
        } else {
            level.dispatch(SumMax { x: block, sum: &mut sum, max: &mut max });
        }
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
        let c = self.sum.len();
        // Four rows at a time: the sums and maxima are loaded and stored once per four rows.
        let quads = self.x.chunks_exact(4 * c);
        let rest = quads.remainder();
        for quad in quads {
            let (r0, r1, r2, r3) = (&quad[..c], &quad[c..2 * c], &quad[2 * c..3 * c], &quad[3 * c..]);
            for j in 0..c {
                let (a, b, d, e) = (r0[j], r1[j], r2[j], r3[j]);
                self.sum[j] += (a as i32 + b as i32) + (d as i32 + e as i32);
                self.max[j] = self.max[j].max(a.max(b).max(d.max(e)));
            }
        }
        for row in rest.chunks_exact(c) {
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

/// A run of whole pixels of one image: image `n`, pixels `first..first + rows`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tile {
    pub n: usize,
    pub first: usize,
    pub rows: usize,
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
    if splits(exec, elems) && items.len() > 1 {
        // A few groups per thread, each group with one scratch buffer.
        let per_group = items.len().div_ceil(4 * exec.threads);
        let mut items = items.into_iter();
        let groups: Vec<Vec<T>> = std::iter::from_fn(|| Some(items.by_ref().take(per_group).collect::<Vec<T>>()).filter(|g| !g.is_empty())).collect();
        exec.map(groups, |group| {
            let mut scratch = Vec::new();
            group.into_iter().for_each(|item| f(item, &mut scratch));
        });
    } else {
        let mut scratch = Vec::new();
        items.into_iter().for_each(|item| f(item, &mut scratch));
    }
}

/// Sum and max over the channels of `(x - zero_point) * factor[n, c]` for every pixel (`sum`,
/// `max`: N * H * W); `factor` holds N * C values.
pub(super) fn spatial_sum_max(exec: Exec, x: &[i8], dims: Dims, zero_point: i32, factor: &[f32], sum: &mut [f32], max: &mut [f32]) {
    let rows = (TILE_ELEMS / dims.c).max(1);
    // Tiles never cross images: so neither do their output chunks.
    let sums = sum.chunks_mut(dims.pixels()).flat_map(|image| image.chunks_mut(rows));
    let maxima = max.chunks_mut(dims.pixels()).flat_map(|image| image.chunks_mut(rows));
    let items = tiles(x, dims, sums.zip(maxima));
    for_each_tile(exec, x.len(), items, |(tile, x, (sum, max)), scratch| {
        let factor = &factor[tile.n * dims.c..][..dims.c];
        if uses_avx512(exec.level) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `uses_avx512` checked that the CPU has AVX-512.
            unsafe {
                super::avx512::scaled_sum_max(x, zero_point, factor, sum, max)
            };
        } else {
            exec.level.dispatch(ScaledSumMax { x, zero_point, factor, sum, max, scratch });
        }
    });
}

struct ScaledSumMax<'a> {
    x: &'a [i8],
    zero_point: i32,
    factor: &'a [f32],
    sum: &'a mut [f32],
    max: &'a mut [f32],
    scratch: &'a mut Vec<f32>,
}

impl WithSimd for ScaledSumMax<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { x, zero_point, factor, sum, max, scratch } = self;
        scratch.resize(factor.len(), 0.0);
        let (factor_head, factor_tail) = S::as_simd_f32s(factor);
        for ((row, sum), max) in x.chunks_exact(factor.len()).zip(sum).zip(max) {
            // Widened by a loop the compiler vectorises; reduced with four vector accumulators.
            for (w, &q) in scratch.iter_mut().zip(row) {
                *w = (q as i32 - zero_point) as f32;
            }
            let (head, tail) = S::as_simd_f32s(scratch);
            let zero = simd.splat_f32s(0.0);
            let low = simd.splat_f32s(f32::NEG_INFINITY);
            let (mut s0, mut s1, mut s2, mut s3) = (zero, zero, zero, zero);
            let (mut m0, mut m1, mut m2, mut m3) = (low, low, low, low);
            let element = |i: usize| simd.mul_f32s(head[i], factor_head[i]);
            let quads = head.len() / 4;
            for q in 0..quads {
                let i = 4 * q;
                let (a, b, c, d) = (element(i), element(i + 1), element(i + 2), element(i + 3));
                (s0, s1, s2, s3) = (simd.add_f32s(s0, a), simd.add_f32s(s1, b), simd.add_f32s(s2, c), simd.add_f32s(s3, d));
                (m0, m1, m2, m3) = (simd.max_f32s(m0, a), simd.max_f32s(m1, b), simd.max_f32s(m2, c), simd.max_f32s(m3, d));
            }
            for i in 4 * quads..head.len() {
                let v = element(i);
                (s0, m0) = (simd.add_f32s(s0, v), simd.max_f32s(m0, v));
            }
            // The partial load fills the missing lanes with zeros, which add nothing to the sum;
            // the tail's maximum is taken element by element.
            let v = simd.mul_f32s(simd.partial_load_f32s(tail), simd.partial_load_f32s(factor_tail));
            s0 = simd.add_f32s(s0, v);
            let s = simd.add_f32s(simd.add_f32s(s0, s1), simd.add_f32s(s2, s3));
            let m = simd.max_f32s(simd.max_f32s(m0, m1), simd.max_f32s(m2, m3));
            *sum = simd.reduce_sum_f32s(s);
            let tail_max = tail.iter().zip(factor_tail).fold(f32::NEG_INFINITY, |m, (&v, &f)| m.max(v * f));
            *max = simd.reduce_max_f32s(m).max(tail_max);
        }
    }
}

/// Runs `f(tile, x tile, out tile, scratch)` over the map's tiles, which cover `x` and `out`
/// alike.
pub(super) fn for_each_output_tile(
    exec: Exec,
    x: &[i8],
    dims: Dims,
    out: &mut [i8],
    f: impl Fn(Tile, &[i8], &mut [i8], &mut Vec<f32>) + Sync + Send,
) {
    let rows = (TILE_ELEMS / dims.c).max(1);
    let outs = out.chunks_mut(dims.image_len()).flat_map(|image| image.chunks_mut(rows * dims.c));
    let items = tiles(x, dims, outs);
    for_each_tile(exec, x.len(), items, |(tile, x, out), scratch| f(tile, x, out, scratch));
}

/// A tile's shortcut in the int8 epilogue: its rows (laid out like the tile's map), their zero
/// point, and `shortcut_scale / output_scale`.
#[derive(Clone, Copy, Debug)]
pub(super) struct TileShortcut<'a> {
    pub rows: &'a [i8],
    pub zero_point: i32,
    pub factor: f32,
}

impl<'a> TileShortcut<'a> {
    /// Row `r` of rows `len` long.
    pub fn row(self, r: usize, len: usize) -> TileShortcut<'a> {
        TileShortcut { rows: &self.rows[r * len..][..len], ..self }
    }

    /// `-zero_point * factor`: the shortcut's value `j` in units of the output scale is
    /// `rows[j] * factor` plus this.
    #[inline(always)]
    pub fn offset(self) -> f32 {
        -(self.zero_point as f32) * self.factor
    }
}

pub(super) type TileEpilogue<'a> = Epilogue<TileShortcut<'a>>;

/// `out[p, c] = round_to_int8((x[p, c] - zero_point) * factor[c] * row_factor[p] + shortcut[p, c])`
/// (row factor 1 when absent, the shortcut term when the epilogue has one, then clamped below at
/// the output zero point, a real 0, for its ReLU) over rows of `factor.len()` values: the output
/// quantization's division folded into `factor`. One rounding to int8, where a separate ADD
/// rounds twice. In float32, `((x - zero_point) * factor) * row_factor + offset` and
/// `shortcut * shortcut factor + that` are fused multiply-adds (the shortcut's zero point is in
/// `offset`, see [`TileShortcut::offset`]): two fewer vector instructions per 16 values in
/// the AVX-512 pass than a separate dequantization of the shortcut.
/// `in_range`: what [`in_range`] says of `factor` and `row_factor` (or of larger values) and of
/// the shortcut's factor.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // `in_range` serves AVX-512 only
pub(super) fn scale_rows(level: Level, x: &[i8], zero_point: i32, factor: &[f32], row_factor: Option<&[f32]>, in_range: bool, output_zero_point: i32, epilogue: TileEpilogue, out: &mut [i8]) {
    if uses_avx512(level) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `uses_avx512` checked that the CPU has AVX-512.
        return unsafe { super::avx512::scale_rows(x, zero_point, factor, row_factor, in_range, output_zero_point, epilogue, out) };
    }
    level.dispatch(ScaleRows { x, zero_point, factor, row_factor, output_zero_point, epilogue, out });
}

/// Whether every `(x - zero_point) * factor[c] * row_factor[r]` is a finite number of
/// magnitude below 2^24, whatever the int8 values: then rounding it cannot overflow an `i32`
/// and the AVX-512 output pass leaves the clamping and NaN handling to its saturating packs.
pub(super) fn in_range(factor: &[f32], row_factor: &[f32]) -> bool {
    let largest = |v: &[f32]| v.iter().try_fold(0.0f32, |m, &v| v.is_finite().then(|| m.max(v.abs())));
    match (largest(factor), largest(row_factor)) {
        (Some(f), Some(g)) => 256.0 * f as f64 * g as f64 * (1.0 + 1e-6) < (1 << 24) as f64,
        _ => false,
    }
}

/// Whether the spatial pooling and the output pass run on [`super::avx512`]: at the AVX-512 level, on a CPU that has
/// it (the level's existence already says so; checked again where it is relied on).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(super) fn uses_avx512(level: Level) -> bool {
    #[cfg(target_arch = "x86_64")]
    return level.name() == "avx512" && super::avx512::available();
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

struct ScaleRows<'a> {
    x: &'a [i8],
    zero_point: i32,
    factor: &'a [f32],
    row_factor: Option<&'a [f32]>,
    output_zero_point: i32,
    epilogue: TileEpilogue<'a>,
    out: &'a mut [i8],
}

impl WithSimd for ScaleRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self { x, zero_point, factor, row_factor, output_zero_point, epilogue, out } = self;
        let c = factor.len();
        for (r, (row, out)) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)).enumerate() {
            let g = row_factor.map_or(1.0, |s| s[r]);
            let epilogue = Epilogue { shortcut: epilogue.shortcut.map(|s| s.row(r, c)), ..epilogue };
            scale_row(row, zero_point, factor, g, output_zero_point, epilogue, out);
        }
    }
}

/// One row's int8 output: see [`scale_rows`]; `epilogue` is this row's (see [`TileShortcut::row`]).
#[inline(always)]
pub(super) fn scale_row(row: &[i8], zero_point: i32, factor: &[f32], g: f32, output_zero_point: i32, epilogue: TileEpilogue, out: &mut [i8]) {
    let floor = if epilogue.relu { output_zero_point as i8 } else { i8::MIN };
    let offset = epilogue.shortcut.map_or(0.0, TileShortcut::offset);
    for (j, ((o, &q), &f)) in out.iter_mut().zip(row).zip(factor).enumerate() {
        let v = ((q as i32 - zero_point) as f32 * f).mul_add(g, offset);
        let v = epilogue.shortcut.map_or(v, |s| (s.rows[j] as f32).mul_add(s.factor, v));
        *o = round_to_int8(v, output_zero_point).max(floor);
    }
}
