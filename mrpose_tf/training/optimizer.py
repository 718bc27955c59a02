"""The paper's optimizer: Adam as PyTorch computes it, optionally through TF's fused kernel.

PyTorch's ``torch.optim.Adam`` (the authors') adds epsilon after the bias correction::

    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)            eps = 1e-8

Keras' Adam adds it before (``p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``,
eps = 1e-7), which is PyTorch's rule with ``eps / sqrt(1 - b2^t)``: 32x larger at the first
step. Early in training the heatmap loss has gradients small enough for that to matter.
:class:`Adam` keeps Keras' variables and update machinery and swaps in PyTorch's epsilon,
written as Keras' rule with the per-step epsilon ``eps * sqrt(1 - b2^t)`` (the same number).

With ``fused=True`` each variable's update runs ``tf.raw_ops.ResourceApplyAdam``: one pass
over the parameter instead of about ten separate ops (``python scripts/benchmark.py adam``;
docs/). The kernel forms ``1 - beta_2`` in the variable's dtype, so in float32 the second
moment differs from the Python-float form by ~1e-5 relative.
"""
import keras

EPSILON_FORMS = ("torch", "keras")


def _resource_variable(variable):
    """The tf.Variable behind a Keras variable (itself if it is one), or None without a handle.

    A distributed variable has one only inside a replica context or a strategy's update().
    """
    if isinstance(variable, keras.Variable):
        variable = variable.value
    try:
        variable.handle
    except (AttributeError, ValueError, NotImplementedError):
        return None
    return variable


@keras.saving.register_keras_serializable(package="mrpose_tf")
class Adam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with PyTorch's epsilon placement and an optional fused kernel.

    Args:
      learning_rate: a float or a ``LearningRateSchedule`` (of the 0-based step).
      epsilon: PyTorch's eps (default 1e-8, torch's) or, with ``epsilon_form='keras'``,
        Keras' epsilon.
      epsilon_form: 'torch' (after the bias correction, the authors') or 'keras'.
      fused: update through ``tf.raw_ops.ResourceApplyAdam`` where the variable has a
        resource handle (not with AMSGrad).
      **kwargs: as ``keras.optimizers.Adam``.

    Variables, config and checkpoint layout are Keras Adam's: a checkpoint of either
    resumes in the other.
    """

    def __init__(self, learning_rate=1e-3, epsilon=1e-8, epsilon_form="torch", fused=True,
                 **kwargs):
        if epsilon_form not in EPSILON_FORMS:
            raise ValueError(f"Adam epsilon_form must be one of {EPSILON_FORMS}, got "
                             f"{epsilon_form!r}")
        super().__init__(learning_rate=learning_rate, epsilon=epsilon, **kwargs)
        self.epsilon_form = epsilon_form
        self.fused = bool(fused)

    def get_config(self):
        return {**super().get_config(), "epsilon_form": self.epsilon_form, "fused": self.fused}

    def _step_epsilon(self, beta_2_power, dtype):
        """The epsilon of Keras' rule that gives this step's update (see the module doc)."""
        epsilon = keras.ops.cast(self.epsilon, dtype)
        if self.epsilon_form == "torch":
            epsilon = epsilon * keras.ops.sqrt(1 - beta_2_power)
        return epsilon

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            if self.epsilon_form == "torch":
                raise ValueError("Adam with amsgrad takes only epsilon_form='keras'")
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        step = keras.ops.cast(self.iterations + 1, dtype)
        beta_1 = keras.ops.cast(self.beta_1, dtype)
        beta_2 = keras.ops.cast(self.beta_2, dtype)
        beta_1_power, beta_2_power = keras.ops.power(beta_1, step), keras.ops.power(beta_2, step)
        epsilon = self._step_epsilon(beta_2_power, dtype)
        lr = keras.ops.cast(learning_rate, dtype)
        gradient = keras.ops.cast(gradient, dtype)
        handles = [_resource_variable(x) for x in (variable, m, v)]
        if self.fused and all(h is not None for h in handles):
            import tensorflow as tf  # here: the rest of the class runs on any Keras backend

            target, m_var, v_var = handles
            # Under a tf.distribute update, .handle is the current replica's component.
            return tf.raw_ops.ResourceApplyAdam(
                var=target.handle, m=m_var.handle, v=v_var.handle, beta1_power=beta_1_power,
                beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
                grad=gradient, use_locking=False)
        alpha = lr * keras.ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        self.assign_add(m, (gradient - m) * (1 - self.beta_1))
        self.assign_add(v, (keras.ops.square(gradient) - v) * (1 - self.beta_2))
        self.assign_sub(variable, m * alpha / (keras.ops.sqrt(v) + epsilon))


def make_optimizer(train_config, schedule, precision="float32"):
    """The config's Adam on ``schedule``; wrapped for loss scaling under float16.

    Args:
      train_config: ``config.train`` (optimizer, adam_epsilon, adam_epsilon_form, fused_adam).
      schedule: a learning rate or ``LearningRateSchedule``.
      precision: the Keras dtype policy name of the run.

    Raises:
      ValueError: an optimizer other than the paper's Adam, or an unknown epsilon form.
    """
    if train_config.optimizer != "adam":
        raise ValueError(f"config.train.optimizer must be 'adam' (the paper's), "
                         f"got {train_config.optimizer!r}")
    optimizer = Adam(schedule, epsilon=float(train_config.get("adam_epsilon", 1e-8)),
                     epsilon_form=train_config.get("adam_epsilon_form", "torch"),
                     fused=bool(train_config.get("fused_adam", True)))
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
