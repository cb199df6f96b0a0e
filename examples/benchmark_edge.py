"""LiteRT inference time of plain, CBAM, SE and BAM ResNets, float32 and int8, at 1 and 2
threads, with the attention blocks as builtin ops, as keras-attn's fused custom ops, and as
`fused_attention="auto"` chooses.

    python examples/benchmark_edge.py [--depth 50] [--size 224] [--runs 20] [--out bench_edge]
                                      [--attention cbam se bam] [--quantization float32 int8]
                                      [--threads 1 2] [--boundaries] [--reuse] [--verbose]

Prints one markdown table: median milliseconds per image (batch 1) in every precision and thread
column, with the attention overhead over the plain ResNet of the same precision and threads.
The models of one precision and thread count are timed in interleaved rounds (one run of each
per round), so that load from other processes falls on all of them alike. A model with builtin
ops only (plain, builtin, and "auto" where it fused nothing) runs both in LiteRT's interpreter
(`ai_edge_litert`, XNNPACK delegate) and in `keras_attn.edge.Runtime` (CompiledModel, XNNPACK),
and counts at the faster of the two (marked `i` where that is the interpreter). Models with fused
ops run in `edge.Runtime`, in float32 also with `gate_weights="int8"` (rows "int8 gate weights":
the gate MLPs compute with int8 weights, as the int8 models' fused ops always do, so their int8
columns read "as above"). int8 models are calibrated on a few random images (timing does not
depend on the ranges) and keep float32 inputs and outputs.

`--boundaries` adds a float32, 1-thread table: every fused block shape of the model alone (a model
that is only that custom op, less a model of the same shape that only applies ReLU: input and
output copies), summed over the network's blocks, against what the fused ops add to the plain
ResNet inside the full model.

TensorFlow's and LiteRT's informational log lines are dropped (`keras_attn.logs.quiet`;
`--verbose` keeps them).
"""

import argparse
import os
import time

import numpy as np

ATTENTIONS = ("cbam", "se", "bam")
VARIANTS = {"builtin": False, "fused": True, "auto": "auto"}
#: The variants with fused ops also run in float32 with `edge.Runtime(gate_weights="int8")`,
#: as rows of their own (int8 models always compute their gates with int8 weights).
INT8_GATES = ", int8 gate weights"


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


def _export(models, args, calibration):
    """`{(precision, model name, variant): (path, has fused ops)}` for every model to time."""
    from keras_attn.export import read_tflite, to_tflite

    files = {}
    for precision in args.quantization:
        int8 = precision == "int8"
        for name, model in models.items():
            for variant in ("builtin",) if name == "plain" else VARIANTS:
                path = os.path.join(args.out, f"{name}_{variant}_{precision}.tflite")
                if args.reuse and os.path.exists(path):
                    ops = read_tflite(path).custom_ops()
                else:
                    report = to_tflite(model, path, "int8" if int8 else None,
                                       representative_data=calibration if int8 else None,
                                       fused_attention=VARIANTS[variant])
                    ops = list(report.op_counts)
                fused = any(op.startswith("KerasAttn") for op in ops)
                files[precision, name, variant] = (path, fused)
    return files


def _time(files, args, x):
    """`{(precision, model, variant, threads): (ms, faster runtime)}`."""
    from keras_attn import edge
    from keras_attn.export import LiteRTModel

    timed = {}
    for precision in args.quantization:
        for threads in args.threads:
            runtimes = {}
            for (p, name, variant), (path, fused) in files.items():
                if p != precision:
                    continue
                runtimes[name, variant, "c"] = edge.Runtime(path, threads=threads)
                if not fused:
                    runtimes[name, variant, "i"] = LiteRTModel(path, num_threads=threads)
                elif precision == "float32":
                    runtimes[name, variant + INT8_GATES, "c"] = edge.Runtime(
                        path, threads=threads, gate_weights="int8")
            ms = _interleaved_ms(runtimes, dict.fromkeys(runtimes, x), args.runs)
            for (name, variant, runtime), value in ms.items():
                key = (precision, name, variant, threads)
                if key not in timed or value < timed[key][0]:
                    timed[key] = (value, runtime)
    return timed


def _rows(files, args, name):
    """The variants of one model in table order, each with int8 gate weights after it where it
    has fused ops."""
    rows = []
    for variant in ("builtin",) if name == "plain" else VARIANTS:
        rows.append(variant)
        if files[args.quantization[0], name, variant][1] and "float32" in args.quantization:
            rows.append(variant + INT8_GATES)
    return rows


def _table(files, timed, args):
    columns = [(p, t) for p in args.quantization for t in args.threads]
    header = ["model", "attention ops", "XNNPACK partitions"] + [
        f"{p}, {t} thread{'s' * (t > 1)}" for p, t in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    names = ["plain"] + list(args.attention)
    for name in names:
        for row in _rows(files, args, name):
            variant = row.removesuffix(INT8_GATES)
            path, fused = files[args.quantization[0], name, variant]
            if variant == "auto" and not fused:
                kind = "auto (nothing fused: as builtin)"
            else:
                kind = {"builtin": "builtin", "fused": "fused (keras-attn)",
                        "auto": 'fused_attention="auto"'}[variant] + row[len(variant):]
            cells = []
            for precision, threads in columns:
                if precision == "int8" and row != variant:
                    cells.append("as above")
                    continue
                value, runtime = timed[precision, name, row, threads]
                mark = " i" if runtime == "i" else ""
                if name == "plain":
                    cells.append(f"{value:.1f}{mark}")
                else:
                    plain = timed[precision, "plain", "builtin", threads][0]
                    cells.append(f"{value:.1f}{mark} ({100 * (value / plain - 1):+.1f}%)")
            label = f"{'PLAIN' if name == 'plain' else name.upper()} ResNet-{args.depth}"
            lines.append(f"| {label} | {'-' if name == 'plain' else kind} | "
                         f"{xnnpack_partitions(path)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _agreement(models, files, args, x):
    """One table row per model: how closely each precision's LiteRT model follows Keras."""
    from keras_attn import edge

    header = ["model", "attention ops"] + [
        "float32: max abs difference / max abs logit" if p == "float32" else "int8: cosine"
        for p in args.quantization]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, model in models.items():
        want = np.asarray(model(x, training=False), np.float64).ravel()
        for row in _rows(files, args, name):
            variant = row.removesuffix(INT8_GATES)
            cells = []
            for precision in args.quantization:
                if precision == "int8" and row != variant:
                    cells.append("as above")
                    continue
                gates = "int8" if row != variant else "float32"
                runtime = edge.Runtime(files[precision, name, variant][0], threads=1,
                                       gate_weights=gates)
                got = np.asarray(runtime(x), np.float64).ravel()
                if precision == "float32":
                    cells.append(f"{np.abs(got - want).max() / np.abs(want).max():.1e}")
                else:
                    cosine = got @ want / (np.linalg.norm(got) * np.linalg.norm(want))
                    cells.append(f"{cosine:.5f}")
            label = f"{'PLAIN' if name == 'plain' else name.upper()} ResNet-{args.depth}"
            lines.append(f"| {label} | {'-' if name == 'plain' else row} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def _boundaries(models, timed, args):
    import keras_attn

    lines = ["| model | fused ops | their work alone (sum) | fused minus plain | "
             "boundaries and in-model slowdown |", "|---|---|---|---|---|"]
    kinds = (keras_attn.CBAM, keras_attn.SqueezeExcite, keras_attn.BAM)
    for name in args.attention:
        layers = [layer for layer in models[name]._flatten_layers() if isinstance(layer, kinds)]
        alone = {}
        for layer in layers:
            shape = (1,) + tuple(layer.input.shape[1:])
            if shape not in alone:
                alone[shape] = _alone_ms(layer, shape, args.out, args.runs * 5)
        work = sum(alone[(1,) + tuple(layer.input.shape[1:])] for layer in layers)
        added = (timed["float32", name, "fused", 1][0]
                 - timed["float32", "plain", "builtin", 1][0])
        lines.append(f"| {name.upper()} ResNet-{args.depth} | {len(layers)} | {work:.2f} | "
                     f"{added:.2f} | {added - work:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default="bench_edge")
    parser.add_argument("--attention", nargs="+", choices=ATTENTIONS, default=list(ATTENTIONS))
    parser.add_argument("--quantization", nargs="+", choices=("float32", "int8"),
                        default=["float32", "int8"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--calibration-images", type=int, default=4)
    parser.add_argument("--boundaries", action="store_true",
                        help="also time each fused block alone (float32, 1 thread)")
    parser.add_argument("--reuse", action="store_true",
                        help="time the .tflite files already in --out instead of exporting "
                             "them again (same --depth, --size and model names)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and LiteRT's own log lines")
    args = parser.parse_args(argv)
    if args.boundaries and ("float32" not in args.quantization or 1 not in args.threads):
        parser.error("--boundaries needs float32 in --quantization and 1 in --threads")
    from keras_attn import logs

    logs.quiet(args.verbose)  # before TensorFlow is imported
    from keras_attn.models import resnet

    import keras

    os.makedirs(args.out, exist_ok=True)
    # The same weights in every run, so that --reuse compares files with the models they hold.
    keras.utils.set_random_seed(0)
    models = {
        name: resnet(args.depth, attention=None if name == "plain" else name,
                     input_shape=(args.size, args.size, 3), classifier_activation=None)
        for name in ["plain"] + list(args.attention)
    }
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, args.size, args.size, 3)).astype("float32")
    calibration = rng.normal(
        size=(args.calibration_images, args.size, args.size, 3)).astype("float32")
    files = _export(models, args, calibration)
    timed = _time(files, args, x)
    table = _table(files, timed, args)
    boundaries = _boundaries(models, timed, args) if args.boundaries else None
    print(f"\nResNet-{args.depth}, {args.size}x{args.size}, batch 1: median ms of {args.runs} "
          "interleaved runs (overhead over plain ResNet of the same precision and threads); "
          "builtin-op models at their faster runtime (i: LiteRT interpreter, else "
          "keras_attn.edge.Runtime)\n")
    print(table)
    print("\nAgreement with the Keras model on the same image (batch 1):\n")
    print(_agreement(models, files, args, x))
    if boundaries:
        print("\nFused ops alone vs inside the model (float32, 1 thread, ms per image):\n")
        print(boundaries)


if __name__ == "__main__":
    main()
