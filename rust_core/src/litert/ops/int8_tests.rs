//! The int8 variant of the ops: inputs, quantization attributes and vector, the block cache.

use super::*;
use crate::blocks::quantized::forward_reference;
use crate::test_util::data;

/// A CBAM op's float inputs (map excluded): channel MLP, then the 3x3 spatial conv.
fn cbam_weights(c: usize, r: usize) -> Vec<(Vec<usize>, Vec<f32>)> {
    let shapes = [vec![c, r], vec![r], vec![r, c], vec![c], vec![3, 3, 2, 1], vec![1]];
    shapes.into_iter().enumerate().map(|(i, s)| (s.clone(), data(s.iter().product(), 40 + i as u64))).collect()
}

const CONFIG: [i32; 8] = [2, 1, 1, 1, 1, 3, 0, 0];

/// The int8 CBAM op's inputs: map, weights, quantization, config.
fn inputs<'a>(shape: &'a [usize], x: &'a [i8], weights: &'a [(Vec<usize>, Vec<f32>)], q: &'a [f32], q_shape: &'a [usize]) -> Vec<Tensor<'a>> {
    let mut v = vec![Tensor { shape, data: TensorData::I8(x) }];
    v.extend(weights.iter().map(|(s, d)| Tensor { shape: s, data: TensorData::F32(d) }));
    v.push(Tensor { shape: q_shape, data: TensorData::F32(q) });
    v.push(Tensor { shape: &[8], data: TensorData::I32(&CONFIG) });
    v
}

fn quantized_map(len: usize) -> Vec<i8> {
    data(len, 7).iter().map(|v| (v * 60.0) as i8).collect()
}

#[test]
fn int8_op_matches_the_block_and_the_reference() {
    let (n, h, w, c, r) = (2, 5, 7, 19, 4);
    let shape = [n, h, w, c];
    let x = quantized_map(n * h * w * c);
    let weights = cbam_weights(c, r);
    let q = [0.03, -7.0, 0.02, 5.0];
    let all = inputs(&shape, &x, &weights, &q, &[4]);
    let mut out = vec![0i8; x.len()];
    run(OpKind::Cbam, Exec::single(), GateWeights::AsMap, &all, &mut out).unwrap();

    let config: Vec<i64> = CONFIG.iter().map(|&v| v.into()).collect();
    // The int8 op computes its gate MLP with int8 weights.
    let Block::Cbam(block) = build(OpKind::Cbam, super::weights(&all, &config), &config, c).unwrap().with_int8_weights() else { panic!("not a CBAM block") };
    let quantization = Quantization::from_values(q.map(f64::from)).unwrap();
    let dims = Dims { n, h, w, c, layout: Layout::ChannelsLast };
    let mut want = vec![0i8; x.len()];
    block.forward_int8(Exec::single(), &x, dims, quantization, &mut want);
    assert_eq!(out, want);
    // And the definition (the block tests say why 1 LSB).
    forward_reference(quantization, &x, &mut want, |xf, y| block.forward(Exec::single(), xf, dims, y));
    assert!(out.iter().zip(&want).all(|(a, b)| (*a as i32 - *b as i32).abs() <= 1));

    // The cache gives the same, one block for the node.
    let cache = BlockCache::default();
    for _ in 0..2 {
        let mut cached = vec![0i8; x.len()];
        cache.run(OpKind::Cbam, Exec::single(), GateWeights::AsMap, &all, &mut cached).unwrap();
        assert_eq!(cached, out);
    }
    assert_eq!(cache.len(), 1);
}

/// The definition of a residual int8 op: the float block on the dequantized map, plus the
/// dequantized shortcut, then the ReLU, quantized with the output quantization.
fn residual_reference(block: &Block, x: &[i8], dims: Dims, q: Quantization, shortcut: &[i8], (scale, zero_point): (f32, i32), relu: bool) -> Vec<i8> {
    let mut want = vec![0i8; x.len()];
    forward_reference(q, x, &mut want, |xf, y| {
        block.forward(Exec::single(), xf, dims, y);
        for (y, &s) in y.iter_mut().zip(shortcut) {
            *y += (s as i32 - zero_point) as f32 * scale;
            if relu {
                *y = y.max(0.0);
            }
        }
    });
    want
}

#[test]
fn residual_int8_op_adds_the_shortcut_and_applies_relu() {
    // Channels around the AVX-512 output pass's 64-value blocks, with a tail; two images.
    let (n, h, w, c, r) = (2, 6, 5, 83, 4);
    let shape = [n, h, w, c];
    let x = quantized_map(n * h * w * c);
    let shortcut: Vec<i8> = data(x.len(), 9).iter().map(|v| (v * 90.0) as i8).collect();
    let weights = cbam_weights(c, r);
    let q = [0.03, -7.0, 0.05, -20.0, 0.04, 3.0];
    let quantization = Quantization::from_values([0.03, -7.0, 0.05, -20.0]).unwrap();
    let dims = Dims { n, h, w, c, layout: Layout::ChannelsLast };
    for relu in [0, 1] {
        let config = [2, 1, 1, 1, 1, 3, 1, relu];
        let mut all = vec![Tensor { shape: &shape, data: TensorData::I8(&x) }, Tensor { shape: &shape, data: TensorData::I8(&shortcut) }];
        all.extend(weights.iter().map(|(s, d)| Tensor { shape: s, data: TensorData::F32(d) }));
        all.push(Tensor { shape: &[6], data: TensorData::F32(&q) });
        all.push(Tensor { shape: &[8], data: TensorData::I32(&config) });
        let mut out = vec![0i8; x.len()];
        run(OpKind::Cbam, Exec::single(), GateWeights::AsMap, &all, &mut out).unwrap();

        let config: Vec<i64> = config.iter().map(|&v| v.into()).collect();
        let block = build(OpKind::Cbam, super::weights(&all, &config), &config, c).unwrap().with_int8_weights();
        let want = residual_reference(&block, &x, dims, quantization, &shortcut, (0.04, 3), relu == 1);
        let off = out.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert!(out.iter().zip(&want).all(|(a, b)| (*a as i32 - *b as i32).abs() <= 1), "relu {relu}");
        assert!(off * 100 < x.len(), "relu {relu}: {off} values 1 LSB off");
        if relu == 1 {
            assert!(out.iter().all(|&v| v >= -20) && out.contains(&-20));
        } else {
            assert!(out.iter().any(|&v| v < -20));
        }
        // Every level and thread count gives the same as the scalar path.
        let epilogue = Epilogue { shortcut: Some(QuantizedShortcut { map: &shortcut, scale: 0.04, zero_point: 3 }), relu: relu == 1 };
        let mut scalar = vec![0i8; x.len()];
        block.forward_int8_with(Exec::new(crate::simd::Level::SCALAR, Some(1)), &x, dims, quantization, epilogue, &mut scalar);
        for exec in crate::test_util::execs() {
            let mut got = vec![0i8; x.len()];
            block.forward_int8_with(exec, &x, dims, quantization, epilogue, &mut got);
            assert_eq!(got, scalar, "{} threads {}", exec.level.name(), exec.threads);
        }
    }

    // The shortcut must match the map, and the quantization vector must carry its parameters.
    let config = [2, 1, 1, 1, 1, 3, 1, 0];
    let small = [n, h, w, c - 1];
    let base = |shortcut_shape: &'static [usize], q: &'static [f32], q_shape: &'static [usize]| {
        let mut all = vec![Tensor { shape: &shape, data: TensorData::I8(&x) }, Tensor { shape: shortcut_shape, data: TensorData::I8(&shortcut) }];
        all.extend(weights.iter().map(|(s, d)| Tensor { shape: s, data: TensorData::F32(d) }));
        all.push(Tensor { shape: q_shape, data: TensorData::F32(q) });
        all.push(Tensor { shape: &[8], data: TensorData::I32(&config) });
        run(OpKind::Cbam, Exec::single(), GateWeights::AsMap, &all, &mut vec![0i8; x.len()]).unwrap_err()
    };
    let shape_static: &'static [usize] = Box::leak(Box::new(shape));
    let small_static: &'static [usize] = Box::leak(Box::new(small));
    let e = base(small_static, &[0.03, -7.0, 0.05, -20.0, 0.04, 3.0], &[6]);
    assert!(e.contains("the shortcut must have the feature map's shape"), "{e}");
    let e = base(shape_static, &[0.03, -7.0, 0.05, -20.0], &[4]);
    assert!(e.contains("residual_scale"), "{e}");
    let e = base(shape_static, &[0.03, -7.0, 0.05, -20.0, 0.0, 3.0], &[6]);
    assert!(e.contains("residual_scale must be a finite number > 0, got 0"), "{e}");
}

#[test]
fn int8_inputs_are_checked() {
    let shape = [1, 3, 3, 8];
    let x = quantized_map(72);
    let weights = cbam_weights(8, 2);
    let good = [0.1, 0.0, 0.1, 0.0];
    let run_with = |inputs: &[Tensor], out: &mut Vec<i8>| run(OpKind::Cbam, Exec::single(), GateWeights::AsMap, inputs, out).unwrap_err();
    let mut out = vec![0i8; 72];

    // The float op's count (no quantization vector) for an int8 map.
    let all = inputs(&shape, &x, &weights, &good, &[4]);
    let mut short = all.clone();
    short.remove(all.len() - 2);
    assert!(run_with(&short, &mut out).contains("expected 9 inputs"), "{}", run_with(&short, &mut out));

    let bad: [([f32; 4], &str); 4] = [
        ([0.0, 0.0, 0.1, 0.0], "input_scale must be a finite number > 0, got 0"),
        ([0.1, -129.0, 0.1, 0.0], "input_zero_point must be an integer in -128..=127, got -129"),
        ([0.1, 0.0, f32::INFINITY, 0.0], "output_scale must be a finite number > 0, got inf"),
        ([0.1, 0.0, 0.1, 2.5], "output_zero_point must be an integer in -128..=127, got 2.5"),
    ];
    for (q, message) in bad {
        let e = run_with(&inputs(&shape, &x, &weights, &q, &[4]), &mut out);
        assert!(e.contains("quantization input") && e.contains(message), "{e}");
    }
    let e = run_with(&inputs(&shape, &x, &weights, &good[..3], &[3]), &mut out);
    assert!(e.contains("must be the float32 quantization vector"), "{e}");

    // Element types of map and output must agree.
    let mut float_out = vec![0.0f32; 72];
    let e = run(OpKind::Cbam, Exec::single(), GateWeights::AsMap, &all, &mut float_out).unwrap_err();
    assert!(e.contains("an int8 map needs an int8 output"), "{e}");
    assert!(run_with(&all, &mut vec![0i8; 71]).contains("output holds 71 values"));

    // A failed int8 run is marked with the output zero point.
    let q = [0.1, 0.0, 0.1, -17.0];
    let all = inputs(&shape, &x, &weights, &q, &[4]);
    assert_eq!(output_zero_point(OpKind::Cbam, &all), Some(-17));
    let mut marked = vec![3i8; 4];
    Output::from(&mut marked).fill_failed(output_zero_point(OpKind::Cbam, &all));
    assert_eq!(marked, [-17; 4]);
}

fn flex(ints: &[(&str, i64)], floats: &[(&str, f64)], strings: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = flexbuffers::Builder::default();
    let mut map = builder.start_map();
    ints.iter().for_each(|(k, v)| map.push(k, *v));
    floats.iter().for_each(|(k, v)| map.push(k, *v));
    strings.iter().for_each(|(k, v)| map.push(k, *v));
    map.end_map();
    builder.view().to_vec()
}

#[test]
fn quantization_attributes_are_all_or_none_and_checked() {
    let ints = [("version", 2), ("channel_gate", 1), ("spatial_gate", 0), ("pool_avg", 1), ("pool_max", 1), ("kernel_size", 7), ("residual", 0), ("relu", 0)];
    let read = |floats: &[(&str, f64)], zero_points: &[(&str, i64)]| {
        let mut all = ints.to_vec();
        all.extend_from_slice(zero_points);
        let options = flex(&all, floats, &[]);
        OpKind::Cbam.attributes(&options).and_then(|_| OpKind::Cbam.quantization_attributes(&options))
    };
    let zps = [("input_zero_point", -128), ("output_zero_point", 127)];
    let q = read(&[("input_scale", 0.5), ("output_scale", 0.25)], &zps).unwrap().unwrap();
    assert_eq!((q.input_scale, q.input_zero_point, q.output_scale, q.output_zero_point), (0.5, -128, 0.25, 127));
    assert_eq!(read(&[], &[]).unwrap(), None);

    let err = read(&[("input_scale", 0.5)], &zps).unwrap_err();
    assert!(err.contains("malformed quantization attributes") && err.contains("missing [\"output_scale\"]"), "{err}");
    let err = read(&[("input_scale", -0.5), ("output_scale", 0.25)], &zps).unwrap_err();
    assert!(err.contains("input_scale must be a finite number > 0, got -0.5"), "{err}");
    let err = read(&[("input_scale", 0.5), ("output_scale", f64::NAN)], &zps).unwrap_err();
    assert!(err.contains("output_scale must be a finite number > 0, got NaN"), "{err}");
    let err = read(&[("input_scale", 0.5), ("output_scale", 0.25)], &[("input_zero_point", 300), ("output_zero_point", 0)]).unwrap_err();
    assert!(err.contains("input_zero_point must be an integer in -128..=127, got 300"), "{err}");

    let mut all = ints.to_vec();
    all.extend_from_slice(&zps);
    let options = flex(&all, &[("output_scale", 0.25)], &[("input_scale", "big")]);
    let err = OpKind::Cbam.attributes(&options).unwrap_err();
    assert!(err.contains("\"input_scale\" must be a number, got String"), "{err}");
}
