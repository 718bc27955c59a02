"""The trainer's fused BatchNorm: the Keras layer's maths through TF's fused kernel."""
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mrpose_tf.training import build_training_model, make_strategy
from mrpose_tf.training.fused_batch_norm import FusedBatchNormalization, use_fused_batch_norm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from training_worker import tiny_config  # noqa: E402


def _pair(policy, channels, seed=0, shape=(None, 5, 3)):
    """A Keras BatchNormalization and a fused one with the same (non-trivial) variables."""
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(2):
        layer = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=policy)
        layer.build((*shape, channels))
        layers.append(layer)
    gamma = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    beta = rng.standard_normal(channels).astype(np.float32)
    mean = rng.standard_normal(channels).astype(np.float32)
    variance = rng.uniform(0.5, 3.0, channels).astype(np.float32)
    for layer in layers:
        layer.set_weights([gamma, beta, mean, variance])
    keras_layer, fused = layers
    fused.__class__ = FusedBatchNormalization
    return keras_layer, fused


@pytest.mark.parametrize("policy,tolerance", [("float32", 1e-5), ("mixed_bfloat16", 2e-2)])
def test_fused_layer_equals_the_keras_layer(policy, tolerance):
    channels = 6
    keras_layer, fused = _pair(policy, channels)
    rng = np.random.default_rng(1)
    x = tf.cast(rng.standard_normal((4, 5, 3, channels)) * 3.0 + 1.0, keras_layer.compute_dtype)
    # A loss linear in the output with random weights (a sum of squares of a normalised
    # output is nearly constant in the input: its input gradient would be round-off).
    loss_weights = tf.constant(rng.standard_normal((4, 5, 3, channels)), tf.float32)

    def run(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * loss_weights)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        return y, grads

    start_mean, start_var = keras_layer.get_weights()[2:]
    y_keras, grads_keras = run(keras_layer)
    y_fused, grads_fused = run(fused)
    assert y_fused.dtype == y_keras.dtype == keras_layer.compute_dtype

    def close(a, b, what):
        a, b = (np.asarray(tf.cast(t, tf.float32)) for t in (a, b))
        np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance * np.abs(a).max(),
                                   err_msg=what)

    close(y_keras, y_fused, "training output")
    for name, a, b in zip(("input", "gamma", "beta"), grads_keras, grads_fused):
        close(a, b, f"gradient of the {name}")
    # Moving statistics: the same momentum and the biased batch variance, checked by hand.
    x32 = np.asarray(tf.cast(x, tf.float32)).reshape(-1, channels)
    np.testing.assert_allclose(fused.moving_mean.numpy(),
                               0.9 * start_mean + 0.1 * x32.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(),
                               0.9 * start_var + 0.1 * x32.var(0), rtol=1e-5, atol=1e-6)
    close(keras_layer.moving_variance, fused.moving_variance, "moving variance")
    # Inference uses the moving statistics.
    close(keras_layer(x, training=False), fused(x, training=False), "inference output")


def test_fused_layer_falls_back_where_the_kernel_does_not_apply():
    keras_layer, fused = _pair("float32", 4, shape=(None,))
    x = tf.random.stateless_normal((6, 4), seed=(1, 2))  # rank 2: not the fused kernel's
    assert not fused._fusable(x, None)
    np.testing.assert_allclose(fused(x, training=True).numpy(),
                               keras_layer(x, training=True).numpy(), rtol=1e-5, atol=1e-5)
    x4 = tf.random.stateless_normal((2, 3, 3, 4), seed=(3, 4))
    assert fused._fusable(x4, None)
    fused.synchronized = True  # statistics across replicas: the Keras path
    assert not fused._fusable(x4, None)
    fused.synchronized = False
    assert not fused._fusable(tf.cast(x4, tf.float64), None)  # no float64 kernel


def test_use_fused_batch_norm_switches_in_place_and_keeps_the_variables():
    config = tiny_config()
    model = build_training_model(config, make_strategy("one_device"))
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(type(layer) is FusedBatchNormalization for layer in norms)
    # A second call finds nothing left to switch; names and variables are untouched.
    before = [(v.path, v.shape) for v in model.weights]
    assert use_fused_batch_norm(model) == 0
    assert [(v.path, v.shape) for v in model.weights] == before
    config.train.fused_batch_norm = False
    plain = build_training_model(config, make_strategy("one_device"))
    assert all(type(layer) is keras.layers.BatchNormalization for layer in plain.layers
               if isinstance(layer, keras.layers.BatchNormalization))
    assert [(v.path, v.shape) for v in plain.weights] == before
