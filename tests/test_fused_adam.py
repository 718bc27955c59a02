"""The trainer's fused Adam: Keras' Adam maths through TF's fused kernel."""
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mrpose_tf.training import make_optimizer
from mrpose_tf.training.fused_adam import FusedAdam

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from training_worker import tiny_config  # noqa: E402

SHAPES = [(3, 3, 4, 5), (5,), (7, 2)]


def _numpy_adam(values, gradients, rates, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Adam (Kingma & Ba, Algorithm 1 with the efficient step of section 2) in float64."""
    values = [np.array(v, np.float64) for v in values]
    m = [np.zeros_like(v) for v in values]
    v = [np.zeros_like(v) for v in values]
    for t, (step_gradients, lr) in enumerate(zip(gradients, rates), start=1):
        alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        for i, g in enumerate(step_gradients):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            v[i] = beta_2 * v[i] + (1 - beta_2) * g * g
            values[i] = values[i] - alpha * m[i] / (np.sqrt(v[i]) + epsilon)
    return values, m, v


def _run(optimizer, values, gradients, compiled):
    variables = [keras.Variable(v) for v in values]
    optimizer.build(variables)

    def step(grads):
        optimizer.apply_gradients(zip(grads, variables))
    step = tf.function(step) if compiled else step
    for grads in gradients:
        step([tf.constant(g) for g in grads])
    index = [optimizer._get_variable_index(v) for v in variables]
    return ([v.numpy() for v in variables],
            [optimizer._momentums[i].numpy() for i in index],
            [optimizer._velocities[i].numpy() for i in index])


@pytest.mark.parametrize("compiled", [False, True])
def test_fused_adam_equals_keras_adam_and_the_textbook_formula(compiled):
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    gradients = [[rng.standard_normal(s).astype(np.float32) * 10.0 ** rng.integers(-4, 1)
                  for s in SHAPES] for _ in range(6)]
    boundaries, rates = [2, 4], [3e-2, 1e-2, 1e-3]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, rates)
    fused = _run(FusedAdam(schedule), values, gradients, compiled)
    plain = _run(keras.optimizers.Adam(schedule), values, gradients, compiled)
    # PiecewiseConstantDecay at the 0-based step: rates[0] up to and including step 2.
    step_rates = [rates[sum(step > b for b in boundaries)] for step in range(6)]
    reference = _numpy_adam(values, gradients, step_rates)
    # The kernel forms 1 - beta_2 in float32 (1.3e-5 off 1e-3): v is that close in relative
    # terms, a step 7e-6; 6 steps of <= 3e-2 then move a weight by < 3e-6 from the reference.
    tolerances = {"weights": dict(rtol=0, atol=3e-6), "m": dict(rtol=1e-5, atol=1e-7),
                  "v": dict(rtol=3e-5, atol=1e-12)}
    for name, got, keras_got, want in zip(("weights", "m", "v"), fused, plain, reference):
        for i in range(len(SHAPES)):
            np.testing.assert_allclose(got[i], want[i], **tolerances[name],
                                       err_msg=f"{name} {i}: fused vs numpy")
            np.testing.assert_allclose(keras_got[i], want[i], **tolerances[name],
                                       err_msg=f"{name} {i}: keras vs numpy")
    # The updates moved the weights by several learning rates: the test can fail.
    assert max(np.abs(w - v0).max() for w, v0 in zip(fused[0], values)) > 0.05


def test_fused_adam_falls_back_for_amsgrad():
    rng = np.random.default_rng(1)
    values = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    gradients = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES]
                 for _ in range(3)]
    fused = _run(FusedAdam(1e-2, amsgrad=True), values, gradients, compiled=True)
    plain = _run(keras.optimizers.Adam(1e-2, amsgrad=True), values, gradients, compiled=True)
    for got, want in zip(fused[0], plain[0]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_checkpoint_of_keras_adam_resumes_in_fused_adam(tmp_path):
    rng = np.random.default_rng(2)
    values = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    gradients = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES]
                 for _ in range(4)]
    variables = [keras.Variable(v) for v in values]
    plain = keras.optimizers.Adam(1e-2)
    plain.build(variables)
    for grads in gradients[:2]:
        plain.apply_gradients(zip(grads, variables))
    prefix = tf.train.Checkpoint(variables=variables, optimizer=plain).write(
        str(tmp_path / "ckpt"))
    for grads in gradients[2:]:
        plain.apply_gradients(zip(grads, variables))
    expected = [v.numpy() for v in variables]

    restored = [keras.Variable(np.zeros(s, np.float32)) for s in SHAPES]
    fused = FusedAdam(1e-2)
    fused.build(restored)
    tf.train.Checkpoint(variables=restored, optimizer=fused).read(prefix).assert_consumed()
    assert int(fused.iterations.numpy()) == 2
    for grads in gradients[2:]:
        fused.apply_gradients(zip(grads, restored))
    for got, want in zip(restored, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7)


def test_make_optimizer_uses_the_fused_kernel_unless_turned_off():
    config = tiny_config()
    assert type(make_optimizer(config.train, 10)) is FusedAdam
    config.train.fused_adam = False
    assert type(make_optimizer(config.train, 10)) is keras.optimizers.Adam
    wrapped = make_optimizer(tiny_config().train, 10, precision="mixed_float16")
    assert type(wrapped.inner_optimizer) is FusedAdam
