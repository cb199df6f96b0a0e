"""keras_attn.models: ImageNet preprocessing, labels and image loading of the checkpoints."""

import numpy as np
import pytest
from PIL import Image

from keras_attn import models

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def test_preprocess_input_is_the_authors_normalisation():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 5, 4, 3)).astype(np.uint8)
    expected = (pixels / 255.0 - MEAN) / STD
    np.testing.assert_allclose(models.preprocess_input(pixels), expected, atol=1e-5)
    channels_first = models.preprocess_input(
        pixels.transpose(0, 3, 1, 2).astype(np.float32), data_format="channels_first")
    np.testing.assert_allclose(channels_first, expected.transpose(0, 3, 1, 2), atol=1e-5)


def test_decode_predictions_ranks_imagenet_classes():
    scores = np.zeros((2, 1000), np.float32)
    scores[0, [281, 207, 0]] = [0.5, 0.3, 0.2]
    scores[1, 999] = 1.0
    first, second = models.decode_predictions(scores, top=3)
    assert first == [("n02123045", "tabby", 0.5), ("n02099601", "golden retriever",
                                                    pytest.approx(0.3)),
                     ("n01440764", "tench", pytest.approx(0.2))]
    assert second[0] == ("n15075141", "toilet tissue", 1.0) and len(second) == 3
    everything = models.decode_predictions(np.arange(1000.0)[None], top=1000)[0]
    ids = [wordnet_id for wordnet_id, _, _ in everything][::-1]
    assert ids == sorted(ids) and len(set(ids)) == 1000  # class i is the i-th sorted synset


def test_decode_predictions_bad_arguments():
    with pytest.raises(ValueError, match=r"shape \(batch, 1000\), got shape \(1, 10\)"):
        models.decode_predictions(np.zeros((1, 10)))
    with pytest.raises(ValueError, match="`top` must be an int from 1 to 1000, got 0"):
        models.decode_predictions(np.zeros((1, 1000)), top=0)


def test_load_image_crops_the_centre_after_resizing_the_shorter_side(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(300, 256, 3)).astype(np.uint8)  # 256 wide: no resize
    Image.fromarray(pixels).save(tmp_path / "tall.png")
    image = models.load_image(tmp_path / "tall.png")
    assert image.dtype == np.float32 and image.shape == (224, 224, 3)
    np.testing.assert_array_equal(image, pixels[38:262, 16:240])  # round(76 / 2), 32 / 2

    wide = rng.integers(0, 256, size=(300, 512, 3)).astype(np.uint8)
    Image.fromarray(wide).convert("L").save(tmp_path / "wide_gray.png")
    assert models.load_image(tmp_path / "wide_gray.png").shape == (224, 224, 3)  # gray -> RGB
    with pytest.raises(ValueError, match=r"`resize` \(200\) must be at least `size` \(224\)"):
        models.load_image(tmp_path / "tall.png", resize=200)
