//! Applying attention gates to a map in one read and one write:
//! - [`apply_gates`]: `y = x * g[n, c] * s[n, h, w]` (either gate may be absent), which is the
//!   channel gate, the spatial gate, or CBAM's two gates at once;
//! - [`apply_bam`]: BAM's `y = x * (1 + sigmoid(fuse(c[n, c], s[n, h, w])))`;
//!
//! each followed, in the same pass, by the residual [`Epilogue`] of a ResNet block when given.

use crate::exec::Exec;
use crate::layout::{Dims, Layout};
use crate::simd::{neg_exp_in_place, relu_f32s, sigmoid};
use pulp::{Simd, WithSimd};

/// How BAM combines its channel and spatial logits before the sigmoid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// `c + s`, as in the paper.
    Sum,
    /// `c * s`, as in the authors' code.
    Product,
}

/// What follows an attention block in a ResNet block, applied in the block's output pass:
/// `out = y + shortcut` (the shortcut laid out like the map), then `max(out, 0)` when `relu`.
/// Saves the separate add (two reads and a write of the map) and its hand-over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Epilogue<S> {
    pub shortcut: Option<S>,
    pub relu: bool,
}

impl<S> Epilogue<S> {
    /// The block's own output, nothing added.
    pub const NONE: Epilogue<S> = Epilogue { shortcut: None, relu: false };
}

/// The float epilogue: a shortcut map of the same dims as the block's input.
pub type MapEpilogue<'a> = Epilogue<&'a [f32]>;

/// `out = (x * channel[n, c]) * spatial[n, h, w]`, then the epilogue; `channel` holds N * C
/// values, `spatial` N * H * W; an absent gate counts as 1.
pub fn apply_gates(exec: Exec, x: &[f32], dims: Dims, channel: Option<&[f32]>, spatial: Option<&[f32]>, epilogue: MapEpilogue, out: &mut [f32]) {
    check(x, dims, channel.into_iter().chain(spatial), epilogue, out);
    exec.run(|| {
        per_image(exec, x, dims, epilogue, out, |exec, n, x, epilogue, out| {
            let channel = channel.map(|g| &g[n * dims.c..][..dims.c]);
            let spatial = spatial.map(|s| &s[n * dims.pixels()..][..dims.pixels()]);
            let (rows, cols, combine) = match dims.layout {
                Layout::ChannelsLast => (spatial, channel, Combine::Scale { channel_is_row: false }),
                Layout::ChannelsFirst => (channel, spatial, Combine::Scale { channel_is_row: true }),
            };
            image(exec, x, dims, rows, cols, combine, epilogue, out);
        })
    });
}

/// `out = x * (1 + sigmoid(fuse(channel_logits[n, c], spatial_logits[n, h, w])))`, then the
/// epilogue.
#[allow(clippy::too_many_arguments)] // the map, both logits, the fusion, the epilogue, the output
pub fn apply_bam(
    exec: Exec,
    x: &[f32],
    dims: Dims,
    channel_logits: &[f32],
    spatial_logits: &[f32],
    fusion: Fusion,
    epilogue: MapEpilogue,
    out: &mut [f32],
) {
    check(x, dims, [channel_logits, spatial_logits], epilogue, out);
    // With sum fusion, exp(-(c + s)) = exp(-c) exp(-s): two small exponentials per image
    // instead of one per element. Exact while |c| and |s| stay inside exp's unclamped range.
    let factor = fusion == Fusion::Sum && channel_logits.iter().chain(spatial_logits).all(|v| v.abs() <= FACTOR_LIMIT);
    exec.run(|| {
        per_image(exec, x, dims, epilogue, out, |exec, n, x, epilogue, out| {
            let mut channel = channel_logits[n * dims.c..][..dims.c].to_vec();
            let mut spatial = spatial_logits[n * dims.pixels()..][..dims.pixels()].to_vec();
            let combine = if factor {
                neg_exp_in_place(exec.level, &mut channel);
                neg_exp_in_place(exec.level, &mut spatial);
                Combine::BamFactors
            } else {
                Combine::Bam(fusion)
            };
            let (rows, cols) = match dims.layout {
                Layout::ChannelsLast => (spatial, channel),
                Layout::ChannelsFirst => (channel, spatial),
            };
            image(exec, x, dims, Some(&rows), Some(&cols), combine, epilogue, out);
        })
    });
}

fn check<'a>(x: &[f32], dims: Dims, gates: impl IntoIterator<Item = &'a [f32]>, epilogue: MapEpilogue, out: &[f32]) {
    assert!(x.len() == dims.len() && out.len() == x.len());
    assert!(epilogue.shortcut.is_none_or(|s| s.len() == x.len()));
    for g in gates {
        assert!(g.len() == dims.n * dims.c || g.len() == dims.n * dims.pixels());
    }
}

fn per_image(exec: Exec, x: &[f32], dims: Dims, epilogue: MapEpilogue, out: &mut [f32], f: impl Fn(Exec, usize, &[f32], MapEpilogue, &mut [f32]) + Sync + Send) {
    if dims.is_empty() {
        return;
    }
    let images: Vec<_> = x.chunks_exact(dims.image_len()).zip(out.chunks_exact_mut(dims.image_len())).enumerate().collect();
    exec.for_each(images, dims.image_len(), |(n, (x, out)), exec| {
        let shortcut = epilogue.shortcut.map(|s| &s[n * dims.image_len()..][..dims.image_len()]);
        f(exec, n, x, Epilogue { shortcut, ..epilogue }, out)
    });
}

/// One image as rows (see [`Dims::rows`]), with one gate value per row and one per column.
#[allow(clippy::too_many_arguments)]
fn image(exec: Exec, x: &[f32], dims: Dims, rows: Option<&[f32]>, cols: Option<&[f32]>, combine: Combine, epilogue: MapEpilogue, out: &mut [f32]) {
    let (row_count, row_len) = dims.rows();
    if exec.splits(x.len()) && row_count > 1 {
        let rows_per_task = row_count.div_ceil(4 * exec.threads);
        let chunk = rows_per_task * row_len;
        let parts: Vec<_> = x.chunks(chunk).zip(out.chunks_mut(chunk)).enumerate().collect();
        exec.map(parts, |(t, (x, out))| {
            let rows = rows.map(|r| &r[t * rows_per_task..][..x.len() / row_len]);
            let shortcut = epilogue.shortcut.map(|s| &s[t * chunk..][..x.len()]);
            exec.level.dispatch(GateLeaf { x, out, row_len, rows, cols, combine, epilogue: Epilogue { shortcut, ..epilogue } });
        });
    } else {
        exec.level.dispatch(GateLeaf { x, out, row_len, rows, cols, combine, epilogue });
    }
}

#[derive(Clone, Copy)]
enum Combine {
    /// `(x * channel) * spatial`; the channel gate is the per-row value or the per-column one.
    Scale { channel_is_row: bool },
    /// `x * (1 + sigmoid(fuse(row, column)))`.
    Bam(Fusion),
    /// The same for sum fusion from `row = exp(-r)` and `column = exp(-c)`:
    /// `x + x / (1 + row * column)`.
    BamFactors,
}

/// Logits up to this size factor exactly (see [`apply_bam`]); `exp` clamps beyond 86.
const FACTOR_LIMIT: f32 = 40.0;

struct GateLeaf<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
    row_len: usize,
    rows: Option<&'a [f32]>,
    cols: Option<&'a [f32]>,
    combine: Combine,
    epilogue: MapEpilogue<'a>,
}

impl WithSimd for GateLeaf<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { x, out, row_len, rows, cols, combine, epilogue } = self;
        let one = simd.splat_f32s(1.0);
        let (col_head, col_tail) = cols.map_or((&[][..], &[][..]), S::as_simd_f32s);
        let col_last = if cols.is_some() { simd.partial_load_f32s(col_tail) } else { one };
        for (r, (x_row, out_row)) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)).enumerate() {
            let row = simd.splat_f32s(rows.map_or(1.0, |v| v[r]));
            let (x_head, x_tail) = S::as_simd_f32s(x_row);
            let (out_head, out_tail) = S::as_mut_simd_f32s(out_row);
            let shortcut_row = epilogue.shortcut.map(|s| S::as_simd_f32s(&s[r * row_len..][..row_len]));
            let finish = |v: S::f32s, i: Option<usize>| {
                let v = match shortcut_row {
                    Some((head, tail)) => simd.add_f32s(v, i.map_or_else(|| simd.partial_load_f32s(tail), |i| head[i])),
                    None => v,
                };
                if epilogue.relu { relu_f32s(simd, v) } else { v }
            };
            for (i, (xv, o)) in x_head.iter().zip(out_head.iter_mut()).enumerate() {
                *o = finish(gate(simd, combine, *xv, row, col_head.get(i).copied().unwrap_or(one)), Some(i));
            }
            let last = finish(gate(simd, combine, simd.partial_load_f32s(x_tail), row, col_last), None);
            simd.partial_store_f32s(out_tail, last);
        }
    }
}

#[inline(always)]
fn gate<S: Simd>(simd: S, combine: Combine, x: S::f32s, row: S::f32s, col: S::f32s) -> S::f32s {
    match combine {
        Combine::Scale { channel_is_row: true } => simd.mul_f32s(simd.mul_f32s(x, row), col),
        Combine::Scale { channel_is_row: false } => simd.mul_f32s(simd.mul_f32s(x, col), row),
        Combine::Bam(fusion) => {
            let logit = match fusion {
                Fusion::Sum => simd.add_f32s(row, col),
                Fusion::Product => simd.mul_f32s(row, col),
            };
            simd.mul_f32s(x, simd.add_f32s(simd.splat_f32s(1.0), sigmoid(simd, logit)))
        }
        Combine::BamFactors => {
            let denominator = simd.add_f32s(simd.splat_f32s(1.0), simd.mul_f32s(row, col));
            simd.add_f32s(x, simd.div_f32s(x, denominator))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Level;
    use crate::test_util::{assert_close, at, data, execs, odd_shapes};

    fn index(d: Dims, n: usize, p: usize, c: usize) -> usize {
        match d.layout {
            Layout::ChannelsLast => (n * d.pixels() + p) * d.c + c,
            Layout::ChannelsFirst => (n * d.c + c) * d.pixels() + p,
        }
    }

    /// `f(x, channel value, spatial value)` at every element, in f64.
    fn reference(x: &[f32], d: Dims, ch: &[f32], sp: &[f32], f: impl Fn(f64, f64, f64) -> f64) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for n in 0..d.n {
            for p in 0..d.pixels() {
                for c in 0..d.c {
                    let (g, s) = (ch[n * d.c + c] as f64, sp[n * d.pixels() + p] as f64);
                    out[index(d, n, p, c)] = f(at(x, d, n, p, c) as f64, g, s);
                }
            }
        }
        out
    }

    #[test]
    fn gates_match_reference_on_every_level() {
        for d in odd_shapes() {
            let x = data(d.len(), 5);
            let ch = data(d.n * d.c, 6);
            let sp = data(d.n * d.pixels(), 7);
            type Case<'a> = (Option<&'a [f32]>, Option<&'a [f32]>, fn(f64, f64, f64) -> f64);
            let cases: [Case; 3] = [
                (Some(&ch), None, |x, g, _| x * g),
                (None, Some(&sp), |x, _, s| x * s),
                (Some(&ch), Some(&sp), |x, g, s| x * g * s),
            ];
            for (channel, spatial, f) in cases {
                let want = reference(&x, d, &ch, &sp, f);
                for exec in execs() {
                    let mut out = vec![0.0; x.len()];
                    apply_gates(exec, &x, d, channel, spatial, Epilogue::NONE, &mut out);
                    assert_close(&out, &want, 1e-6, 1e-6, &format!("gates {} {d:?}", exec.level.name()));
                }
            }
        }
    }

    #[test]
    fn epilogue_adds_the_shortcut_and_applies_relu_on_every_level() {
        let mut shapes = odd_shapes();
        // Large enough to be split across threads.
        shapes.push(Dims { n: 1, h: 40, w: 41, c: 19, layout: Layout::ChannelsLast });
        for d in shapes {
            let (x, ch, sp) = (data(d.len(), 11), data(d.n * d.c, 12), data(d.n * d.pixels(), 13));
            let mut shortcut = data(d.len(), 14);
            shortcut[d.len() / 2] = f32::NAN; // ReLU keeps NaN, as tf.nn.relu does.
            for relu in [false, true] {
                let epilogue = Epilogue { shortcut: Some(&shortcut[..]), relu };
                let finish = |i: usize, y: f64| {
                    let v = y + shortcut[i] as f64;
                    if relu && v < 0.0 { 0.0 } else { v }
                };
                let gates: Vec<f64> = reference(&x, d, &ch, &sp, |x, g, s| x * g * s).iter().enumerate().map(|(i, &y)| finish(i, y)).collect();
                let bam: Vec<f64> =
                    reference(&x, d, &ch, &sp, |x, g, s| x * (1.0 + 1.0 / (1.0 + (-(g + s)).exp()))).iter().enumerate().map(|(i, &y)| finish(i, y)).collect();
                for exec in execs() {
                    let what = format!("relu {relu} {} threads {} {d:?}", exec.level.name(), exec.threads);
                    let mut out = vec![0.0; x.len()];
                    apply_gates(exec, &x, d, Some(&ch), Some(&sp), epilogue, &mut out);
                    assert_close(&out, &gates, 1e-6, 1e-6, &format!("gates {what}"));
                    apply_bam(exec, &x, d, &ch, &sp, Fusion::Sum, epilogue, &mut out);
                    assert_close(&out, &bam, 1e-6, 1e-6, &format!("bam {what}"));
                }
            }
        }
    }

    #[test]
    fn one_large_image_splits_across_threads_with_the_same_result() {
        for layout in [Layout::ChannelsLast, Layout::ChannelsFirst] {
            let d = Dims { n: 1, h: 64, w: 64, c: 256, layout };
            let (x, ch, sp) = (data(d.len(), 1), data(d.c, 2), data(d.pixels(), 3));
            let (one, two) = (Exec::new(Level::best(), Some(1)), Exec::new(Level::best(), Some(2)));
            let (mut a, mut b) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            apply_gates(one, &x, d, Some(&ch), Some(&sp), Epilogue::NONE, &mut a);
            apply_gates(two, &x, d, Some(&ch), Some(&sp), Epilogue::NONE, &mut b);
            assert_eq!(a, b);
            apply_bam(one, &x, d, &ch, &sp, Fusion::Sum, Epilogue::NONE, &mut a);
            apply_bam(two, &x, d, &ch, &sp, Fusion::Sum, Epilogue::NONE, &mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn bam_matches_reference_on_every_level() {
        for d in odd_shapes() {
            let x = data(d.len(), 8);
            let ch = data(d.n * d.c, 9);
            let sp = data(d.n * d.pixels(), 10);
            let mut sp = sp.clone();
            if d.c == 17 {
                sp[0] = 50.0; // beyond FACTOR_LIMIT: the per-element path
            }
            for (fusion, fuse) in [(Fusion::Sum, (|a, b| a + b) as fn(f64, f64) -> f64), (Fusion::Product, |a, b| a * b)] {
                let want = reference(&x, d, &ch, &sp, |x, g, s| x * (1.0 + 1.0 / (1.0 + (-fuse(g, s)).exp())));
                for exec in execs() {
                    let mut out = vec![0.0; x.len()];
                    apply_bam(exec, &x, d, &ch, &sp, fusion, Epilogue::NONE, &mut out);
                    assert_close(&out, &want, 1e-6, 1e-6, &format!("bam {fusion:?} {} {d:?}", exec.level.name()));
                }
            }
        }
    }
}
