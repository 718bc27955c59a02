"""The trainer's layer forms and the rewrite that puts them in: same function, same variables.

MatmulConv2DTranspose against Keras' Conv2DTranspose (float64, forward and backward);
TrainingBatchNormalization against Keras' layer (outputs, gradients) and against PyTorch's
``nn.BatchNorm2d`` (its running statistics, the authors' rule); the rewrite's choices and
its checkpoints against the plain model's.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mrpose_tf
from mrpose_tf.models import dtype_policy
from mrpose_tf.training import build_training_model, make_strategy
from mrpose_tf.training.layers import MatmulConv2DTranspose, TrainingBatchNormalization
from mrpose_tf.training.rewrite import rewrite_for_training
from tests.training_worker import tiny_config


@pytest.mark.parametrize("height, width, c_in, c_out, bias", [
    (3, 2, 16, 8, False), (6, 4, 5, 7, True), (1, 1, 3, 2, True), (4, 5, 6, 3, False)])
def test_matmul_transposed_conv_equals_conv2d_transpose_forward_and_backward(
        height, width, c_in, c_out, bias):
    x = tf.constant(np.random.default_rng(height * width).standard_normal(
        (2, height, width, c_in)))
    kwargs = dict(strides=2, padding="same", use_bias=bias, dtype="float64")
    reference = keras.layers.Conv2DTranspose(c_out, 4, bias_initializer="random_normal",
                                             **kwargs)
    layer = MatmulConv2DTranspose(c_out, 4, **kwargs)
    reference.build(x.shape)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())  # the same variables, in the same layout
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        want, got = reference(x), layer(x)
        # A loss that weights every output differently, so a misplaced tap changes gradients.
        weights = tf.reshape(tf.range(tf.size(want), dtype=tf.float64), want.shape) / 100
        loss_want = tf.reduce_sum(tf.square(want) * weights)
        loss_got = tf.reduce_sum(tf.square(got) * weights)
    assert got.shape == (2, 2 * height, 2 * width, c_out)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    for g_want, g_got in zip(tape.gradient(loss_want, [x] + reference.trainable_variables),
                             tape.gradient(loss_got, [x] + layer.trainable_variables)):
        np.testing.assert_allclose(g_got, g_want, rtol=1e-10, atol=1e-10)
    assert isinstance(keras.layers.deserialize(keras.layers.serialize(layer)),
                      MatmulConv2DTranspose)
    with pytest.raises(ValueError, match="4x4, stride-2"):
        MatmulConv2DTranspose(8, 3, strides=2, padding="same")


def test_benchmark_transposed_conv_choices_spell_out_the_trainer_forms():
    # The train benchmark copies the tuple so that parsing its flags imports no keras.
    from mrpose_tf.benchmarks import train
    from mrpose_tf.training.layers import TRANSPOSED_CONV_CHOICES
    assert train.TRANSPOSED_CONV_CHOICES == TRANSPOSED_CONV_CHOICES


_BUILT = {}


def _matmul_layers(arch, input_size, precision, cpu=True, form="auto"):
    if (arch, input_size, precision) not in _BUILT:  # one build, several rewrites
        with dtype_policy(precision):
            _BUILT[arch, input_size, precision] = mrpose_tf.build_model(arch, "resnet50", 17,
                                                                        input_size)
    with dtype_policy(precision):
        trained = rewrite_for_training(_BUILT[arch, input_size, precision], cpu=cpu,
                                       transposed_conv=form)
    transposed = [layer for layer in trained.layers
                  if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert len(transposed) == {"mrfeanet2": 6, "simple_baseline": 3}[arch]
    return {layer.name for layer in transposed if isinstance(layer, MatmulConv2DTranspose)}


def test_rewrite_takes_the_matmul_form_where_the_measured_cpu_rule_says():
    every = {"c5_deconv1", "c5_deconv2", "c5_deconv3", "c4_deconv1", "c4_deconv2", "c3_deconv1"}
    # bfloat16: every input of at most 32x24 pixels, larger ones only with >= 512 channels.
    assert _matmul_layers("mrfeanet2", (96, 64), "mixed_bfloat16") == every
    assert _matmul_layers("mrfeanet2", (256, 192), "mixed_bfloat16") == every
    # 384x288: the last deconv reads 48x36 pixels of 256 channels.
    assert _matmul_layers("simple_baseline", (384, 288), "mixed_bfloat16") == {"deconv1",
                                                                              "deconv2"}
    # float32: inputs of at most 16x12 pixels with >= 1024 channels (C5 and C4's outputs).
    assert _matmul_layers("mrfeanet2", (256, 192), "float32") == {"c5_deconv1", "c5_deconv2",
                                                                  "c4_deconv1"}
    assert _matmul_layers("simple_baseline", (256, 192), "float32") == {"deconv1"}
    # Off CPUs the rule does not apply; a form asked for explicitly holds everywhere.
    assert _matmul_layers("mrfeanet2", (256, 192), "mixed_bfloat16", cpu=False) == set()
    assert _matmul_layers("mrfeanet2", (256, 192), "float32", cpu=False, form="matmul") == every
    assert _matmul_layers("mrfeanet2", (256, 192), "float32", form="native") == set()
    with pytest.raises(ValueError, match="transposed_conv must be one of"):
        _matmul_layers("simple_baseline", (256, 192), "float32", form="fast")
    _BUILT.clear()


def _batch_norm_pair(policy, channels, seed=0, fused=True, unbiased=True):
    """A Keras BatchNormalization and a TrainingBatchNormalization with the same variables."""
    rng = np.random.default_rng(seed)
    layers = [keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=policy),
              TrainingBatchNormalization(momentum=0.9, epsilon=1e-5, dtype=policy, fused=fused,
                                         unbiased_running_variance=unbiased)]
    weights = [rng.uniform(0.5, 2.0, channels), rng.standard_normal(channels),
               rng.standard_normal(channels), rng.uniform(0.5, 3.0, channels)]
    for layer in layers:
        layer.build((None, 5, 3, channels))
        layer.set_weights([w.astype(np.float32) for w in weights])
    return layers


@pytest.mark.parametrize("policy,tolerance,fused", [
    ("float32", 1e-5, True), ("float32", 1e-5, False), ("mixed_bfloat16", 2e-2, True)])
def test_training_batch_norm_normalises_as_keras_and_its_gradients_agree(policy, tolerance,
                                                                         fused):
    channels = 6
    keras_layer, layer = _batch_norm_pair(policy, channels, fused=fused)
    rng = np.random.default_rng(1)
    x = tf.cast(rng.standard_normal((4, 5, 3, channels)) * 3.0 + 1.0, keras_layer.compute_dtype)
    assert layer._fusable(x, None) == fused
    # A loss linear in the output with random weights (a sum of squares of a normalised
    # output is nearly constant in the input: its input gradient would be round-off).
    loss_weights = tf.constant(rng.standard_normal((4, 5, 3, channels)), tf.float32)

    def run(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * loss_weights)
        return y, tape.gradient(loss, [x, layer.gamma, layer.beta])

    y_keras, grads_keras = run(keras_layer)
    y, grads = run(layer)
    assert y.dtype == y_keras.dtype == keras_layer.compute_dtype

    def close(a, b, what):
        a, b = (np.asarray(tf.cast(t, tf.float32)) for t in (a, b))
        np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance * np.abs(a).max(),
                                   err_msg=what)

    close(y_keras, y, "training output")
    for name, a, b in zip(("input", "gamma", "beta"), grads_keras, grads):
        close(a, b, f"gradient of the {name}")
    close(keras_layer.moving_mean, layer.moving_mean, "moving mean")
    layer.set_weights(keras_layer.get_weights())  # inference: the moving statistics, as Keras
    close(keras_layer(x, training=False), layer(x, training=False), "inference output")


@pytest.mark.parametrize("fused,unbiased", [(True, True), (False, True), (True, False),
                                            (False, False)])
def test_running_statistics_follow_pytorch_batch_norm_or_keras(fused, unbiased):
    import torch

    channels, momentum = 5, 0.1
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal((3, 4, 2, channels)).astype(np.float32) * 2 + 0.5
               for _ in range(3)]
    layer = TrainingBatchNormalization(momentum=1 - momentum, epsilon=1e-5, fused=fused,
                                       unbiased_running_variance=unbiased)
    layer.build((None, 4, 2, channels))
    reference = torch.nn.BatchNorm2d(channels, eps=1e-5, momentum=momentum)
    reference.train()
    for batch in batches:
        out = layer(tf.constant(batch), training=True)
        want = reference(torch.from_numpy(batch).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), reference.running_mean.numpy(),
                               rtol=1e-5, atol=1e-6)
    # PyTorch keeps the unbiased batch variance (n = 3*4*2 = 24 values per channel); Keras'
    # rule is the biased one, i.e. 23/24 of each batch's contribution.
    torch_variance = reference.running_var.numpy()
    if unbiased:
        np.testing.assert_allclose(layer.moving_variance.numpy(), torch_variance, rtol=1e-5)
    else:
        biased = np.ones(channels)
        for batch in batches:
            biased = (1 - momentum) * biased + momentum * batch.reshape(-1, channels).var(0)
        np.testing.assert_allclose(layer.moving_variance.numpy(), biased, rtol=1e-5)
        assert np.all(np.abs(layer.moving_variance.numpy() - torch_variance) > 1e-3)


def test_training_model_and_plain_model_load_each_others_checkpoints(tmp_path):
    config = tiny_config()
    trained = build_training_model(config, make_strategy("one_device"), "mixed_bfloat16")
    assert any(isinstance(layer, MatmulConv2DTranspose) for layer in trained.layers)
    bns = [layer for layer in trained.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(type(layer) is TrainingBatchNormalization and layer.fused
                       and layer.unbiased_running_variance for layer in bns)
    rng = np.random.default_rng(3)
    for variable in trained.weights:  # distinct values everywhere
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))
    prefix = tf.train.Checkpoint(model=trained).write(str(tmp_path / "trained"))
    plain = mrpose_tf.build_model("simple_baseline", "resnet50", 17, config.model.input_size)
    tf.train.Checkpoint(model=plain).read(prefix).assert_existing_objects_matched()
    assert [v.path for v in plain.weights] == [v.path for v in trained.weights]
    for a, b in zip(plain.weights, trained.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    back = build_training_model(config, make_strategy("one_device"))
    prefix = tf.train.Checkpoint(model=plain).write(str(tmp_path / "plain"))
    tf.train.Checkpoint(model=back).read(prefix).assert_existing_objects_matched()
    for a, b in zip(plain.weights, back.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    config.train.fused_batch_norm = False
    config.train.unbiased_running_variance = False
    unfused = build_training_model(config, make_strategy("one_device"))
    assert all(not layer.fused and not layer.unbiased_running_variance
               for layer in unfused.layers if isinstance(layer, TrainingBatchNormalization))
