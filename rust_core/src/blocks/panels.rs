//! A dense layer's weights laid out for products with one or a few rows (the gate MLPs: the
//! pooled descriptors of one image times a C x C/r matrix), in float32 or in int8.
//!
//! Such a product reads every weight once per call, so it runs at the speed weights come from
//! memory: on the 7x7x2048 blocks of a ResNet-50 the 2 MB of float32 weights of one gate MLP
//! dominate the op. The weights are stored in panels of [`PANEL`] outputs, each panel's
//! `inputs x PANEL` values contiguous, so that the whole matrix streams in order (a row-major
//! matrix read a few columns at a time jumps a row's length at every step).
//!
//! The int8 ops quantize their MLPs' weights per output, symmetrically (`w = scale[j] * q[k, j]`,
//! `q` in -127..=127), as TFLite's int8 FULLY_CONNECTED quantizes its filter; the inputs and the
//! sums stay float32. They read a quarter of the bytes.

use super::matmul::{padded_width, Strided};
use crate::exec::Exec;
use pulp::{Simd, WithSimd};

/// Outputs per panel: the weights' column padding, so the panels cover the padded width exactly.
pub const PANEL: usize = super::matmul::COLUMN_PAD;

/// Weights (bytes) below which a layer runs on one thread.
const MIN_PARALLEL_WEIGHTS: usize = 1 << 16;

/// The panels' values: float32, or int8 with a scale per output (padded to whole panels, 0 in
/// the padding).
#[derive(Clone, Debug)]
enum Values {
    F32(Vec<f32>),
    I8 { q: Vec<i8>, scales: Vec<f32> },
}

#[derive(Clone, Debug)]
pub struct PanelWeights {
    inputs: usize,
    outputs: usize,
    /// Panel `p` at `p * inputs * PANEL`: row `k` of it holds outputs `p * PANEL..` of input `k`.
    values: Values,
}

/// Where weight `(k, j)` of an `inputs`-row matrix lies in its panels.
fn panel_index(inputs: usize, k: usize, j: usize) -> usize {
    (j / PANEL * inputs + k) * PANEL + j % PANEL
}

impl PanelWeights {
    /// From a row-major `inputs x outputs` matrix (a Keras Dense kernel).
    pub fn new(w: &[f32], inputs: usize, outputs: usize) -> Result<PanelWeights, String> {
        if w.len() != inputs * outputs || inputs == 0 || outputs == 0 {
            return Err(format!("weights: expected {inputs} x {outputs} values (both > 0), got {}", w.len()));
        }
        let mut panels = vec![0.0; inputs * padded_width(outputs)];
        for (k, row) in w.chunks_exact(outputs).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                panels[panel_index(inputs, k, j)] = v;
            }
        }
        Ok(PanelWeights { inputs, outputs, values: Values::F32(panels) })
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `outputs` rounded up to whole panels: the row stride of the products' outputs.
    pub fn width(&self) -> usize {
        padded_width(self.outputs)
    }

    /// The same weights quantized to int8 per output; None when a weight is not finite (the
    /// float layer then keeps NaN and infinity where the model has them) or already int8.
    pub fn to_int8(&self) -> Option<PanelWeights> {
        let Values::F32(panels) = &self.values else { return None };
        if panels.iter().any(|v| !v.is_finite()) {
            return None;
        }
        // The output of the value at index `i` of the panels (see [`panel_index`]).
        let output = |i: usize| i / (self.inputs * PANEL) * PANEL + i % PANEL;
        let mut scales = vec![0.0f32; self.width()];
        for (i, &w) in panels.iter().enumerate() {
            scales[output(i)] = scales[output(i)].max(w.abs());
        }
        scales.iter_mut().for_each(|s| *s /= 127.0);
        let q = panels
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let s = scales[output(i)];
                if s > 0.0 { (w / s).round().clamp(-127.0, 127.0) as i8 } else { 0 }
            })
            .collect();
        Some(PanelWeights { values: Values::I8 { q, scales }, ..*self })
    }

    /// The weights as the float32 values the products use, row-major `inputs x outputs`.
    pub fn to_row_major(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.inputs * self.outputs];
        for k in 0..self.inputs {
            for j in 0..self.outputs {
                let i = panel_index(self.inputs, k, j);
                w[k * self.outputs + j] = match &self.values {
                    Values::F32(p) => p[i],
                    Values::I8 { q, scales } => scales[j] * q[i] as f32,
                };
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
        let bytes = match &self.values {
            Values::F32(p) => 4 * p.len(),
            Values::I8 { q, .. } => q.len(),
        };
        if exec.threads == 1 || bytes < MIN_PARALLEL_WEIGHTS || panels < 2 {
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
    w: &'a PanelWeights,
    a: Strided<'a>,
    panels: std::ops::Range<usize>,
    out: &'a mut [f32],
    out_stride: usize,
}

impl WithSimd for PanelProduct<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // Panels side by side, so that each output keeps one sum, added in input order (two
        // partial sums of one output could overflow to +inf and -inf and give NaN where the
        // layer gives an infinity), and the independent sums of several panels hide the FMA
        // latency: four vectors per row with 16 lanes (AVX-512), four with 8 (AVX2).
        match S::F32_LANES {
            16.. => self.groups::<S, 4>(simd),
            8.. => self.groups::<S, 2>(simd),
            _ => self.groups::<S, 1>(simd),
        }
    }
}

impl PanelProduct<'_> {
    #[inline(always)]
    fn groups<S: Simd, const G: usize>(self, simd: S) {
        let Self { w, a, panels, out, out_stride } = self;
        let first = panels.start;
        let mut p = first;
        while p < panels.end {
            let at = (p - first) * PANEL;
            if p + G <= panels.end {
                group::<S, G>(simd, w, p, a, &mut out[at..], out_stride);
                p += G;
            } else {
                group::<S, 1>(simd, w, p, a, &mut out[at..], out_stride);
                p += 1;
            }
        }
    }
}

/// Panels `p..p + G` of `w` times every row of `a`, added to `out`'s first `G * PANEL` columns.
#[inline(always)]
fn group<S: Simd, const G: usize>(simd: S, w: &PanelWeights, p: usize, a: Strided, out: &mut [f32], out_stride: usize) {
    let len = w.inputs * PANEL;
    match &w.values {
        Values::F32(values) => {
            let panels = core::array::from_fn(|g| &values[(p + g) * len..][..len]);
            group_product::<S, f32, G>(simd, panels, None, a, out, out_stride)
        }
        Values::I8 { q, scales } => {
            let panels = core::array::from_fn(|g| &q[(p + g) * len..][..len]);
            group_product::<S, i8, G>(simd, panels, Some(&scales[p * PANEL..][..G * PANEL]), a, out, out_stride)
        }
    }
}

/// A panel's value as float32.
trait PanelValue: Copy {
    fn to_f32(self) -> f32;
}

impl PanelValue for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl PanelValue for i8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// `G` panels times every row of `a`, scaled by `scales` (int8) and added to `out`'s first
/// `G * PANEL` columns.
#[inline(always)]
fn group_product<S: Simd, T: PanelValue, const G: usize>(simd: S, panels: [&[T]; G], scales: Option<&[f32]>, a: Strided, out: &mut [f32], out_stride: usize) {
    let row = |r: usize| &a.data[a.offset + r * a.row_stride..][..a.cols];
    let add = |out: &mut [f32], sums: &[[f32; PANEL]; G]| {
        let sums = sums.as_flattened();
        match scales {
            Some(scales) => out.iter_mut().zip(sums).zip(scales).for_each(|((o, s), scale)| *o += s * scale),
            None => out.iter_mut().zip(sums).for_each(|(o, s)| *o += s),
        }
    };
    let mut r = 0;
    while r + 2 <= a.rows {
        let sums = group_rows::<S, T, 2, G>(simd, panels, [row(r), row(r + 1)]);
        for (j, sums) in sums.iter().enumerate() {
            add(&mut out[(r + j) * out_stride..][..G * PANEL], sums);
        }
        r += 2;
    }
    if r < a.rows {
        let [sums] = group_rows::<S, T, 1, G>(simd, panels, [row(r)]);
        add(&mut out[r * out_stride..][..G * PANEL], &sums);
    }
}

/// `sum[r][g][j] = sum over k, in order, of rows[r][k] * panels[g][k][j]`, in float32.
#[inline(always)]
fn group_rows<S: Simd, T: PanelValue, const R: usize, const G: usize>(simd: S, panels: [&[T]; G], rows: [&[f32]; R]) -> [[[f32; PANEL]; G]; R] {
    let vectors = PANEL / S::F32_LANES;
    let zero = simd.splat_f32s(0.0);
    // PANEL vectors per panel at most (scalar level); the wider levels use the first `vectors`.
    let mut acc = [[[zero; PANEL]; G]; R];
    for k in 0..rows[0].len() {
        let splats: [S::f32s; R] = core::array::from_fn(|r| simd.splat_f32s(rows[r][k]));
        for (g, panel) in panels.iter().enumerate() {
            let mut wf = [0.0f32; PANEL];
            for (f, &v) in wf.iter_mut().zip(&panel[k * PANEL..][..PANEL]) {
                *f = v.to_f32();
            }
            let (wv, _) = S::as_simd_f32s(&wf);
            for (acc, &av) in acc.iter_mut().zip(&splats) {
                for v in 0..vectors {
                    acc[g][v] = simd.mul_add_f32s(av, wv[v], acc[g][v]);
                }
            }
        }
    }
    let mut sums = [[[0.0f32; PANEL]; G]; R];
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        for (sum, acc) in sums.iter_mut().zip(acc) {
            let (out, _) = S::as_mut_simd_f32s(sum);
            out[..vectors].copy_from_slice(&acc[..vectors]);
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Level;
    use crate::test_util::{assert_close, data};

    #[test]
    fn panels_keep_the_matrix_and_quantization_is_per_output_within_half_a_step() {
        let w = data(37 * 21, 1);
        let panels = PanelWeights::new(&w, 37, 21).unwrap();
        assert_eq!(panels.to_row_major(), w);
        let back = panels.to_int8().unwrap().to_row_major();
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
            assert!(PanelWeights::new(&w, 3, 4).unwrap().to_int8().is_none());
        }
        // A column of zeros quantizes to zeros.
        let q = PanelWeights::new(&[0.0; 6], 2, 3).unwrap().to_int8().unwrap();
        assert_eq!(q.to_row_major(), vec![0.0; 6]);
        assert!(PanelWeights::new(&[1.0; 5], 2, 3).unwrap_err().contains("expected 2 x 3"));
    }

    #[test]
    fn products_match_the_reference_on_every_level_thread_count_and_tail() {
        // Odd input counts (the unrolled loop's tail), outputs that leave part of the last
        // panel as padding, one to five rows (pairs and a single row), and layers large enough
        // to be split among threads; float32 and int8 weights.
        for (rows, inputs, outputs) in [(1, 1, 1), (2, 3, 17), (3, 130, 16), (5, 33, 40), (2, 2048, 128), (2, 128, 2048), (1, 1024, 64)] {
            let float = PanelWeights::new(&data(inputs * outputs, 3), inputs, outputs).unwrap();
            for w in [float.clone(), float.to_int8().unwrap()] {
                let wd = w.to_row_major();
                let a = data(rows * (inputs + 2), 4);
                let view = Strided { data: &a, offset: 1, rows, cols: inputs, row_stride: inputs + 2, col_stride: 1 };
                let width = w.width();
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
                        w.matmul_acc(Exec::new(level, Some(threads)).lingering(), view, &mut out);
                        let got: Vec<f32> = out.chunks_exact(width).flat_map(|row| row[..outputs].to_vec()).collect();
                        let what = format!("{rows}x{inputs}x{outputs} {:?} {} threads {threads}", std::mem::discriminant(&w.values), level.name());
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
}

#[cfg(test)]
mod bench {
    use super::*;
    use crate::blocks::matmul::{matmul_acc, Weights};
    use crate::test_util::data;
    use std::time::Instant;

    /// Gate-MLP products (2 rows) with float32 weights: the row-major tile kernel against the
    /// panels, and int8 panels; weights in cache ("hot") and evicted by a 64 MB sweep ("cold").
    #[test]
    #[ignore = "a benchmark: run explicitly with --ignored --nocapture"]
    fn bench_gate_products() {
        let exec = Exec::new(crate::simd::Level::active(), Some(1));
        let mut sweep = vec![0u8; 64 << 20];
        for (inputs, outputs) in [(256, 16), (16, 256), (1024, 64), (64, 1024), (2048, 128), (128, 2048)] {
            let w = data(inputs * outputs, 1);
            let a = data(2 * inputs, 2);
            let view = Strided::row_major(&a, 2, inputs);
            let rows = Weights::new(&w, inputs, outputs).unwrap();
            let panels = PanelWeights::new(&w, inputs, outputs).unwrap();
            let int8 = panels.to_int8().unwrap();
            let mut out = vec![0.0; 2 * panels.width()];
            let mut time = |cold: bool, f: &mut dyn FnMut(&mut [f32])| {
                let mut best = Vec::new();
                for i in 0..60 {
                    if cold {
                        sweep.iter_mut().step_by(64).for_each(|b| *b = b.wrapping_add(i as u8));
                    }
                    let t = Instant::now();
                    f(&mut out);
                    best.push(t.elapsed().as_secs_f64() * 1e6);
                }
                best.sort_by(f64::total_cmp);
                best[best.len() / 2]
            };
            for cold in [false, true] {
                let tile = time(cold, &mut |out| matmul_acc(exec.level, &[(view, &rows)], out));
                let f32_panels = time(cold, &mut |out| panels.matmul_acc(exec, view, out));
                let i8_panels = time(cold, &mut |out| int8.matmul_acc(exec, view, out));
                println!("{inputs:5} x {outputs:5} {}: tile {tile:6.1} us, panels {f32_panels:6.1} us, int8 panels {i8_panels:6.1} us", if cold { "cold" } else { "hot " });
            }
        }
    }
}
