//! The int8 fast paths against [`forward_reference`] on every level, odd sizes, SIMD tails,
//! channels of 1, batches, saturation and zero points at both ends.
//!
//! Where they may differ, and so the tolerance: the fast paths pool channels from exact integer
//! sums (the reference sums float32 values, rounding on the way), so a channel gate, and from
//! it every output, can differ from the reference's in the last bits of float32, which moves
//! a value that lies within that distance of a rounding boundary by 1 LSB. Everything else
//! (the spatial pooling and the gate application, run through the float kernels on exactly the
//! reference's dequantized values) is the same arithmetic, so the spatial gate alone, which
//! does not pool channels, matches exactly.

use super::kernels::{channel_pool, quantize_one};
use super::*;
use crate::apply::Fusion;
use crate::blocks::cbam::ChannelGate;
use crate::blocks::conv::{Conv2d, PoolConv};
use crate::blocks::matmul::Dense;
use crate::test_util::{data, execs};

fn int8(len: usize, seed: u64) -> Vec<i8> {
    data(len, seed).iter().map(|v| (v * 64.0).clamp(-128.0, 127.0) as i8).collect()
}

fn dense(inputs: usize, outputs: usize, relu: bool, seed: u64) -> Dense {
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

/// Asserts that the fast path is within `lsb` of the reference everywhere, on every shape
/// and quantization, and that the outputs saturate (so the clamp is exercised).
fn check_block(name: &str, channels: usize, float: &Forward, fast: &ForwardInt8, lsb: i32) {
    let mut saturated = false;
    for dims in shapes(channels) {
        let x = int8(dims.len(), dims.len() as u64);
        // The large map once: it is there for the threads' split.
        for q in quantizations().into_iter().take(if dims.len() >= 1 << 20 { 1 } else { 3 }) {
            let mut want = vec![0; x.len()];
            forward_reference(q, &x, &mut want, |xf, y| float(Exec::single(), xf, dims, y));
            for exec in execs() {
                let mut got = vec![0; x.len()];
                fast(exec, &x, dims, q, &mut got);
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    assert!((g as i32 - w as i32).abs() <= lsb, "{name} {dims:?} {q:?} {}: [{i}] got {g}, want {w}", exec.level.name());
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
        for (channel, spatial, lsb) in [(true, true, 1), (true, false, 1), (false, true, 0)] {
            let block = cbam(c, channel, spatial);
            let name = format!("cbam channel={channel} spatial={spatial}");
            check_block(&name, c, &|e, x, d, y| block.forward(e, x, d, y), &|e, x, d, q, y| block.forward_int8(e, x, d, q, y), lsb);
        }
    }
}

#[test]
fn squeeze_excite_fast_path_matches_the_reference() {
    for c in [24, 17, 1, 33, 256] {
        let block = SqueezeExcite::new(dense(c, (c / 4).max(1), true, 30), dense((c / 4).max(1), c, false, 32)).unwrap();
        check_block("se", c, &|e, x, d, y| block.forward(e, x, d, y), &|e, x, d, q, y| block.forward_int8(e, x, d, q, y), 1);
    }
}

#[test]
fn bam_fast_path_matches_the_reference() {
    for c in [24, 17, 1, 33, 256] {
        for fusion in [Fusion::Sum, Fusion::Product] {
            let block = bam(c, fusion);
            let name = format!("bam {fusion:?}");
            check_block(&name, c, &|e, x, d, y| block.forward(e, x, d, y), &|e, x, d, q, y| block.forward_int8(e, x, d, q, y), 1);
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
