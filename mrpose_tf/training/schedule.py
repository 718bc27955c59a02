"""Learning-rate schedules: the paper's (piecewise constant, x lr_factor at given epochs) and,
for short runs from random weights, a linear warm-up into a cosine decay to zero."""
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


SCHEDULES = ("step", "cosine")


def learning_rate_schedule(train_config, steps_per_epoch):
    """The schedule of ``config.train``.

    ``lr_schedule='step'`` (the paper's): ``learning_rate`` x ``lr_factor`` at each epoch of
    ``lr_steps``. ``lr_schedule='cosine'``: a linear warm-up from 0 over ``warmup_epochs``, then
    a cosine decay from ``learning_rate`` to 0 at the last step of the run (``max_steps`` if
    set, else ``epochs`` x ``steps_per_epoch``); ``lr_steps`` is not used.

    Args:
      train_config: the ``config.train`` ConfigDict.
      steps_per_epoch: optimizer steps per epoch.

    Returns:
      A keras LearningRateSchedule (never rescaled by the batch size).
    """
    kind = train_config.get("lr_schedule", "step")
    if kind == "step":
        return StepDecay(train_config.learning_rate,
                         lr_boundaries(train_config.lr_steps, steps_per_epoch),
                         train_config.lr_factor)
    if kind != "cosine":
        raise ValueError(f"config.train.lr_schedule must be one of {SCHEDULES}, got {kind!r}")
    max_steps = int(train_config.get("max_steps", -1))
    total = max_steps if max_steps > 0 else int(train_config.epochs) * steps_per_epoch
    warmup = int(round(float(train_config.get("warmup_epochs", 0.0)) * steps_per_epoch))
    if not 0 <= warmup < total:
        raise ValueError(f"config.train.warmup_epochs={train_config.get('warmup_epochs')} gives "
                         f"{warmup} warm-up steps; it must be >= 0 and less than the run's "
                         f"{total} steps")
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else train_config.learning_rate, decay_steps=total - warmup,
        warmup_target=train_config.learning_rate if warmup else None, warmup_steps=warmup)
