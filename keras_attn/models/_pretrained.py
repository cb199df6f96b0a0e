"""The known ImageNet checkpoints (pytorchcv's model store) and `weights=` of the ResNet builders.

pytorchcv (osmr's `imgclsmob`) publishes its checkpoints as `{model}-{error}-{sha1[:8]}.pth.zip`
among its GitHub releases; `error` is the top-5 error in hundredths of a percent, `sha1` that of
the unzipped `.pth`. The names, hashes and release tags below are those of pytorchcv's model
store (`pytorchcv/models/model_store.py`).
"""

import dataclasses
import hashlib
import os
import zipfile

import keras

from keras_attn.convert.torch import import_torch, load_torch_state_dict, read_torch_checkpoint

_RELEASES = "https://github.com/osmr/imgclsmob/releases/download"
# Classifier keys, in the authors' and pytorchcv's naming: left out with include_top=False.
_CLASSIFIER_PREFIXES = ("fc.", "output.", "module.fc.", "module.output.")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One published ImageNet checkpoint.

    `top1_error`/`top5_error` are the published errors in percent (None where the source gives
    none); they were not re-measured here.
    """

    model: str
    error: str
    sha1: str
    release: str
    top1_error: float | None
    top5_error: float
    origin: str

    @property
    def file_name(self):
        return f"{self.model}-{self.error}-{self.sha1[:8]}.pth"

    @property
    def url(self):
        return f"{_RELEASES}/{self.release}/{self.file_name}.zip"


# (attention, depth) -> the checkpoint `weights="imagenet"` loads. CBAM/BAM-ResNet-50 are the
# authors' weights converted by pytorchcv (its tables: top-1/top-5 error 22.38/6.05 and
# 23.14/6.58); pytorchcv's `seresnet50`/`101` stride in the 1x1 convolution, so the `b` variants.
CHECKPOINTS = {
    ("cbam", 50): Checkpoint("cbam_resnet50", "0605", "a1172fe679622224dcc88c00020936ad381806fb",
                             "v0.0.125", 22.38, 6.05, "the CBAM authors' weights"),
    ("bam", 50): Checkpoint("bam_resnet50", "0658", "96a37c82bdba821385b29859ad1db83061a0ca5b",
                            "v0.0.124", 23.14, 6.58, "the BAM authors' weights"),
    ("se", 18): Checkpoint("seresnet18", "0961", "022123a5e88c9917e63165f5b5a7808a606d452a",
                           "v0.0.355", None, 9.61, "pytorchcv's training"),
    ("se", 50): Checkpoint("seresnet50b", "0539", "459e6871e944d1c7102ee9c055ea428b8d9a168c",
                           "v0.0.387", None, 5.39, "pytorchcv's training"),
    ("se", 101): Checkpoint("seresnet101b", "0487", "b83a20fd2ad9a32e0fe5cb3daef45aac03ea3194",
                            "v0.0.460", None, 4.87, "pytorchcv's training"),
}


def check_weights(weights, attention, depth, include_top, num_classes, attention_kwargs):
    """Raises for a `weights=` the builder cannot honour, before anything is built."""
    if weights is None:
        return
    if weights == "imagenet":
        if (attention, depth) not in CHECKPOINTS:
            known = ", ".join(f"resnet{d}(attention={a!r})" for a, d in CHECKPOINTS)
            raise ValueError("`weights='imagenet'` exists for " + known +
                             f", got resnet{depth}(attention={attention!r}).")
        if include_top and num_classes != 1000:
            raise ValueError("`weights='imagenet'` with `include_top=True` needs "
                             f"`num_classes=1000`, got {num_classes!r}.")
        if attention_kwargs:
            raise ValueError("`weights='imagenet'` needs the attention layer's defaults, got "
                             f"`attention_kwargs={attention_kwargs!r}`.")
        import_torch()  # fail before a 100 MB download, not after
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError("`weights` must be None, 'imagenet' or the path of a PyTorch checkpoint, "
                        f"got {weights!r}.")
    if not os.path.isfile(weights):
        raise FileNotFoundError("`weights` must be None, 'imagenet' or the path of a PyTorch "
                                f"checkpoint, got {os.fspath(weights)!r} (no such file).")


def load_weights(model, weights, attention, depth, include_top):
    """Loads `weights` (checked by `check_weights`) into the built ResNet `model`."""
    if weights is None:
        return
    path = fetch(CHECKPOINTS[attention, depth]) if weights == "imagenet" else weights
    state = read_torch_checkpoint(path)
    if not include_top:
        state = {key: value for key, value in state.items()
                 if not key.startswith(_CLASSIFIER_PREFIXES)}
    load_torch_state_dict(model, state)


def fetch(checkpoint):
    """Path of `checkpoint`'s `.pth` in the Keras cache, downloaded and checked when needed.

    The archive comes through `keras.utils.get_file` into `$KERAS_HOME/models` (`~/.keras`
    by default); the `.pth` is unzipped beside it and must have the SHA-1 the table records.
    """
    cache_dir = os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))
    archive_name = checkpoint.file_name + ".zip"
    os.makedirs(cache_dir, exist_ok=True)  # get_file falls back to /tmp for a missing folder
    try:
        archive = keras.utils.get_file(archive_name, checkpoint.url, cache_dir=cache_dir,
                                       cache_subdir="models")
    except Exception as error:  # get_file raises a bare Exception for URL failures
        target = os.path.join(cache_dir, "models", archive_name)
        raise OSError(
            f"Could not download the ImageNet weights {archive_name} from {checkpoint.url} "
            f"({error}). Without network access, fetch that file on another machine and put it "
            f"at {target}, or unzip it and pass the .pth file as `weights=<path>`.") from error
    path = os.path.join(os.path.dirname(archive), checkpoint.file_name)
    if not (os.path.isfile(path) and _sha1(path) == checkpoint.sha1):
        _unzip_member(archive, checkpoint.file_name, path)
        digest = _sha1(path)
        if digest != checkpoint.sha1:
            os.remove(path)
            os.remove(archive)
            raise ValueError(
                f"{archive} holds a {checkpoint.file_name} whose SHA-1 is {digest}, not the "
                f"published {checkpoint.sha1}: the download is damaged or not that file. It "
                "was deleted; try again.")
    return path


def _unzip_member(archive, member, path):
    try:
        with zipfile.ZipFile(archive) as zipped, zipped.open(member) as source, \
                open(path + ".partial", "wb") as target:
            while chunk := source.read(1 << 20):
                target.write(chunk)
    except (zipfile.BadZipFile, KeyError) as error:
        os.remove(archive)
        raise ValueError(f"{archive} is not a zip archive holding {member} ({error}); it was "
                         "deleted, try again.") from error
    os.replace(path + ".partial", path)


def _sha1(path):
    digest = hashlib.sha1()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
