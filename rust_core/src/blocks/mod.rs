//! Whole attention blocks run forward from folded weights (BatchNorm already merged into the
//! preceding convolution or dense layer), reading the feature map as few times as possible.

pub mod bam;
pub mod cbam;
pub mod conv;
pub mod matmul;
pub mod panels;
pub mod quantized;
pub mod squeeze_excite;
