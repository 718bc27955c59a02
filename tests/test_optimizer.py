"""The paper's Adam: PyTorch's update (epsilon after the bias correction), fused or not."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mrpose_tf.training import Adam, make_optimizer
from tests.training_worker import tiny_config

SHAPES = [(3, 3, 4, 5), (5,), (7, 2)]


def _numpy_torch_adam(values, gradients, rates, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    """torch.optim.Adam's update (its documented algorithm) written out in float64."""
    values = [np.array(v, np.float64) for v in values]
    m = [np.zeros_like(v) for v in values]
    v = [np.zeros_like(v) for v in values]
    for t, (step_gradients, lr) in enumerate(zip(gradients, rates), start=1):
        for i, g in enumerate(step_gradients):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            v[i] = beta_2 * v[i] + (1 - beta_2) * g * g
            denominator = np.sqrt(v[i]) / np.sqrt(1 - beta_2 ** t) + epsilon
            values[i] = values[i] - lr / (1 - beta_1 ** t) * m[i] / denominator
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


def _problem(seed, steps=6, small=True):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    # Gradients down to 1e-8: where sqrt(v) is near epsilon, the two epsilon placements differ.
    scales = (lambda: 10.0 ** rng.integers(-8, 1)) if small else (lambda: 1.0)
    gradients = [[rng.standard_normal(s).astype(np.float32) * scales() for s in SHAPES]
                 for _ in range(steps)]
    return values, gradients


@pytest.mark.parametrize("fused,compiled", [(True, False), (True, True), (False, True)])
def test_adam_equals_pytorch_adam_and_its_formula(fused, compiled):
    import torch

    values, gradients = _problem(0)
    boundaries, rates = [2, 4], [3e-2, 1e-2, 1e-3]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, rates)
    got = _run(Adam(schedule, fused=fused), values, gradients, compiled)
    # PiecewiseConstantDecay at the 0-based step: rates[0] up to and including step 2.
    step_rates = [rates[sum(step > b for b in boundaries)] for step in range(6)]
    formula = _numpy_torch_adam(values, gradients, step_rates)
    parameters = [torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for v in values]
    reference = torch.optim.Adam(parameters, lr=rates[0])  # torch's defaults: eps 1e-8
    for step, grads in enumerate(gradients):
        for group in reference.param_groups:
            group["lr"] = step_rates[step]
        for parameter, g in zip(parameters, grads):
            parameter.grad = torch.tensor(g, dtype=torch.float64)
        reference.step()
    # The fused kernel forms 1 - beta_2 in float32 (1.3e-5 off 1e-3): v is that close in
    # relative terms; 6 steps of <= 3e-2 then move a weight by < 3e-6 from float64.
    for i in range(len(SHAPES)):
        torch_weights = parameters[i].detach().numpy()
        np.testing.assert_allclose(formula[0][i], torch_weights, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got[0][i], torch_weights, rtol=0, atol=3e-6,
                                   err_msg=f"weights {i}")
        np.testing.assert_allclose(got[1][i], formula[1][i], rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(got[2][i], formula[2][i], rtol=3e-5, atol=1e-20)
    # Keras' epsilon placement moves the weights with the smallest gradients elsewhere.
    keras_form = _run(keras.optimizers.Adam(schedule, epsilon=1e-8), values, gradients, compiled)
    assert max(np.abs(a - b).max() for a, b in zip(keras_form[0], got[0])) > 1e-3
    # The updates moved the weights by several learning rates: the test can fail.
    assert max(np.abs(w - v0).max() for w, v0 in zip(got[0], values)) > 0.05


def test_keras_epsilon_form_equals_keras_adam():
    values, gradients = _problem(1, steps=3)
    ours = _run(Adam(1e-2, epsilon=1e-7, epsilon_form="keras", fused=False), values, gradients,
                True)
    plain = _run(keras.optimizers.Adam(1e-2), values, gradients, True)
    for got, want in zip(ours[0], plain[0]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="epsilon_form"):
        Adam(1e-2, epsilon_form="tf")


def test_checkpoint_of_keras_adam_resumes_in_the_papers_adam(tmp_path):
    values, gradients = _problem(2, steps=4, small=False)
    variables = [keras.Variable(v) for v in values]
    plain = Adam(1e-2, fused=False)
    plain.build(variables)
    for grads in gradients[:2]:
        plain.apply_gradients(zip(grads, variables))
    prefix = tf.train.Checkpoint(variables=variables, optimizer=plain).write(
        str(tmp_path / "ckpt"))
    for grads in gradients[2:]:
        plain.apply_gradients(zip(grads, variables))
    expected = [v.numpy() for v in variables]

    restored = [keras.Variable(np.zeros(s, np.float32)) for s in SHAPES]
    fused = Adam(1e-2, fused=True)
    fused.build(restored)
    tf.train.Checkpoint(variables=restored, optimizer=fused).read(prefix).assert_consumed()
    assert int(fused.iterations.numpy()) == 2
    for grads in gradients[2:]:
        fused.apply_gradients(zip(grads, restored))
    for got, want in zip(restored, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7)


def test_make_optimizer_reads_the_config():
    config = tiny_config()
    optimizer = make_optimizer(config.train, 1e-3)
    assert type(optimizer) is Adam and optimizer.fused and optimizer.epsilon_form == "torch"
    assert optimizer.epsilon == pytest.approx(1e-8)
    config.train.fused_adam = False
    config.train.adam_epsilon_form = "keras"
    optimizer = make_optimizer(config.train, 1e-3)
    assert not optimizer.fused and optimizer.epsilon_form == "keras"
    wrapped = make_optimizer(tiny_config().train, 1e-3, precision="mixed_float16")
    assert type(wrapped.inner_optimizer) is Adam
    config.train.optimizer = "sgd"
    with pytest.raises(ValueError, match="'adam'"):
        make_optimizer(config.train, 1e-3)
