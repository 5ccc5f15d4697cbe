import numpy as np
import pytest

from pipeline import models


def test_seed_001_discriminator_has_exactly_the_seed_param_count():
    assert models.build_discriminator("dcgan").count_params() == 1_080_577


@pytest.mark.parametrize("arch", models.ARCHS)
def test_shapes_and_range(arch):
    g = models.build_generator(arch, 16)
    d = models.build_discriminator(arch)
    img = g(np.random.default_rng(0).standard_normal((3, 16)).astype("float32")).numpy()
    assert img.shape == (3, 28, 28, 1) and img.min() >= -1 and img.max() <= 1
    assert d(img).shape == (3, 1)


def test_seed_004_mlp_layers():
    g = models.build_generator("mlp", 100)
    dense = [l.units for l in g.layers if l.__class__.__name__ == "Dense"]
    assert dense == [128, 256, 512, 1024, 784]
    d = models.build_discriminator("mlp")
    assert [l.units for l in d.layers if l.__class__.__name__ == "Dense"] == [784, 392, 1]
