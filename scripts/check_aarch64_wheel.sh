#!/usr/bin/env bash
# Runs the aarch64 wheel on an emulated 64-bit ARM CPU: Debian's arm64 CPython 3.11 under
# qemu-user, with only NumPy and ai-edge-litert (their aarch64 wheels) beside the wheel. A model
# with fused CBAM, BAM and SE blocks is exported here (with this machine's TensorFlow) and run
# there with `keras_attn.edge.Runtime`, with the NEON and the scalar kernels, against Keras.
#
#   bash scripts/build_wheel.sh --target aarch64
#   bash scripts/check_aarch64_wheel.sh dist/keras_attn-*_aarch64.whl [WORK_DIR]
#
# Needs Debian's qemu-user and debootstrap (apt-get install qemu-user debootstrap) and keras-attn
# importable here (pip install -e .). The arm64 Python is unpacked under WORK_DIR (default
# /tmp/keras-attn-aarch64) on the first run and reused after.
set -euo pipefail
cd "$(dirname "$0")/.."
wheel="$(realpath "${1:?usage: check_aarch64_wheel.sh WHEEL [WORK_DIR]}")"
work="${2:-/tmp/keras-attn-aarch64}"
for tool in qemu-aarch64 debootstrap; do
    command -v "$tool" > /dev/null || { echo "needs $tool: apt-get install qemu-user debootstrap" >&2; exit 1; }
done
root="$work/root"
site="$work/site"
mkdir -p "$work"

if [[ ! -x "$root/usr/bin/python3.11" ]]; then
    # The first stage only downloads and unpacks the base system; Python's packages are then
    # unpacked by hand (nothing needs configuring to run python3 under qemu-user).
    debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 bookworm "$root" > "$work/debootstrap.log"
    for deb in "$root"/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$root"; done
fi
# qemu-user shows the program this machine's x86 /proc/cpuinfo and /sys, on which LiteRT's CPU
# detection crashes; files under the -L prefix take their place: two Cortex-A72 cores.
mkdir -p "$root/proc" "$root/sys/devices/system/cpu/cpu0" "$root/sys/devices/system/cpu/cpu1"
: > "$root/proc/cpuinfo"
for i in 0 1; do
    printf 'processor\t: %d\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i" >> "$root/proc/cpuinfo"
done
for f in possible present online; do echo 0-1 > "$root/sys/devices/system/cpu/$f"; done

rm -rf "$site"
pip=(python -m pip install --quiet --disable-pip-version-check --root-user-action=ignore
     --target "$site" --only-binary=:all:
     --python-version 3.11 --implementation cp --platform manylinux_2_27_aarch64
     --platform manylinux2014_aarch64)
"${pip[@]}" numpy ai-edge-litert
"${pip[@]}" --no-deps --upgrade "$wheel"  # --upgrade: its bin/ joins NumPy's

TF_CPP_MIN_LOG_LEVEL=3 python - "$work" <<'EOF' 2> "$work/export.log" || { tail -20 "$work/export.log" >&2; exit 1; }
import sys
import keras
import numpy as np
import keras_attn
from keras_attn.export import to_tflite

work = sys.argv[1]
inputs = keras.Input((9, 11, 16), batch_size=2)
h = keras.layers.Conv2D(16, 3, padding="same")(inputs)
h = keras_attn.BAM(reduction_ratio=4)(keras_attn.CBAM(reduction_ratio=4)(h))
model = keras.Model(inputs, keras_attn.SqueezeExcite(reduction_ratio=4)(h))
x = np.random.default_rng(0).normal(size=(2, 9, 11, 16)).astype("float32")
to_tflite(model, f"{work}/fused.tflite", fused_attention=True, batch_size=2)
np.save(f"{work}/x.npy", x)
np.save(f"{work}/want.npy", np.asarray(model(x, training=False)))
EOF

for simd in neon scalar; do
    KERAS_ATTN_SIMD=$simd qemu-aarch64 -L "$root" "$root/usr/bin/python3.11" - "$work" "$site" <<'EOF' 2> "$work/run.log" \
        || { tail -20 "$work/run.log" >&2; exit 1; }
import platform
import sys

work, site = sys.argv[1:3]
sys.path.insert(0, site)
import numpy as np
import keras_attn.edge
import keras_attn.kernels

assert keras_attn.__file__.startswith(site), keras_attn.__file__
x, want = np.load(f"{work}/x.npy"), np.load(f"{work}/want.npy")
for threads in (1, 2):
    got = keras_attn.edge.Runtime(f"{work}/fused.tflite", threads=threads)(x)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras"})
assert not heavy, heavy
print(f"{platform.machine()} {keras_attn.kernels.simd_level()}: fused CBAM, BAM and SE within "
      f"{np.abs(got - want).max():.1e} of Keras; no TensorFlow or Keras imported")
EOF
done
