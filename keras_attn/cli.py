"""The `keras-attn` command (also `python -m keras_attn`)."""

import argparse
import sys

from keras_attn import logs


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-attn", description="CBAM, BAM and channel attention for Keras 3."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train a small CNN without attention, with CBAM and with BAM on handwritten "
        "digits; export and run it in LiteRT",
        description="Trains a small CNN three ways (no attention, CBAM, BAM) on scikit-learn's "
        "digits, saves .keras files, exports SavedModel and LiteRT (float32, int8) models, runs "
        "them in LiteRT and draws CBAM's spatial attention maps. Writes everything under --out.",
    )
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument(
        "--epochs", type=int, default=None, help="epochs per model (default: 12; 1 with --quick)"
    )
    demo.add_argument(
        "--quick", action="store_true", help="smoke run: 400 digits at 16x16 (seconds, not minutes)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's and LiteRT's own log lines"
    )
    bench = commands.add_parser(
        "bench",
        add_help=False,  # `main` hands everything after "bench" to the benchmark's own parser
        help="CPU benchmark of the Rust core against NumPy, TensorFlow and LiteRT/XNNPACK",
    )
    return parser


def main(argv=None):
    """Entry point of the `keras-attn` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from keras_attn.bench import main as run_bench

        return run_bench(argv[1:], prog="keras-attn bench")
    args = _parser().parse_args(argv)
    if args.command == "demo":
        epochs = args.epochs if args.epochs is not None else (1 if args.quick else 12)
        if epochs < 1:
            _parser().error(f"--epochs must be at least 1; got {epochs}")
        logs.quiet(args.verbose)
        from keras_attn.demo import run_demo

        run_demo(args.out, epochs=epochs, quick=args.quick, seed=args.seed)
    return 0
