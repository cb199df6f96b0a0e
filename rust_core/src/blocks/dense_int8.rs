//! A dense layer's weights in int8 for the int8 ops' gate MLPs: quantized per output,
//! symmetrically (`w = scale[j] * q[k, j]`, `q` in -127..=127), as TFLite's int8
//! FULLY_CONNECTED quantizes its filter; the layer's inputs and accumulation stay float32.
//!
//! Why: a gate MLP is a product of one or two rows with a C x C/r matrix, so it reads every
//! weight once per call. On the 7x7x2048 blocks of a ResNet-50 its 2 MB of float32 weights
//! come from memory on every call and dominate the int8 op; int8 weights read a quarter.
//! They are stored in panels of [`PANEL`] outputs, each panel's `inputs x PANEL` values
//! contiguous, so that one panel's pass streams its bytes in order.

use super::matmul::{padded_width, Strided, Weights};
use crate::exec::Exec;
use pulp::{Simd, WithSimd};

/// Outputs per panel: the weights' column padding, so the panels cover the padded width exactly.
pub const PANEL: usize = super::matmul::COLUMN_PAD;

/// Weights (bytes) below which a layer runs on one thread.
const MIN_PARALLEL_WEIGHTS: usize = 1 << 16;

#[derive(Clone, Debug)]
pub struct Int8Weights {
    inputs: usize,
    outputs: usize,
    /// Panel `p` at `p * inputs * PANEL`: row `k` of it holds outputs `p * PANEL..` of input `k`.
    panels: Vec<i8>,
    /// Per output, padded to whole panels (0 in the padding).
    scales: Vec<f32>,
}

impl Int8Weights {
    /// `weights` quantized per output; None when a weight is not finite (the float layer then
    /// keeps NaN and infinity where the model has them).
    pub fn new(weights: &Weights) -> Option<Int8Weights> {
        let (inputs, outputs, width) = (weights.inputs, weights.outputs, weights.width());
        let rows = || (0..inputs).map(|k| weights.row(k));
        if rows().any(|row| row.iter().any(|v| !v.is_finite())) {
            return None;
        }
        let mut scales = vec![0.0f32; width];
        for row in rows() {
            for (s, &w) in scales.iter_mut().zip(row) {
                *s = s.max(w.abs());
            }
        }
        scales.iter_mut().for_each(|s| *s /= 127.0);
        let mut panels = vec![0i8; inputs * width];
        for (k, row) in rows().enumerate() {
            for (j, (&w, &s)) in row.iter().zip(&scales).enumerate() {
                let q = if s > 0.0 { (w / s).round().clamp(-127.0, 127.0) as i8 } else { 0 };
                panels[(j / PANEL * inputs + k) * PANEL + j % PANEL] = q;
            }
        }
        Some(Int8Weights { inputs, outputs, panels, scales })
    }

    pub fn width(&self) -> usize {
        padded_width(self.outputs)
    }

    /// The weights as the float32 values the products use, row-major `inputs x outputs`.
    pub fn dequantized(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.inputs * self.outputs];
        for k in 0..self.inputs {
            for j in 0..self.outputs {
                w[k * self.outputs + j] = self.scales[j] * self.panels[(j / PANEL * self.inputs + k) * PANEL + j % PANEL] as f32;
            }
        }
        w
    }

    /// `out[r, :] += a[r, :] @ W` for every row of `a` (unit column stride, `inputs` columns);
    /// `out` is `a.rows x width`. The panels are shared among the threads of `exec` when the
    /// weights are large.
    pub fn matmul_acc(&self, exec: Exec, a: Strided, out: &mut [f32]) {
        assert!(a.cols == self.inputs && a.col_stride == 1 && a.in_bounds() && out.len() == a.rows * self.width());
        let panels = self.width() / PANEL;
        if exec.threads == 1 || self.panels.len() < MIN_PARALLEL_WEIGHTS || panels < 2 {
            return exec.level.dispatch(PanelProduct { w: self, a, panels: 0..panels, out, out_stride: self.width() });
        }
        // Two parts per thread, taken as the threads come.
        let per_part = panels.div_ceil(2 * exec.threads);
        let parts: Vec<_> = (0..panels).step_by(per_part).map(|p| p..(p + per_part).min(panels)).collect();
        let results = exec.map(parts.clone(), |panels| {
            let mut part = vec![0.0; a.rows * panels.len() * PANEL];
            let out_stride = panels.len() * PANEL;
            exec.level.dispatch(PanelProduct { w: self, a, panels, out: &mut part, out_stride });
            part
        });
        let width = self.width();
        for (panels, part) in parts.iter().zip(results) {
            let cols = panels.len() * PANEL;
            for (r, row) in part.chunks_exact(cols).enumerate() {
                let dst = &mut out[r * width + panels.start * PANEL..][..cols];
                dst.iter_mut().zip(row).for_each(|(o, v)| *o += v);
            }
        }
    }
}

/// Panels `panels` of `w` times every row of `a`, added to `out` (rows of `out_stride`, column
/// 0 being the first panel's first output).
struct PanelProduct<'a> {
    w: &'a Int8Weights,
    a: Strided<'a>,
    panels: std::ops::Range<usize>,
    out: &'a mut [f32],
    out_stride: usize,
}

impl WithSimd for PanelProduct<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { w, a, panels, out, out_stride } = self;
        let row = |r: usize| &a.data[a.offset + r * a.row_stride..][..w.inputs];
        for (i, p) in panels.enumerate() {
            let panel = &w.panels[p * w.inputs * PANEL..][..w.inputs * PANEL];
            let scales = &w.scales[p * PANEL..][..PANEL];
            let mut r = 0;
            while r + 2 <= a.rows {
                let sums = panel_rows::<S, 2>(simd, panel, [row(r), row(r + 1)]);
                for (j, sum) in sums.iter().enumerate() {
                    add_scaled(&mut out[(r + j) * out_stride + i * PANEL..][..PANEL], sum, scales);
                }
                r += 2;
            }
            if r < a.rows {
                let [sum] = panel_rows::<S, 1>(simd, panel, [row(r)]);
                add_scaled(&mut out[r * out_stride + i * PANEL..][..PANEL], &sum, scales);
            }
        }
    }
}

fn add_scaled(out: &mut [f32], sum: &[f32; PANEL], scales: &[f32]) {
    for ((o, s), scale) in out.iter_mut().zip(sum).zip(scales) {
        *o += s * scale;
    }
}

/// Independent accumulators per row and output vector: enough chains to hide the FMA latency.
const UNROLL: usize = 4;

/// `sum[r][j] = sum over k of rows[r][k] * panel[k][j]`, in float32.
#[inline(always)]
fn panel_rows<S: Simd, const R: usize>(simd: S, panel: &[i8], rows: [&[f32]; R]) -> [[f32; PANEL]; R] {
    let vectors = PANEL / S::F32_LANES;
    let zero = simd.splat_f32s(0.0);
    // PANEL vectors at most (scalar level); the wider levels use the first `vectors`.
    let mut acc = [[[zero; PANEL]; R]; UNROLL];
    let inputs = rows[0].len();
    let mut k = 0;
    let step = |k: usize, acc: &mut [[S::f32s; PANEL]; R]| {
        let mut wf = [0.0f32; PANEL];
        for (f, &q) in wf.iter_mut().zip(&panel[k * PANEL..][..PANEL]) {
            *f = q as f32;
        }
        let (wv, _) = S::as_simd_f32s(&wf);
        for (acc, row) in acc.iter_mut().zip(rows) {
            let av = simd.splat_f32s(row[k]);
            for v in 0..vectors {
                acc[v] = simd.mul_add_f32s(av, wv[v], acc[v]);
            }
        }
    };
    while k + UNROLL <= inputs {
        for (u, acc) in acc.iter_mut().enumerate() {
            step(k + u, acc);
        }
        k += UNROLL;
    }
    while k < inputs {
        step(k, &mut acc[0]);
        k += 1;
    }
    let mut sums = [[0.0f32; PANEL]; R];
    for (r, sum) in sums.iter_mut().enumerate() {
        let mut total = [zero; PANEL];
        for (v, t) in total.iter_mut().enumerate().take(vectors) {
            *t = simd.add_f32s(simd.add_f32s(acc[0][r][v], acc[1][r][v]), simd.add_f32s(acc[2][r][v], acc[3][r][v]));
        }
        let (out, _) = S::as_mut_simd_f32s(sum);
        out[..vectors].copy_from_slice(&total[..vectors]);
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Level;
    use crate::test_util::{assert_close, data};

    fn weights(inputs: usize, outputs: usize, seed: u64) -> (Vec<f32>, Weights) {
        let w = data(inputs * outputs, seed);
        let weights = Weights::new(&w, inputs, outputs).unwrap();
        (w, weights)
    }

    #[test]
    fn quantization_is_per_output_and_within_half_a_step() {
        let (w, weights) = weights(37, 21, 1);
        let q = Int8Weights::new(&weights).unwrap();
        let back = q.dequantized();
        for j in 0..21 {
            let max = (0..37).map(|k| w[k * 21 + j].abs()).fold(0.0f32, f32::max);
            let step = max / 127.0;
            for k in 0..37 {
                let (want, got) = (w[k * 21 + j], back[k * 21 + j]);
                assert!((want - got).abs() <= 0.5 * step * (1.0 + 1e-5), "output {j} input {k}: {want} -> {got}");
            }
            // The largest weight of each output is exact (up to the scale's rounding).
            let k = (0..37).max_by(|&a, &b| w[a * 21 + j].abs().total_cmp(&w[b * 21 + j].abs())).unwrap();
            assert!((back[k * 21 + j] - w[k * 21 + j]).abs() <= 1e-6 * max);
        }
    }

    #[test]
    fn non_finite_weights_are_not_quantized() {
        for bad in [f32::NAN, f32::INFINITY] {
            let mut w = data(12, 2);
            w[5] = bad;
            assert!(Int8Weights::new(&Weights::new(&w, 3, 4).unwrap()).is_none());
        }
        // A column of zeros quantizes to zeros.
        let q = Int8Weights::new(&Weights::new(&[0.0; 6], 2, 3).unwrap()).unwrap();
        assert_eq!(q.dequantized(), vec![0.0; 6]);
    }

    #[test]
    fn products_match_the_dequantized_weights_on_every_level_thread_count_and_tail() {
        // Odd input counts (the unrolled loop's tail), outputs that leave part of the last
        // panel as padding, one to five rows (pairs and a single row), and a layer large enough
        // to be split among threads.
        for (rows, inputs, outputs) in [(1, 1, 1), (2, 3, 17), (3, 130, 16), (5, 33, 40), (2, 2048, 128), (2, 128, 2048), (1, 1024, 64)] {
            let (_, w) = weights(inputs, outputs, 3);
            let q = Int8Weights::new(&w).unwrap();
            let wd = q.dequantized();
            let a = data(rows * (inputs + 2), 4);
            let view = Strided { data: &a, offset: 1, rows, cols: inputs, row_stride: inputs + 2, col_stride: 1 };
            let width = q.width();
            let start = data(rows * width, 5);
            let mut want = vec![0.0f64; rows * outputs];
            for r in 0..rows {
                for j in 0..outputs {
                    let dot: f64 = (0..inputs).map(|k| a[1 + r * (inputs + 2) + k] as f64 * wd[k * outputs + j] as f64).sum();
                    want[r * outputs + j] = start[r * width + j] as f64 + dot;
                }
            }
            for level in Level::available() {
                for threads in [1, 2, 3] {
                    let mut out = start.clone();
                    q.matmul_acc(Exec::new(level, Some(threads)).lingering(), view, &mut out);
                    let got: Vec<f32> = out.chunks_exact(width).flat_map(|row| row[..outputs].to_vec()).collect();
                    let what = format!("{rows}x{inputs}x{outputs} {} threads {threads}", level.name());
                    assert_close(&got, &want, 1e-5, 1e-5 * (inputs as f64).sqrt(), &what);
                    // The padding columns stay as they were.
                    for (row, start) in out.chunks_exact(width).zip(start.chunks_exact(width)) {
                        assert_eq!(&row[outputs..], &start[outputs..], "{what}: padding");
                    }
                }
            }
        }
    }
}
