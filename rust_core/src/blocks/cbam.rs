//! CBAM and its two gates, forward in three passes over the map: pool the channels; pool the
//! channel-scaled map over C without writing it; write `x * g[c] * s[h, w]` once. On NHWC maps
//! the last two passes stream together (see [`Cbam::stream_spatial`]), so that the map is read
//! from memory twice, not three times.

use super::conv::PoolConv;
use super::matmul::{Dense, Strided};
use crate::apply::{apply_gates, Epilogue, MapEpilogue};
use crate::exec::Exec;
use crate::layout::{Dims, Layout};
use crate::pool::{channel_pool, each_row, image_spatial_sum_max};
use std::ops::Range;
use crate::simd::sigmoid_in_place;

/// CBAM's channel gate: `sigmoid(sum over pools of MLP(pool(x)))`, the MLP shared.
#[derive(Clone, Debug)]
pub struct ChannelGate {
    hidden: Dense,
    output: Dense,
    avg: bool,
    max: bool,
}

impl ChannelGate {
    /// `hidden` (C -> hidden, ReLU) and `output` (hidden -> C); at least one pool.
    pub fn new(hidden: Dense, output: Dense, avg: bool, max: bool) -> Result<Self, String> {
        if !hidden.relu || output.relu || hidden.outputs() != output.inputs() || output.outputs() != hidden.inputs() {
            return Err(format!(
                "channel gate: expected C -> hidden (ReLU) -> C dense layers, got {} -> {} and {} -> {}",
                hidden.inputs(),
                hidden.outputs(),
                output.inputs(),
                output.outputs()
            ));
        }
        if !(avg || max) {
            return Err("channel gate: expected at least one of the avg and max pools".into());
        }
        Ok(ChannelGate { hidden, output, avg, max })
    }

    pub fn channels(&self) -> usize {
        self.hidden.inputs()
    }

    /// The gates (N * C) from the channel means and maxima (N * C each).
    pub fn gates(&self, exec: Exec, mean: &[f32], max: &[f32]) -> Vec<f32> {
        let c = self.channels();
        let n = mean.len() / c;
        let pools: Vec<&[f32]> = [self.avg.then_some(mean), self.max.then_some(max)].into_iter().flatten().collect();
        let k = pools.len();
        // Plain loops: the nested iterator adaptors here were not inlined (measured, C = 2048).
        let mut descriptors = Vec::with_capacity(n * k * c);
        for i in 0..n {
            for pool in &pools {
                descriptors.extend_from_slice(&pool[i * c..(i + 1) * c]);
            }
        }
        let logits = mlp(exec, &[&self.hidden, &self.output], &descriptors, n * k);
        let width = self.output.width();
        let mut gates = vec![0.0; n * c];
        for (i, image) in gates.chunks_exact_mut(c).enumerate() {
            for p in 0..k {
                let row = &logits[(i * k + p) * width..][..c];
                image.iter_mut().zip(row).for_each(|(g, l)| *g += l);
            }
        }
        sigmoid_in_place(exec.level, &mut gates);
        gates
    }

    /// The same gate computing its MLP with int8 weights (see [`Dense::with_int8_weights`]).
    pub fn with_int8_weights(self) -> ChannelGate {
        ChannelGate { hidden: self.hidden.with_int8_weights(), output: self.output.with_int8_weights(), ..self }
    }
}

/// Runs dense layers one after the other over `rows` input rows; returns the last layer's
/// output, `rows` x its padded width.
pub(crate) fn mlp(exec: Exec, layers: &[&Dense], input: &[f32], rows: usize) -> Vec<f32> {
    let mut current = input.to_vec();
    let mut view_stride = layers[0].inputs();
    for layer in layers {
        let view = Strided { data: &current, offset: 0, rows, cols: layer.inputs(), row_stride: view_stride, col_stride: 1 };
        let mut next = vec![0.0; rows * layer.width()];
        layer.forward(exec, view, &mut next);
        current = next;
        view_stride = layer.width();
    }
    current
}

/// The per-channel logits of a squeeze-style gate (SE, BAM's channel branch): the mean over H
/// and W of every channel through `layers`, `dims.n` x C without the layers' padding columns.
pub(crate) fn mean_pool_mlp(exec: Exec, x: &[f32], dims: Dims, layers: &[&Dense]) -> Vec<f32> {
    let (mut mean, mut max) = (vec![0.0; dims.n * dims.c], vec![0.0; dims.n * dims.c]);
    channel_pool(exec.for_pooling(4 * x.len()), x, dims, &mut mean, &mut max);
    pooled_mlp(exec, &mean, dims, layers)
}

/// The rest of [`mean_pool_mlp`] from the channel means (`dims.n` x C).
pub(crate) fn pooled_mlp(exec: Exec, mean: &[f32], dims: Dims, layers: &[&Dense]) -> Vec<f32> {
    let logits = mlp(exec, layers, mean, dims.n);
    let width = layers[layers.len() - 1].width();
    logits.chunks_exact(width).flat_map(|row| row[..dims.c].iter().copied()).collect()
}

/// CBAM (`channel` then `spatial`), or either gate alone (ChannelAttention, SpatialAttention).
#[derive(Clone, Debug)]
pub struct Cbam {
    pub(super) channel: Option<ChannelGate>,
    pub(super) spatial: Option<PoolConv>,
    channels: usize,
}

impl Cbam {
    /// `channels` is the channel count the layer was built for.
    pub fn new(channel: Option<ChannelGate>, spatial: Option<PoolConv>, channels: usize) -> Result<Self, String> {
        match &channel {
            None if spatial.is_none() => Err("CBAM: expected a channel gate, a spatial gate or both".into()),
            Some(gate) if gate.channels() != channels => {
                Err(format!("CBAM: the channel gate has {} channels, expected {channels}", gate.channels()))
            }
            _ => Ok(Cbam { channel, spatial, channels }),
        }
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The same block computing its channel gate's MLP with int8 weights (see
    /// [`Dense::with_int8_weights`]).
    pub fn with_int8_weights(self) -> Cbam {
        Cbam { channel: self.channel.map(ChannelGate::with_int8_weights), ..self }
    }

    /// `out` = the block applied to `x`.
    pub fn forward(&self, exec: Exec, x: &[f32], dims: Dims, out: &mut [f32]) {
        self.forward_with(exec, x, dims, Epilogue::NONE, out);
    }

    /// `out` = the block applied to `x`, then `epilogue`.
    pub fn forward_with(&self, exec: Exec, x: &[f32], dims: Dims, epilogue: MapEpilogue, out: &mut [f32]) {
        assert!(dims.c == self.channels && x.len() == dims.len() && out.len() == x.len());
        if dims.is_empty() {
            return;
        }
        exec.run(|| {
            let gates = self.channel.as_ref().map(|gate| {
                let (mut mean, mut max) = (vec![0.0; dims.n * dims.c], vec![0.0; dims.n * dims.c]);
                channel_pool(exec.for_pooling(4 * x.len()), x, dims, &mut mean, &mut max);
                gate.gates(exec, &mean, &max)
            });
            if let (Some(conv), Layout::ChannelsLast) = (&self.spatial, dims.layout) {
                return self.stream_spatial(exec, conv, x, dims, gates.as_deref(), epilogue, out);
            }
            let spatial = self.spatial.as_ref().map(|conv| {
                let pixels = dims.pixels();
                let mut maps = vec![0.0; dims.n * pixels];
                let images: Vec<_> = x.chunks_exact(dims.image_len()).zip(maps.chunks_exact_mut(pixels)).enumerate().collect();
                exec.for_each(images, dims.image_len(), |(n, (x, map)), exec| {
                    let gate = gates.as_ref().map(|g| &g[n * dims.c..(n + 1) * dims.c]);
                    let (mut mean, mut max) = (vec![0.0; pixels], vec![0.0; pixels]);
                    image_spatial_sum_max(exec, x, dims, gate, &mut mean, &mut max);
                    mean.iter_mut().for_each(|m| *m /= dims.c as f32);
                    conv.forward(exec.level, &max, &mean, dims.h, dims.w, map);
                    sigmoid_in_place(exec.level, map);
                });
                maps
            });
            apply_gates(exec, x, dims, gates.as_deref(), spatial.as_deref(), epilogue, out);
        });
    }

    /// The spatial gate and the output of an NHWC map in one streaming pass: the pixel rows of
    /// an image are pooled over C a band at a time, and a band's output is written as soon as
    /// the rows its K x K convolution reads are pooled, K / 2 rows later, while its map rows
    /// are still in the core's cache. The images are cut into row segments, one part of the
    /// work each, and a segment pools the K / 2 rows around it again.
    #[allow(clippy::too_many_arguments)]
    fn stream_spatial(&self, exec: Exec, conv: &PoolConv, x: &[f32], dims: Dims, gates: Option<&[f32]>, epilogue: MapEpilogue, out: &mut [f32]) {
        let (h, w, c) = (dims.h, dims.w, dims.c);
        let (row_len, image_len) = (w * c, dims.image_len());
        let per_image = if exec.splits(dims.len()) { exec.threads.div_ceil(dims.n).min(h) } else { 1 };
        let segment_rows = h.div_ceil(per_image);
        let segments: Vec<(usize, Range<usize>, &mut [f32])> = out
            .chunks_exact_mut(image_len)
            .enumerate()
            .flat_map(|(n, image)| {
                image.chunks_mut(segment_rows * row_len).enumerate().map(move |(s, out)| (n, s * segment_rows..s * segment_rows + out.len() / row_len, out))
            })
            .collect();
        let serial = exec.serial();
        let pad = conv.size() / 2;
        exec.map(segments, |(n, rows, out)| {
            let image = &x[n * image_len..][..image_len];
            let gate = gates.map(|g| &g[n * c..][..c]);
            let shortcut = epilogue.shortcut.map(|s| &s[n * image_len..][..image_len]);
            // The pooled rows the segment's convolution reads, pooled up to `pooled`.
            let window = rows.start.saturating_sub(pad)..(rows.end + pad).min(h);
            let (mut mean, mut max) = (vec![0.0; window.len() * w], vec![0.0; window.len() * w]);
            let mut pooled = window.start;
            let mut logits = vec![0.0; STREAM_BAND_ROWS * w];
            for first in rows.clone().step_by(STREAM_BAND_ROWS) {
                let band = first..(first + STREAM_BAND_ROWS).min(rows.end);
                let needed = (band.end + pad).min(h);
                if needed > pooled {
                    let local = (pooled - window.start) * w..(needed - window.start) * w;
                    each_row(serial, &image[pooled * row_len..needed * row_len], c, gate, &mut mean[local.clone()], &mut max[local.clone()]);
                    mean[local].iter_mut().for_each(|m| *m /= c as f32);
                    pooled = needed;
                }
                let logits = &mut logits[..band.len() * w];
                conv.forward_rows(serial.level, &max, &mean, window.clone(), h, w, band.clone(), logits);
                sigmoid_in_place(serial.level, logits);
                let pixels = band.start * row_len..band.end * row_len;
                let band_dims = Dims { n: 1, h: band.len(), ..dims };
                let band_epilogue = Epilogue { shortcut: shortcut.map(|s| &s[pixels.clone()]), ..epilogue };
                let out = &mut out[(band.start - rows.start) * row_len..][..band.len() * row_len];
                apply_gates(serial, &image[pixels], band_dims, gate, Some(logits), band_epilogue, out);
            }
        });
    }
}

/// Image rows per band of [`Cbam::stream_spatial`]: small enough that a band's map rows, the
/// K / 2 rows pooled after them, their output and shortcut rows stay in a core's L2 cache (about
/// 0.5 MB for 56 x 56 x 256 float maps and K = 7).
const STREAM_BAND_ROWS: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::pool::spatial_pool;
    use crate::test_util::{assert_close, data, execs};

    fn block(c: usize, hidden: usize) -> Cbam {
        let mlp_hidden = Dense::new(&data(c * hidden, 1), &data(hidden, 2), c, true).unwrap();
        let mlp_output = Dense::new(&data(hidden * c, 3), &data(c, 4), hidden, false).unwrap();
        let channel = ChannelGate::new(mlp_hidden, mlp_output, true, true).unwrap();
        let spatial = PoolConv::new(&data(7 * 7 * 2, 5), 7, 0.1).unwrap();
        Cbam::new(Some(channel), Some(spatial), c).unwrap()
    }

    /// The unfused composition: gate, write x * g, pool it, convolve, write (x * g) * s.
    fn unfused(cbam: &Cbam, exec: Exec, x: &[f32], dims: Dims) -> Vec<f32> {
        let (mut mean, mut max) = (vec![0.0; dims.n * dims.c], vec![0.0; dims.n * dims.c]);
        channel_pool(exec, x, dims, &mut mean, &mut max);
        let g = cbam.channel.as_ref().unwrap().gates(exec, &mean, &max);
        let mut scaled = vec![0.0; x.len()];
        apply_gates(exec, x, dims, Some(&g), None, Epilogue::NONE, &mut scaled);
        let mut pooled = vec![0.0; dims.n * dims.pixels() * 2];
        spatial_pool(exec, &scaled, dims, &mut pooled);
        let p = dims.pixels();
        let mut s = vec![0.0; dims.n * p];
        for n in 0..dims.n {
            let image = &pooled[n * 2 * p..(n + 1) * 2 * p];
            let (max, mean): (Vec<f32>, Vec<f32>) = match dims.layout {
                Layout::ChannelsLast => (image.iter().step_by(2).copied().collect(), image.iter().skip(1).step_by(2).copied().collect()),
                Layout::ChannelsFirst => (image[..p].to_vec(), image[p..].to_vec()),
            };
            cbam.spatial.as_ref().unwrap().forward(exec.level, &max, &mean, dims.h, dims.w, &mut s[n * p..(n + 1) * p]);
        }
        sigmoid_in_place(exec.level, &mut s);
        let mut out = vec![0.0; x.len()];
        apply_gates(exec, &scaled, dims, None, Some(&s), Epilogue::NONE, &mut out);
        out
    }

    #[test]
    fn fused_cbam_equals_the_unfused_composition() {
        for layout in [Layout::ChannelsLast, Layout::ChannelsFirst] {
            // Large enough maps are cut into row segments at 2 threads: with fewer rows than the
            // kernel (7), with segments of unequal rows, and with more images than threads.
            for (n, h, w, c) in [(2, 9, 11, 24), (1, 56, 56, 64), (3, 1, 1, 17), (1, 5, 9, 400), (1, 13, 5, 300), (3, 8, 8, 100)] {
                let dims = Dims { n, h, w, c, layout };
                let cbam = block(c, (c / 16).max(1));
                let x = data(dims.len(), 9);
                let shortcut = data(dims.len(), 10);
                for exec in execs() {
                    let plain = unfused(&cbam, exec, &x, dims);
                    let want: Vec<f64> = plain.iter().map(|&v| v as f64).collect();
                    let mut out = vec![f32::NAN; x.len()];
                    cbam.forward(exec, &x, dims, &mut out);
                    let what = format!("cbam {dims:?} {} threads {}", exec.level.name(), exec.threads);
                    assert_close(&out, &want, 1e-5, 1e-6, &what);
                    // With the residual epilogue.
                    let want: Vec<f64> = plain.iter().zip(&shortcut).map(|(&y, &s)| (y as f64 + s as f64).max(0.0)).collect();
                    cbam.forward_with(exec, &x, dims, Epilogue { shortcut: Some(&shortcut), relu: true }, &mut out);
                    assert_close(&out, &want, 1e-5, 1e-6, &format!("{what} with the epilogue"));
                }
            }
        }
    }

    #[test]
    fn inconsistent_weights_are_errors() {
        let hidden = Dense::new(&[0.0; 8], &[0.0; 2], 4, true).unwrap();
        let output = Dense::new(&[0.0; 6], &[0.0; 3], 2, false).unwrap();
        assert!(ChannelGate::new(hidden, output, true, false).unwrap_err().contains("4 -> 2 and 2 -> 3"));
        assert!(Cbam::new(None, None, 4).is_err());
    }
}
