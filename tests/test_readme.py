"""The README's Python snippets, run verbatim in their order (with the inputs the text around
them names: the quickstart's model, its data, a CBAM layer)."""

import os
import re

import numpy as np
import pytest

pytestmark = [pytest.mark.tf_only, pytest.mark.slow]

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def snippets():
    with open(README) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_readme_snippets_run(tmp_path, monkeypatch, capsys):
    import keras_attn.convert

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    loaded = []
    monkeypatch.setattr(keras_attn.convert, "load_torch_checkpoint",
                        lambda model, path: loaded.append((model.name, path)))
    quickstart, scores, models, export, cpu = snippets()
    namespace = {}
    exec(quickstart, namespace)
    cnn = namespace["model"]
    exec(scores, namespace)
    assert namespace["scores"]["spatial"].shape == (1, 28, 28, 1)
    exec(models, namespace)
    assert capsys.readouterr().out.splitlines()[-1] == "28089624"
    assert loaded == [("cbam_resnet50", "RESNET50_CBAM_new_name_wrap.pth")]

    rng = np.random.default_rng(0)
    namespace.update(model=cnn, x_train=rng.uniform(size=(200, 32, 32, 3)).astype("float32"),
                     x_test=rng.uniform(size=(3, 32, 32, 3)).astype("float32"))
    exec(export, namespace)
    assert (tmp_path / "serving" / "cbam_cnn" / "1" / "saved_model.pb").exists()
    assert "cnn_int8.tflite" in capsys.readouterr().out
    assert namespace["logits"].shape == (3, 10)

    cbam_layer = cnn.layers[1]
    x = rng.normal(size=(2, 32, 32, 32)).astype("float32")
    namespace.update(cbam_layer=cbam_layer, x=x)
    exec(cpu, namespace)
    np.testing.assert_allclose(namespace["y"], cbam_layer(x, training=False), atol=1e-5)
    np.testing.assert_allclose(namespace["peak"], x.max(axis=(1, 2)), atol=0)
