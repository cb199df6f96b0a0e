use super::*;
use crate::layout::Layout;
use crate::simd::Level;
use crate::test_util::{assert_close, at, data, execs, odd_shapes};

/// (mean, max) per (n, c), in f64, NaN-propagating.
fn channel_reference(x: &[f32], d: Dims) -> (Vec<f64>, Vec<f64>) {
    let (mut mean, mut max) = (vec![0.0; d.n * d.c], vec![f64::NEG_INFINITY; d.n * d.c]);
    for n in 0..d.n {
        for c in 0..d.c {
            for p in 0..d.pixels() {
                let v = at(x, d, n, p, c) as f64;
                mean[n * d.c + c] += v;
                max[n * d.c + c] = if v.is_nan() || max[n * d.c + c].is_nan() { f64::NAN } else { max[n * d.c + c].max(v) };
            }
            mean[n * d.c + c] /= d.pixels() as f64;
        }
    }
    (mean, max)
}

/// Max and mean over C per pixel, laid out as `spatial_pool` documents.
fn spatial_reference(x: &[f32], d: Dims) -> Vec<f64> {
    let p_count = d.pixels();
    let mut out = vec![0.0; d.n * p_count * 2];
    for n in 0..d.n {
        for p in 0..p_count {
            let values: Vec<f64> = (0..d.c).map(|c| at(x, d, n, p, c) as f64).collect();
            let mean = values.iter().sum::<f64>() / d.c as f64;
            let max = values.iter().fold(f64::NEG_INFINITY, |m, &v| if v.is_nan() || m.is_nan() { f64::NAN } else { m.max(v) });
            let (i_max, i_mean) = match d.layout {
                Layout::ChannelsLast => ((n * p_count + p) * 2, (n * p_count + p) * 2 + 1),
                Layout::ChannelsFirst => (n * 2 * p_count + p, n * 2 * p_count + p_count + p),
            };
            out[i_max] = max;
            out[i_mean] = mean;
        }
    }
    out
}

fn run_channel(exec: Exec, x: &[f32], d: Dims) -> (Vec<f32>, Vec<f32>) {
    let (mut mean, mut max) = (vec![0.0; d.n * d.c], vec![0.0; d.n * d.c]);
    channel_pool(exec, x, d, &mut mean, &mut max);
    (mean, max)
}

fn run_spatial(exec: Exec, x: &[f32], d: Dims) -> Vec<f32> {
    let mut out = vec![0.0; d.n * d.pixels() * 2];
    spatial_pool(exec, x, d, &mut out);
    out
}

#[test]
fn every_level_matches_reference_on_odd_shapes() {
    for d in odd_shapes() {
        let x = data(d.len(), d.c as u64 * 31 + d.pixels() as u64);
        let (mean_ref, max_ref) = channel_reference(&x, d);
        let spatial_ref = spatial_reference(&x, d);
        let scalar = Exec::new(Level::SCALAR, Some(1));
        let (mean_scalar, max_scalar) = run_channel(scalar, &x, d);
        for exec in execs() {
            let what = format!("{} x{} {d:?}", exec.level.name(), exec.threads);
            let (mean, max) = run_channel(exec, &x, d);
            assert_close(&mean, &mean_ref, 1e-6, 1e-6, &format!("channel mean {what}"));
            assert_eq!(max, max_scalar, "channel max {what}");
            let mean_scalar_f64: Vec<f64> = mean_scalar.iter().map(|&v| v as f64).collect();
            assert_close(&mean, &mean_scalar_f64, 1e-6, 1e-6, &format!("channel mean vs scalar {what}"));
            assert_close(&max, &max_ref, 0.0, 0.0, &format!("channel max {what}"));
            assert_close(&run_spatial(exec, &x, d), &spatial_ref, 1e-6, 1e-6, &format!("spatial {what}"));
        }
    }
}

#[test]
fn nan_propagates_through_mean_and_max() {
    for layout in [Layout::ChannelsLast, Layout::ChannelsFirst] {
        let d = Dims { n: 2, h: 9, w: 7, c: 19, layout };
        let mut x = data(d.len(), 7);
        // One NaN (in image 1, channel 5, pixel 40), and +inf and -inf in one channel: a NaN sum
        // whose max must stay +inf.
        let nan_at = match layout {
            Layout::ChannelsLast => (d.pixels() + 40) * d.c + 5,
            Layout::ChannelsFirst => (d.c + 5) * d.pixels() + 40,
        };
        x[nan_at] = f32::NAN;
        let (inf_a, inf_b) = match layout {
            Layout::ChannelsLast => (3 * d.c + 2, 4 * d.c + 2),
            Layout::ChannelsFirst => (2 * d.pixels() + 3, 2 * d.pixels() + 4),
        };
        x[inf_a] = f32::INFINITY;
        x[inf_b] = f32::NEG_INFINITY;
        let (mean_ref, max_ref) = channel_reference(&x, d);
        let spatial_ref = spatial_reference(&x, d);
        assert!(max_ref[d.c + 5].is_nan() && max_ref[2] == f64::INFINITY && mean_ref[2].is_nan());
        for exec in execs() {
            let (mean, max) = run_channel(exec, &x, d);
            assert_close(&mean, &mean_ref, 1e-6, 1e-6, "mean with NaN");
            assert_close(&max, &max_ref, 0.0, 0.0, "max with NaN");
            assert_close(&run_spatial(exec, &x, d), &spatial_ref, 1e-6, 1e-6, "spatial with NaN");
        }
    }
}

#[test]
fn large_means_stay_accurate_to_float32_rounding() {
    // 0.1 is inexact in binary, and a naive float32 running sum of 224 * 224 of them drifts by
    // about 1e-3 relative; pairwise blocks keep it within a few ulp.
    for layout in [Layout::ChannelsLast, Layout::ChannelsFirst] {
        let d = Dims { n: 1, h: 224, w: 224, c: 3, layout };
        let x: Vec<f32> = data(d.len(), 3).iter().map(|v| 0.1 + 1e-3 * v).collect();
        let (mean_ref, _) = channel_reference(&x, d);
        for exec in execs() {
            let (mean, _) = run_channel(exec, &x, d);
            assert_close(&mean, &mean_ref, 4.0 * f32::EPSILON as f64, 0.0, "mean over 50,176 pixels");
        }
        let d = Dims { n: 1, h: 1, w: 2, c: 60_000, layout };
        let x: Vec<f32> = data(d.len(), 4).iter().map(|v| 0.1 + 1e-3 * v).collect();
        let want: Vec<f64> = spatial_reference(&x, d);
        for exec in execs() {
            assert_close(&run_spatial(exec, &x, d), &want, 4.0 * f32::EPSILON as f64, 0.0, "mean over 60,000 channels");
        }
    }
}

#[test]
fn scaled_spatial_pooling_matches_pooling_the_product() {
    for layout in [Layout::ChannelsLast, Layout::ChannelsFirst] {
        let d = Dims { n: 1, h: 5, w: 13, c: 37, layout };
        let x = data(d.len(), 11);
        let gate = data(d.c, 12);
        let mut product = x.clone();
        for p in 0..d.pixels() {
            for (c, g) in gate.iter().enumerate() {
                let i = match layout {
                    Layout::ChannelsLast => p * d.c + c,
                    Layout::ChannelsFirst => c * d.pixels() + p,
                };
                product[i] = x[i] * g;
            }
        }
        for exec in execs() {
            let (mut sum, mut max) = (vec![0.0; d.pixels()], vec![0.0; d.pixels()]);
            image_spatial_sum_max(exec, &x, d, Some(&gate), &mut sum, &mut max);
            let (mut sum_ref, mut max_ref) = (vec![0.0; d.pixels()], vec![0.0; d.pixels()]);
            image_spatial_sum_max(exec, &product, d, None, &mut sum_ref, &mut max_ref);
            assert_eq!(max, max_ref);
            let sum_ref: Vec<f64> = sum_ref.iter().map(|&v| v as f64).collect();
            assert_close(&sum, &sum_ref, 1e-6, 1e-6, "scaled sum");
        }
    }
}

#[test]
fn one_large_image_splits_across_threads_with_the_same_result() {
    for layout in [Layout::ChannelsLast, Layout::ChannelsFirst] {
        // 2^20 elements: enough for two threads to split the image itself.
        let d = Dims { n: 1, h: 64, w: 64, c: 256, layout };
        let x = data(d.len(), 21);
        for level in Level::available() {
            let (one, two) = (Exec::new(level, Some(1)), Exec::new(level, Some(2)));
            assert!(two.splits(d.len()));
            assert_eq!(run_channel(one, &x, d), run_channel(two, &x, d));
            assert_eq!(run_spatial(one, &x, d), run_spatial(two, &x, d));
        }
    }
}
