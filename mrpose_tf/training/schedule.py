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
      with ``s >= b`` (the authors' ``MultiStepLR``, stepped once per epoch).

    Raises:
      ValueError: ``steps_per_epoch < 1`` or epochs that are not increasing and positive.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    epochs = [int(e) for e in lr_epochs]
    if any(b <= a for a, b in zip(epochs, epochs[1:])) or any(e < 1 for e in epochs):
        raise ValueError(f"lr_steps must be increasing positive epochs, got {tuple(lr_epochs)}")
    return [e * steps_per_epoch for e in epochs]


def step_decay(base_lr, boundaries, factor):
    """``base_lr * factor ** (number of boundaries <= step)`` as Keras' PiecewiseConstantDecay.

    PiecewiseConstantDecay moves to the next value when ``step > boundary``; the paper's
    rule drops the rate at ``step >= boundary``, hence the boundaries minus one.
    """
    if not boundaries:
        return keras.optimizers.schedules.PiecewiseConstantDecay([0], [base_lr, base_lr])
    values = [base_lr * factor ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay([b - 1 for b in boundaries],
                                                             values)


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
        return step_decay(float(train_config.learning_rate),
                          lr_boundaries(train_config.lr_steps, steps_per_epoch),
                          float(train_config.lr_factor))
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
