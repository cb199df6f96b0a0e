//! Helpers shared by the unit tests: deterministic data and tolerant comparison.

use crate::exec::Exec;
use crate::layout::{Dims, Layout};
use crate::simd::Level;

/// `len` pseudo-random values in [-2, 2) from a fixed seed (a 64-bit LCG).
pub fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// Every level this CPU has, each single-threaded and on two threads.
pub fn execs() -> Vec<Exec> {
    Level::available().into_iter().flat_map(|level| [Exec::new(level, Some(1)), Exec::new(level, Some(2))]).collect()
}

/// The shapes the issue asks every level to be tested on: C = 1, 3, 17, 1000 and
/// H * W = 1, 7, 3136, in both layouts.
pub fn odd_shapes() -> Vec<Dims> {
    let mut shapes = Vec::new();
    for layout in [Layout::ChannelsLast, Layout::ChannelsFirst] {
        for c in [1, 3, 17, 1000] {
            for (h, w) in [(1, 1), (1, 7), (56, 56)] {
                shapes.push(Dims { n: 2, h, w, c, layout });
            }
        }
    }
    shapes
}

/// Asserts `|got - want| <= atol + rtol * |want|` elementwise, NaN matching NaN.
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() || g.is_nan() {
            assert!(w.is_nan() && g.is_nan(), "{what}[{i}]: got {g}, want {w}");
        } else if w.is_infinite() {
            assert_eq!(g as f64, w, "{what}[{i}]");
        } else {
            assert!((g as f64 - w).abs() <= atol + rtol * w.abs(), "{what}[{i}]: got {g}, want {w}");
        }
    }
}

/// Element (n, h*w + p, c) of a map, whatever its layout.
pub fn at(x: &[f32], d: Dims, n: usize, p: usize, c: usize) -> f32 {
    match d.layout {
        Layout::ChannelsLast => x[(n * d.pixels() + p) * d.c + c],
        Layout::ChannelsFirst => x[(n * d.c + c) * d.pixels() + p],
    }
}
