//! The blocks' convolutions, stride 1 and "same" padding (odd kernels):
//! - [`PoolConv`]: CBAM's K x K convolution of the two pooled planes (max, mean) to one logit
//!   plane, vectorised along image rows;
//! - [`Conv2d`]: BAM's 1x1 and dilated 3x3 convolutions over pixel-major maps, as one matrix
//!   product per kernel tap (vectorised over output channels).
//!
//! Non-finite weights: a product with zero padding turns a NaN or infinite weight into NaN on
//! the border (NaN * 0), where TensorFlow's CPU convolution (oneDNN) sums only the taps that
//! read the image. A kernel with such a weight is found when the convolution is built, and then
//! only the in-image taps are summed, as TensorFlow does; a dilated [`Conv2d`] keeps the zero
//! padding, as TensorFlow computes dilated convolutions on a zero-padded map (space to batch).

use super::matmul::{matmul_acc, padded_width, Strided, Weights, COLUMN_PAD};
use crate::exec::Exec;
use crate::simd::Level;
use pulp::{Simd, WithSimd};
use std::ops::Range;

/// A K x K convolution of two planes (max, mean) to one, plus a bias (BatchNorm folded in).
#[derive(Clone, Debug)]
pub struct PoolConv {
    size: usize,
    /// `kernel[(ky * K + kx) * 2 + plane]`, Keras' (K, K, 2, 1) layout.
    kernel: Vec<f32>,
    bias: f32,
    /// Whether a weight is NaN or infinite: then only the in-image taps are summed.
    non_finite: bool,
}

impl PoolConv {
    pub fn new(kernel: &[f32], size: usize, bias: f32) -> Result<Self, String> {
        if size.is_multiple_of(2) || kernel.len() != size * size * 2 {
            return Err(format!(
                "spatial conv: expected an odd kernel size and {size} x {size} x 2 x 1 weights, got size {size} and {} weights",
                kernel.len()
            ));
        }
        Ok(PoolConv { size, kernel: kernel.to_vec(), bias, non_finite: kernel.iter().any(|v| !v.is_finite()) })
    }

    /// The kernel size K.
    pub fn size(&self) -> usize {
        self.size
    }

    /// `out` (H x W) = the convolution of the planes `max` and `mean` (H x W each).
    pub fn forward(&self, level: Level, max: &[f32], mean: &[f32], h: usize, w: usize, out: &mut [f32]) {
        self.forward_rows(level, max, mean, 0..h, h, w, 0..h, out);
    }

    /// `out` (`rows.len()` x W) = the output rows `rows` of the convolution of two H x W planes,
    /// of which `max` and `mean` hold the rows `window`: every image row within K / 2 of `rows`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_rows(&self, level: Level, max: &[f32], mean: &[f32], window: Range<usize>, h: usize, w: usize, rows: Range<usize>, out: &mut [f32]) {
        let pad = self.size / 2;
        assert!(window.start <= rows.start.saturating_sub(pad) && (rows.end + pad).min(h) <= window.end && window.end <= h);
        assert!(max.len() == window.len() * w && mean.len() == max.len() && out.len() == rows.len() * w);
        if self.non_finite {
            return self.forward_rows_in_image(max, mean, window.start, h, w, rows, out);
        }
        // Zero-padded copies of both planes' rows. Rows are wide enough that every output
        // vector, including the last partial one of a row, loads whole vectors without a
        // bounds check.
        let stride = padded_width(w) + 2 * pad;
        let padded_rows = rows.len() + 2 * pad;
        let mut padded = vec![0.0; 2 * padded_rows * stride];
        for (plane, src) in padded.chunks_exact_mut(padded_rows * stride).zip([max, mean]) {
            // Padded row i holds image row rows.start + i - pad, where that lies in the image.
            for i in 0..padded_rows {
                if let Some(y) = (rows.start + i).checked_sub(pad).filter(|&y| y < h) {
                    plane[i * stride + pad..][..w].copy_from_slice(&src[(y - window.start) * w..][..w]);
                }
            }
        }
        level.dispatch(PoolConvOp { conv: self, padded: &padded, stride, rows: padded_rows, h: rows.len(), w, out });
    }

    /// [`PoolConv::forward_rows`] summing only the taps that read a pixel of the image
    /// (`first` is the image row of the planes' first row). Scalar: it serves only kernels with
    /// a non-finite weight.
    #[allow(clippy::too_many_arguments)]
    fn forward_rows_in_image(&self, max: &[f32], mean: &[f32], first: usize, h: usize, w: usize, rows: Range<usize>, out: &mut [f32]) {
        let (k, pad) = (self.size, self.size / 2);
        let in_image = |i: usize, len: usize| i.checked_sub(pad).filter(|&i| i < len);
        for (y, out_row) in rows.zip(out.chunks_exact_mut(w)) {
            for (x, out) in out_row.iter_mut().enumerate() {
                let mut sum = 0.0;
                for ky in 0..k {
                    let Some(sy) = in_image(y + ky, h) else { continue };
                    for kx in 0..k {
                        let Some(sx) = in_image(x + kx, w) else { continue };
                        let p = (sy - first) * w + sx;
                        let tap = &self.kernel[(ky * k + kx) * 2..][..2];
                        sum += tap[0] * max[p] + tap[1] * mean[p];
                    }
                }
                *out = sum + self.bias;
            }
        }
    }
}

struct PoolConvOp<'a> {
    conv: &'a PoolConv,
    padded: &'a [f32],
    stride: usize,
    rows: usize,
    h: usize,
    w: usize,
    out: &'a mut [f32],
}

/// Output vectors of one row computed at once (independent accumulator chains).
const CHUNKS: usize = 4;

impl WithSimd for PoolConvOp<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { conv, padded, stride, rows, h, w, out } = self;
        let lanes = S::F32_LANES;
        for x0 in (0..w).step_by(lanes * CHUNKS) {
            // Only the vectors the rows still have (on a map narrower than CHUNKS vectors, 28 x
            // 28 and smaller at AVX-512, the others would be padding), and on narrow maps
            // several rows at once: eight independent accumulator chains keep the FMA units
            // busy where one row's would wait on one another.
            let at = Planes { padded, stride, rows, x0 };
            match (w - x0).div_ceil(lanes) {
                1 => output_rows::<S, 4, 1>(simd, conv, at, h, w, out),
                2 => output_rows::<S, 2, 2>(simd, conv, at, h, w, out),
                3 => output_rows::<S, 1, 3>(simd, conv, at, h, w, out),
                _ => output_rows::<S, 1, CHUNKS>(simd, conv, at, h, w, out),
            }
        }
    }
}

/// Where [`output_vectors`] reads: from column `x0` of the two zero-padded planes.
#[derive(Clone, Copy)]
struct Planes<'a> {
    padded: &'a [f32],
    stride: usize,
    rows: usize,
    x0: usize,
}

/// The `C` output vectors from column `at.x0` of every output row, `R` rows at a time.
#[inline(always)]
fn output_rows<S: Simd, const R: usize, const C: usize>(simd: S, conv: &PoolConv, at: Planes, h: usize, w: usize, out: &mut [f32]) {
    let mut y = 0;
    while y < h {
        let store = |y: usize, sums: [S::f32s; C], out: &mut [f32]| {
            let out_row = &mut out[y * w..(y + 1) * w];
            for (c, sum) in sums.into_iter().enumerate() {
                let start = at.x0 + c * S::F32_LANES;
                let end = (start + S::F32_LANES).min(w);
                simd.partial_store_f32s(&mut out_row[start..end], sum);
            }
        };
        // R rows while there are, then pairs (a streamed band has two), then one.
        if y + R <= h {
            for (r, sums) in output_vectors::<S, R, C>(simd, conv, at, y).into_iter().enumerate() {
                store(y + r, sums, out);
            }
            y += R;
        } else if y + 2 <= h {
            let [first, second] = output_vectors::<S, 2, C>(simd, conv, at, y);
            store(y, first, out);
            store(y + 1, second, out);
            y += 2;
        } else {
            let [sums] = output_vectors::<S, 1, C>(simd, conv, at, y);
            store(y, sums, out);
            y += 1;
        }
    }
}

/// `C` output vectors (bias included) of `R` rows from row `y`, column `at.x0`.
#[inline(always)]
fn output_vectors<S: Simd, const R: usize, const C: usize>(simd: S, conv: &PoolConv, at: Planes, y: usize) -> [[S::f32s; C]; R] {
    let (lanes, k) = (S::F32_LANES, conv.size);
    // One accumulator chain per row, plane and output vector, the planes summed at the end.
    let mut acc = [[[simd.splat_f32s(0.0); C]; 2]; R];
    for ky in 0..k {
        // Each row's C vectors and the K - 1 columns right of them: within the padded row, whose
        // width is a whole number of vectors plus 2 * (K / 2) (see `forward_rows`).
        let row = |r: usize, plane: usize| &at.padded[(plane * at.rows + y + r + ky) * at.stride + at.x0..][..C * lanes + k - 1];
        let rows: [[&[f32]; 2]; R] = core::array::from_fn(|r| [row(r, 0), row(r, 1)]);
        for (kx, tap) in conv.kernel[ky * k * 2..][..k * 2].chunks_exact(2).enumerate() {
            let weights = [simd.splat_f32s(tap[0]), simd.splat_f32s(tap[1])];
            for (acc, rows) in acc.iter_mut().zip(&rows) {
                for ((acc, row), &weight) in acc.iter_mut().zip(rows).zip(&weights) {
                    // C whole vectors (a constant length, so the loads below need no checks).
                    let shifted = &row[kx..kx + C * lanes];
                    for (a, src) in acc.iter_mut().zip(shifted.chunks_exact(lanes)) {
                        *a = simd.mul_add_f32s(weight, S::as_simd_f32s(src).0[0], *a);
                    }
                }
            }
        }
    }
    let bias = simd.splat_f32s(conv.bias);
    acc.map(|[max, mean]| core::array::from_fn(|c| simd.add_f32s(simd.add_f32s(max[c], mean[c]), bias)))
}

/// See [`Conv2d::pointwise_channels_first`]: output pixels `pixels` into `out`.
struct Pointwise<'a> {
    conv: &'a Conv2d,
    input: Strided<'a>,
    pixels: std::ops::Range<usize>,
    out: &'a mut [f32],
}

/// Output channels accumulated at once by [`Pointwise`].
const POINTWISE_OUTPUTS: usize = 8;

impl WithSimd for Pointwise<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { conv, input, pixels, out } = self;
        let (lanes, width, outputs) = (S::F32_LANES, conv.width(), conv.outputs());
        let tap = &conv.taps[0];
        let mut lanes_out = [0.0f32; COLUMN_PAD];
        for p0 in pixels.clone().step_by(lanes) {
            let count = lanes.min(pixels.end - p0);
            for j0 in (0..outputs).step_by(POINTWISE_OUTPUTS) {
                let mut acc = [simd.splat_f32s(0.0); POINTWISE_OUTPUTS];
                for c in 0..input.cols {
                    let src = &input.data[input.offset + c * input.col_stride + p0..][..count];
                    let xv = simd.partial_load_f32s(src);
                    let w = &tap.row(c)[j0..j0 + POINTWISE_OUTPUTS];
                    for (a, &w) in acc.iter_mut().zip(w) {
                        *a = simd.mul_add_f32s(simd.splat_f32s(w), xv, *a);
                    }
                }
                // Transposed store: lane l of accumulator k is output channel j0 + k of pixel
                // p0 + l.
                for (k, a) in acc.iter().enumerate().take(outputs - j0) {
                    simd.partial_store_f32s(&mut lanes_out[..lanes], *a);
                    for (l, v) in lanes_out[..count].iter().enumerate() {
                        let value = v + conv.bias[j0 + k];
                        out[(p0 - pixels.start + l) * width + j0 + k] = if conv.relu { crate::simd::relu(value) } else { value };
                    }
                }
            }
            for l in 0..count {
                out[(p0 - pixels.start + l) * width + outputs..][..width - outputs].fill(0.0);
            }
        }
    }
}

/// A K x K convolution (odd K, dilation d) of a pixel-major map with `inputs` channels to
/// `outputs` channels, plus bias and optional ReLU (BatchNorm folded into kernel and bias).
#[derive(Clone, Debug)]
pub struct Conv2d {
    size: usize,
    dilation: usize,
    /// One `inputs` x `outputs` matrix per tap (ky, kx).
    taps: Vec<Weights>,
    /// The bias, padded like the taps' columns.
    bias: Vec<f32>,
    relu: bool,
    /// Whether only the in-image taps are summed: undilated, with a NaN or infinite weight.
    in_image_taps: bool,
}

impl Conv2d {
    /// `kernel`: Keras' (K, K, inputs, outputs) layout, row-major; `bias`: `outputs` values.
    pub fn new(kernel: &[f32], size: usize, inputs: usize, bias: &[f32], dilation: usize, relu: bool) -> Result<Self, String> {
        let outputs = bias.len();
        if size.is_multiple_of(2) || dilation == 0 || kernel.len() != size * size * inputs * outputs {
            return Err(format!(
                "conv: expected an odd kernel size, dilation >= 1 and {size} x {size} x {inputs} x {outputs} weights, \
                 got size {size}, dilation {dilation} and {} weights",
                kernel.len()
            ));
        }
        let taps = kernel.chunks_exact(inputs * outputs).map(|w| Weights::new(w, inputs, outputs)).collect::<Result<_, _>>()?;
        let taps: Vec<Weights> = taps;
        let mut padded_bias = vec![0.0; taps[0].width()];
        padded_bias[..outputs].copy_from_slice(bias);
        let in_image_taps = dilation == 1 && kernel.iter().any(|v| !v.is_finite());
        Ok(Conv2d { size, dilation, taps, bias: padded_bias, relu, in_image_taps })
    }

    pub fn inputs(&self) -> usize {
        self.taps[0].inputs
    }

    pub fn outputs(&self) -> usize {
        self.taps[0].outputs
    }

    /// The row stride of [`Conv2d::forward`]'s output.
    pub fn width(&self) -> usize {
        self.taps[0].width()
    }

    /// `out` (H * W pixels x [`Conv2d::width`]) = the convolution of `input` (H * W pixels by
    /// `inputs` channels, read through its strides), rows shared among threads when large.
    pub fn forward(&self, exec: Exec, input: Strided, h: usize, w: usize, out: &mut [f32]) {
        assert!(input.rows == h * w && input.cols == self.inputs() && input.in_bounds() && out.len() == h * w * self.width());
        let cin = self.inputs();
        if self.size == 1 && input.col_stride == 1 {
            return self.products(exec, &[(input, &self.taps[0])], out);
        }
        if self.size == 1 && input.row_stride == 1 {
            return self.pointwise_channels_first(exec, input, out);
        }
        // Zero-pad the input to (H + 2p + 1) x (W + 2p) pixels by `cin` contiguous channels (one
        // spare row so every tap's shifted view stays inside) and compute every output pixel of
        // the padded width: then each tap is one matrix product over a contiguous run of rows.
        let pad = self.dilation * (self.size - 1) / 2;
        let (stride, width) = (w + 2 * pad, self.width());
        let mut padded = vec![0.0; (h + 2 * pad + usize::from(pad > 0)) * stride * cin];
        for y in 0..h {
            let dst = &mut padded[((y + pad) * stride + pad) * cin..][..w * cin];
            let first = input.offset + y * w * input.row_stride;
            if input.col_stride == 1 {
                for (x, d) in dst.chunks_exact_mut(cin).enumerate() {
                    d.copy_from_slice(&input.data[first + x * input.row_stride..][..cin]);
                }
                continue;
            }
            // A transpose (channels-first input), in 16 x 16 tiles so that the lines read and
            // the lines written both stay in L1.
            for x0 in (0..w).step_by(16) {
                let x1 = (x0 + 16).min(w);
                for c0 in (0..cin).step_by(16) {
                    for c in c0..(c0 + 16).min(cin) {
                        let src = &input.data[first + c * input.col_stride..];
                        for x in x0..x1 {
                            dst[x * cin + c] = src[x * input.row_stride];
                        }
                    }
                }
            }
        }
        let terms: Vec<(Strided, &Weights)> = self
            .taps
            .iter()
            .enumerate()
            .map(|(t, tap)| {
                let (ky, kx) = (t / self.size * self.dilation, t % self.size * self.dilation);
                let offset = (ky * stride + kx) * cin;
                (Strided { data: &padded, offset, rows: h * stride, cols: cin, row_stride: cin, col_stride: 1 }, tap)
            })
            .collect();
        if pad == 0 {
            return self.products(exec, &terms, out);
        }
        if self.in_image_taps {
            return self.in_image_products(exec.level, &padded, stride, h, w, out);
        }
        let mut grid = vec![0.0; h * stride * width];
        self.products(exec, &terms, &mut grid);
        for (y, out_row) in out.chunks_exact_mut(w * width).enumerate() {
            out_row.copy_from_slice(&grid[y * stride * width..][..w * width]);
        }
    }

    /// `out = act(bias + sum of view @ weights over terms)`, rows shared among threads when the
    /// work is large.
    fn products(&self, exec: Exec, terms: &[(Strided, &Weights)], out: &mut [f32]) {
        let (rows, width) = (terms[0].0.rows, self.width());
        let work = rows * terms.len() * self.inputs() * width;
        let rows_per_task = if exec.splits(work / 8) { rows.div_ceil(4 * exec.threads) } else { rows };
        let task = |(t, out): (usize, &mut [f32])| {
            self.fill_bias(out);
            let parts: Vec<(Strided, &Weights)> = terms
                .iter()
                .map(|(view, weights)| {
                    let offset = view.offset + t * rows_per_task * view.row_stride;
                    (Strided { offset, rows: out.len() / width, ..*view }, *weights)
                })
                .collect();
            matmul_acc(exec.level, &parts, out);
            if self.relu {
                out.iter_mut().for_each(|v| *v = crate::simd::relu(*v));
            }
        };
        if rows_per_task < rows {
            exec.map(out.chunks_mut(rows_per_task * width).enumerate().collect(), task);
        } else {
            task((0, out));
        }
    }

    /// A 1x1 convolution of a channels-first map (channel rows of contiguous pixels), vectorised
    /// along the pixels so that the map is read in place, without a transpose.
    fn pointwise_channels_first(&self, exec: Exec, input: Strided, out: &mut [f32]) {
        let width = self.width();
        let rows_per_task = if exec.splits(input.rows * input.cols * width / 8) {
            input.rows.div_ceil(4 * exec.threads).next_multiple_of(COLUMN_PAD)
        } else {
            input.rows
        };
        let task = |(t, out): (usize, &mut [f32])| {
            let pixels = t * rows_per_task..t * rows_per_task + out.len() / width;
            exec.level.dispatch(Pointwise { conv: self, input, pixels, out });
        };
        if rows_per_task < input.rows {
            exec.map(out.chunks_mut(rows_per_task * width).enumerate().collect(), task);
        } else {
            task((0, out));
        }
    }

    /// The undilated convolution of the zero-padded map `padded` (as [`Conv2d::forward`] pads
    /// it) summing only the taps that read a pixel of the image: one product per tap and output
    /// row, over the pixels where the tap lies in the image. Serial: it serves only kernels with
    /// a non-finite weight.
    fn in_image_products(&self, level: Level, padded: &[f32], stride: usize, h: usize, w: usize, out: &mut [f32]) {
        let (cin, width, pad) = (self.inputs(), self.width(), self.size / 2);
        // Tap t reads, for output pixel (y, x), padded pixel (y + t / K, x + t % K): in the image
        // when the image pixel (y + t / K - pad, x + t % K - pad) is.
        let in_image = |offset: usize, len: usize| pad.saturating_sub(offset)..(len + pad).saturating_sub(offset).min(len);
        self.fill_bias(out);
        for (t, tap) in self.taps.iter().enumerate() {
            let (ky, kx) = (t / self.size, t % self.size);
            let xs = in_image(kx, w);
            if xs.is_empty() {
                continue;
            }
            for y in in_image(ky, h) {
                let view = Strided::row_major(&padded[((y + ky) * stride + xs.start + kx) * cin..][..xs.len() * cin], xs.len(), cin);
                matmul_acc(level, &[(view, tap)], &mut out[(y * w + xs.start) * width..(y * w + xs.end) * width]);
            }
        }
        if self.relu {
            out.iter_mut().for_each(|v| *v = crate::simd::relu(*v));
        }
    }

    fn fill_bias(&self, out: &mut [f32]) {
        out.chunks_exact_mut(self.bias.len()).for_each(|row| row.copy_from_slice(&self.bias));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, data};

    /// "Same" convolution of an (H, W, Cin) map with a (K, K, Cin, Cout) kernel, in f64, summing
    /// the in-image taps only.
    #[allow(clippy::too_many_arguments)]
    fn reference(x: &[f32], h: usize, w: usize, cin: usize, kernel: &[f32], k: usize, cout: usize, d: usize) -> Vec<f64> {
        reference_padded(x, h, w, cin, kernel, k, cout, d, false)
    }

    /// [`reference`], or with `zero_padded` every tap, those outside the image reading 0.
    #[allow(clippy::too_many_arguments)]
    fn reference_padded(x: &[f32], h: usize, w: usize, cin: usize, kernel: &[f32], k: usize, cout: usize, d: usize, zero_padded: bool) -> Vec<f64> {
        let pad = (d * (k - 1) / 2) as isize;
        let mut out = vec![0.0; h * w * cout];
        for y in 0..h as isize {
            for xx in 0..w as isize {
                for ky in 0..k as isize {
                    for kx in 0..k as isize {
                        let (sy, sx) = (y + ky * d as isize - pad, xx + kx * d as isize - pad);
                        let outside = sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize;
                        if outside && !zero_padded {
                            continue;
                        }
                        for ci in 0..cin {
                            let v = if outside { 0.0 } else { x[(sy as usize * w + sx as usize) * cin + ci] as f64 };
                            for co in 0..cout {
                                let wi = ((ky as usize * k + kx as usize) * cin + ci) * cout + co;
                                out[(y as usize * w + xx as usize) * cout + co] += v * kernel[wi] as f64;
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn pool_conv_matches_reference_on_every_level() {
        for (h, w, k) in [(1, 1, 7), (7, 7, 7), (14, 14, 7), (5, 23, 3), (28, 28, 7), (56, 56, 7), (3, 70, 1)] {
            let planes = data(2 * h * w, 1);
            let (max, mean) = planes.split_at(h * w);
            let kernel = data(k * k * 2, 2);
            let interleaved: Vec<f32> = (0..h * w).flat_map(|p| [max[p], mean[p]]).collect();
            let want: Vec<f64> = reference(&interleaved, h, w, 2, &kernel, k, 1, 1).iter().map(|v| v + 0.25).collect();
            let conv = PoolConv::new(&kernel, k, 0.25).unwrap();
            for level in Level::available() {
                let mut out = vec![f32::NAN; h * w];
                conv.forward(level, max, mean, h, w, &mut out);
                assert_close(&out, &want, 1e-5, 1e-5, &format!("pool conv {h}x{w} k{k} {}", level.name()));
            }
        }
    }

    #[test]
    fn conv2d_matches_reference_on_every_level() {
        for (h, w, cin, cout, k, d) in [(7, 9, 5, 3, 3, 2), (14, 14, 16, 16, 3, 4), (6, 5, 20, 4, 1, 1), (3, 3, 2, 1, 3, 4)] {
            let x = data(h * w * cin, 3);
            let kernel = data(k * k * cin * cout, 4);
            let bias = data(cout, 5);
            let want: Vec<f64> = reference(&x, h, w, cin, &kernel, k, cout, d)
                .chunks_exact(cout)
                .flat_map(|px| px.iter().zip(&bias).map(|(v, b)| (v + *b as f64).max(0.0)).collect::<Vec<_>>())
                .collect();
            let conv = Conv2d::new(&kernel, k, cin, &bias, d, true).unwrap();
            for exec in crate::test_util::execs() {
                let mut out = vec![f32::NAN; h * w * conv.width()];
                exec.run(|| conv.forward(exec, Strided::row_major(&x, h * w, cin), h, w, &mut out));
                // The same map channels-first: read through a column stride.
                let channels_first: Vec<f32> = (0..h * w * cin).map(|i| x[(i % (h * w)) * cin + i / (h * w)]).collect();
                let view = Strided { data: &channels_first, offset: 0, rows: h * w, cols: cin, row_stride: 1, col_stride: h * w };
                let mut out_cf = vec![f32::NAN; h * w * conv.width()];
                exec.run(|| conv.forward(exec, view, h, w, &mut out_cf));
                let out_f64: Vec<f64> = out.iter().map(|&v| v as f64).collect();
                assert_close(&out_cf, &out_f64, 1e-5, 1e-5, "channels-first input");
                let level = exec.level;
                let got: Vec<f32> = out.chunks_exact(conv.width()).flat_map(|px| px[..cout].to_vec()).collect();
                assert_close(&got, &want, 1e-5, 1e-5, &format!("conv {h}x{w} {cin}->{cout} k{k} d{d} {}", level.name()));
            }
        }
    }

    /// Kernels with one NaN or infinite weight, at a corner tap (outside the image on the
    /// border) and at the centre.
    fn non_finite_kernels(len: usize, seed: u64) -> Vec<Vec<f32>> {
        [(0, f32::NAN), (0, f32::INFINITY), (len / 2, f32::NEG_INFINITY), (len - 1, f32::NAN)]
            .into_iter()
            .map(|(i, v)| {
                let mut kernel = data(len, seed);
                kernel[i] = v;
                kernel
            })
            .collect()
    }

    #[test]
    fn pool_conv_with_a_non_finite_weight_sums_the_in_image_taps() {
        for (h, w, k) in [(1, 1, 7), (7, 9, 7), (5, 23, 3), (3, 2, 5)] {
            let planes = data(2 * h * w, 1);
            let (max, mean) = planes.split_at(h * w);
            let interleaved: Vec<f32> = (0..h * w).flat_map(|p| [max[p], mean[p]]).collect();
            for kernel in non_finite_kernels(k * k * 2, 2) {
                let want: Vec<f64> = reference(&interleaved, h, w, 2, &kernel, k, 1, 1).iter().map(|v| v + 0.25).collect();
                let conv = PoolConv::new(&kernel, k, 0.25).unwrap();
                let mut out = vec![0.0; h * w];
                conv.forward(Level::SCALAR, max, mean, h, w, &mut out);
                let what = format!("pool conv {h}x{w} k{k} kernel {:?}", kernel.iter().position(|v| !v.is_finite()));
                assert_close(&out, &want, 1e-5, 1e-5, &what);
                // Rows 1.. of the image, from the planes' rows they read (as the CBAM stream
                // pass calls it).
                let window = 1usize.saturating_sub(k / 2)..h;
                let mut rows_out = vec![0.0; (h - 1) * w];
                let planes_rows = window.start * w..h * w;
                conv.forward_rows(Level::SCALAR, &max[planes_rows.clone()], &mean[planes_rows], window, h, w, 1..h, &mut rows_out);
                assert_close(&rows_out, &want[w..], 1e-5, 1e-5, &format!("{what}, rows 1.."));
            }
        }
    }

    #[test]
    fn conv2d_with_a_non_finite_weight_sums_the_in_image_taps_undilated_and_zero_pads_dilated() {
        for (h, w, cin, cout, k, d) in [(7, 9, 5, 3, 3, 1), (6, 5, 20, 17, 3, 1), (2, 3, 4, 2, 5, 1), (7, 9, 5, 3, 3, 2)] {
            let x = data(h * w * cin, 3);
            let bias = data(cout, 5);
            for kernel in non_finite_kernels(k * k * cin * cout, 4) {
                let want: Vec<f64> = reference_padded(&x, h, w, cin, &kernel, k, cout, d, d > 1)
                    .chunks_exact(cout)
                    .flat_map(|px| px.iter().zip(&bias).map(|(v, b)| v + *b as f64).collect::<Vec<_>>())
                    .collect();
                let conv = Conv2d::new(&kernel, k, cin, &bias, d, false).unwrap();
                let channels_first: Vec<f32> = (0..h * w * cin).map(|i| x[(i % (h * w)) * cin + i / (h * w)]).collect();
                let views = [
                    Strided::row_major(&x, h * w, cin),
                    Strided { data: &channels_first, offset: 0, rows: h * w, cols: cin, row_stride: 1, col_stride: h * w },
                ];
                for (view, exec) in views.into_iter().flat_map(|v| crate::test_util::execs().into_iter().map(move |e| (v, e))) {
                    let mut out = vec![0.0; h * w * conv.width()];
                    exec.run(|| conv.forward(exec, view, h, w, &mut out));
                    let got: Vec<f32> = out.chunks_exact(conv.width()).flat_map(|px| px[..cout].to_vec()).collect();
                    let what = format!("conv {h}x{w} k{k} d{d} kernel {:?} {}", kernel.iter().position(|v| !v.is_finite()), exec.level.name());
                    assert_close(&got, &want, 1e-5, 1e-5, &what);
                }
            }
        }
    }
}
