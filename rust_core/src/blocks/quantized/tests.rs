//! The int8 fast paths against [`forward_reference`] on every level, odd sizes, SIMD tails,
//! channels of 1, batches, saturation and zero points at both ends.
//!
//! Where they may differ, and so the tolerance: the fast paths pool channels from exact integer
//! sums (the reference sums float32 values, rounding on the way), sum the spatial pooling in
//! another order, and fold the input scale, the gates and the output scale into per-channel
//! factors (the reference multiplies them one after the other). So their results differ from
//! the reference's in the last bits of float32, which moves an output that lies within that
//! distance of a rounding tie by 1 LSB, and no other. Such ties are common: with the first test
//! quantization `s_in / s_out = 1.5` exactly, so wherever a gate saturates at 0 or 1 half the
//! values are ties. The tests check that every output off by one is at a tie of the float
//! block's own output.

use super::kernels::{channel_pool, dequantize_one, in_range, quantize_one, scale_rows, spatial_sum_max, TileEpilogue, TileShortcut};
use crate::apply::Epilogue;
use crate::simd::Level;
use super::*;
use crate::apply::Fusion;
use crate::blocks::cbam::ChannelGate;
use crate::blocks::conv::{Conv2d, PoolConv};
use crate::blocks::matmul::Dense;
use crate::test_util::{data, execs};

pub(super) fn int8(len: usize, seed: u64) -> Vec<i8> {
    data(len, seed).iter().map(|v| (v * 64.0).clamp(-128.0, 127.0) as i8).collect()
}

pub(super) fn dense(inputs: usize, outputs: usize, relu: bool, seed: u64) -> Dense {
    Dense::new(&data(inputs * outputs, seed), &data(outputs, seed + 1), inputs, relu).unwrap()
}

fn cbam(c: usize, channel: bool, spatial: bool) -> Cbam {
    let hidden = (c / 4).max(1);
    let gate = channel.then(|| ChannelGate::new(dense(c, hidden, true, 1), dense(hidden, c, false, 3), true, true).unwrap());
    let conv = spatial.then(|| PoolConv::new(&data(7 * 7 * 2, 5), 7, 0.1).unwrap());
    Cbam::new(gate, conv, c).unwrap()
}

fn bam(c: usize, fusion: Fusion) -> Bam {
    let r = (c / 4).max(1);
    let conv = |size, inputs, outputs, dilation, relu, seed| {
        let k: Vec<f32> = data(size * size * inputs * outputs, seed).iter().map(|v| v * 0.3).collect();
        Conv2d::new(&k, size, inputs, &data(outputs, seed + 1), dilation, relu).unwrap()
    };
    let convs = vec![conv(1, c, r, 1, true, 10), conv(3, r, r, 2, true, 12), conv(1, r, 1, 1, false, 14)];
    Bam::new(vec![dense(c, r, true, 20), dense(r, c, false, 22)], convs, fusion).unwrap()
}

/// Quantizations that put the zero points at both ends and make the output saturate.
fn quantizations() -> [Quantization; 3] {
    let q = |s_in, zp_in, s_out, zp_out| Quantization { input_scale: s_in, input_zero_point: zp_in, output_scale: s_out, output_zero_point: zp_out };
    [q(0.03, 3, 0.02, -5), q(0.02, -128, 0.004, 127), q(0.05, 127, 0.01, -128)]
}

/// Shapes of `c` channels with odd H * W, a single pixel and batches; with 256 channels, also
/// one map large enough (2^20 elements) to be split across threads.
fn shapes(c: usize) -> Vec<Dims> {
    let d = |n, h, w| Dims { n, h, w, c, layout: Layout::ChannelsLast };
    let mut shapes = vec![d(2, 9, 11), d(1, 7, 5), d(3, 1, 1), d(2, 13, 13)];
    if c == 256 {
        shapes.push(d(1, 64, 64));
    }
    shapes
}

type Forward<'a> = dyn Fn(Exec, &[f32], Dims, &mut [f32]) + 'a;
type ForwardInt8<'a> = dyn Fn(Exec, &[i8], Dims, Quantization, &mut [i8]) + 'a;

/// How close to a rounding tie (in output steps) the float block's result must lie where the
/// fast path's output is off by one: far more than float32 rounding moves it, far less than a
/// wrong factor would.
const NEAR_TIE: f64 = 0.01;

/// Asserts that the fast path is within 1 LSB of the reference everywhere, on every shape and
/// quantization, off by one only where the float block's output lies within [`NEAR_TIE`] of
/// a rounding tie, and that the outputs saturate (so the clamp is exercised).
fn check_block(name: &str, channels: usize, float: &Forward, fast: &ForwardInt8) {
    let mut saturated = false;
    for dims in shapes(channels) {
        let x = int8(dims.len(), dims.len() as u64);
        // The large map once: it is there for the threads' split.
        for q in quantizations().into_iter().take(if dims.len() >= 1 << 20 { 1 } else { 3 }) {
            let mut want = vec![0; x.len()];
            forward_reference(q, &x, &mut want, |xf, y| float(Exec::single(), xf, dims, y));
            let xf: Vec<f32> = x.iter().map(|&v| dequantize_one(v, q.input_scale, q.input_zero_point)).collect();
            let mut y = vec![0.0; x.len()];
            float(Exec::single(), &xf, dims, &mut y);
            for exec in execs() {
                let mut got = vec![0; x.len()];
                fast(exec, &x, dims, q, &mut got);
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    let steps = y[i] as f64 / q.output_scale as f64;
                    let from_tie = (steps - steps.floor() - 0.5).abs();
                    let ok = g == w || ((g as i32 - w as i32).abs() == 1 && from_tie <= NEAR_TIE);
                    assert!(ok, "{name} {dims:?} {q:?} {}: [{i}] got {g}, want {w} ({steps} steps)", exec.level.name());
                }
            }
            saturated |= want.iter().any(|&v| v == 127 || v == -128);
        }
    }
    assert!(saturated, "{name} with {channels} channels: nothing saturates");
}

#[test]
fn cbam_fast_paths_match_the_reference() {
    for c in [24, 17, 1, 33, 256] {
        for (channel, spatial) in [(true, true), (true, false), (false, true)] {
            let block = cbam(c, channel, spatial);
            let name = format!("cbam channel={channel} spatial={spatial}");
            check_block(&name, c, &|e, x, d, y| block.forward(e, x, d, y), &|e, x, d, q, y| block.forward_int8(e, x, d, q, y));
        }
    }
}

#[test]
fn squeeze_excite_fast_path_matches_the_reference() {
    for c in [24, 17, 1, 33, 256] {
        let block = SqueezeExcite::new(dense(c, (c / 4).max(1), true, 30), dense((c / 4).max(1), c, false, 32)).unwrap();
        check_block("se", c, &|e, x, d, y| block.forward(e, x, d, y), &|e, x, d, q, y| block.forward_int8(e, x, d, q, y));
    }
}

#[test]
fn bam_fast_path_matches_the_reference() {
    for c in [24, 17, 1, 33, 256] {
        for fusion in [Fusion::Sum, Fusion::Product] {
            let block = bam(c, fusion);
            let name = format!("bam {fusion:?}");
            check_block(&name, c, &|e, x, d, y| block.forward(e, x, d, y), &|e, x, d, q, y| block.forward_int8(e, x, d, q, y));
        }
    }
}

#[test]
fn quantize_rounds_half_to_even_and_saturates() {
    let q = |y| quantize_one(y, 0.5, 10);
    // y / 0.5 = 0.5, 1.5, 2.5, -0.5, -1.5: ties go to the even neighbour.
    assert_eq!([q(0.25), q(0.75), q(1.25), q(-0.25), q(-0.75)], [10, 12, 12, 10, 8]);
    assert_eq!([q(1e9), q(-1e9), q(f32::INFINITY), q(f32::NEG_INFINITY), q(f32::NAN)], [127, -128, 127, -128, 10]);
    assert_eq!(quantize_one(1e9, 1e-3, 127), 127);
    assert_eq!(quantize_one(-1e9, 1e-3, -128), -128);
}

#[test]
fn channel_pool_is_exact_past_the_i32_blocks() {
    // 70001 pixels of one channel: more rows than one i32 block sums.
    let dims = Dims { n: 2, h: 1, w: 70_001, c: 1, layout: Layout::ChannelsLast };
    let mut x = vec![127i8; dims.len()];
    x[dims.len() - 1] = -128;
    for exec in execs() {
        let (mean, max) = channel_pool(exec, &x, dims, 0.5, -3);
        let last_sum = 127.0 * 70_000.0 - 128.0;
        assert_eq!(mean, vec![0.5 * (127.0 + 3.0), (0.5 * (last_sum / 70_001.0 + 3.0)) as f32]);
        assert_eq!(max, vec![65.0, 65.0]);
    }
}

#[test]
fn quantization_values_are_checked() {
    assert_eq!(Quantization::from_values([0.5, -3.0, 0.25, 127.0]).unwrap().output_zero_point, 127);
    let err = |v| Quantization::from_values(v).unwrap_err();
    assert!(err([0.0, 0.0, 1.0, 0.0]).contains("input_scale must be a finite number > 0, got 0"));
    assert!(err([1.0, 0.0, f64::NAN, 0.0]).contains("output_scale"));
    assert!(err([1.0, 0.0, 1e300, 0.0]).contains("output_scale"));
    assert!(err([1.0, 128.0, 1.0, 0.0]).contains("input_zero_point must be an integer in -128..=127, got 128"));
    assert!(err([1.0, 0.0, 1.0, 0.5]).contains("output_zero_point"));
}

#[test]
fn the_output_pass_is_the_same_on_every_level() {
    // Row lengths around the AVX-512 path's 64-element blocks, with tails; factors that
    // saturate, NaN and infinities; both zero points at their ends.
    for c in [1, 17, 64, 100, 293] {
        let rows = 5;
        let x = int8(rows * c, c as u64);
        let finite: Vec<f32> = data(c, 3).iter().map(|v| v * 1.7).collect();
        let mut special = finite.clone();
        special[0] = f32::NAN;
        if c > 2 {
            (special[1], special[2]) = (f32::INFINITY, 1e30);
        }
        let row_factor = data(rows, 4);
        let shortcut = TileShortcut { rows: &int8(rows * c, 100 + c as u64), zero_point: -7, factor: 0.6 };
        let epilogues: [TileEpilogue; 4] = [
            Epilogue::NONE,
            Epilogue { shortcut: None, relu: true },
            Epilogue { shortcut: Some(shortcut), relu: false },
            Epilogue { shortcut: Some(shortcut), relu: true },
        ];
        for ((zp, zp_out), factor) in [(-128, 127), (127, -128), (3, -5)].into_iter().flat_map(|z| [(z, &finite), (z, &special)]) {
            for (row_factor, epilogue) in [None, Some(&row_factor[..])].into_iter().flat_map(|r| epilogues.map(|e| (r, e))) {
                let mut want = vec![0; x.len()];
                let in_range = in_range(factor, row_factor.unwrap_or(&[1.0]));
                assert_eq!(in_range, factor == &finite);
                scale_rows(Level::SCALAR, &x, zp, factor, row_factor, in_range, zp_out, epilogue, &mut want);
                let expected: Vec<i8> = (0..x.len())
                    .map(|i| {
                        let v = (x[i] as i32 - zp) as f32 * factor[i % c] * row_factor.map_or(1.0, |s| s[i / c]);
                        let v = epilogue.shortcut.map_or(v, |s| v + (s.rows[i] as i32 - s.zero_point) as f32 * s.factor);
                        let q = quantize_one(v, 1.0, zp_out);
                        if epilogue.relu { q.max(zp_out as i8) } else { q }
                    })
                    .collect();
                assert_eq!(want, expected, "scalar, c = {c}, {epilogue:?}");
                assert!(c < 17 || want.contains(&127));
                assert!(c < 17 || epilogue.relu || want.contains(&-128));
                for level in Level::available() {
                    let mut got = vec![0; x.len()];
                    scale_rows(level, &x, zp, factor, row_factor, in_range, zp_out, epilogue, &mut got);
                    assert_eq!(got, want, "{} c = {c} zero points {zp} {zp_out} {epilogue:?}", level.name());
                }
            }
        }
    }
}

#[test]
fn spatial_pooling_matches_f64_on_every_level() {
    // Row lengths around the AVX-512 path's blocks of 4 x 16 values, with 16-value and shorter
    // tails; zero points at both ends.
    for c in [1, 17, 64, 100, 293] {
        let dims = Dims { n: 2, h: 3, w: 5, c, layout: Layout::ChannelsLast };
        let x = int8(dims.len(), c as u64 + 7);
        let factor = data(dims.n * c, 8);
        for zp in [-128, 127, 3] {
            let rows: Vec<Vec<f64>> = x
                .chunks_exact(c)
                .enumerate()
                .map(|(p, row)| row.iter().enumerate().map(|(j, &q)| (q as i32 - zp) as f64 * factor[p / dims.pixels() * c + j] as f64).collect())
                .collect();
            for exec in execs() {
                let (mut sum, mut max) = (vec![0.0; dims.n * dims.pixels()], vec![0.0; dims.n * dims.pixels()]);
                spatial_sum_max(exec, &x, dims, zp, &factor, &mut sum, &mut max);
                for (p, row) in rows.iter().enumerate() {
                    let want_sum: f64 = row.iter().sum();
                    let want_max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let scale: f64 = row.iter().map(|v| v.abs()).sum();
                    assert!((sum[p] as f64 - want_sum).abs() <= 1e-6 * scale, "{} c = {c} zp = {zp} [{p}]: sum {} want {want_sum}", exec.level.name(), sum[p]);
                    assert!((max[p] as f64 - want_max).abs() <= 1e-6 * want_max.abs(), "{} c = {c} zp = {zp} [{p}]: max {} want {want_max}", exec.level.name(), max[p]);
                }
            }
        }
    }
}
