"""The five architectures: exact head sizes, shapes, dtypes, a real forward pass, learning."""
import json
import os

import cv2
import keras
import numpy as np
import pytest

import mrpose_tf
from mrpose_tf.losses import joints_mse
from mrpose_tf.models import ARCHITECTURES, BACKBONES, dtype_policy, head_trainable_params
from mrpose_tf.models.backbones import stage_outputs, zero_init_residual
from tests.conftest import shared_data_path

# SPEC section 1: trainable parameters outside the backbone in the authors' code.
AUTHORS_HEAD_PARAMS = {
    "simple_baseline": {17: 10_491_665, 16: 10_491_408},
    "mrheatnet1": {17: 10_509_753, 16: 10_507_920},
    "mrheatnet2": {17: 10_514_377, 16: 10_512_016},
    "mrfeanet1": {17: 17_833_233, 16: 17_832_976},
    "mrfeanet2": {17: 56_633_105, 16: 56_632_848},
}


def _backbone_trainable(backbone):
    """Independent count: the keras.applications ResNet alone."""
    model = BACKBONES[backbone](include_top=False, weights=None, input_shape=(64, 64, 3))
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _resnet_taps(name, inputs, weights=None, style="keras"):
    """What the heads read of any ResNet here: C2..C5 with 256/512/1024/2048 channels at
    strides 4/8/16/32, from a parameter-free stand-in (pooling and channel tiling)."""
    del name, weights, style
    taps, x = {}, inputs
    for stage, (pool, channels) in enumerate(((4, 256), (2, 512), (2, 1024), (2, 2048)), 2):
        x = keras.layers.AveragePooling2D(pool, name=f"taps_pool{stage}")(x)
        taps[f"C{stage}"] = keras.layers.Lambda(
            lambda t, c=channels: keras.ops.tile(t[..., :1], (1, 1, 1, c)),
            name=f"taps_c{stage}")(x)
    return None, taps


def test_head_parameters_equal_the_authors_for_every_arch_and_k(monkeypatch):
    """Every arch and K over the channels of the ResNet taps (a parameter-free stand-in: the
    heads are what is counted; the real ResNets' taps are checked below)."""
    monkeypatch.setattr("mrpose_tf.models.build_backbone", _resnet_taps)
    for arch, by_k in AUTHORS_HEAD_PARAMS.items():
        for k, expected in by_k.items():
            keras.backend.clear_session()
            model = mrpose_tf.build_model(arch, num_joints=k, input_size=(64, 64))
            total = int(sum(np.prod(w.shape) for w in model.trainable_weights))
            assert total == expected, (arch, k)
            assert head_trainable_params(model) == expected
            assert tuple(model.output.shape) == (None, 16, 16, k)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_head_parameters_on_each_real_resnet(backbone):
    # C2..C5 have the same channels in ResNet-50/101/152: the arch that reads all four.
    backbone_params = _backbone_trainable(backbone)
    model = mrpose_tf.build_model("mrfeanet2", backbone, num_joints=17, input_size=(64, 64))
    total = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    assert total - backbone_params == AUTHORS_HEAD_PARAMS["mrfeanet2"][17]
    assert head_trainable_params(model) == AUTHORS_HEAD_PARAMS["mrfeanet2"][17]


@pytest.mark.parametrize("input_size", [(256, 192), (96, 160)])
def test_output_is_input_over_four_with_k_channels(input_size):
    model = mrpose_tf.build_model("mrfeanet1", num_joints=5, input_size=input_size)
    out = model(np.zeros((2, *input_size, 3), np.float32))
    assert tuple(out.shape) == (2, input_size[0] // 4, input_size[1] // 4, 5)


def test_backbone_taps_are_the_last_block_of_each_stage():
    expected = {  # SPEC section 1 table
        "resnet50": ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
        "resnet101": ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
        "resnet152": ("conv2_block3_out", "conv3_block8_out", "conv4_block36_out", "conv5_block3_out"),
    }
    for backbone, names in expected.items():
        model = BACKBONES[backbone](include_top=False, weights=None, input_shape=(64, 64, 3))
        taps = stage_outputs(model)
        for tap, name in zip(("C2", "C3", "C4", "C5"), names):
            assert taps[tap] is model.get_layer(name).output
        strides = [64 // taps[t].shape[1] for t in ("C2", "C3", "C4", "C5")]
        assert strides == [4, 8, 16, 32]


def test_zero_init_residual_makes_every_bottleneck_its_shortcut():
    # Blocks per stage: 3-4-6-3, 3-4-23-3, 3-8-36-3.
    for backbone, blocks_total in (("resnet50", 16), ("resnet101", 33), ("resnet152", 50)):
        keras.backend.clear_session()
        model = BACKBONES[backbone](include_top=False, weights=None, input_shape=(64, 64, 3))
        assert zero_init_residual(model) == blocks_total
    # ResNet-50 inside a pose model: an identity block then passes its input through unchanged
    # (relu of a non-negative input), and a projection block equals relu(its shortcut's BN).
    model = mrpose_tf.build_model("simple_baseline", input_size=(64, 64))
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    names = ["conv3_block1_out", "conv3_block2_out", "conv3_block1_0_bn"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    before = [t.numpy() for t in probe(x)]
    assert zero_init_residual(model) == 16
    for training in (False, True):
        block1, block2, shortcut = (t.numpy() for t in probe(x, training=training))
        np.testing.assert_allclose(block2, block1, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(block1, np.maximum(shortcut, 0), rtol=1e-6, atol=1e-6)
    assert np.abs(before[1] - before[0]).max() > 0.1  # not so by construction
    assert float(np.abs(model.get_layer("conv3_block1_0_bn").gamma.numpy() - 1).max()) == 0
    with pytest.raises(ValueError, match="not a ResNet"):
        zero_init_residual(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_every_batch_norm_updates_its_moving_mean_with_the_authors_momentum():
    # The authors' ResNet and heads: torch BatchNorm2d(momentum=0.1), i.e. new = 0.9 old + 0.1 batch.
    model = mrpose_tf.build_model("simple_baseline", input_size=(64, 64))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 53 + 3 and {layer.momentum for layer in norms} == {0.9}
    bn = model.get_layer("conv3_block1_1_bn")  # a backbone layer (keras.applications default: 0.99)
    x = np.random.default_rng(0).normal(size=(4, 64, 64, 3)).astype("float32")
    bn_input = keras.Model(model.input, bn.input)(x).numpy()
    old = bn.moving_mean.numpy().copy()
    bn(bn_input, training=True)
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               0.9 * old + 0.1 * bn_input.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)


def test_heatmaps_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = mrpose_tf.build_model("mrheatnet1", num_joints=3, input_size=(64, 64))
        assert model.get_layer("final").compute_dtype == "bfloat16"
        out = model(np.zeros((1, 64, 64, 3), np.float32))
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("kwargs, words", [
    (dict(arch="hrnet"), ["unknown architecture", "mrfeanet2", "simple_baseline"]),
    (dict(arch="mrfeanet1", backbone="resnet18"), ["unknown backbone", "resnet50", "resnet152"]),
    (dict(arch="mrfeanet1", input_size=(250, 192)), ["multiples of 32"]),
    (dict(arch="mrfeanet1", input_size=(256, 0)), ["multiples of 32"]),
    (dict(arch="mrfeanet1", num_joints=0), ["num_joints", ">= 1"]),
    (dict(arch="mrfeanet1", backbone_weights="/no/such/file.h5"), ["/no/such/file.h5"]),
])
def test_bad_arguments_raise_value_error_listing_valid_choices(kwargs, words):
    with pytest.raises(ValueError) as err:
        mrpose_tf.build_model(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_local_backbone_weights_file_is_loaded(tmp_path):
    source = BACKBONES["resnet50"](include_top=False, weights=None, input_shape=(64, 64, 3))
    path = str(tmp_path / "resnet50_notop.weights.h5")
    source.save_weights(path)
    model = mrpose_tf.build_model("simple_baseline", input_size=(64, 64), backbone_weights=path)
    for name in ("conv1_conv", "conv5_block3_3_conv"):
        for a, b in zip(model.get_layer(name).weights, source.get_layer(name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_preprocess_equals_keras_applications_resnet_preprocess_input():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    expected = keras.applications.resnet.preprocess_input(images.astype(np.float32).copy())
    np.testing.assert_allclose(mrpose_tf.preprocess(images), expected, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(
        mrpose_tf.preprocess(keras.ops.convert_to_tensor(images))), expected, atol=1e-4)


def _real_crops(input_size):
    """Person crops of the real COCO sample, made with cv2 (independent of our pipeline)."""
    folder = shared_data_path("coco_sample")
    with open(os.path.join(folder, "test_coco.json")) as f:
        coco = json.load(f)
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    h, w = input_size
    crops = []
    for ann in coco["annotations"][:4]:
        image = cv2.cvtColor(cv2.imread(os.path.join(folder, files[ann["image_id"]])),
                             cv2.COLOR_BGR2RGB)
        center, scale = mrpose_tf.box_to_center_scale(ann["bbox"], w / h)
        matrix = mrpose_tf.get_affine_transform(center, scale, 0, (h, w))
        crops.append(cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR))
    return mrpose_tf.preprocess(np.stack(crops))


@pytest.fixture(scope="module")
def real_batch():
    images = _real_crops((64, 64))
    rng = np.random.default_rng(1)
    targets = np.zeros((len(images), 16, 16, 3), np.float32)
    for n in range(len(images)):  # one bright 3x3 blob per joint
        for j in range(3):
            y, x = rng.integers(2, 14, 2)
            targets[n, y - 1:y + 2, x - 1:x + 2, j] = 1.0
    return images, targets


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_forward_on_a_real_crop_and_one_training_step_lowers_the_loss(arch, real_batch):
    images, targets = real_batch
    keras.utils.set_random_seed(0)
    model = mrpose_tf.build_model(arch, num_joints=3, input_size=(64, 64))
    out = model(images, training=False)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))
    optimizer = keras.optimizers.Adam(1e-4)  # a small step from random init
    weights = np.ones((len(images), 3), np.float32)

    import tensorflow as tf  # the training step itself is backend code

    # Training mode both times: BatchNorm uses this batch's statistics, as in the step.
    with tf.GradientTape() as tape:
        loss = joints_mse(targets, model(images, training=True), weights)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    before = float(loss)
    after = float(joints_mse(targets, model(images, training=True), weights))
    assert after < before, (arch, before, after)


def test_flop_count_of_the_simple_baseline_head_equals_a_hand_count():
    from mrpose_tf.models.complexity import count_flops
    model = mrpose_tf.build_model("simple_baseline", input_size=(256, 192))
    backbone = BACKBONES["resnet50"](include_top=False, weights=None, input_shape=(256, 192, 3))
    # Transposed convs: every input pixel x 4x4 kernel x Cin x Cout; final 1x1 conv at 64x48.
    head_macs = (8 * 6 * 16 * 2048 * 256 + 16 * 12 * 16 * 256 * 256 + 32 * 24 * 16 * 256 * 256
                 + 64 * 48 * 256 * 17)
    assert count_flops(model) - count_flops(backbone) == 2 * head_macs
    # ResNet-50 at 224x224 is the well-known ~4.1 GMACs.
    r50 = BACKBONES["resnet50"](include_top=False, weights=None, input_shape=(224, 224, 3))
    assert 3.8e9 < count_flops(r50) / 2 < 4.2e9


def test_models_import_without_the_tensorflow_parts_of_the_package():
    """``import mrpose_tf.models`` loads only Keras code (the models build under any Keras
    backend); the package's public names still resolve, each to its module's object."""
    import subprocess
    import sys

    code = (
        "import sys, mrpose_tf.models\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('mrpose_tf.')\n"
        "                and not m.startswith('mrpose_tf.models'))\n"
        "print(loaded)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip().splitlines()[-1] == "[]"
    from mrpose_tf import codec, evaluation, geometry, models, predictor, preprocessing
    assert mrpose_tf.build_model is models.build_model
    assert mrpose_tf.preprocess is preprocessing.preprocess
    assert mrpose_tf.get_affine_transform is geometry.get_affine_transform
    assert mrpose_tf.Predictor is predictor.Predictor
    assert mrpose_tf.decode_heatmaps is codec.decode_heatmaps
    assert mrpose_tf.evaluate_coco is evaluation.evaluate_coco
    assert set(mrpose_tf.__all__) <= set(dir(mrpose_tf))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        mrpose_tf.nonexistent  # noqa: B018


def test_built_models_hold_only_plain_keras_layers():
    """No device-specific layer form inside the models package: every layer of every
    architecture is a class of keras.layers (the trainer rewrites its own copy)."""
    for arch in sorted(ARCHITECTURES):
        with dtype_policy("mixed_bfloat16"):
            model = mrpose_tf.build_model(arch, "resnet50", 17, (96, 64))
        foreign = {type(layer).__module__ + "." + type(layer).__name__ for layer in model.layers
                   if not type(layer).__module__.startswith("keras.")}
        assert not foreign, (arch, foreign)
