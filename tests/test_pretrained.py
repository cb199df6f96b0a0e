"""weights= of the ResNet builders: the table of published checkpoints, download, hash, offline.

Nothing here touches the network: checkpoints are served from a local `file://` origin. The
served `.pth` is an `.npz` of a pytorchcv-named state dict, read by a stand-in `torch.load`
(PyTorch's own unpickling is not what is tested here).
"""

import hashlib
import io
import sys
import types
import zipfile

import numpy as np
import pytest
from test_convert_pytorchcv import pytorchcv_state_dict

from keras_attn import models
from keras_attn.models import _pretrained


def npz_bytes(state):
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    return buffer.getvalue()


@pytest.fixture
def offline_store(tmp_path, monkeypatch):
    """Serves checkpoints from tmp_path/releases; the Keras cache is tmp_path/keras."""
    releases = tmp_path / "releases"
    monkeypatch.setattr(_pretrained, "_RELEASES", releases.as_uri())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(
        load=lambda path, **kwargs: dict(np.load(path))))

    def publish(key, payload, sha1=None):
        """Puts `payload` in the store as the checkpoint of `key`, listed with `sha1`."""
        sha1 = sha1 or hashlib.sha1(payload).hexdigest()
        checkpoint = _pretrained.Checkpoint(f"{key[0]}_resnet{key[1]}", "0123", sha1, "v0.0.1",
                                            None, 1.23, "a test")
        (releases / checkpoint.release).mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(releases / checkpoint.release / f"{checkpoint.file_name}.zip",
                             "w") as archive:
            archive.writestr(checkpoint.file_name, payload)
        monkeypatch.setitem(_pretrained.CHECKPOINTS, key, checkpoint)
        return checkpoint

    publish.cache = tmp_path / "keras" / "models"
    publish.releases = releases
    return publish


def test_imagenet_weights_are_downloaded_checked_cached_and_loaded(offline_store):
    state = pytorchcv_state_dict(18, "cbam", num_classes=1000, seed=1)
    checkpoint = offline_store(("cbam", 18), npz_bytes(state))
    model = models.resnet18(attention="cbam", weights="imagenet", input_shape=(32, 32, 3))
    np.testing.assert_array_equal(model.get_layer("fc").bias.numpy(), state["output.bias"])
    assert (offline_store.cache / checkpoint.file_name).is_file()
    for served in offline_store.releases.rglob("*.zip"):
        served.unlink()  # the second build must come from the cache
    again = models.resnet18(attention="cbam", weights="imagenet", input_shape=(32, 32, 3),
                            include_top=False, pooling="avg")
    conv = "layer4.1.cbam"
    np.testing.assert_array_equal(
        again.get_layer(conv).channel_attention.mlp_hidden.kernel.numpy(),
        model.get_layer(conv).channel_attention.mlp_hidden.kernel.numpy())


def test_a_file_with_the_wrong_hash_is_refused_and_deleted(offline_store):
    state = pytorchcv_state_dict(18, "se", num_classes=1000)
    checkpoint = offline_store(("se", 18), npz_bytes(state), sha1="0" * 40)
    with pytest.raises(ValueError, match="SHA-1 is [0-9a-f]{40}, not the published 0000"):
        models.resnet18(attention="se", weights="imagenet", input_shape=(32, 32, 3))
    assert offline_store.cache.is_dir()
    assert sorted(path.name for path in offline_store.cache.iterdir()) == []


def test_without_network_the_error_says_what_to_fetch_and_where(offline_store):
    checkpoint = offline_store(("bam", 18), b"unused")
    for served in offline_store.releases.rglob("*.zip"):
        served.unlink()
    with pytest.raises(OSError) as info:
        models.resnet18(attention="bam", weights="imagenet", input_shape=(32, 32, 3))
    message = str(info.value)
    assert checkpoint.url in message
    assert str(offline_store.cache / f"{checkpoint.file_name}.zip") in message
    assert "weights=<path>" in message


def test_weights_path_without_top_leaves_the_classifier_out(offline_store, tmp_path):
    state = pytorchcv_state_dict(18, "bam", num_classes=1000, seed=2)
    path = tmp_path / "bam_resnet18.pth"
    path.write_bytes(npz_bytes(state))
    model = models.resnet18(attention="bam", weights=path, include_top=False,
                            input_shape=(32, 32, 3))
    np.testing.assert_array_equal(
        model.get_layer("bam1").channel_gate.output_dense.bias.numpy(),
        state["features.stage2.unit1.bam.ch_att.final_fc.bias"])


def test_bad_weights_arguments(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"exists for resnet50\(attention='cbam'\).*got resnet34"):
        models.resnet34(attention="cbam", weights="imagenet")
    with pytest.raises(ValueError, match="needs `num_classes=1000`, got 10"):
        models.resnet50(attention="cbam", weights="imagenet", num_classes=10)
    with pytest.raises(ValueError, match="attention layer's defaults"):
        models.resnet50(attention="cbam", weights="imagenet",
                        attention_kwargs={"reduction_ratio": 8})
    with pytest.raises(TypeError, match="`weights` must be None, 'imagenet' or the path"):
        models.resnet18(weights=1)
    with pytest.raises(FileNotFoundError, match="no such file"):
        models.resnet18(weights=tmp_path / "missing.pth")

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although PyTorch is missing")

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(_pretrained.keras.utils, "get_file", no_download)
    with pytest.raises(ImportError, match="pip install torch"):
        models.resnet50(attention="cbam", weights="imagenet")


def test_the_table_names_pytorchcv_files():
    table = models.CHECKPOINTS
    assert table["cbam", 50].file_name == "cbam_resnet50-0605-a1172fe6.pth"
    assert table["bam", 50].file_name == "bam_resnet50-0658-96a37c82.pth"
    assert table["cbam", 50].url == ("https://github.com/osmr/imgclsmob/releases/download/"
                                     "v0.0.125/cbam_resnet50-0605-a1172fe6.pth.zip")
    for checkpoint in table.values():
        assert len(checkpoint.sha1) == 40 and checkpoint.file_name.startswith(checkpoint.model)
