"""``mrpose_tf.train(config, workdir)``: one training run, as ``mrpose-train`` runs it.

Chooses the strategy, precision and XLA from ``config.train`` (``strategy``, ``precision``,
``jit_compile``: 'auto' picks by hardware), renders the synthetic set when the config asks,
reads the data, trains (resuming from ``workdir``), and with a ``finish`` section evaluates,
exports and draws (:mod:`mrpose_tf.training.report`).
"""
import time


def train(config, workdir, evaluate=True, log=print):
    """Train the config's network in ``workdir``; rerunning resumes from its checkpoints.

    Args:
      config: an experiment ConfigDict (e.g. ``mrpose_tf.load_config("configs/quickstart.py")``)
        or the path of a config file or run, as :func:`mrpose_tf.config.load_config` takes.
      workdir: the run directory (checkpoints, config.json, keypoints.json, metrics.jsonl).
      evaluate: run the paper's evaluation (AP / PCKh) at each validation.
      log: a function taking one line of text.

    Returns:
      A dict: the report's metrics (``metrics.json``) when the config has a ``finish``
      section, else the trainer's result (step, epoch, stopped, train_seconds,
      images_per_second, last_loss, metrics of the last validation).

    Raises:
      TrainingDiverged: the loss became NaN or infinite (the last checkpoint is intact).
      ValueError, FileNotFoundError: a config that does not fit its data (named fields).
    """
    from mrpose_tf.config import resolve_unset_fields
    from mrpose_tf.data.synthetic import prepare_from_config
    from mrpose_tf.training.inputs import training_data_from_config
    from mrpose_tf.training.report import finish_run
    from mrpose_tf.training.strategy import make_strategy, resolve_jit, resolve_precision
    from mrpose_tf.training.trainer import Trainer

    run_started = time.time()
    if isinstance(config, str):
        from mrpose_tf.config import load_config

        config = load_config(config)
    config = resolve_unset_fields(config.copy_and_resolve_references())  # the caller's stays
    train_config = config.train
    strategy = make_strategy(train_config.get("strategy", "auto"),
                             cpu_devices=int(train_config.get("cpu_devices", 0)))
    precision = resolve_precision(train_config.get("precision", "auto"), strategy)
    jit = resolve_jit(train_config.get("jit_compile", "auto"), strategy)
    prepare_from_config(config)  # renders the synthetic set when the config asks for it
    data = training_data_from_config(config)
    log(f"{config.model.arch}/{config.model.backbone} on {config.dataset.name}: "
        f"{strategy.num_replicas_in_sync} replica(s) ({type(strategy).__name__}), {precision}, "
        f"jit {'on' if jit else 'off'}, global batch {config.train.batch_size}, "
        f"{data.steps_per_epoch} steps/epoch")
    trainer = Trainer(config, workdir, strategy, data.steps_per_epoch, precision, jit, log=log,
                      keypoints=data.keypoints)
    result = trainer.fit(data.train_fn, data.val_fn,
                         _evaluator(config, data) if evaluate else None)
    log(f"stopped ({result['stopped']}) at step {result['step']} (epoch {result['epoch']:.2f}) "
        f"after {result['train_seconds'] / 60:.1f} min, {result['images_per_second']:.1f} img/s, "
        f"last loss {result['last_loss']:.6f}")
    if config.get("finish"):  # evaluate, export and draw (the quickstart's outputs)
        return finish_run(trainer.model, config, data.keypoints, workdir, result,
                          data.val_records, run_started=run_started, log=log)
    return result


def _evaluator(config, data):
    """model -> the paper's metrics on the validation records (None without them)."""
    if data.val_records is None:
        return None
    from mrpose_tf.evaluation.runner import evaluate_model

    return lambda model: dict(evaluate_model(model, config, data.val_records, data.keypoints))
