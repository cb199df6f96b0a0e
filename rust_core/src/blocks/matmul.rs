//! Small matrix products for the blocks' convolutions: `out += A W` (or a sum of such products,
//! one per convolution tap), `A` rows read in place through a row stride and `W`
//! padded to whole vectors. Blocked like a GEMM: a block of weight rows stays in L1 while row
//! tiles of `A` go through it, with register tiles of 4 rows by 1-2 vectors. [`Dense`], whose
//! products have one or a few rows, keeps its weights in panels instead (`panels.rs`).

use super::panels::PanelWeights;
use crate::exec::Exec;
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
    /// From a row-major `inputs` x `outputs` matrix (one tap of a Conv2D kernel).
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

    /// Row `k` (input `k`'s weights to every output), padded to [`Weights::width`].
    pub fn row(&self, k: usize) -> &[f32] {
        &self.padded[k * self.width()..(k + 1) * self.width()]
    }
}

/// `n` rounded up to a multiple of [`COLUMN_PAD`].
pub fn padded_width(n: usize) -> usize {
    n.div_ceil(COLUMN_PAD) * COLUMN_PAD
}

/// `out[r, :] += sum over terms of a[r, :] @ w` for every row; every `a` has the same rows,
/// unit column stride and `w.inputs` columns, every `w` the same width; `out` is rows x width.
pub fn matmul_acc(level: Level, terms: &[(Strided, &Weights)], out: &mut [f32]) {
    let (rows, width) = (terms[0].0.rows, terms[0].1.width());
    for (a, w) in terms {
        assert!(a.rows == rows && a.col_stride == 1 && a.cols == w.inputs && w.width() == width && a.in_bounds());
    }
    assert!(out.len() == rows * width);
    level.dispatch(MatmulAcc { terms, out });
}

struct MatmulAcc<'a> {
    terms: &'a [(Strided<'a>, &'a Weights)],
    out: &'a mut [f32],
}

/// Rows computed at once.
const ROW_TILE: usize = 4;
/// Weight rows (summed over terms) per block: a block of weights stays in L1 while every row
/// tile goes through it.
const K_BLOCK: usize = 256;

/// A run of weight rows `k` of term `term`.
#[derive(Clone, Copy)]
struct Segment {
    term: usize,
    k: (usize, usize),
}

impl WithSimd for MatmulAcc<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { terms, out } = self;
        let (rows, width) = (terms[0].0.rows, terms[0].1.width());

        let vectors = width / S::F32_LANES;
        let full_tiles = rows / ROW_TILE;
        for block in k_blocks(terms) {
            // Groups of output vectors that give at least four independent accumulator chains.
            let mut v = 0;
            while v + 2 <= vectors {
                for t in 0..full_tiles {
                    tile::<S, ROW_TILE, 2>(simd, terms, &block, t * ROW_TILE, v, out);
                }
                v += 2;
            }
            if v < vectors {
                for t in 0..full_tiles {
                    tile::<S, ROW_TILE, 1>(simd, terms, &block, t * ROW_TILE, v, out);
                }
            }
            // The last rows: in pairs (so that each weight row is read once for both), then one.
            let mut r = full_tiles * ROW_TILE;
            if r + 2 <= rows {
                let mut v = 0;
                while v + 4 <= vectors {
                    tile::<S, 2, 4>(simd, terms, &block, r, v, out);
                    v += 4;
                }
                while v < vectors {
                    tile::<S, 2, 1>(simd, terms, &block, r, v, out);
                    v += 1;
                }
                r += 2;
            }
            if r < rows {
                let mut v = 0;
                while v + 4 <= vectors {
                    tile::<S, 1, 4>(simd, terms, &block, r, v, out);
                    v += 4;
                }
                while v < vectors {
                    tile::<S, 1, 1>(simd, terms, &block, r, v, out);
                    v += 1;
                }
            }
        }
    }
}

/// The terms' weight rows cut into blocks of at most [`K_BLOCK`] rows (a block may span terms).
fn k_blocks(terms: &[(Strided, &Weights)]) -> Vec<Vec<Segment>> {
    let mut blocks = vec![Vec::new()];
    let mut filled = 0;
    for (term, (_, w)) in terms.iter().enumerate() {
        let mut k = 0;
        while k < w.inputs {
            if filled == K_BLOCK {
                blocks.push(Vec::new());
                filled = 0;
            }
            let end = (k + K_BLOCK - filled).min(w.inputs);
            blocks.last_mut().expect("never empty").push(Segment { term, k: (k, end) });
            filled += end - k;
            k = end;
        }
    }
    blocks
}

/// Output vectors `first..first + J` of rows `row..row + R`, over one block of weight rows.
#[inline(always)]
fn tile<S: Simd, const R: usize, const J: usize>(
    simd: S,
    terms: &[(Strided, &Weights)],
    block: &[Segment],
    row: usize,
    first: usize,
    out: &mut [f32],
) {
    let width = terms[0].1.width();
    let lanes = S::F32_LANES;
    let out_vector = |r: usize| (row + r) * width / lanes + first;
    let mut acc = [[simd.splat_f32s(0.0); J]; R];
    let (out_head, _) = S::as_mut_simd_f32s(out);
    for (r, acc) in acc.iter_mut().enumerate() {
        acc.copy_from_slice(&out_head[out_vector(r)..out_vector(r) + J]);
    }
    for segment in block {
        let (a, w) = &terms[segment.term];
        let (k0, k1) = segment.k;
        let a_rows: [&[f32]; R] = core::array::from_fn(|r| &a.data[a.offset + (row + r) * a.row_stride..][k0..k1]);
        let w_rows = w.padded[k0 * width..k1 * width].chunks_exact(width);
        for (k, w_row) in w_rows.enumerate() {
            let wv = &S::as_simd_f32s(w_row).0[first..first + J];
            for r in 0..R {
                let av = simd.splat_f32s(a_rows[r][k]);
                for j in 0..J {
                    acc[r][j] = simd.mul_add_f32s(av, wv[j], acc[r][j]);
                }
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        out_head[out_vector(r)..out_vector(r) + J].copy_from_slice(acc);
    }
}

/// A dense layer `y = x W + b`, optionally followed by ReLU.
#[derive(Clone, Debug)]
pub struct Dense {
    weights: PanelWeights,
    bias: Vec<f32>,
    pub relu: bool,
}

impl Dense {
    /// `kernel`: row-major `inputs` x `outputs` (Keras' layout); `bias`: `outputs` values.
    pub fn new(kernel: &[f32], bias: &[f32], inputs: usize, relu: bool) -> Result<Self, String> {
        let outputs = bias.len();
        let weights = PanelWeights::new(kernel, inputs, outputs)?;
        let mut padded_bias = vec![0.0; weights.width()];
        padded_bias[..outputs].copy_from_slice(bias);
        Ok(Dense { weights, bias: padded_bias, relu })
    }

    /// The same layer computing with its weights quantized to int8 per output (see
    /// `panels.rs`), for the int8 ops; unchanged when a weight is not finite.
    pub fn with_int8_weights(self) -> Dense {
        match self.weights.to_int8() {
            Some(weights) => Dense { weights, ..self },
            None => self,
        }
    }

    pub fn inputs(&self) -> usize {
        self.weights.inputs()
    }

    pub fn outputs(&self) -> usize {
        self.weights.outputs()
    }

    /// The row stride of [`Dense::forward`]'s output: `outputs` rounded up to [`COLUMN_PAD`].
    pub fn width(&self) -> usize {
        self.weights.width()
    }

    /// Fills `out` (`a.rows` x [`Dense::width`], padded) with the layer applied to every row of
    /// `a`. The padding columns come out 0.
    pub fn forward(&self, exec: Exec, a: Strided, out: &mut [f32]) {
        for row in out.chunks_exact_mut(self.width()) {
            row.copy_from_slice(&self.bias);
        }
        self.weights.matmul_acc(exec, a, out);
        if self.relu {
            out.iter_mut().for_each(|v| *v = crate::simd::relu(*v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, data};

    #[test]
    fn dense_matches_reference_on_every_level_and_stride() {
        for (rows, inputs, outputs) in [(1, 1, 1), (2, 3, 17), (7, 256, 16), (5, 33, 40), (9, 600, 70)] {
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
            // Rows spaced wider than they are long, as padded maps are.
            let spaced: Vec<f32> = x.chunks_exact(inputs).flat_map(|row| [row, &[f32::NAN; 3][..]].concat()).collect();
            let views = [
                Strided::row_major(&x, rows, inputs),
                Strided { data: &spaced, offset: 0, rows, cols: inputs, row_stride: inputs + 3, col_stride: 1 },
            ];
            for level in Level::available() {
                for view in views {
                    let mut out = vec![f32::NAN; rows * dense.width()];
                    dense.forward(Exec::new(level, Some(1)), view, &mut out);
                    let got: Vec<f32> =
                        out.chunks_exact(dense.width()).flat_map(|row| row[..outputs].to_vec()).collect();
                    // float32 sums of `inputs` terms against a float64 reference: their rounding
                    // grows with the square root of the count.
                    let atol = 1e-5 * (inputs as f64).sqrt();
                    assert_close(&got, &want, 1e-5, atol, &format!("dense {rows}x{inputs}x{outputs} {}", level.name()));
                }
            }
        }
    }

    #[test]
    fn bad_weight_shapes_are_errors() {
        assert!(Dense::new(&[1.0; 5], &[0.0; 2], 3, false).unwrap_err().contains("expected 3 x 2"));
    }
}
