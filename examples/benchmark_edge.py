"""LiteRT CompiledModel (XNNPACK) inference time of plain, CBAM and BAM ResNets, float32, with
the attention blocks as builtin ops and as keras-attn's fused custom ops, side by side.

    python examples/benchmark_edge.py [--depth 50] [--size 224] [--runs 20] [--out bench_edge]

Prints a markdown table of median milliseconds per image (batch 1) at 1 and 2 threads, and the
attention overhead over the plain ResNet.
"""

import argparse
import os
import time

import numpy as np


def _median_ms(runtime, x, runs):
    runtime(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runtime(x)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default="bench_edge")
    args = parser.parse_args(argv)

    from keras_attn import edge
    from keras_attn.export import to_tflite
    from keras_attn.models import resnet

    os.makedirs(args.out, exist_ok=True)
    paths = {}
    for attention in (None, "cbam", "bam"):
        model = resnet(args.depth, attention=attention, input_shape=(args.size, args.size, 3),
                       classifier_activation=None)
        name = attention or "plain"
        for fused in (False, True) if attention else (False,):
            path = os.path.join(args.out, f"{name}{'_fused' if fused else ''}.tflite")
            to_tflite(model, path, fused_attention=fused)
            paths[(name, fused)] = path
    x = np.random.default_rng(0).normal(size=(1, args.size, args.size, 3)).astype("float32")
    print(f"ResNet-{args.depth}, {args.size}x{args.size}, batch 1, float32, LiteRT CompiledModel "
          f"+ XNNPACK, median of {args.runs} runs (ms; overhead over plain)\n")
    print("| model | attention ops | 1 thread | 2 threads |\n|---|---|---|---|")
    plain = {}
    for (name, fused), path in paths.items():
        cells = []
        for threads in (1, 2):
            ms = _median_ms(edge.Runtime(path, threads=threads), x, args.runs)
            if name == "plain":
                plain[threads] = ms
                cells.append(f"{ms:.1f}")
            else:
                cells.append(f"{ms:.1f} ({100 * (ms / plain[threads] - 1):+.1f}%)")
        kind = "-" if name == "plain" else ("fused (keras-attn)" if fused else "builtin")
        print(f"| {name.upper()} ResNet-{args.depth} | {kind} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
