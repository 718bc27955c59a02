"""The custom training loop: one code path for every tf.distribute strategy.

A train step computes the loss and gradients with ``model.stateless_call`` (a pure function
of the variable values, so it can be XLA-compiled also under MirroredStrategy, where
compiling a step that touches the replicas' variables fails), then writes the new
BatchNorm statistics and applies the gradients outside it. Gradients are summed over
replicas by the optimizer; each replica's loss is divided by the number of replicas, so a
step equals one step on the whole global batch. Under several replicas BatchNorm is
synchronized (statistics of the global batch), so the trained and saved statistics are the
same as on one device; ``config.train.sync_batch_norm = False`` gives the per-replica
statistics of the paper's DataParallel instead (the saved ones are then replica 0's).
"""
import math
import os
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from mrpose_tf.losses import joints_mse
from mrpose_tf.models import (blocks, build_model, dtype_policy, transposed_conv_form,
                              zero_init_residual)
from mrpose_tf.training.checkpointing import RunState, atomic_write_json
from mrpose_tf.training.fused_adam import FusedAdam
from mrpose_tf.training.fused_batch_norm import use_fused_batch_norm
from mrpose_tf.training.metrics import heatmap_pck_counts
from mrpose_tf.training.schedule import learning_rate_schedule
from mrpose_tf.training.strategy import device_kind

SKELETON_IMAGES = 4


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing was saved after it."""


def build_training_model(config, strategy, precision="float32"):
    """The config's network, built in the strategy's scope under a dtype policy.

    Args:
      config: the run config (``config.model`` fields, ``config.train.sync_batch_norm``).
      strategy: a tf.distribute strategy.
      precision: a Keras dtype policy name ('float32', 'mixed_float16', 'mixed_bfloat16').

    Returns:
      The keras.Model; with several replicas its BatchNorm layers are synchronized unless
      ``config.train.sync_batch_norm`` is False. Unsynchronized BatchNorm layers run TF's
      fused kernel (:mod:`mrpose_tf.training.fused_batch_norm`) unless
      ``config.train.fused_batch_norm`` is False. Under the default transposed-conv form
      ('auto') its transposed convs take the form
      :func:`mrpose_tf.models.blocks.uses_matmul_form` picks on CPUs, where that rule was
      measured, and are keras' Conv2DTranspose on GPUs and TPUs.
    """
    form = blocks.TRANSPOSED_CONV_FORM
    if form == "auto" and device_kind(strategy) != "cpu":
        form = "native"
    weights = config.model.backbone_weights or None
    zero_init = config.model.get("zero_init_residual", False)
    if zero_init and weights is not None:
        raise ValueError("config.model.zero_init_residual is for random initialisation; it would "
                         f"overwrite the backbone_weights {weights!r} (set them to None)")
    with dtype_policy(precision), transposed_conv_form(form), strategy.scope():
        model = build_model(config.model.arch, config.model.backbone,
                            int(config.model.num_joints), tuple(config.model.input_size),
                            backbone_weights=weights)
        if zero_init:
            zero_init_residual(model)
    if strategy.num_replicas_in_sync > 1 and config.train.sync_batch_norm:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True  # read at call time; the model code stays untouched
    if config.train.get("fused_batch_norm", True):
        use_fused_batch_norm(model)  # synchronized layers keep the Keras path
    return model


def make_optimizer(train_config, steps_per_epoch, precision="float32"):
    """Adam on the config's schedule; wrapped for loss scaling under float16.

    Keras' Adam, its update computed by TF's fused kernel
    (:mod:`mrpose_tf.training.fused_adam`: the same maths to float rounding, the same
    variables) unless ``train_config.fused_adam`` is False.
    """
    if train_config.optimizer != "adam":
        raise ValueError(f"config.train.optimizer must be 'adam' (the paper's), "
                         f"got {train_config.optimizer!r}")
    adam = FusedAdam if train_config.get("fused_adam", True) else keras.optimizers.Adam
    optimizer = adam(learning_rate_schedule(train_config, steps_per_epoch))
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _release_in_background(holder):
    """Drops the last reference to the iterator in ``holder`` (a one-item list) on a thread.

    Destroying a tf.data iterator whose pipeline calls Python (``tf.numpy_function``: the
    OpenCV warp of the training crops) waits for its in-flight calls; measured here at up
    to ~50 s after an epoch of training. Off the training thread it overlaps with the next
    epoch instead of stalling it. The caller must hold no other reference.
    """
    threading.Thread(target=holder.clear, name="mrpose_tf-release-iterator",
                     daemon=True).start()


def _is_tty():
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


def _format_seconds(seconds):
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Trainer:
    """Trains one config in one workdir; resumes from the workdir's latest checkpoint.

    Args:
      config: the run's ConfigDict (model, train sections).
      workdir: where checkpoints, config.json and TensorBoard summaries go.
      strategy: a tf.distribute strategy (see :func:`mrpose_tf.training.make_strategy`).
      steps_per_epoch: optimizer steps (global batches) per epoch.
      precision: 'float32', 'mixed_float16' or 'mixed_bfloat16'.
      jit_compile: XLA-compile the loss-and-gradient function.
      log: a function taking one line of text (progress lines).
      keypoints: optional :class:`mrpose_tf.keypoints.KeypointSpec`; with it, validation
        also writes a few predicted skeletons on validation crops to TensorBoard.
    """

    def __init__(self, config, workdir, strategy, steps_per_epoch, precision="float32",
                 jit_compile=False, log=print, keypoints=None):
        self.config = config
        self.keypoints = keypoints
        self.workdir = workdir
        self.strategy = strategy
        self.steps_per_epoch = int(steps_per_epoch)
        self.precision = precision
        self.log = log
        replicas = strategy.num_replicas_in_sync
        self.global_batch = int(config.train.batch_size)
        if self.global_batch % replicas:
            raise ValueError(f"config.train.batch_size={self.global_batch} (the global batch) "
                             f"is not divisible by the {replicas} replicas of the strategy")
        self.per_replica_batch = self.global_batch // replicas
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        max_steps = int(config.train.max_steps)
        self.total_steps = max_steps if max_steps > 0 else (
            int(config.train.epochs) * self.steps_per_epoch)

        keras.utils.set_random_seed(int(config.train.seed))
        self.model = build_training_model(config, strategy, precision)
        with strategy.scope():
            self.optimizer = make_optimizer(config.train, self.steps_per_epoch, precision)
            self.optimizer.build(self.model.trainable_variables)
        self.schedule = learning_rate_schedule(config.train, self.steps_per_epoch)
        self._multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) \
            and strategy.extended._num_workers > 1
        # One replica on the CPU: feed the tf.data batches to it as they are. The distributed
        # iterator (a multi-device iterator) made training slower here: SimpleBaseline 256x192
        # bfloat16, batch 8, 7.8 vs 8.8 img/s; the quickstart 37.6 vs 44.8 img/s.
        self._plain_input = (isinstance(strategy, tf.distribute.OneDeviceStrategy)
                             and device_kind(strategy) == "cpu")
        self.state = RunState(workdir, strategy, self.model, self.optimizer,
                              keep=int(config.train.keep_checkpoints))
        gradients = self._loss_and_gradients
        self._gradients = tf.function(gradients, jit_compile=True) if jit_compile else gradients
        self._train_step = tf.function(self._distributed_train_step)
        self._eval_step = tf.function(self._distributed_eval_step)
        if self.state.is_chief:
            atomic_write_json(os.path.join(workdir, "config.json"), config.to_dict())

    # ---- steps ---------------------------------------------------------------------------

    def _loss_and_gradients(self, trainable, non_trainable, batch, loss_scale):
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            heatmaps, new_non_trainable = self.model.stateless_call(
                trainable, non_trainable, batch["image"], training=True)
            weight = batch["target_weight"] if self.config.train.use_target_weight else None
            loss = joints_mse(batch["heatmaps"], heatmaps, weight,
                              float(self.config.train.foreground_weight))
            scaled = loss * tf.cast(loss_scale, loss.dtype) / self.strategy.num_replicas_in_sync
        return loss, tape.gradient(scaled, trainable), new_non_trainable

    def _replica_train_step(self, batch):
        model = self.model
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        loss_scale = tf.cast(self.optimizer.scale_loss(1.0), tf.float32)
        loss, gradients, new_non_trainable = self._gradients(
            trainable, non_trainable, batch, loss_scale)
        for variable, value in zip(model.non_trainable_variables, new_non_trainable):
            variable.assign(value)
        self.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    def _distributed_train_step(self, batch):
        losses = self.strategy.run(self._replica_train_step, args=(batch,))
        return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

    def _replica_eval_step(self, batch):
        heatmaps = self.model(batch["image"], training=False)
        count = tf.cast(tf.shape(heatmaps)[0], tf.float32)
        loss = joints_mse(batch["heatmaps"], heatmaps, batch["target_weight"])
        correct, counted = heatmap_pck_counts(heatmaps, batch["heatmaps"],
                                              batch["target_weight"])
        return tf.stack([loss * count, count, correct, counted])

    def _distributed_eval_step(self, batch):
        sums = self.strategy.run(self._replica_eval_step, args=(batch,))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    def train_step(self, batch):
        """One optimizer step on a distributed batch; returns the global-batch mean loss."""
        return self._train_step(batch)

    # ---- datasets ------------------------------------------------------------------------

    def distribute(self, dataset_fn, *args, skip_steps=0):
        """The batches of ``dataset_fn(input_context, *args)`` as :meth:`train_step` takes them.

        ``skip_steps`` global batches are skipped (a resumed epoch).
        """
        def per_worker(input_context):
            dataset = dataset_fn(input_context, *args)
            if skip_steps:
                replicas_per_pipeline = (input_context.num_replicas_in_sync
                                         // input_context.num_input_pipelines)
                dataset = dataset.skip(skip_steps * replicas_per_pipeline)
            return dataset
        if self._plain_input:
            return per_worker(tf.distribute.InputContext())
        return self.strategy.distribute_datasets_from_function(per_worker)

    def validate(self, val_dataset_fn):
        """Loss and heatmap PCK@0.05 (:func:`heatmap_pck_counts`) over a validation set.

        Args:
          val_dataset_fn: ``fn(input_context) -> tf.data.Dataset`` of per-replica batches
            (dicts with 'image', 'heatmaps', 'target_weight'), finite.

        Returns:
          {'val_loss': float, 'PCK': float}.
        """
        totals = tf.zeros([4])
        for batch in self.distribute(val_dataset_fn):
            totals += self._eval_step(batch)
        loss_sum, count, correct, counted = (float(v) for v in totals.numpy())
        return {"val_loss": loss_sum / max(count, 1.0), "PCK": correct / max(counted, 1.0)}

    # ---- the loop ------------------------------------------------------------------------

    def _any_worker(self, flag):
        """True on every worker when any worker's ``flag`` is true (a collective op)."""
        value = self.strategy.run(lambda: tf.constant(float(flag)))
        return bool(self.strategy.reduce(tf.distribute.ReduceOp.MAX, value, axis=None) > 0)

    def fit(self, train_dataset_fn, val_dataset_fn=None, evaluate_fn=None):
        """Trains to ``total_steps`` (or the time budget), resuming from the workdir.

        Args:
          train_dataset_fn: ``fn(input_context, epoch) -> tf.data.Dataset`` of per-replica
            batches (``input_context.get_per_replica_batch_size(global_batch)``), sharded by
            ``input_context.input_pipeline_id``, with at least ``steps_per_epoch`` global
            batches; its shuffle/augmentation seed should depend on ``epoch`` so that a
            resumed epoch replays the same order.
          val_dataset_fn: optional ``fn(input_context)`` for :meth:`validate`.
          evaluate_fn: optional ``fn(model) -> dict`` of metrics (e.g. COCO AP), merged into
            the validation metrics.

        Returns:
          A dict: step, epoch, stopped ('done' | 'max_steps' | 'max_minutes'),
          train_seconds, images_per_second, last_loss, metrics (last validation).

        Raises:
          TrainingDiverged: the loss became NaN/inf; the last checkpoint is left intact.
        """
        train = self.config.train
        resumed = self.state.restore_latest()
        step = int(self.state.step.numpy())
        if resumed is not None:
            self.log(f"resumed from {self.state.latest.latest_checkpoint or 'checkpoint'} "
                     f"at step {step}")
        log_every = max(1, int(train.log_every_steps))
        checkpoint_every = max(1, int(train.checkpoint_every_steps))
        eval_every = max(1, int(train.eval_every_epochs))
        budget = float(train.max_minutes) * 60.0 if float(train.max_minutes) > 0 else math.inf
        paper_metric = "Mean" if self.config.dataset.name == "mpii" else "AP"  # PCKh or OKS AP
        best_metric = train.best_metric or (paper_metric if evaluate_fn else "PCK")
        writers = self._summary_writers()
        started = time.monotonic()
        interval_start, interval_steps, interval_loss = started, 0, 0.0
        trained_steps, loss, metrics, stopped = 0, float("nan"), {}, "done"
        saved_step = step if resumed is not None else None
        iterator = None
        while step < self.total_steps:
            epoch, position = divmod(step, self.steps_per_epoch)
            self.state.epoch.assign(epoch)
            if iterator is not None:
                holder, iterator = [iterator], None
                _release_in_background(holder)
            iterator = iter(self.distribute(train_dataset_fn, epoch, skip_steps=position))
            while position < self.steps_per_epoch and step < self.total_steps:
                try:
                    batch = next(iterator)
                except StopIteration:
                    raise ValueError(
                        f"the training dataset of epoch {epoch} ended after {position} of "
                        f"steps_per_epoch={self.steps_per_epoch} global batches") from None
                loss = float(self.train_step(batch))
                if not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss is {loss} at step {step + 1} (epoch {epoch}); stopping without "
                        f"saving. The last good checkpoint is step {saved_step} in "
                        f"{os.path.join(self.workdir, 'checkpoints')}")
                step += 1
                position += 1
                trained_steps += 1
                interval_steps += 1
                interval_loss += loss
                self.state.step.assign(step)
                over_budget = time.monotonic() - started > budget
                if step % log_every == 0 or step == self.total_steps or over_budget:
                    now = time.monotonic()
                    rate = interval_steps * self.global_batch / max(now - interval_start, 1e-9)
                    self._log_progress(writers, step, epoch, interval_loss / interval_steps,
                                       rate, now - started)
                    interval_start, interval_steps, interval_loss = now, 0, 0.0
                elif _is_tty():
                    print(f"\rstep {step}/{self.total_steps} loss {loss:.6f}", end="",
                          flush=True)
                if step % checkpoint_every == 0:
                    self.state.save()
                    saved_step = step
                if self._multi_worker:  # workers' clocks differ: decide together
                    over_budget = step % log_every == 0 and self._any_worker(over_budget)
                if over_budget:
                    stopped = "max_minutes"
                    break
            if stopped == "max_minutes":
                break
            if position == self.steps_per_epoch:
                self.state.epoch.assign(epoch + 1)
                if saved_step != step:
                    self.state.save()
                    saved_step = step
                last_epoch = (epoch + 1) * self.steps_per_epoch >= self.total_steps
                if (val_dataset_fn or evaluate_fn) and ((epoch + 1) % eval_every == 0
                                                        or last_epoch):
                    metrics = self._validate_and_keep_best(
                        val_dataset_fn, evaluate_fn, best_metric, writers, step)
        if iterator is not None:
            holder, iterator = [iterator], None
            _release_in_background(holder)
        if saved_step != step:
            self.state.save()
        if stopped == "done" and int(train.max_steps) > 0:
            stopped = "max_steps"
        seconds = time.monotonic() - started
        for writer in writers.values():
            writer.flush()
        return {"step": step, "epoch": step / self.steps_per_epoch, "stopped": stopped,
                "train_seconds": seconds, "last_loss": loss, "metrics": metrics,
                "images_per_second": trained_steps * self.global_batch / max(seconds, 1e-9)}

    def _validate_and_keep_best(self, val_dataset_fn, evaluate_fn, best_metric, writers,
                                step):
        metrics = self.validate(val_dataset_fn) if val_dataset_fn else {}
        if evaluate_fn:
            metrics.update(evaluate_fn(self.model))
        with writers["val"].as_default(step=step):
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    tf.summary.scalar(name, value)
            if self.keypoints is not None and val_dataset_fn and self.state.is_chief:
                tf.summary.image("predicted_skeletons", self._skeleton_images(val_dataset_fn),
                                 max_outputs=SKELETON_IMAGES)
        line = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                         if isinstance(v, (int, float)))
        self.log(f"validation at step {step}: {line}")
        if best_metric in metrics:
            higher = not best_metric.endswith("loss")
            if self.state.save_if_best(best_metric, metrics[best_metric], higher):
                self.log(f"new best {best_metric} {metrics[best_metric]:.4f} at step {step}")
        return metrics

    def _skeleton_images(self, val_dataset_fn):
        """Predicted skeletons (heatmap argmax) drawn on the first validation crops."""
        from mrpose_tf.inference import argmax_heatmaps
        from mrpose_tf.preprocessing import BGR_MEAN
        from mrpose_tf.visualization import draw_skeleton

        batch = next(iter(val_dataset_fn(None)))
        images = batch["image"][:SKELETON_IMAGES].numpy()
        heatmaps = self.model(images, training=False).numpy()
        coords, scores = argmax_heatmaps(heatmaps)
        stride = images.shape[1] / heatmaps.shape[1]
        crops = np.clip(images + np.asarray(BGR_MEAN, np.float32), 0, 255)[..., ::-1]
        drawn = [draw_skeleton(crop.astype(np.uint8), points * stride, score, self.keypoints)
                 for crop, points, score in zip(crops, coords, scores)]
        return np.stack(drawn)

    def _summary_writers(self):
        if not self.state.is_chief:
            return {"train": tf.summary.create_noop_writer(),
                    "val": tf.summary.create_noop_writer()}
        root = os.path.join(self.workdir, "tensorboard")
        return {name: tf.summary.create_file_writer(os.path.join(root, name))
                for name in ("train", "val")}

    def learning_rate(self, step):
        """The learning rate of (0-based) optimizer step ``step``."""
        return float(self.schedule(step))

    def _log_progress(self, writers, step, epoch, loss, images_per_second, elapsed):
        learning_rate = self.learning_rate(step - 1)
        with writers["train"].as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("images_per_second", images_per_second)
        eta = (self.total_steps - step) * self.global_batch / max(images_per_second, 1e-9)
        prefix = "\r" if _is_tty() else ""
        self.log(f"{prefix}step {step}/{self.total_steps} epoch {epoch} loss {loss:.6f} "
                 f"lr {learning_rate:.3g} {images_per_second:.1f} img/s "
                 f"elapsed {_format_seconds(elapsed)} ETA {_format_seconds(eta)}")
