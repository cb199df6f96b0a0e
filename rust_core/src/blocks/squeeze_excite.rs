//! Squeeze-and-excitation: `y = x * sigmoid(expand(relu(reduce(mean over H, W of x))))`, in one
//! read to pool and one read and write to scale.

use super::cbam::mlp;
use super::matmul::Dense;
use crate::apply::apply_gates;
use crate::exec::Exec;
use crate::layout::Dims;
use crate::pool::channel_pool;
use crate::simd::sigmoid_in_place;

#[derive(Clone, Debug)]
pub struct SqueezeExcite {
    reduce: Dense,
    expand: Dense,
}

impl SqueezeExcite {
    /// `reduce` (C -> hidden, ReLU) and `expand` (hidden -> C).
    pub fn new(reduce: Dense, expand: Dense) -> Result<Self, String> {
        if !reduce.relu || expand.relu || reduce.outputs() != expand.inputs() || expand.outputs() != reduce.inputs() {
            return Err(format!(
                "squeeze-excite: expected C -> hidden (ReLU) -> C dense layers, got {} -> {} and {} -> {}",
                reduce.inputs(),
                reduce.outputs(),
                expand.inputs(),
                expand.outputs()
            ));
        }
        Ok(SqueezeExcite { reduce, expand })
    }

    pub fn channels(&self) -> usize {
        self.reduce.inputs()
    }

    pub fn forward(&self, exec: Exec, x: &[f32], dims: Dims, out: &mut [f32]) {
        assert!(dims.c == self.channels() && x.len() == dims.len() && out.len() == x.len());
        if dims.is_empty() {
            return;
        }
        exec.run(|| {
            let (mut mean, mut max) = (vec![0.0; dims.n * dims.c], vec![0.0; dims.n * dims.c]);
            channel_pool(exec, x, dims, &mut mean, &mut max);
            let logits = mlp(exec.level, &[&self.reduce, &self.expand], &mean, dims.n);
            let width = self.expand.weights.width();
            let mut gates: Vec<f32> = logits.chunks_exact(width).flat_map(|row| row[..dims.c].to_vec()).collect();
            sigmoid_in_place(exec.level, &mut gates);
            apply_gates(exec, x, dims, Some(&gates), None, out);
        });
    }
}
