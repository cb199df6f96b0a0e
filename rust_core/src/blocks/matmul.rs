//! Small matrix products for the blocks' dense layers and convolutions: `out += A W`, with `A`
//! read through strides (so a feature map in either layout is a matrix of pixels by channels
//! without a copy) and `W` padded to whole vectors.

use crate::simd::Level;
use pulp::{Simd, WithSimd};

/// Weight matrices are padded to a multiple of this many columns: a whole number of vectors at
/// every level (AVX-512 holds 16 floats, AVX2 8, NEON 4, scalar 1).
pub const COLUMN_PAD: usize = 16;

/// A read-only matrix of `rows` x `cols` floats at `data[offset + r * row_stride + c * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Strided<'a> {
    /// A dense row-major matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Strided { data, offset: 0, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// Whether every element lies inside `data`.
    pub fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// A weight matrix `inputs` x `outputs` stored with its columns padded to [`COLUMN_PAD`].
#[derive(Clone, Debug)]
pub struct Weights {
    pub inputs: usize,
    pub outputs: usize,
    padded: Vec<f32>,
}

impl Weights {
    /// From a row-major `inputs` x `outputs` matrix (a Keras Dense kernel, or one tap of a
    /// Conv2D kernel).
    pub fn new(w: &[f32], inputs: usize, outputs: usize) -> Result<Self, String> {
        if w.len() != inputs * outputs || inputs == 0 || outputs == 0 {
            return Err(format!("weights: expected {inputs} x {outputs} values (both > 0), got {}", w.len()));
        }
        let width = padded_width(outputs);
        let mut padded = vec![0.0; inputs * width];
        for (dst, src) in padded.chunks_exact_mut(width).zip(w.chunks_exact(outputs)) {
            dst[..outputs].copy_from_slice(src);
        }
        Ok(Weights { inputs, outputs, padded })
    }

    /// The row stride of outputs written by [`matmul_acc`]: `outputs` rounded up to
    /// [`COLUMN_PAD`].
    pub fn width(&self) -> usize {
        padded_width(self.outputs)
    }
}

/// `n` rounded up to a multiple of [`COLUMN_PAD`].
pub fn padded_width(n: usize) -> usize {
    n.div_ceil(COLUMN_PAD) * COLUMN_PAD
}

/// `out[r, :] += a[r, :] @ w` for every row of `a`; `out` is `a.rows` x `w.width()`.
pub fn matmul_acc(level: Level, a: Strided, w: &Weights, out: &mut [f32]) {
    assert!(a.cols == w.inputs && a.in_bounds() && out.len() == a.rows * w.width());
    level.dispatch(MatmulAcc { a, w, out });
}

struct MatmulAcc<'a> {
    a: Strided<'a>,
    w: &'a Weights,
    out: &'a mut [f32],
}

/// Rows computed at once: four independent accumulator chains per weight vector.
const ROW_TILE: usize = 4;

impl WithSimd for MatmulAcc<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { a, w, out } = self;
        let width = w.width();
        let full = a.rows / ROW_TILE * ROW_TILE;
        for (t, out_tile) in out[..full * width].chunks_exact_mut(ROW_TILE * width).enumerate() {
            tile::<S, ROW_TILE>(simd, a, t * ROW_TILE, w, out_tile);
        }
        for r in full..a.rows {
            tile::<S, 1>(simd, a, r, w, &mut out[r * width..][..width]);
        }
    }
}

/// Rows `first..first + R` of `out += a @ w`, one output vector at a time.
#[inline(always)]
fn tile<S: Simd, const R: usize>(simd: S, a: Strided, first: usize, w: &Weights, out: &mut [f32]) {
    let width = w.width();
    let lanes = S::F32_LANES;
    let row_base: [usize; R] = core::array::from_fn(|r| a.offset + (first + r) * a.row_stride);
    for j in (0..width).step_by(lanes) {
        let mut acc: [S::f32s; R] = core::array::from_fn(|r| load(simd, &out[r * width + j..][..lanes]));
        for k in 0..a.cols {
            let wv = load(simd, &w.padded[k * width + j..][..lanes]);
            for r in 0..R {
                let av = simd.splat_f32s(a.data[row_base[r] + k * a.col_stride]);
                acc[r] = simd.mul_add_f32s(av, wv, acc[r]);
            }
        }
        for (r, v) in acc.into_iter().enumerate() {
            store(simd, &mut out[r * width + j..][..lanes], v);
        }
    }
}

#[inline(always)]
fn load<S: Simd>(_simd: S, s: &[f32]) -> S::f32s {
    let (head, _) = S::as_simd_f32s(s);
    head[0]
}

#[inline(always)]
fn store<S: Simd>(_simd: S, s: &mut [f32], v: S::f32s) {
    let (head, _) = S::as_mut_simd_f32s(s);
    head[0] = v;
}

/// A dense layer `y = x W + b`, optionally followed by ReLU.
#[derive(Clone, Debug)]
pub struct Dense {
    pub weights: Weights,
    bias: Vec<f32>,
    pub relu: bool,
}

impl Dense {
    /// `kernel`: row-major `inputs` x `outputs` (Keras' layout); `bias`: `outputs` values.
    pub fn new(kernel: &[f32], bias: &[f32], inputs: usize, relu: bool) -> Result<Self, String> {
        let outputs = bias.len();
        let weights = Weights::new(kernel, inputs, outputs)?;
        let mut padded_bias = vec![0.0; weights.width()];
        padded_bias[..outputs].copy_from_slice(bias);
        Ok(Dense { weights, bias: padded_bias, relu })
    }

    pub fn inputs(&self) -> usize {
        self.weights.inputs
    }

    pub fn outputs(&self) -> usize {
        self.weights.outputs
    }

    /// Fills `out` (`a.rows` x `self.weights.width()`, padded) with the layer applied to every
    /// row of `a`. The padding columns come out 0.
    pub fn forward(&self, level: Level, a: Strided, out: &mut [f32]) {
        for row in out.chunks_exact_mut(self.weights.width()) {
            row.copy_from_slice(&self.bias);
        }
        matmul_acc(level, a, &self.weights, out);
        if self.relu {
            out.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, data};

    #[test]
    fn dense_matches_reference_on_every_level_and_stride() {
        for (rows, inputs, outputs) in [(1, 1, 1), (2, 3, 17), (7, 256, 16), (5, 33, 40)] {
            let x = data(rows * inputs, 1);
            let kernel = data(inputs * outputs, 2);
            let bias = data(outputs, 3);
            let mut want = vec![0.0f64; rows * outputs];
            for r in 0..rows {
                for o in 0..outputs {
                    let dot: f64 = (0..inputs).map(|i| x[r * inputs + i] as f64 * kernel[i * outputs + o] as f64).sum();
                    want[r * outputs + o] = (dot + bias[o] as f64).max(0.0);
                }
            }
            let dense = Dense::new(&kernel, &bias, inputs, true).unwrap();
            // The same matrix stored transposed (column-major), read through strides.
            let xt: Vec<f32> = (0..rows * inputs).map(|i| x[(i % rows) * inputs + i / rows]).collect();
            let views = [
                Strided::row_major(&x, rows, inputs),
                Strided { data: &xt, offset: 0, rows, cols: inputs, row_stride: 1, col_stride: rows },
            ];
            for level in Level::available() {
                for view in views {
                    let mut out = vec![f32::NAN; rows * dense.weights.width()];
                    dense.forward(level, view, &mut out);
                    let got: Vec<f32> =
                        out.chunks_exact(dense.weights.width()).flat_map(|row| row[..outputs].to_vec()).collect();
                    assert_close(&got, &want, 1e-5, 1e-5, &format!("dense {rows}x{inputs}x{outputs} {}", level.name()));
                }
            }
        }
    }

    #[test]
    fn bad_weight_shapes_are_errors() {
        assert!(Dense::new(&[1.0; 5], &[0.0; 2], 3, false).unwrap_err().contains("expected 3 x 2"));
    }
}
