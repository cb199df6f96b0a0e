"""CPU benchmark of keras-attn's Rust core against NumPy, TensorFlow and LiteRT/XNNPACK.

For channel pooling (mean + max over H, W), spatial pooling (max + mean over C) and the whole
CBAM and BAM blocks, on the feature-map shapes of a ResNet-50, at one thread and at all cores,
it times side by side: NumPy, TensorFlow eager, `tf.function`, `tf.function(jit_compile=True)`,
LiteRT with XNNPACK (the same op or Keras block converted to .tflite) and keras-attn's Rust path.
It measures the machine's streaming-read bandwidth itself (a plain SIMD sum over a buffer the
size of the map, so from the same cache level) and prints one markdown table per thread count:
medians, GB/s, the fraction of that bandwidth and the speed-ups against every peer; it writes
the same table to `results.md`, the records to `results.json` and a chart to `results.png` in
`--out`.

Every peer's output is checked against the Rust path's before it is timed. TensorFlow's thread
count is fixed per process, so each thread count runs in a worker subprocess of this module.
LiteRT is timed on `invoke()` with its input already set; NumPy and Rust on a whole call.

    keras-attn bench --out bench_cpu          # full run (several minutes)
    keras-attn bench --out bench_cpu --quick  # two shapes, fewer repeats

(`python examples/benchmark_cpu.py ...` and `python -m keras_attn.bench ...` are the same.) It needs
the `test` or `demo` extras (LiteRT, matplotlib) besides TensorFlow.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPES = [  # (N, H, W, C), data_format
    ((1, 56, 56, 256), "channels_last"),
    ((1, 28, 28, 512), "channels_last"),
    ((1, 14, 14, 1024), "channels_last"),
    ((1, 7, 7, 2048), "channels_last"),
    ((8, 56, 56, 256), "channels_last"),
    ((1, 56, 56, 256), "channels_first"),
    ((1, 28, 28, 512), "channels_first"),
]
QUICK_SHAPES = [SHAPES[0], SHAPES[5]]
OPS = ("channel_pool", "spatial_pool", "cbam", "bam")
PEERS = ("numpy", "tf_eager", "tf_function", "tf_xla", "litert", "rust")
PEER_NAMES = {
    "numpy": "NumPy",
    "tf_eager": "TF eager",
    "tf_function": "tf.function",
    "tf_xla": "tf.function XLA",
    "litert": "LiteRT XNNPACK",
    "rust": "keras-attn Rust",
}


def median_time(fn, seconds, min_runs=5):
    """Median and min wall time of `fn()` in seconds, after a warm-up.

    It first sleeps a moment: the thread pools of OpenBLAS and TensorFlow keep spinning for a
    while after their last call and would otherwise take a core (and bandwidth) from the next
    peer timed.
    """
    time.sleep(0.3)
    for _ in range(3):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), float(np.min(times))


# ----------------------------------------------------------------------------- NumPy peers
def _bn(y, bn):
    gamma = np.asarray(bn.gamma) if bn.scale else 1.0
    beta = np.asarray(bn.beta) if bn.center else 0.0
    return (y - np.asarray(bn.moving_mean)) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon) * gamma + beta


def _dense(x, dense):
    return x @ np.asarray(dense.kernel) + np.asarray(dense.bias)


def _conv_same(x, conv, dilation=1):
    """Stride-1 "same" Conv2D of an NHWC map: one matrix product per kernel tap."""
    kernel = np.asarray(conv.kernel)
    k, (_, h, w, _) = kernel.shape[0], x.shape
    pad = dilation * (k - 1) // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = sum(
        padded[:, ky * dilation : ky * dilation + h, kx * dilation : kx * dilation + w] @ kernel[ky, kx]
        for ky in range(k)
        for kx in range(k)
    )
    return out + np.asarray(conv.bias) if conv.use_bias else out


def _sigmoid(x):
    # exp(-x) overflows to inf for x below about -88, where the sigmoid is 0 as it should be:
    # no warning for that.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def numpy_cbam(layer, x):
    ca, sa = layer.channel_attention, layer.spatial_attention
    mlp = lambda v: _dense(np.maximum(_dense(v, ca.mlp_hidden), 0), ca.mlp_output)  # noqa: E731
    g = _sigmoid(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))[:, None, None, :]
    y = x * g
    s = _conv_same(np.stack([y.max(axis=-1), y.mean(axis=-1)], axis=-1), sa.conv)
    return y * _sigmoid(_bn(s, sa.bn))


def numpy_bam(layer, x):
    cg, sg = layer.channel_gate, layer.spatial_gate
    c = x.mean(axis=(1, 2))
    for dense, bn in zip(cg.hidden_dense, cg.hidden_bn):
        c = np.maximum(_bn(_dense(c, dense), bn), 0)
    c = _dense(c, cg.output_dense)[:, None, None, :]
    s = np.maximum(_bn(_conv_same(x, sg.reduce_conv), sg.reduce_bn), 0)
    for conv, bn in zip(sg.dilated_convs, sg.dilated_bns):
        s = np.maximum(_bn(_conv_same(s, conv, sg.dilation_rate), bn), 0)
    s = _conv_same(s, sg.output_conv)
    return x * (1 + _sigmoid(c + s if layer.fusion == "sum" else c * s))


def numpy_peer(op, layer, channels_last):
    """`f(x)` in NumPy for x in the benchmark's layout (channels-first via transposes)."""
    if op == "channel_pool":
        axes = (1, 2) if channels_last else (2, 3)
        return lambda x: (x.mean(axis=axes), x.max(axis=axes))
    if op == "spatial_pool":
        axis = -1 if channels_last else 1
        return lambda x: np.stack([x.max(axis=axis), x.mean(axis=axis)], axis=axis)
    block = numpy_cbam if op == "cbam" else numpy_bam
    if channels_last:
        return lambda x: block(layer, x)
    return lambda x: block(layer, x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


# ----------------------------------------------------------------------------- one worker
def make_layer(op, x, data_format):
    import keras_attn

    if op not in ("cbam", "bam"):
        return None
    layer = (keras_attn.CBAM if op == "cbam" else keras_attn.BAM)(data_format=data_format)
    layer(x[:1])
    rng = np.random.default_rng(0)
    for v in layer.weights:  # trained-looking weights, BatchNorm statistics included
        value = rng.uniform(0.5, 1.5, v.shape) if "variance" in v.path else rng.normal(0, 0.3, v.shape)
        v.assign(value.astype("float32"))
    return layer


def tflite_model(op, layer, shape, data_format, cache):
    """The op or block as a .tflite flatbuffer (cached across worker processes)."""
    import tensorflow as tf

    path = os.path.join(cache, f"{op}_{'x'.join(map(str, shape))}_{data_format}.tflite")
    if os.path.exists(path):
        return path
    if layer is not None:
        import keras

        from keras_attn.export import to_tflite

        model = keras.Sequential([keras.Input(shape[1:], batch_size=shape[0]), layer])
        to_tflite(model, path, batch_size=shape[0])
        return path
    fn = tf.function(tf_op(op, layer, data_format == "channels_last"))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    with open(path, "wb") as f:
        f.write(converter.convert())
    return path


def tf_op(op, layer, channels_last):
    import tensorflow as tf

    if op == "channel_pool":
        axes = [1, 2] if channels_last else [2, 3]
        return lambda x: (tf.reduce_mean(x, axis=axes), tf.reduce_max(x, axis=axes))
    if op == "spatial_pool":
        axis = -1 if channels_last else 1
        return lambda x: tf.concat(
            [tf.reduce_max(x, axis=axis, keepdims=True), tf.reduce_mean(x, axis=axis, keepdims=True)], axis
        )
    return lambda x: layer(x, training=False)


def rust_peer(op, layer, data_format, threads):
    from keras_attn import cpu, kernels

    if op == "channel_pool":
        return lambda x: kernels.channel_pool(x, data_format, threads)
    if op == "spatial_pool":
        return lambda x: kernels.spatial_pool(x, data_format, threads)
    run = cpu.compile(layer)
    return lambda x: run(x, threads)


def run_worker(args):
    """Times every peer at `args.threads` threads; writes a JSON list of records."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from ai_edge_litert.interpreter import Interpreter

    from keras_attn import _rust

    seconds = 0.3 if args.quick else 1.0
    records, rng = [], np.random.default_rng(1)
    for shape_nhwc, data_format in QUICK_SHAPES if args.quick else SHAPES:
        n, h, w, c = shape_nhwc
        shape = shape_nhwc if data_format == "channels_last" else (n, c, h, w)
        x = rng.standard_normal(shape).astype(np.float32)
        flat = x.reshape(-1)
        for op in OPS:
            layer = make_layer(op, x, data_format)
            want = rust_peer(op, layer, data_format, args.threads)(x)
            peers = {"numpy": numpy_peer(op, layer, data_format == "channels_last")}
            x_tf = tf.constant(x)
            fn = tf_op(op, layer, data_format == "channels_last")
            # TensorFlow and LiteRT get their input already in their own memory; `x` is ignored.
            peers["tf_eager"] = lambda _, fn=fn: fn(x_tf)
            peers["tf_function"] = lambda _, f=tf.function(fn): f(x_tf)
            peers["tf_xla"] = lambda _, f=tf.function(fn, jit_compile=True): f(x_tf)
            peers["litert"] = litert_peer(Interpreter, op, layer, shape, data_format, args, x)
            peers["rust"] = rust_peer(op, layer, data_format, args.threads)
            # The bandwidth probe runs in the same conditions as the peers, right before them.
            probe = median_time(lambda: _rust.read_probe(flat, args.threads), seconds, 20)[0]
            for peer, call in peers.items():
                record = dict(
                    op=op, shape=list(shape), data_format=data_format, threads=args.threads, peer=peer,
                    median_s=None, min_s=None, map_bytes=x.nbytes, read_probe_s=probe,
                )
                if isinstance(call, str):  # the peer could not run this case: the reason
                    record["error"] = call
                else:
                    check(op, peer, call(x), want)
                    timed = getattr(call, "timed", call)
                    record["median_s"], record["min_s"] = median_time(lambda: timed(x), seconds)
                records.append(record)
    with open(args.worker_out, "w") as f:
        json.dump(records, f)


def litert_peer(interpreter_class, op, layer, shape, data_format, args, x):
    """`f(x)` running the converted op in LiteRT (input set once, only `invoke` timed), or the
    reason it cannot run."""
    try:
        interpreter = interpreter_class(
            model_path=tflite_model(op, layer, shape, data_format, args.cache), num_threads=args.threads
        )
        interpreter.allocate_tensors()
    except Exception as err:  # noqa: BLE001 - a converter or runtime limit is a result to report
        return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    outputs = interpreter.get_output_details()

    def run(_):
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]) for d in outputs]

    run.timed = lambda _: interpreter.invoke()  # reading the outputs back is not timed
    return run


def check(op, peer, got, want):
    got = [np.asarray(g) for g in (got if isinstance(got, (list, tuple)) else [got])]
    want = list(want) if isinstance(want, tuple) else [want]
    if len(got) == 2 and len(want) == 2 and np.allclose(got[1], want[0], atol=1e-4):
        got = got[::-1]  # LiteRT may list the (mean, max) outputs in either order
    for g, w in zip(got, want):
        if not np.allclose(np.reshape(g, w.shape), w, atol=1e-4, rtol=1e-4):
            raise AssertionError(f"{op}: {peer} disagrees with the Rust path")


# ----------------------------------------------------------------------------- report
def machine():
    model = platform.processor()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    from keras_attn import _rust

    return dict(cpu=model, cores=os.cpu_count(), simd=_rust.simd_level(), python=platform.python_version())


def tables(records):
    """Markdown: one results table per thread count, then the cases a peer could not run."""
    by_key = {}
    for r in records:
        by_key.setdefault((r["threads"], r["op"], tuple(r["shape"]), r["data_format"]), {})[r["peer"]] = r
    lines = []
    for threads in sorted({k[0] for k in by_key}):
        lines += [
            f"\n**{threads} thread{'s' if threads > 1 else ''}** (median microseconds; speed-up = peer time / Rust time)\n",
            "| op | shape | " + " | ".join(PEER_NAMES[p] for p in PEERS)
            + " | Rust GB/s | Rust vs bandwidth | Rust speed-up vs NumPy / eager / tf.function / XLA / LiteRT |",
            "|" + "---|" * (len(PEERS) + 5),
        ]
        for (t, op, shape, fmt), peers in by_key.items():
            if t != threads:
                continue
            rust = peers["rust"]
            gbps = rust["map_bytes"] / rust["median_s"] / 1e9
            # Pools: the fraction of the read bandwidth; blocks: time over 3 reads + 1 write.
            if op.endswith("pool"):
                versus = f"{100 * rust['read_probe_s'] / rust['median_s']:.0f}% of read"
            else:
                versus = f"{rust['median_s'] / (4 * rust['read_probe_s']):.2f}x 3R+1W"
            times = " | ".join(f"{peers[p]['median_s'] * 1e6:.0f}" if peers[p]["median_s"] else "n/a" for p in PEERS)
            ups = " / ".join(
                f"{peers[p]['median_s'] / rust['median_s']:.1f}" if peers[p]["median_s"] else "n/a" for p in PEERS[:-1]
            )
            label = "x".join(map(str, shape)) + (" NCHW" if fmt == "channels_first" else "")
            lines.append(f"| {op} | {label} | {times} | {gbps:.1f} | {versus} | {ups} |")
    failures = sorted({f"- {PEER_NAMES[r['peer']]}, {r['op']}: {r['error']}" for r in records
                       if r.get("error")})
    if failures:
        lines += ["", "n/a: the peer could not run the case.", *failures]
    return "\n".join(lines) + "\n"


def chart(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = sorted({r["threads"] for r in records})
    fig, axes = plt.subplots(len(OPS), len(threads), figsize=(7 * len(threads), 3.2 * len(OPS)), squeeze=False)
    for i, op in enumerate(OPS):
        for j, t in enumerate(threads):
            ax = axes[i][j]
            rows = [r for r in records if r["op"] == op and r["threads"] == t]
            cases = list(dict.fromkeys((tuple(r["shape"]), r["data_format"]) for r in rows))
            width = 0.8 / len(PEERS)
            for k, peer in enumerate(PEERS):
                values = [
                    next(
                        (r["median_s"] or np.nan) * 1e6
                        for r in rows
                        if r["peer"] == peer and (tuple(r["shape"]), r["data_format"]) == case
                    )
                    for case in cases
                ]
                ax.bar(np.arange(len(cases)) + k * width, values, width, label=PEER_NAMES[peer])
            ax.set_yscale("log")
            ax.set_xticks(np.arange(len(cases)) + 0.4 - width / 2)
            ax.set_xticklabels(["x".join(map(str, s)) + ("\nNCHW" if f == "channels_first" else "") for s, f in cases], fontsize=7)
            ax.set_title(f"{op}, {t} thread(s)")
            ax.set_ylabel("median time (us, log)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_cpu", help="output folder (default: bench_cpu)")
    parser.add_argument("--quick", action="store_true", help="two shapes and short timings")
    parser.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1,all cores)")
    parser.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's and LiteRT's own log lines"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.threads = int(args.threads)
        return run_worker(args)
    from keras_attn import logs

    logs.quiet(args.verbose)  # the workers inherit the filtered standard error
    os.makedirs(args.out, exist_ok=True)
    counts = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, os.cpu_count()})
    records = []
    with tempfile.TemporaryDirectory() as cache:
        for threads in counts:
            worker_out = os.path.join(cache, f"threads_{threads}.json")
            command = [sys.executable, "-m", "keras_attn.bench", "--worker", "--threads", str(threads), "--worker-out", worker_out, "--cache", cache]
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
            cases = len(QUICK_SHAPES if args.quick else SHAPES) * len(OPS) * len(PEERS)
            print(f"timing {cases} cases at {threads} thread(s)...", flush=True)
            subprocess.run(command + (["--quick"] if args.quick else []), check=True, env=env)
            with open(worker_out) as f:
                records += json.load(f)
    info = dict(machine(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), command=" ".join(sys.argv))
    report = f"Machine: {info['cpu']}, {info['cores']} cores, SIMD {info['simd']}; {info['date']}\n" + tables(records)
    print(report)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(dict(machine=info, records=records), f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(report)
    chart(records, os.path.join(args.out, "results.png"))
    print(f"table: {os.path.join(args.out, 'results.md')}, chart: "
          f"{os.path.join(args.out, 'results.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
