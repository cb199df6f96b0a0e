//! Micro-benchmark of the int8 blocks against the float blocks on the ResNet-50 stage shapes,
//! at 1 and 2 threads. Ignored by default; run with
//! `cargo test --release bench_int8_blocks -- --ignored --nocapture`.

use super::tests::{dense, int8};
use super::*;
use crate::apply::Fusion;
use crate::blocks::cbam::ChannelGate;
use crate::blocks::conv::{Conv2d, PoolConv};
use crate::simd::Level;
use crate::test_util::data;
use std::time::{Duration, Instant};

/// The median time of `f`, over repetitions for about `budget` after a warm-up.
fn median_us(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || times.len() < 10 {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The blocks as in the ResNet-50 models: reduction 16, BAM's dilation 4.
fn blocks(c: usize) -> (Cbam, SqueezeExcite, Bam) {
    let hidden = (c / 16).max(1);
    let gate = ChannelGate::new(dense(c, hidden, true, 1), dense(hidden, c, false, 3), true, true).unwrap();
    let cbam = Cbam::new(Some(gate), Some(PoolConv::new(&data(7 * 7 * 2, 5), 7, 0.1).unwrap()), c).unwrap();
    let se = SqueezeExcite::new(dense(c, hidden, true, 30), dense(hidden, c, false, 32)).unwrap();
    let conv = |size, inputs, outputs, dilation, relu, seed| {
        let k: Vec<f32> = data(size * size * inputs * outputs, seed).iter().map(|v| v * 0.3).collect();
        Conv2d::new(&k, size, inputs, &data(outputs, seed + 1), dilation, relu).unwrap()
    };
    let convs = vec![conv(1, c, hidden, 1, true, 10), conv(3, hidden, hidden, 4, true, 12), conv(3, hidden, hidden, 4, true, 14), conv(1, hidden, 1, 1, false, 16)];
    let bam = Bam::new(vec![dense(c, hidden, true, 20), dense(hidden, c, false, 22)], convs, Fusion::Product).unwrap();
    (cbam, se, bam)
}

#[test]
#[ignore = "a benchmark: run explicitly with --ignored --nocapture"]
fn bench_int8_blocks() {
    let q = Quantization { input_scale: 0.03, input_zero_point: -7, output_scale: 0.03, output_zero_point: -5 };
    let budget = Duration::from_millis(300);
    println!("{:<16} {:>3} {:>6} {:>10} {:>10} {:>7}", "shape", "thr", "block", "int8 us", "f32 us", "ratio");
    for (hw, c) in [(56, 256), (28, 512), (14, 1024), (7, 2048)] {
        let dims = Dims { n: 1, h: hw, w: hw, c, layout: Layout::ChannelsLast };
        let x = int8(dims.len(), 7);
        let xf: Vec<f32> = x.iter().map(|&v| q.input_scale * (v as i32 - q.input_zero_point) as f32).collect();
        let (mut out, mut outf) = (vec![0i8; x.len()], vec![0f32; x.len()]);
        let (cbam, se, bam) = blocks(c);
        for threads in [1, 2] {
            let exec = Exec::new(Level::best(), Some(threads));
            let row = |name: &str, int8: &mut dyn FnMut(), float: &mut dyn FnMut()| {
                let (a, b) = (median_us(budget, int8), median_us(budget, float));
                println!("1x{hw}x{hw}x{c:<7} {threads:>3} {name:>6} {a:>10.1} {b:>10.1} {:>7.2}", a / b);
            };
            row("cbam", &mut || cbam.forward_int8(exec, &x, dims, q, &mut out), &mut || cbam.forward(exec, &xf, dims, &mut outf));
            row("se", &mut || se.forward_int8(exec, &x, dims, q, &mut out), &mut || se.forward(exec, &xf, dims, &mut outf));
            row("bam", &mut || bam.forward_int8(exec, &x, dims, q, &mut out), &mut || bam.forward(exec, &xf, dims, &mut outf));
        }
    }
}

