//! BAM's output pass on the int8 map: per pixel, the gate row `scale * (1 + sigmoid(fuse(channel,
//! spatial)))` computed with pulp's vectors into a C-value buffer, then the int8 row scaled by
//! it as in [`super::kernels::scale_rows`].

use super::kernels::{scale_row, uses_avx512, TileEpilogue};
use crate::apply::Epilogue;
use crate::apply::Fusion;
use crate::simd::{sigmoid, Level};
use pulp::{Simd, WithSimd};

/// BAM's gate for one image, from its logits: `x * (1 + sigmoid(fuse(channel[c], spatial[p])))`.
#[derive(Clone, Copy)]
pub(super) enum BamGate<'a> {
    /// The logits and how they are fused.
    Logits { channel: &'a [f32], spatial: &'a [f32], fusion: Fusion },
    /// Sum fusion from `exp(-channel)` and `exp(-spatial)`: `1 + 1 / (1 + row * column)`.
    Factors { channel: &'a [f32], spatial: &'a [f32] },
}

/// BAM's output for the rows of one tile: `round_to_int8((x - zero_point) * scale * gate)`,
/// the gate row computed for each pixel into `scratch` (C values). `in_range`: see
/// [`super::kernels::scale_rows`] (the gate lies in [1, 2] where the logits are finite), as is
/// `epilogue` (the tile's).
#[allow(clippy::too_many_arguments)]
pub(super) fn bam_rows(level: Level, x: &[i8], zero_point: i32, scale: f32, gate: BamGate, in_range: bool, output_zero_point: i32, epilogue: TileEpilogue, out: &mut [i8], scratch: &mut Vec<f32>) {
    let avx512 = uses_avx512(level);
    level.dispatch(BamRows { x, zero_point, scale, gate, in_range, output_zero_point, epilogue, out, scratch, avx512 });
}

struct BamRows<'a> {
    x: &'a [i8],
    zero_point: i32,
    scale: f32,
    gate: BamGate<'a>,
    in_range: bool,
    output_zero_point: i32,
    epilogue: TileEpilogue<'a>,
    out: &'a mut [i8],
    scratch: &'a mut Vec<f32>,
    avx512: bool,
}

impl WithSimd for BamRows<'_> {
    type Output = ();

    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // `in_range` serves AVX-512 only
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { x, zero_point, scale, gate, in_range, output_zero_point, epilogue, out, scratch, avx512 } = self;
        let (BamGate::Logits { channel, spatial, .. } | BamGate::Factors { channel, spatial }) = gate;
        scratch.resize(channel.len(), 0.0);
        let (col_head, col_tail) = S::as_simd_f32s(channel);
        let scale_v = simd.splat_f32s(scale);
        for (r, ((row, out), &s)) in x.chunks_exact(channel.len()).zip(out.chunks_exact_mut(channel.len())).zip(spatial).enumerate() {
            let s_v = simd.splat_f32s(s);
            let row_epilogue = Epilogue { shortcut: epilogue.shortcut.map(|s| s.row(r, channel.len())), ..epilogue };
            let (gate_head, gate_tail) = S::as_mut_simd_f32s(scratch);
            for (g, &c) in gate_head.iter_mut().zip(col_head) {
                *g = simd.mul_f32s(scale_v, bam_gate(simd, gate, c, s_v));
            }
            let last = simd.mul_f32s(scale_v, bam_gate(simd, gate, simd.partial_load_f32s(col_tail), s_v));
            simd.partial_store_f32s(gate_tail, last);
            if avx512 {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `avx512` comes from `uses_avx512`, which checked the CPU.
                unsafe {
                    super::avx512::scale_rows(row, zero_point, scratch, None, in_range, output_zero_point, row_epilogue, out)
                };
            } else {
                scale_row(row, zero_point, scratch, 1.0, output_zero_point, row_epilogue, out);
            }
        }
    }
}

/// `1 + sigmoid(fuse(column, row))` for every lane (see [`BamGate`]).
#[inline(always)]
fn bam_gate<S: Simd>(simd: S, gate: BamGate, column: S::f32s, row: S::f32s) -> S::f32s {
    let one = simd.splat_f32s(1.0);
    match gate {
        BamGate::Logits { fusion, .. } => {
            let logit = match fusion {
                Fusion::Sum => simd.add_f32s(row, column),
                Fusion::Product => simd.mul_f32s(row, column),
            };
            simd.add_f32s(one, sigmoid(simd, logit))
        }
        BamGate::Factors { .. } => simd.add_f32s(one, simd.div_f32s(one, simd.add_f32s(one, simd.mul_f32s(row, column)))),
    }
}
