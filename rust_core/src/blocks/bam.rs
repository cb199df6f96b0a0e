//! BAM: `y = x * (1 + sigmoid(fuse(channel_logits[c], spatial_logits[h, w])))`.
//!
//! The channel branch pools the map (one read) through a small MLP; the spatial branch reduces
//! it with a 1x1 convolution to C / r channels (one read), runs the dilated 3x3 convolutions on
//! that small map and a 1x1 convolution to one channel; the last pass reads and writes the map
//! once, computing the sigmoid on the fly.

use super::cbam::mean_pool_mlp;
use super::conv::Conv2d;
use super::matmul::{Dense, Strided};
use crate::apply::{apply_bam, Epilogue, Fusion, MapEpilogue};
use crate::exec::Exec;
use crate::layout::{Dims, Layout};

#[derive(Clone, Debug)]
pub struct Bam {
    pub(super) channel_mlp: Vec<Dense>,
    spatial_convs: Vec<Conv2d>,
    pub(super) fusion: Fusion,
}

impl Bam {
    /// `channel_mlp`: C -> ... -> C dense layers (ReLU on all but the last); `spatial_convs`:
    /// C -> ... -> 1 convolutions (ReLU on all but the last).
    pub fn new(channel_mlp: Vec<Dense>, spatial_convs: Vec<Conv2d>, fusion: Fusion) -> Result<Self, String> {
        let (Some(first), Some(last)) = (channel_mlp.first(), channel_mlp.last()) else {
            return Err("BAM: expected at least one channel dense layer".into());
        };
        let (Some(first_conv), Some(last_conv)) = (spatial_convs.first(), spatial_convs.last()) else {
            return Err("BAM: expected at least one spatial convolution".into());
        };
        let c = first.inputs();
        let dense_chain = channel_mlp.windows(2).all(|p| p[0].outputs() == p[1].inputs());
        let conv_chain = spatial_convs.windows(2).all(|p| p[0].outputs() == p[1].inputs());
        if !dense_chain || last.outputs() != c || first_conv.inputs() != c || last_conv.outputs() != 1 || !conv_chain {
            return Err(format!(
                "BAM: expected channel layers C -> ... -> C and spatial convolutions C -> ... -> 1 with C = {c}, \
                 got dense {:?} and convolutions {:?}",
                channel_mlp.iter().map(|d| (d.inputs(), d.outputs())).collect::<Vec<_>>(),
                spatial_convs.iter().map(|d| (d.inputs(), d.outputs())).collect::<Vec<_>>()
            ));
        }
        Ok(Bam { channel_mlp, spatial_convs, fusion })
    }

    /// The same block computing its channel branch's MLP with int8 weights (see
    /// [`Dense::with_int8_weights`]).
    pub fn with_int8_weights(self) -> Bam {
        Bam { channel_mlp: self.channel_mlp.into_iter().map(Dense::with_int8_weights).collect(), ..self }
    }

    pub fn channels(&self) -> usize {
        self.channel_mlp[0].inputs()
    }

    pub fn forward(&self, exec: Exec, x: &[f32], dims: Dims, out: &mut [f32]) {
        self.forward_with(exec, x, dims, Epilogue::NONE, out);
    }

    /// `out` = the block applied to `x`, then `epilogue`.
    pub fn forward_with(&self, exec: Exec, x: &[f32], dims: Dims, epilogue: MapEpilogue, out: &mut [f32]) {
        assert!(dims.c == self.channels() && x.len() == dims.len() && out.len() == x.len());
        if dims.is_empty() {
            return;
        }
        exec.run(|| {
            let layers: Vec<&Dense> = self.channel_mlp.iter().collect();
            let channel_logits = mean_pool_mlp(exec, x, dims, &layers);

            let pixels = dims.pixels();
            let mut spatial_logits = vec![0.0; dims.n * pixels];
            let images: Vec<_> = x.chunks_exact(dims.image_len()).zip(spatial_logits.chunks_exact_mut(pixels)).collect();
            exec.for_each(images, dims.image_len(), |(x, logits), exec| self.spatial_logits(exec, x, dims, logits));

            apply_bam(exec, x, dims, &channel_logits, &spatial_logits, self.fusion, epilogue, out);
        });
    }

    /// The spatial branch for one image.
    pub(super) fn spatial_logits(&self, exec: Exec, x: &[f32], dims: Dims, logits: &mut [f32]) {
        let (pixels, c) = (dims.pixels(), dims.c);
        let (row_stride, col_stride) = match dims.layout {
            Layout::ChannelsLast => (c, 1),
            Layout::ChannelsFirst => (1, pixels),
        };
        let mut map = Strided { data: x, offset: 0, rows: pixels, cols: c, row_stride, col_stride };
        let mut buffer = Vec::new();
        for conv in &self.spatial_convs {
            let mut next = vec![0.0; pixels * conv.width()];
            conv.forward(exec, map, dims.h, dims.w, &mut next);
            buffer = next;
            map = Strided::row_major(&buffer, pixels, 0);
            map.cols = conv.outputs();
            map.row_stride = conv.width();
        }
        for (logit, row) in logits.iter_mut().zip(buffer.chunks_exact(self.spatial_convs[self.spatial_convs.len() - 1].width())) {
            *logit = row[0];
        }
    }
}
