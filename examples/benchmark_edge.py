"""LiteRT CompiledModel (XNNPACK) inference time of plain, CBAM and BAM ResNets, float32 and
int8, with the attention blocks as builtin ops and as keras-attn's fused custom ops, side by
side; and what the custom ops cost beyond their own work (the XNNPACK partition boundaries
around them).

    python examples/benchmark_edge.py [--depth 50] [--size 224] [--runs 20] [--out bench_edge]
                                      [--quantization float32 int8]

Prints markdown tables of median milliseconds per image (batch 1) at 1 and 2 threads, with the
attention overhead over the plain ResNet of the same precision. The models of one precision are
timed in interleaved rounds (one run of each per round), so that load from other processes falls
on all of them alike. int8 models are calibrated on a few random images (timing does not depend
on the ranges) and keep float32 inputs and outputs.

The boundary table (1 thread) times every fused block shape of the model alone — a model that is
only that custom op, less a model of the same shape that only applies ReLU (input and output
copies) — and compares the sum over the network's blocks with what the fused ops add to the
plain ResNet inside the full model.
"""

import argparse
import os
import time

import numpy as np


def _interleaved_ms(runtimes, inputs, runs):
    """Median ms of each runtime, timed in rounds of one run each."""
    for name, runtime in runtimes.items():
        runtime(inputs[name])
    times = {name: [] for name in runtimes}
    for _ in range(runs):
        for name, runtime in runtimes.items():
            start = time.perf_counter()
            runtime(inputs[name])
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def xnnpack_partitions(path):
    """How many XNNPACK partitions LiteRT makes of a model whose only non-XNNPACK ops are the
    custom ops: TFLite's partitioning, which alternates between maximal dependency-closed sets
    of delegated and of other nodes."""
    from keras_attn.export import read_tflite

    graph = read_tflite(path)
    ready = set(graph.inputs) | set(graph.constant_tensors) | {-1}
    remaining = [op for op in graph.ops if op.subgraph == 0]
    delegated, partitions = not remaining[0].is_custom, 0
    while remaining:
        taken = True
        subset = []
        while taken:
            taken = False
            for op in list(remaining):
                if op.is_custom != delegated and all(t in ready for t in op.inputs):
                    remaining.remove(op)
                    ready.update(op.outputs)
                    subset.append(op)
                    taken = True
        partitions += bool(subset) and delegated
        delegated = not delegated
    return partitions


def _alone_ms(layer, shape, folder, runs):
    """ms of `layer` (a copy with its weights) as the only custom op of a model, less a ReLU."""
    import keras

    from keras_attn import edge
    from keras_attn.export import to_tflite

    inputs = keras.Input(shape[1:], batch_size=1)
    copy = layer.__class__.from_config(layer.get_config())
    alone = keras.Model(inputs, copy(inputs))
    copy.set_weights(layer.get_weights())
    relu = keras.Model(inputs, keras.layers.ReLU()(inputs))
    paths = {}
    for name, model in (("op", alone), ("relu", relu)):
        paths[name] = os.path.join(folder, f"alone_{layer.name}_{name}.tflite")
        to_tflite(model, paths[name], fused_attention=name == "op")
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    ms = _interleaved_ms({k: edge.Runtime(p, threads=1) for k, p in paths.items()},
                         {"op": x, "relu": x}, runs)
    return ms["op"] - ms["relu"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default="bench_edge")
    parser.add_argument("--quantization", nargs="+", choices=("float32", "int8"),
                        default=["float32", "int8"])
    parser.add_argument("--calibration-images", type=int, default=4)
    parser.add_argument("--large-maps", type=int, default=28 * 28, metavar="PIXELS",
                        help="the extra fused variant fuses only blocks on maps of at least "
                             "this many pixels (H*W)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and LiteRT's own log lines")
    args = parser.parse_args(argv)
    from keras_attn import logs

    logs.quiet(args.verbose)  # before TensorFlow is imported
    import keras_attn
    from keras_attn import edge
    from keras_attn.export import to_tflite
    from keras_attn.models import resnet

    os.makedirs(args.out, exist_ok=True)
    models = {
        attention or "plain": resnet(args.depth, attention=attention,
                                     input_shape=(args.size, args.size, 3),
                                     classifier_activation=None)
        for attention in (None, "cbam", "bam")
    }
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, args.size, args.size, 3)).astype("float32")
    calibration = rng.normal(size=(args.calibration_images, args.size, args.size, 3))
    selections = {
        "": False,
        "fused": True,
        "fused_large": lambda layer, shape: shape[1] * shape[2] >= args.large_maps,
    }
    kinds = {"": "builtin", "fused": "fused (keras-attn)",
             "fused_large": f"fused on maps >= {args.large_maps} px, others builtin"}
    ms = {}
    for precision in args.quantization:
        int8 = precision == "int8"
        paths = {}
        for name, model in models.items():
            for fused in ("", "fused", "fused_large") if name != "plain" else ("",):
                path = os.path.join(args.out, f"{name}{'_' * bool(fused)}{fused}_{precision}.tflite")
                to_tflite(model, path, "int8" if int8 else None,
                          representative_data=calibration.astype("float32") if int8 else None,
                          fused_attention=selections[fused])
                paths[(name, fused)] = path
        print(f"\nResNet-{args.depth}, {args.size}x{args.size}, batch 1, {precision}, LiteRT "
              f"CompiledModel + XNNPACK, median of {args.runs} interleaved runs (ms; overhead "
              "over plain)\n")
        for threads in (1, 2):
            runtimes = {key: edge.Runtime(path, threads=threads) for key, path in paths.items()}
            timed = _interleaved_ms(runtimes, dict.fromkeys(runtimes, x), args.runs)
            for key, value in timed.items():
                ms[precision, key, threads] = value
        print("| model | attention ops | XNNPACK partitions | 1 thread | 2 threads |")
        print("|---|---|---|---|---|")
        for (name, fused), path in paths.items():
            cells = []
            for threads in (1, 2):
                value = ms[precision, (name, fused), threads]
                plain = ms[precision, ("plain", ""), threads]
                cells.append(f"{value:.1f}" if name == "plain" else
                             f"{value:.1f} ({100 * (value / plain - 1):+.1f}%)")
            kind = "-" if name == "plain" else kinds[fused]
            print(f"| {name.upper()} ResNet-{args.depth} | {kind} | {xnnpack_partitions(path)} | "
                  f"{cells[0]} | {cells[1]} |")
    if "float32" not in args.quantization:
        return

    print("\nFused ops alone vs inside the model (1 thread, ms per image):\n")
    print("| model | fused ops | their work alone (sum) | fused minus plain | "
          "boundaries and in-model slowdown |\n|---|---|---|---|---|")
    for name in ("cbam", "bam"):
        layers = [layer for layer in models[name]._flatten_layers()
                  if isinstance(layer, (keras_attn.CBAM, keras_attn.BAM))]
        alone = {}
        for layer in layers:
            shape = (1,) + tuple(layer.input.shape[1:])
            if shape not in alone:
                alone[shape] = _alone_ms(layer, shape, args.out, args.runs * 5)
        work = sum(alone[(1,) + tuple(layer.input.shape[1:])] for layer in layers)
        added = ms["float32", (name, "fused"), 1] - ms["float32", ("plain", ""), 1]
        print(f"| {name.upper()} ResNet-{args.depth} | {len(layers)} | {work:.2f} | {added:.2f} | "
              f"{added - work:.2f} |")


if __name__ == "__main__":
    main()
