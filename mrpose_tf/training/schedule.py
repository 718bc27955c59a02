"""The paper's learning-rate schedule: piecewise constant, x lr_factor at given epochs."""
import keras


def lr_boundaries(lr_epochs, steps_per_epoch):
    """Optimizer steps at which the learning rate drops.

    Args:
      lr_epochs: epochs at whose start the rate is multiplied by the factor (e.g. (120, 150)).
      steps_per_epoch: optimizer steps per epoch (global batches).

    Returns:
      Sorted step numbers: the rate of step ``s`` (0-based) is dropped once per boundary b
      with ``s >= b``.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    epochs = [int(e) for e in lr_epochs]
    if epochs != sorted(epochs) or any(e < 1 for e in epochs):
        raise ValueError(f"lr_steps must be increasing positive epochs, got {tuple(lr_epochs)}")
    return [e * steps_per_epoch for e in epochs]


class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``base_lr * factor ** (number of boundaries <= step)`` (MultiStepLR of the authors)."""

    def __init__(self, base_lr, boundaries, factor):
        self.base_lr = float(base_lr)
        self.boundaries = [int(b) for b in boundaries]
        self.factor = float(factor)

    def __call__(self, step):
        step = keras.ops.cast(step, "int64")
        drops = keras.ops.zeros((), "float32")
        for boundary in self.boundaries:
            drops = drops + keras.ops.cast(step >= boundary, "float32")
        return self.base_lr * keras.ops.power(self.factor, drops)

    def get_config(self):
        return {"base_lr": self.base_lr, "boundaries": self.boundaries, "factor": self.factor}


def learning_rate_schedule(train_config, steps_per_epoch):
    """The schedule of ``config.train`` (learning_rate, lr_steps in epochs, lr_factor).

    Args:
      train_config: the ``config.train`` ConfigDict.
      steps_per_epoch: optimizer steps per epoch.

    Returns:
      A :class:`StepDecay` (a keras LearningRateSchedule; never rescaled by the batch size).
    """
    return StepDecay(train_config.learning_rate,
                     lr_boundaries(train_config.lr_steps, steps_per_epoch),
                     train_config.lr_factor)
