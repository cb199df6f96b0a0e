//! The simplest streaming read (a sum with independent vector accumulators), which the CPU
//! benchmark times to measure the machine's read bandwidth that the kernels are judged against.

use crate::exec::Exec;
use pulp::{Simd, WithSimd};

/// The sum of `x` (in no particular order), read once, split evenly over `exec.threads`.
pub fn read_sum(exec: Exec, x: &[f32]) -> f32 {
    exec.run(|| {
        if exec.threads > 1 && !x.is_empty() {
            exec.map(x.chunks(x.len().div_ceil(exec.threads)).collect(), |part| exec.level.dispatch(ReadSum(part))).into_iter().sum()
        } else {
            exec.level.dispatch(ReadSum(x))
        }
    })
}

struct ReadSum<'a>(&'a [f32]);

impl WithSimd for ReadSum<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let (head, tail) = S::as_simd_f32s(self.0);
        let mut acc = [simd.splat_f32s(0.0); 8];
        let blocks = head.chunks_exact(8);
        let rest = blocks.remainder();
        for block in blocks {
            for (a, v) in acc.iter_mut().zip(block) {
                *a = simd.add_f32s(*a, *v);
            }
        }
        for v in rest {
            acc[0] = simd.add_f32s(acc[0], *v);
        }
        let total = acc.iter().fold(simd.splat_f32s(0.0), |s, a| simd.add_f32s(s, *a));
        simd.reduce_sum_f32s(total) + tail.iter().sum::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::execs;

    #[test]
    fn sums_every_element_once() {
        for len in [0, 1, 17, 1000, 1 << 17] {
            let x = vec![1.0f32; len];
            for exec in execs() {
                assert_eq!(read_sum(exec, &x), len as f32, "{len} {}", exec.level.name());
            }
        }
    }
}
