import numpy as np
import pytest

from defaults import train as train_params
from pipeline import archs, layers, models


def build(arch, **kw):
    p = train_params(arch=arch, **{"z_dim": 100, "virtual_labels": 0, **kw})
    return models.build_generator(p), models.build_discriminator(p)


def test_seed_001_dcgan_param_counts():
    g, d = build("dcgan")
    assert d.count_params() == 1_080_577  # the seed's discriminator summary
    assert g.count_params() == 1_301_505
    convs = [l for l in d.layers if l.__class__.__name__ == "Conv2D"]
    assert [(c.filters, c.kernel_size, c.strides) for c in convs] == [
        (32, (5, 5), (2, 2)), (64, (5, 5), (2, 2)), (128, (5, 5), (2, 2)), (256, (5, 5), (1, 1))]


def test_seed_004_mlp_layers():
    g, d = build("mlp")
    assert [l.units for l in g.layers if l.__class__.__name__ == "Dense"] == [128, 256, 512, 1024, 784]
    assert [l.momentum for l in g.layers if l.__class__.__name__ == "BatchNormalization"] == [0.8] * 4
    assert [l.units for l in d.layers if l.__class__.__name__ == "Dense"] == [784, 392, 1]


def test_seeds_000_002_upsample_layers():
    g, d = build("dcgan_upsample")
    assert g.layers[1].units == 3136
    assert [l.filters for l in g.layers if l.__class__.__name__ == "Conv2D"] == [128, 64, 64, 1]
    assert sum(l.__class__.__name__ == "UpSampling2D" for l in g.layers) == 2
    assert [(l.filters, l.strides) for l in d.layers if l.__class__.__name__ == "Conv2D"] == [
        (64, (2, 2)), (64, (2, 2)), (128, (2, 2)), (128, (1, 1))]
    assert [l.rate for l in d.layers if l.__class__.__name__ == "Dropout"] == [0.4] * 4
    assert g.count_params() == 844_161 and d.count_params() == 720_833


def test_upsample_transpose_switch():
    g, _ = build("dcgan_upsample", dcgan_upsample={"upscale": "transpose"})
    kinds = [l.__class__.__name__ for l in g.layers]
    assert "UpSampling2D" not in kinds and kinds.count("Conv2DTranspose") == 4


@pytest.mark.parametrize("arch", archs.NAMES)
def test_shapes_and_range(arch):
    g, d = build(arch, z_dim=16)
    img = g(np.random.default_rng(0).standard_normal((3, 16)).astype("float32")).numpy()
    assert img.shape == (3, 28, 28, 1) and img.min() >= -1 and img.max() <= 1
    assert d(img).shape == (3, 1)


def test_summary_cli_prints_counts(capsys):
    models.main(["--arch", "dcgan", "--set", "train.virtual_labels=0", "--set", "train.z_dim=100"])
    out = capsys.readouterr().out
    assert "1,080,577" in out and "1,301,505" in out


def test_the_registry_is_the_params_arch_list():
    import typing

    from pipeline.params import TrainParams

    allowed = typing.get_args(TrainParams.model_fields["arch"].annotation)
    assert allowed == archs.NAMES and set(allowed) <= set(TrainParams.model_fields)
    assert all(TrainParams.model_fields[name].annotation is arch.params for name, arch in archs.REGISTRY.items())


def test_a_generator_of_one_arch_with_the_discriminator_of_another():
    g, d = build("dcgan_upsample", d_arch="mlp", z_dim=8)
    assert any("conv" in layer.name for layer in g.layers)
    assert d.count_params() == models.build_discriminator(train_params(arch="mlp", d_arch=None)).count_params()
    p = train_params(arch="dcgan_upsample", d_arch="mlp")
    flat = p.flat()
    assert flat["train.d_arch"] == "mlp" and "train.mlp.d_units" in flat and "train.dcgan_upsample.g_filters" in flat


def test_virtual_label_is_a_uniform_code_read_off_z():
    """The code is one_hot(argmax(z[:k])) * scale appended to z: uniform over k for
    z ~ N(0, I), a deterministic function of z (the input stays z alone)."""
    k, scale = 30, 4.0
    layer = layers.VirtualLabel(k, scale)
    z = np.random.default_rng(0).standard_normal((60_000, 100)).astype("float32")
    out = np.asarray(layer(z))
    assert out.shape == (60_000, 130)
    np.testing.assert_array_equal(out[:, :100], z)
    expected = np.zeros((60_000, k), np.float32)
    expected[np.arange(60_000), z[:, :k].argmax(1)] = scale
    np.testing.assert_array_equal(out[:, 100:], expected)
    counts = np.bincount(z[:, :k].argmax(1), minlength=k)
    chi2 = ((counts - 2000) ** 2 / 2000).sum()
    assert chi2 < 70, chi2  # 29 degrees of freedom: p < 1e-4 beyond 70


@pytest.mark.parametrize("arch", archs.NAMES)
def test_generators_with_virtual_labels_save_and_load(arch, tmp_path):
    p = train_params(arch=arch, z_dim=16, virtual_labels=5, virtual_groups=2)
    g = models.build_generator(p)
    assert any(isinstance(layer, layers.VirtualLabel) for layer in g.layers) and g.input_shape == (None, 16)
    z = np.random.default_rng(1).standard_normal((4, 16)).astype("float32")
    g.save(tmp_path / "g.keras")
    back = models.load_generator(tmp_path / "g.keras")
    np.testing.assert_array_equal(back(z).numpy(), g(z).numpy())
    # The code changes the image: the same z with another argmax draws something else.
    other = z.copy()
    other[:, [0, 1]] = other[:, [1, 0]] + np.array([[5.0, -5.0]], np.float32)
    assert not np.allclose(g(other).numpy(), g(z).numpy())
    assert not any(isinstance(layer, layers.VirtualLabel) for layer in
                   models.build_generator(train_params(arch=arch, z_dim=16, virtual_labels=0)).layers)


def test_virtual_labels_cannot_exceed_z_dim():
    from pipeline.errors import StageError

    with pytest.raises(StageError, match="train.virtual_labels=20 times train.virtual_groups=1 must be at most "
                                         "train.z_dim=16"):
        train_params(z_dim=16, virtual_labels=20)
    with pytest.raises(StageError, match="train.virtual_labels=6 times train.virtual_groups=3 must be at most "
                                         "train.z_dim=16"):
        train_params(z_dim=16, virtual_labels=6, virtual_groups=3)
    assert train_params(z_dim=16, virtual_labels=5, virtual_groups=3).virtual_groups == 3


def test_virtual_label_groups_are_independent_uniform_codes_off_disjoint_slices():
    """Three codes of 10 from z[:10], z[10:20], z[20:30]: each uniform, their
    1,000 combinations uniform too (the three are independent)."""
    k, groups, n = 10, 3, 200_000
    z = np.random.default_rng(2).standard_normal((n, 40)).astype("float32")
    out = np.asarray(layers.VirtualLabel(k, 2.0, groups)(z))
    assert out.shape == (n, 40 + k * groups)
    np.testing.assert_array_equal(out[:, :40], z)
    codes = out[:, 40:].reshape(n, groups, k)
    assert set(np.unique(codes)) == {0.0, 2.0} and (codes.sum(-1) == 2.0).all()
    np.testing.assert_array_equal(codes.argmax(-1), z[:, :30].reshape(n, groups, k).argmax(-1))
    combined = codes.argmax(-1) @ np.array([100, 10, 1])
    counts = np.bincount(combined, minlength=1000)
    chi2 = ((counts - n / 1000) ** 2 / (n / 1000)).sum()
    assert chi2 < 1180, chi2  # 999 degrees of freedom: p < 1e-4 beyond about 1180


@pytest.mark.graphviz
def test_architecture_diagram_is_a_png(tmp_path):
    """`python -m pipeline.models --plot` and the train stage's diagrams: keras's
    plot_model through pydot and Graphviz's `dot`."""
    from PIL import Image

    g, _ = build("mlp")
    with Image.open(models.plot(g, tmp_path / "g.png")) as img:
        assert img.format == "PNG" and img.height > img.width  # one layer under the other


@pytest.mark.parametrize("arch", archs.NAMES)
def test_channels_drawn_apart_are_one_network_on_each_slice_of_z(arch, tmp_path):
    """train.channel_draw: independent: channel k of each image is what the same
    one-channel network draws from z's k-th slice, with that slice's own code; it saves,
    loads, and a slice moves its channel alone."""
    p = train_params(arch=arch, z_dim=48, virtual_labels=5, channel_draw="independent")
    g = models.build_generator(p, channels=3)
    assert g.input_shape == (None, 48) and g.output_shape == (None, 28, 28, 3)
    one = models.build_generator(train_params(arch=arch, z_dim=16, virtual_labels=5), channels=1)
    assert one.count_params() == g.count_params()
    one.set_weights(g.get_weights())
    z = np.random.default_rng(2).standard_normal((5, 48)).astype("float32")
    by_slice = one(z.reshape(15, 16)).numpy().reshape(5, 3, 28, 28).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(g(z).numpy(), by_slice, atol=1e-6)
    moved = z.copy()
    moved[:, 16:32] = np.random.default_rng(3).standard_normal((5, 16))
    diff = np.abs(g(moved).numpy() - g(z).numpy()).max(axis=(0, 1, 2))
    assert diff[1] > 1e-3 and diff[0] == 0 and diff[2] == 0, diff
    g.save(tmp_path / "g.keras")
    np.testing.assert_array_equal(models.load_generator(tmp_path / "g.keras")(z).numpy(), g(z).numpy())


def test_channels_apart_on_one_channel_is_the_joint_generator():
    apart = models.build_generator(train_params(z_dim=16, virtual_labels=5, channel_draw="independent"), channels=1)
    assert not any(isinstance(layer, (layers.ChannelsToBatch, layers.BatchToChannels)) for layer in apart.layers)
    assert apart.input_shape == (None, 16) and apart.output_shape == (None, 28, 28, 1)


def test_channels_apart_need_z_to_split_into_slices_with_room_for_the_codes():
    from pipeline.errors import StageError

    with pytest.raises(StageError, match=r"train.z_dim=100 must be a multiple of the data's 3 channels under "
                                         r"train.channel_draw: independent"):
        models.build_generator(train_params(z_dim=100, virtual_labels=5, channel_draw="independent"), channels=3)
    with pytest.raises(StageError, match=r"train.virtual_labels=30 times train.virtual_groups=1 must be at most "
                                         r"train.z_dim / 3 channels = 20"):
        models.build_generator(train_params(z_dim=60, virtual_labels=30, channel_draw="independent"), channels=3)
    with pytest.raises(StageError, match=r"train.channel_draw: Input should be 'joint' or 'independent'"):
        train_params(channel_draw="apart")


@pytest.mark.parametrize("arch", archs.NAMES)
def test_channels_judged_apart_are_one_discriminator_on_each_channel(arch):
    """train.channel_judge: independent: an image's logits are the same one-channel D's, one
    per channel; under pack m, channel k of m consecutive images packs together."""
    p = train_params(arch=arch, z_dim=16, virtual_labels=0, channel_judge="independent", pack=2)
    d = models.build_discriminator(p, channels=3)
    assert d.input_shape == (None, 28, 28, 3) and d.output_shape == (None, 3)
    one = models.build_discriminator(train_params(arch=arch, z_dim=16, virtual_labels=0, pack=2), channels=1)
    assert one.count_params() == d.count_params()
    one.set_weights(d.get_weights())
    x = np.random.default_rng(4).uniform(-1, 1, (6, 28, 28, 3)).astype("float32")
    by_channel = np.concatenate([one(x[..., k:k + 1]).numpy() for k in range(3)], axis=1)
    assert by_channel.shape == (3, 3)
    np.testing.assert_allclose(d(x).numpy(), by_channel, rtol=1e-4, atol=1e-4)
    # Real and generated images judged in one pass split by rows, each keeping its own logits.
    both = d(np.concatenate([x, -x])).numpy()
    np.testing.assert_allclose(both[:3], by_channel, rtol=1e-4, atol=1e-4)
    assert models.build_discriminator(p, channels=1).output_shape == (None, 1)


def test_channels_judged_apart_take_no_digit():
    from pipeline.errors import StageError

    p = train_params(channel_judge="independent", condition="concat")
    with pytest.raises(StageError, match="train.channel_judge: independent judges each channel apart and takes no "
                                         "digit; use train.condition: none"):
        models.build_discriminator(p, channels=3)
