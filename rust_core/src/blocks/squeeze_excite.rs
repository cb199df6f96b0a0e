//! Squeeze-and-excitation: `y = x * sigmoid(expand(relu(reduce(mean over H, W of x))))`, in one
//! read to pool and one read and write to scale.

use super::cbam::mean_pool_mlp;
use super::matmul::Dense;
use crate::apply::{apply_gates, Epilogue, MapEpilogue};
use crate::exec::Exec;
use crate::layout::Dims;
use crate::simd::sigmoid_in_place;

#[derive(Clone, Debug)]
pub struct SqueezeExcite {
    pub(super) reduce: Dense,
    pub(super) expand: Dense,
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

    /// The same block computing its MLP with int8 weights (see [`Dense::with_int8_weights`]).
    pub fn with_int8_weights(self) -> SqueezeExcite {
        SqueezeExcite { reduce: self.reduce.with_int8_weights(), expand: self.expand.with_int8_weights() }
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
            let mut gates = mean_pool_mlp(exec, x, dims, &[&self.reduce, &self.expand]);
            sigmoid_in_place(exec.level, &mut gates);
            apply_gates(exec, x, dims, Some(&gates), None, epilogue, out);
        });
    }
}
