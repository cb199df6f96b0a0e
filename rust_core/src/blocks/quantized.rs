//! The blocks on int8 NHWC maps with per-tensor quantization: `y = block(s_in * (x - zp_in))`
//! computed in float32, written as `clamp(round_half_to_even(y / s_out) + zp_out, -128, 127)`.
//!
//! [`forward_reference`] is exactly that, through a float copy of the whole map. The blocks'
//! `forward_int8` read the int8 map directly: channel pooling from exact integer sums and int8
//! maxima; CBAM's spatial pooling over `(x - zp_in) * (s_in * g[c])`; the output as
//! `round((x - zp_in) * f[c] * s[p]) + zp_out` with `f[c] = s_in * g[c] / s_out` folded ahead of
//! time (BAM: its gate computed per pixel row, then the same). Only BAM's spatial branch, a
//! chain of convolutions, reads a dequantized copy (one image at a time). The fast paths
//! reassociate the float arithmetic, so they match the reference exactly except, by 1 LSB,
//! where the block's output lies within float32 rounding of a tie (see the tests).

#[cfg(target_arch = "x86_64")]
mod avx512;
mod bam_rows;
#[cfg(test)]
mod bench;
mod kernels;
#[cfg(test)]
mod tests;

use super::bam::Bam;
use super::cbam::{pooled_mlp, Cbam};
use super::squeeze_excite::SqueezeExcite;
use crate::apply::{Epilogue, Fusion};
use crate::exec::Exec;
use crate::layout::{Dims, Layout};
use crate::simd::{neg_exp_in_place, sigmoid_in_place};
use bam_rows::{bam_rows, BamGate};
use kernels::{channel_pool, dequantize_one, for_each_output_tile, in_range, quantize_one, scale_rows, spatial_sum_max, Tile, TileEpilogue, TileShortcut};

/// The per-tensor quantization of a block's input and output: `real = scale * (q - zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantization {
    pub input_scale: f32,
    pub input_zero_point: i32,
    pub output_scale: f32,
    pub output_zero_point: i32,
}

impl Quantization {
    /// From `[input_scale, input_zero_point, output_scale, output_zero_point]`, checked: scales
    /// finite and positive, zero points integers in -128..=127.
    pub fn from_values(values: [f64; 4]) -> Result<Quantization, String> {
        Ok(Quantization {
            input_scale: scale("input_scale", values[0])?,
            input_zero_point: zero_point("input_zero_point", values[1])?,
            output_scale: scale("output_scale", values[2])?,
            output_zero_point: zero_point("output_zero_point", values[3])?,
        })
    }

    fn input(self) -> (f32, i32) {
        (self.input_scale, self.input_zero_point)
    }
}

/// A quantization scale, checked: finite and positive as a float32.
pub fn scale(name: &str, v: f64) -> Result<f32, String> {
    if v.is_finite() && v > 0.0 && (v as f32).is_finite() && v as f32 > 0.0 {
        Ok(v as f32)
    } else {
        Err(format!("{name} must be a finite number > 0, got {v}"))
    }
}

/// A zero point, checked: an integer in -128..=127.
pub fn zero_point(name: &str, v: f64) -> Result<i32, String> {
    if v.fract() == 0.0 && (-128.0..=127.0).contains(&v) {
        Ok(v as i32)
    } else {
        Err(format!("{name} must be an integer in -128..=127, got {v}"))
    }
}

/// The int8 semantics by definition: dequantize the whole map, run `forward` (a float block) on
/// it, quantize its output. Plain scalar loops; the reference the fast paths are tested against.
pub fn forward_reference(q: Quantization, x: &[i8], out: &mut [i8], forward: impl FnOnce(&[f32], &mut [f32])) {
    assert_eq!(x.len(), out.len());
    let xf: Vec<f32> = x.iter().map(|&v| dequantize_one(v, q.input_scale, q.input_zero_point)).collect();
    let mut y = vec![0.0; x.len()];
    forward(&xf, &mut y);
    for (o, y) in out.iter_mut().zip(y) {
        *o = quantize_one(y, q.output_scale, q.output_zero_point);
    }
}

/// The shortcut of the int8 epilogue: an int8 map laid out like the block's input, with its
/// own quantization (`real = scale * (q - zero_point)`). The epilogue's output is quantized with
/// the block's output quantization.
#[derive(Clone, Copy, Debug)]
pub struct QuantizedShortcut<'a> {
    pub map: &'a [i8],
    pub scale: f32,
    pub zero_point: i32,
}

pub type QuantizedEpilogue<'a> = Epilogue<QuantizedShortcut<'a>>;

fn check(x: &[i8], dims: Dims, channels: usize, epilogue: QuantizedEpilogue, out: &[i8]) {
    assert!(dims.layout == Layout::ChannelsLast, "int8 blocks take NHWC maps");
    assert!(dims.c == channels && x.len() == dims.len() && out.len() == x.len());
    assert!(epilogue.shortcut.is_none_or(|s| s.map.len() == x.len()));
}

/// The part of `epilogue` for one output tile, its shortcut rescaled to the output's units.
fn tile_epilogue<'a>(epilogue: QuantizedEpilogue<'a>, q: Quantization, dims: Dims, tile: Tile) -> TileEpilogue<'a> {
    let shortcut = epilogue.shortcut.map(|s| TileShortcut {
        rows: &s.map[(tile.n * dims.pixels() + tile.first) * dims.c..][..tile.rows * dims.c],
        zero_point: s.zero_point,
        factor: (s.scale as f64 / q.output_scale as f64) as f32,
    });
    Epilogue { shortcut, relu: epilogue.relu }
}

/// Whether the shortcut term of `epilogue` keeps the output pass in range (see [`in_range`]).
fn shortcut_in_range(epilogue: QuantizedEpilogue, q: Quantization) -> bool {
    epilogue.shortcut.is_none_or(|s| in_range(&[s.scale / q.output_scale], &[1.0]))
}

/// The per-channel factors of the output pass, `input_scale * gate[n, c] / output_scale` (the
/// gate 1 where absent), for `len` = N * C values.
fn output_factors(q: Quantization, gates: Option<&[f32]>, len: usize) -> Vec<f32> {
    let factor = |g: f32| (q.input_scale as f64 * g as f64 / q.output_scale as f64) as f32;
    match gates {
        Some(gates) => gates.iter().map(|&g| factor(g)).collect(),
        None => vec![factor(1.0); len],
    }
}

impl Cbam {
    /// `out` = the block applied to the int8 NHWC map `x` (see the module documentation).
    pub fn forward_int8(&self, exec: Exec, x: &[i8], dims: Dims, q: Quantization, out: &mut [i8]) {
        self.forward_int8_with(exec, x, dims, q, Epilogue::NONE, out);
    }

    /// The same, then `epilogue` (in the same output pass).
    pub fn forward_int8_with(&self, exec: Exec, x: &[i8], dims: Dims, q: Quantization, epilogue: QuantizedEpilogue, out: &mut [i8]) {
        check(x, dims, self.channels(), epilogue, out);
        if dims.is_empty() {
            return;
        }
        let (scale, zero_point) = q.input();
        exec.run(|| {
            let gates = self.channel.as_ref().map(|gate| {
                let (mean, max) = channel_pool(exec.for_pooling(x.len()), x, dims, scale, zero_point);
                gate.gates(exec, &mean, &max)
            });
            let spatial = self.spatial.as_ref().map(|conv| {
                let factor = match &gates {
                    Some(g) => g.iter().map(|&g| scale * g).collect(),
                    None => vec![scale; dims.n * dims.c],
                };
                let mut sum = vec![0.0; dims.n * dims.pixels()];
                let mut max = vec![0.0; sum.len()];
                spatial_sum_max(exec, x, dims, zero_point, &factor, &mut sum, &mut max);
                let mut maps = vec![0.0; sum.len()];
                for ((mean, max), map) in sum.chunks_exact_mut(dims.pixels()).zip(max.chunks_exact(dims.pixels())).zip(maps.chunks_exact_mut(dims.pixels())) {
                    mean.iter_mut().for_each(|m| *m /= dims.c as f32);
                    conv.forward(exec.level, max, mean, dims.h, dims.w, map);
                }
                sigmoid_in_place(exec.level, &mut maps);
                maps
            });
            let factors = output_factors(q, gates.as_deref(), dims.n * dims.c);
            let in_range = in_range(&factors, spatial.as_deref().unwrap_or(&[1.0])) && shortcut_in_range(epilogue, q);
            for_each_output_tile(exec, x, dims, out, |tile, x, out, _| {
                let factor = &factors[tile.n * dims.c..][..dims.c];
                let rows = spatial.as_ref().map(|s| &s[tile.n * dims.pixels() + tile.first..][..tile.rows]);
                scale_rows(exec.level, x, zero_point, factor, rows, in_range, q.output_zero_point, tile_epilogue(epilogue, q, dims, tile), out);
            });
        });
    }
}

impl SqueezeExcite {
    /// `out` = the block applied to the int8 NHWC map `x` (see the module documentation).
    pub fn forward_int8(&self, exec: Exec, x: &[i8], dims: Dims, q: Quantization, out: &mut [i8]) {
        self.forward_int8_with(exec, x, dims, q, Epilogue::NONE, out);
    }

    /// The same, then `epilogue` (in the same output pass).
    pub fn forward_int8_with(&self, exec: Exec, x: &[i8], dims: Dims, q: Quantization, epilogue: QuantizedEpilogue, out: &mut [i8]) {
        check(x, dims, self.channels(), epilogue, out);
        if dims.is_empty() {
            return;
        }
        exec.run(|| {
            let (mean, _) = channel_pool(exec.for_pooling(x.len()), x, dims, q.input_scale, q.input_zero_point);
            let mut gates = pooled_mlp(exec, &mean, dims, &[&self.reduce, &self.expand]);
            sigmoid_in_place(exec.level, &mut gates);
            let factors = output_factors(q, Some(&gates), gates.len());
            let in_range = in_range(&factors, &[1.0]) && shortcut_in_range(epilogue, q);
            for_each_output_tile(exec, x, dims, out, |tile, x, out, _| {
                let factor = &factors[tile.n * dims.c..][..dims.c];
                scale_rows(exec.level, x, q.input_zero_point, factor, None, in_range, q.output_zero_point, tile_epilogue(epilogue, q, dims, tile), out);
            });
        });
    }
}

/// BAM's sum fusion factors `exp(-logit)` while every logit is at most this large, as the float
/// block does (`exp` clamps its argument beyond 86).
const BAM_FACTOR_LIMIT: f32 = 40.0;

impl Bam {
    /// `out` = the block applied to the int8 NHWC map `x` (see the module documentation). The
    /// spatial branch's convolutions read a dequantized copy of one image at a time.
    pub fn forward_int8(&self, exec: Exec, x: &[i8], dims: Dims, q: Quantization, out: &mut [i8]) {
        self.forward_int8_with(exec, x, dims, q, Epilogue::NONE, out);
    }

    /// The same, then `epilogue` (in the same output pass).
    pub fn forward_int8_with(&self, exec: Exec, x: &[i8], dims: Dims, q: Quantization, epilogue: QuantizedEpilogue, out: &mut [i8]) {
        check(x, dims, self.channels(), epilogue, out);
        if dims.is_empty() {
            return;
        }
        let (scale, zero_point) = q.input();
        exec.run(|| {
            let (mean, _) = channel_pool(exec.for_pooling(x.len()), x, dims, scale, zero_point);
            let layers: Vec<_> = self.channel_mlp.iter().collect();
            let mut channel_logits = pooled_mlp(exec, &mean, dims, &layers);

            let pixels = dims.pixels();
            let mut spatial_logits = vec![0.0; dims.n * pixels];
            let mut image = vec![0.0; dims.image_len()];
            let image_dims = Dims { n: 1, ..dims };
            for (x, logits) in x.chunks_exact(dims.image_len()).zip(spatial_logits.chunks_exact_mut(pixels)) {
                kernels::dequantize(exec.level, x, scale, zero_point, &mut image);
                self.spatial_logits(exec, &image, image_dims, logits);
            }

            let factors = self.fusion == Fusion::Sum && channel_logits.iter().chain(&spatial_logits).all(|v| v.abs() <= BAM_FACTOR_LIMIT);
            if factors {
                neg_exp_in_place(exec.level, &mut channel_logits);
                neg_exp_in_place(exec.level, &mut spatial_logits);
            }
            let output_scale = scale / q.output_scale;
            let finite = channel_logits.iter().chain(&spatial_logits).all(|v| v.is_finite());
            let in_range = finite && in_range(&[2.0 * output_scale], &[1.0]) && shortcut_in_range(epilogue, q);
            for_each_output_tile(exec, x, dims, out, |tile, x, out, scratch| {
                let channel = &channel_logits[tile.n * dims.c..][..dims.c];
                let spatial = &spatial_logits[tile.n * pixels + tile.first..][..tile.rows];
                let gate = if factors { BamGate::Factors { channel, spatial } } else { BamGate::Logits { channel, spatial, fusion: self.fusion } };
                bam_rows(exec.level, x, zero_point, output_scale, gate, in_range, q.output_zero_point, tile_epilogue(epilogue, q, dims, tile), out, scratch);
            });
        });
    }
}
