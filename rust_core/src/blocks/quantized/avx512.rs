//! The channel pooling, CBAM's spatial pooling and the output pass with AVX-512 intrinsics.
//!
//! Output: compiled for AVX-512, the element loop of
//! [`scale_row`] narrows every 16 results with a memory-destination `vpmovsdb`, which on
//! AMD Zen 4 costs several cycles each and made the pass compute-bound (140 us at
//! 1x56x56x256); here four vectors of results are packed with two saturating packs and one
//! permutation into a single 64-byte store. Same arithmetic, same rounding (to nearest, ties
//! to even), same clamping as [`scale_row`], so the results are identical.

use super::kernels::{scale_row, TileEpilogue, TileShortcut};
use crate::apply::Epilogue;
use core::arch::x86_64::*;

/// Whether this CPU has the instructions [`scale_rows`] uses: pulp's AVX-512 level (F, BW, CD,
/// DQ, VL), detected at run time.
pub(super) fn available() -> bool {
    pulp::x86::V4::try_new().is_some()
}

/// [`super::kernels::scale_rows`] on AVX-512.
///
/// # Safety
/// The CPU must support AVX-512 F and BW (see [`available`]).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn scale_rows(x: &[i8], zero_point: i32, factor: &[f32], row_factor: Option<&[f32]>, in_range: bool, output_zero_point: i32, epilogue: TileEpilogue, out: &mut [i8]) {
    let c = factor.len();
    for (r, (row, out)) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)).enumerate() {
        let g = row_factor.map_or(1.0, |s| s[r]);
        let epilogue = Epilogue { shortcut: epilogue.shortcut.map(|s| s.row(r, c)), ..epilogue };
        let done = if in_range {
            scale_row_blocks::<false>(row, zero_point, factor, g, output_zero_point, epilogue, out)
        } else {
            scale_row_blocks::<true>(row, zero_point, factor, g, output_zero_point, epilogue, out)
        };
        let rest = Epilogue { shortcut: epilogue.shortcut.map(|s| TileShortcut { rows: &s.rows[done..], ..s }), ..epilogue };
        scale_row(&row[done..], zero_point, &factor[done..], g, output_zero_point, rest, &mut out[done..]);
    }
}

/// The leading whole blocks of 64 elements of one row; returns how many elements it wrote.
/// `CHECKED`: the results may be NaN or out of range (see [`super::kernels::in_range`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn scale_row_blocks<const CHECKED: bool>(row: &[i8], zero_point: i32, factor: &[f32], g: f32, output_zero_point: i32, epilogue: TileEpilogue, out: &mut [i8]) -> usize {
    let len = row.len().min(factor.len()).min(out.len()).min(epilogue.shortcut.map_or(usize::MAX, |s| s.rows.len()));
    let shortcut = epilogue.shortcut.map(|s| (s.rows, _mm512_set1_ps(s.factor)));
    let offset = _mm512_set1_ps(epilogue.shortcut.map_or(0.0, TileShortcut::offset));
    // The ReLU: every packed result at least the output zero point (a real 0).
    let floor = _mm512_set1_epi8(if epilogue.relu { output_zero_point as i8 } else { i8::MIN });
    let (zp, zp_out, g) = (_mm512_set1_epi32(zero_point), _mm512_set1_epi16(output_zero_point as i16), _mm512_set1_ps(g));
    let (low, high) = (_mm512_set1_ps(-256.0), _mm512_set1_ps(256.0));
    // After the two packs, 128-bit lane k holds bytes 4k..4k+4 of each of the four vectors,
    // one dword each: this gathers every vector's 16 bytes back together, in order.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let blocks = len / 64;
    for b in 0..blocks {
        let quarter = |k: usize| {
            let i = 64 * b + 16 * k;
            // SAFETY: i + 16 <= 64 * blocks <= len, within `row` and `factor`; unaligned loads.
            let (q, f) = unsafe { (_mm_loadu_si128(row.as_ptr().add(i).cast()), _mm512_loadu_ps(factor.as_ptr().add(i))) };
            let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepi8_epi32(q), zp));
            // The same multiplications and fused multiply-adds as `scale_row`, in its order.
            let v = _mm512_fmadd_ps(_mm512_mul_ps(v, f), g, offset);
            let v = match shortcut {
                // SAFETY: i + 16 <= len <= the shortcut row's length; an unaligned load.
                Some((rows, factor)) => {
                    let s = unsafe { _mm_loadu_si128(rows.as_ptr().add(i).cast()) };
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(s)), factor, v)
                }
                None => v,
            };
            // NaN to 0, then clamped to +-256 (every zero point saturates beyond), as in
            // round_to_int8; needless (and a third of the work) when the values are in range.
            let v = if CHECKED { _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), v) } else { v };
            let v = if CHECKED { _mm512_min_ps(_mm512_max_ps(v, low), high) } else { v };
            _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v)
        };
        // Saturating packs, i32 to i16 to i8, i.e. the clamp to -128..=127, with the zero point
        // added in between on 32 i16 lanes (saturating: whatever saturates there, |zp| <= 128
        // cannot bring back within int8), where adding it on i32 lanes took twice the additions.
        let (first, second) = (_mm512_packs_epi32(quarter(0), quarter(1)), _mm512_packs_epi32(quarter(2), quarter(3)));
        let packed = _mm512_max_epi8(_mm512_packs_epi16(_mm512_adds_epi16(first, zp_out), _mm512_adds_epi16(second, zp_out)), floor);
        // SAFETY: 64 * b + 64 <= len <= out.len(); an unaligned store.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(64 * b).cast(), _mm512_permutexvar_epi32(order, packed)) };
    }
    64 * blocks
}

/// [`super::kernels::spatial_sum_max`]'s per-pixel reduction on AVX-512: for every row of
/// `factor.len()` values, the sum and max of `(x - zero_point) * factor[c]`, widened in
/// registers (the portable path widens a row into a float buffer first).
///
/// # Safety
/// The CPU must support AVX-512 F and BW (see [`available`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn scaled_sum_max(x: &[i8], zero_point: i32, factor: &[f32], sum: &mut [f32], max: &mut [f32]) {
    let c = factor.len();
    let zp = _mm512_set1_epi32(zero_point);
    let vectors = c / 16;
    let element = |row: &[i8], i: usize| {
        // SAFETY: callers pass i + 16 <= 16 * vectors <= c, the length of `row` and `factor`.
        let (q, f) = unsafe { (_mm_loadu_si128(row.as_ptr().add(i).cast()), _mm512_loadu_ps(factor.as_ptr().add(i))) };
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepi8_epi32(q), zp)), f)
    };
    for ((row, sum), max) in x.chunks_exact(c).zip(sum).zip(max) {
        // Four accumulators of each, so that the additions do not wait on one another.
        let mut s = [_mm512_setzero_ps(); 4];
        let mut m = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
        for quad in 0..vectors / 4 {
            for k in 0..4 {
                let v = element(row, 64 * quad + 16 * k);
                (s[k], m[k]) = (_mm512_add_ps(s[k], v), _mm512_max_ps(m[k], v));
            }
        }
        for i in (vectors / 4 * 4..vectors).map(|v| 16 * v) {
            let v = element(row, i);
            (s[0], m[0]) = (_mm512_add_ps(s[0], v), _mm512_max_ps(m[0], v));
        }
        let total = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3]));
        let largest = _mm512_max_ps(_mm512_max_ps(m[0], m[1]), _mm512_max_ps(m[2], m[3]));
        (*sum, *max) = (_mm512_reduce_add_ps(total), _mm512_reduce_max_ps(largest));
        for (&q, &f) in row[16 * vectors..].iter().zip(&factor[16 * vectors..]) {
            let v = (q as i32 - zero_point) as f32 * f;
            *sum += v;
            *max = max.max(v);
        }
    }
}

/// Rows summed in `i16` lanes before the sums move to the `i32` totals: 256 * -128 = -32768 and
/// 256 * 127 still fit.
const I16_ROWS: usize = 256;

/// [`super::kernels`]' channel pooling on AVX-512: adds the column sums of the rows (`sum.len()`
/// long) of `x` to `sum` and their maxima into `max`. Strips of up to 256 columns are kept in
/// registers: the sums in `i16` lanes for up to [`I16_ROWS`] rows (two additions per 64 int8
/// values, where widening to `i32` took four), the maxima on all 64 int8 lanes.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VL (see [`available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn sum_max(x: &[i8], sum: &mut [i32], max: &mut [i8]) {
    let c = sum.len().min(max.len());
    for first in (0..c).step_by(256) {
        let width = (c - first).min(256);
        match width.div_ceil(64) {
            1 => sum_max_strip::<1>(x, c, first, width, sum, max),
            2 => sum_max_strip::<2>(x, c, first, width, sum, max),
            3 => sum_max_strip::<3>(x, c, first, width, sum, max),
            _ => sum_max_strip::<4>(x, c, first, width, sum, max),
        }
    }
}

/// [`sum_max`] over the columns `first..first + width` (`N` vectors of 64 of them, the last
/// one masked).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn sum_max_strip<const N: usize>(x: &[i8], c: usize, first: usize, width: usize, sum: &mut [i32], max: &mut [i8]) {
    assert!(width <= 64 * N && first + width <= sum.len().min(max.len()) && sum.len() == c);
    // The columns of vector k present in the strip, one bit each.
    let masks: [u64; N] = core::array::from_fn(|k| match width.saturating_sub(64 * k) {
        w if w >= 64 => u64::MAX,
        w => (1u64 << w) - 1,
    });
    let rows = x.len() / c;
    let base = x.as_ptr();
    // SAFETY (loads and stores below): masked lanes are not accessed; the unmasked bytes of
    // vector k in row r are columns first + 64k + j < first + width <= c of that row, within
    // `x` since r < rows = x.len() / c; of `sum` and `max` likewise within their `c` values.
    let mut largest: [__m512i; N] = core::array::from_fn(|k| unsafe { _mm512_maskz_loadu_epi8(masks[k], max.as_ptr().add(first + 64 * k)) });
    for block in (0..rows).step_by(I16_ROWS) {
        let mut sums = [[_mm512_setzero_si512(); 2]; N];
        for r in block..(block + I16_ROWS).min(rows) {
            for k in 0..N {
                let p = unsafe { base.add(r * c + first + 64 * k) };
                let (low, high) = (masks[k] as u32, (masks[k] >> 32) as u32);
                let v = unsafe { _mm512_maskz_loadu_epi8(masks[k], p) };
                largest[k] = _mm512_max_epi8(largest[k], v);
                let (a, b) = unsafe { (_mm256_maskz_loadu_epi8(low, p), _mm256_maskz_loadu_epi8(high, p.add(32))) };
                sums[k][0] = _mm512_add_epi16(sums[k][0], _mm512_cvtepi8_epi16(a));
                sums[k][1] = _mm512_add_epi16(sums[k][1], _mm512_cvtepi8_epi16(b));
            }
        }
        for (k, halves) in sums.iter().enumerate() {
            for (h, &half) in halves.iter().enumerate() {
                for (j, part) in [_mm512_castsi512_si256(half), _mm512_extracti64x4_epi64::<1>(half)].into_iter().enumerate() {
                    let offset = 64 * k + 32 * h + 16 * j;
                    let mask = (masks[k] >> (32 * h + 16 * j)) as u16;
                    let p = unsafe { sum.as_mut_ptr().add(first + offset) };
                    let total = _mm512_add_epi32(unsafe { _mm512_maskz_loadu_epi32(mask, p) }, _mm512_cvtepi16_epi32(part));
                    unsafe { _mm512_mask_storeu_epi32(p, mask, total) };
                }
            }
        }
    }
    for (k, &v) in largest.iter().enumerate() {
        unsafe { _mm512_mask_storeu_epi8(max.as_mut_ptr().add(first + 64 * k), masks[k], v) };
    }
}
