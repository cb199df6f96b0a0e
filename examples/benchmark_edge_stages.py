"""Where fused attention ops gain or lose inside a network: one ResNet-50 stage at a time.

    python examples/benchmark_edge_stages.py [--stages 1 2 3 4] [--blocks 3] [--runs 60]
                                             [--threads 1] [--quantization float32]

For each stage of a ResNet-50 (56x56x256, 28x28x512, 14x14x1024, 7x7x2048 maps), builds a small
network of `--blocks` bottleneck blocks of that stage (1x1, 3x3, 1x1 convolutions with
BatchNormalization, the residual add and ReLU) without attention, with CBAM as builtin ops and
with CBAM fused, converts each to LiteRT, and times the three in interleaved rounds with
`keras_attn.edge.Runtime`. Prints the median time of each network and what one CBAM block adds
to the plain network, builtin and fused: the whole-model benchmark (benchmark_edge.py) split by
map size.
"""

import argparse
import os
import tempfile

import numpy as np

STAGES = {1: (56, 256, 64), 2: (28, 512, 128), 3: (14, 1024, 256), 4: (7, 2048, 512)}


def _network(stage, blocks, attention):
    import keras

    import keras_attn

    size, channels, width = STAGES[stage]
    layers = keras.layers
    inputs = keras.Input((size, size, channels), batch_size=1)
    h = inputs
    for _ in range(blocks):
        y = h
        for filters, kernel in ((width, 1), (width, 3), (channels, 1)):
            y = layers.Conv2D(filters, kernel, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization()(y)
            if filters == width:
                y = layers.ReLU()(y)
        if attention:
            y = keras_attn.CBAM()(y)
        h = layers.ReLU()(layers.Add()([y, h]))
    return keras.Model(inputs, h)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, nargs="+", choices=sorted(STAGES), default=[1, 2, 3, 4])
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quantization", choices=("float32", "int8"), default="float32")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and LiteRT's own log lines")
    args = parser.parse_args(argv)
    from keras_attn import logs

    logs.quiet(args.verbose)  # before TensorFlow is imported
    from benchmark_edge import _interleaved_ms

    from keras_attn import edge
    from keras_attn.export import to_tflite

    int8 = args.quantization == "int8"
    print(f"{args.blocks} bottleneck blocks per network, batch 1, {args.quantization}, "
          f"{args.threads} thread(s), median of {args.runs} interleaved runs\n")
    print("| stage | map | plain (ms) | builtin CBAM (ms) | fused CBAM (ms) | "
          "builtin per block (µs) | fused per block (µs) |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for stage in args.stages:
            size, channels, _ = STAGES[stage]
            shape = (1, size, size, channels)
            calibration = rng.normal(size=(4,) + shape[1:]).astype("float32") if int8 else None
            runtimes = {}
            for name, attention, fused in (("plain", False, False), ("builtin", True, False),
                                           ("fused", True, True)):
                path = os.path.join(folder, f"stage{stage}_{name}.tflite")
                to_tflite(_network(stage, args.blocks, attention), path,
                          "int8" if int8 else None, representative_data=calibration,
                          fused_attention=fused)
                runtimes[name] = edge.Runtime(path, threads=args.threads)
            x = rng.normal(size=shape).astype("float32")
            ms = _interleaved_ms(runtimes, dict.fromkeys(runtimes, x), args.runs)
            per_block = {k: 1e3 * (ms[k] - ms["plain"]) / args.blocks for k in ("builtin", "fused")}
            print(f"| {stage} | {size}x{size}x{channels} | {ms['plain']:.2f} | {ms['builtin']:.2f} | "
                  f"{ms['fused']:.2f} | {per_block['builtin']:.0f} | {per_block['fused']:.0f} |")


if __name__ == "__main__":
    main()
