//! Per-column sums and maxima down the rows of a matrix (NHWC channel pooling: rows are pixels;
//! NCHW spatial pooling: rows are channels).
//!
//! Accumulating into per-column memory would load and store two accumulators for every vector
//! read, which halves the speed on AVX-512; instead a tile of rows is reduced with the sums and
//! maxima of a few vectors held in registers, and only the tile's result is added to memory.
//! Accuracy: sequential within a tile ([`TILE_ROWS`]), sequential over the tiles of a leaf
//! ([`LEAF_ROWS`]), pairwise over leaves. Threads split the tree's top levels (or, for few
//! rows, the columns), so the result does not depend on the thread count.

use crate::exec::Exec;
use crate::simd::prefetch;
use pulp::{Simd, WithSimd};
use std::ops::Range;

/// Rows reduced in registers before their sums reach memory.
const TILE_ROWS: usize = 16;
/// Rows of one leaf of the pairwise tree.
const LEAF_ROWS: usize = 256;
/// Maps of at least this many floats (16 MiB, half the L3 cache of the benchmark machine) are
/// taken to come from memory. Prefetching costs about 10% on a map in the cache and saves about
/// 40% on one in memory (8x56x56x256 channel pooling).
pub(crate) const FROM_MEMORY_ELEMS: usize = 1 << 22;
/// Only tiles of at most this many floats (half of a 32 KiB L1) prefetch the next tile: wider
/// ones would evict the lines before their use.
const PREFETCH_MAX_TILE: usize = 4096;
/// Column ranges given to threads are multiples of this (whole vectors at every level).
const COLUMN_ALIGN: usize = 16;

/// Per-column sum and max of the rows of `x` (`row_len` long, row `r` multiplied by
/// `row_scale[r]` when given) into `sum` and `max` (`row_len` each). `from_memory`: whether `x`
/// is part of a map too large for the cache (see [`FROM_MEMORY_ELEMS`]), which turns on
/// software prefetching.
pub(crate) fn columns(
    exec: Exec,
    x: &[f32],
    row_len: usize,
    row_scale: Option<&[f32]>,
    from_memory: bool,
    sum: &mut [f32],
    max: &mut [f32],
) {
    let prefetch = from_memory && TILE_ROWS * row_len <= PREFETCH_MAX_TILE;
    let matrix = Matrix { x, row_len, row_scale, prefetch };
    let rows = matrix.rows();
    // Bands of whole rows where there are enough (each thread then streams one contiguous part
    // of the map; split columns interleave the threads' reads within every row) or too few
    // columns to share.
    let split_rows = exec.splits(x.len()) && (rows >= 2 * LEAF_ROWS * exec.threads || (row_len < 2 * COLUMN_ALIGN && rows > LEAF_ROWS));
    if split_rows {
        // The tree's top levels: bands that are its subtrees at one depth, reduced in parallel,
        // then combined pairwise as the tree does; so the result is the same on any thread count.
        let mut bands = Vec::with_capacity(8 * exec.threads);
        bands.push(0..rows);
        // A few bands per thread, claimed as the threads come: a worker that wakes late takes
        // fewer of them.
        while bands.len() < 4 * exec.threads && bands.iter().all(|b| b.len() > LEAF_ROWS) {
            bands = bands.into_iter().flat_map(|b| [b.start..b.start + b.len() / 2, b.start + b.len() / 2..b.end]).collect();
        }
        let mut partial = exec.map(bands, |rows| {
            let (mut sum, mut max) = (vec![0.0; row_len], vec![0.0; row_len]);
            matrix.tree(exec.serial(), rows, 0..row_len, &mut sum, &mut max);
            (sum, max)
        });
        while partial.len() > 1 {
            partial = partial
                .chunks_exact_mut(2)
                .map(|pair| {
                    let [(sum, max), (right_sum, right_max)] = pair else { unreachable!("pairs of two") };
                    combine(sum, max, right_sum, right_max);
                    (std::mem::take(sum), std::mem::take(max))
                })
                .collect();
        }
        let (total_sum, total_max) = partial.pop().expect("one band at least");
        sum.copy_from_slice(&total_sum);
        max.copy_from_slice(&total_max);
    } else if exec.splits(x.len()) && row_len >= 2 * COLUMN_ALIGN {
        let width = row_len.div_ceil(exec.threads).next_multiple_of(COLUMN_ALIGN);
        let serial = exec.serial();
        let parts: Vec<_> = sum.chunks_mut(width).zip(max.chunks_mut(width)).enumerate().collect();
        exec.map(parts, |(i, (sum, max))| {
            let cols = i * width..i * width + sum.len();
            matrix.tree(serial, 0..rows, cols, sum, max);
        });
    } else {
        matrix.tree(exec.serial(), 0..rows, 0..row_len, sum, max);
    }
    matrix.fix_nan_max(sum, max);
}

/// Adds `other_sum` into `sum` and takes the larger of `max` and `other_max`.
fn combine(sum: &mut [f32], max: &mut [f32], other_sum: &[f32], other_max: &[f32]) {
    for (s, r) in sum.iter_mut().zip(other_sum) {
        *s += r;
    }
    for (m, r) in max.iter_mut().zip(other_max) {
        *m = m.max(*r);
    }
}

#[derive(Clone, Copy)]
struct Matrix<'a> {
    x: &'a [f32],
    row_len: usize,
    row_scale: Option<&'a [f32]>,
    prefetch: bool,
}

impl Matrix<'_> {
    fn rows(&self) -> usize {
        self.x.len() / self.row_len
    }

    /// The pairwise tree over `rows`, for the columns `cols` (`sum`, `max`: `cols.len()` each).
    fn tree(self, exec: Exec, rows: Range<usize>, cols: Range<usize>, sum: &mut [f32], max: &mut [f32]) {
        if rows.len() <= LEAF_ROWS {
            exec.level.dispatch(Leaf { matrix: self, rows, cols, sum, max });
            return;
        }
        let mid = rows.start + rows.len() / 2;
        let (mut sum_right, mut max_right) = (vec![0.0; cols.len()], vec![0.0; cols.len()]);
        self.tree(exec, rows.start..mid, cols.clone(), sum, max);
        self.tree(exec, mid..rows.end, cols.clone(), &mut sum_right, &mut max_right);
        combine(sum, max, &sum_right, &max_right);
    }

    /// Columns whose sum came out NaN are rescanned; if one holds a NaN (after scaling), its max
    /// becomes NaN. (A sum is also NaN for +inf plus -inf, whose max stays as computed.)
    fn fix_nan_max(self, sum: &[f32], max: &mut [f32]) {
        for j in (0..self.row_len).filter(|&j| sum[j].is_nan()) {
            let scaled = |(r, row): (usize, &[f32])| row[j] * self.row_scale.map_or(1.0, |s| s[r]);
            if self.x.chunks_exact(self.row_len).enumerate().map(scaled).any(f32::is_nan) {
                max[j] = f32::NAN;
            }
        }
    }
}

/// Overwrites `sum` and `max` with the sums and maxima of columns `cols` over `rows`.
struct Leaf<'a> {
    matrix: Matrix<'a>,
    rows: Range<usize>,
    cols: Range<usize>,
    sum: &'a mut [f32],
    max: &'a mut [f32],
}

impl WithSimd for Leaf<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // Eight vectors of sums and eight of maxima need 16 of AVX-512's 32 registers; with 16
        // registers (AVX2) four of each.
        match (self.matrix.row_scale.is_some(), S::REGISTER_COUNT >= 32) {
            (true, true) => self.prefetching::<S, true, 8>(simd),
            (true, false) => self.prefetching::<S, true, 4>(simd),
            (false, true) => self.prefetching::<S, false, 8>(simd),
            (false, false) => self.prefetching::<S, false, 4>(simd),
        }
    }
}

impl Leaf<'_> {
    /// Prefetching is a separate instantiation: even switched off at run time, its code in the
    /// inner loop costs about 10% on a map in the cache.
    #[inline(always)]
    fn prefetching<S: Simd, const SCALED: bool, const W: usize>(self, simd: S) {
        if self.matrix.prefetch {
            self.run::<S, SCALED, W, true>(simd)
        } else {
            self.run::<S, SCALED, W, false>(simd)
        }
    }

    #[inline(always)]
    fn run<S: Simd, const SCALED: bool, const W: usize, const PREFETCH: bool>(self, simd: S) {
        let Self { matrix, rows, cols, sum, max } = self;
        sum.fill(0.0);
        max.fill(f32::NEG_INFINITY);
        let (sum_head, sum_tail) = S::as_mut_simd_f32s(sum);
        let (max_head, max_tail) = S::as_mut_simd_f32s(max);
        let vectors = sum_head.len();
        let tail_col = cols.start + vectors * S::F32_LANES;
        for start in rows.clone().step_by(TILE_ROWS) {
            let tile = Tile { matrix, rows: start..(start + TILE_ROWS).min(rows.end), first_col: cols.start };
            tile.partial_add::<S, SCALED>(simd, tail_col, sum_tail, max_tail);
            let mut v = 0;
            while v + W <= vectors {
                tile.add_into::<S, SCALED, W, PREFETCH>(simd, v, sum_head, max_head);
                v += W;
            }
            // The rest in halving widths, keeping several independent chains each.
            if W > 4 && v + 4 <= vectors {
                tile.add_into::<S, SCALED, 4, PREFETCH>(simd, v, sum_head, max_head);
                v += 4;
            }
            if v + 2 <= vectors {
                tile.add_into::<S, SCALED, 2, PREFETCH>(simd, v, sum_head, max_head);
                v += 2;
            }
            if v < vectors {
                tile.add_into::<S, SCALED, 1, PREFETCH>(simd, v, sum_head, max_head);
            }
        }
    }
}

impl Matrix<'_> {
    #[inline(always)]
    fn scale<S: Simd>(&self, simd: S, r: usize) -> S::f32s {
        simd.splat_f32s(self.row_scale.map_or(1.0, |s| s[r]))
    }
}

#[derive(Clone)]
struct Tile<'a> {
    matrix: Matrix<'a>,
    rows: Range<usize>,
    first_col: usize,
}

impl Tile<'_> {
    /// Adds the tile's sums and maxima of `sum.len()` (fewer than a vector holds) columns from
    /// column `first` into `sum` and `max`.
    #[inline(always)]
    fn partial_add<S: Simd, const SCALED: bool>(&self, simd: S, first: usize, sum: &mut [f32], max: &mut [f32]) {
        if sum.is_empty() {
            return;
        }
        let (mut s, mut m) = (simd.partial_load_f32s(sum), simd.partial_load_f32s(max));
        for r in self.rows.clone() {
            let row = &self.matrix.x[r * self.matrix.row_len + first..][..sum.len()];
            let v = scaled::<S, SCALED>(simd, simd.partial_load_f32s(row), self.matrix.scale(simd, r));
            s = simd.add_f32s(s, v);
            m = simd.max_f32s(m, v);
        }
        simd.partial_store_f32s(sum, s);
        simd.partial_store_f32s(max, m);
    }

    /// Adds the tile's sums and maxima of vectors `first..first + W` into `sum` and `max`.
    #[inline(always)]
    fn add_into<S: Simd, const SCALED: bool, const W: usize, const PREFETCH: bool>(
        &self,
        simd: S,
        first: usize,
        sum: &mut [S::f32s],
        max: &mut [S::f32s],
    ) {
        let (s, m) = self.reduce::<S, SCALED, W, PREFETCH>(simd, first);
        for k in 0..W {
            sum[first + k] = simd.add_f32s(sum[first + k], s[k]);
            max[first + k] = simd.max_f32s(max[first + k], m[k]);
        }
    }

    /// Sums and maxima down the tile's rows of the `W` vectors from vector `first` of the
    /// column range.
    #[inline(always)]
    fn reduce<S: Simd, const SCALED: bool, const W: usize, const PREFETCH: bool>(
        &self,
        simd: S,
        first: usize,
    ) -> ([S::f32s; W], [S::f32s; W]) {
        let mut sums = [simd.splat_f32s(0.0); W];
        let mut maxes = [simd.splat_f32s(f32::NEG_INFINITY); W];
        let lanes = S::F32_LANES;
        for r in self.rows.clone() {
            let start = r * self.matrix.row_len + self.first_col + first * lanes;
            let vectors = S::as_simd_f32s(&self.matrix.x[start..start + W * lanes]).0;
            // The same columns one tile further down: the tile's strided rows defeat the
            // hardware prefetchers once the map comes from memory rather than the cache.
            let ahead = start + TILE_ROWS * self.matrix.row_len;
            if PREFETCH && ahead + W * lanes <= self.matrix.x.len() {
                for line in self.matrix.x[ahead..ahead + W * lanes].chunks(16) {
                    prefetch(&line[0]);
                }
            }
            let g = self.matrix.scale(simd, r);
            for k in 0..W {
                let v = scaled::<S, SCALED>(simd, vectors[k], g);
                sums[k] = simd.add_f32s(sums[k], v);
                maxes[k] = simd.max_f32s(maxes[k], v);
            }
        }
        (sums, maxes)
    }
}

/// `v * g` when `SCALED`, else `v`.
#[inline(always)]
pub(super) fn scaled<S: Simd, const SCALED: bool>(simd: S, v: S::f32s, g: S::f32s) -> S::f32s {
    if SCALED {
        simd.mul_f32s(v, g)
    } else {
        v
    }
}
