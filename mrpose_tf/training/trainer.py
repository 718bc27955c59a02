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

The loop reads the loss to the host only at log steps and before every checkpoint (the
losses of the steps in between are summed on the device), so an accelerator is never
stalled by a step that does not log; a non-finite sum stops the run before anything is
saved. Progress goes to TensorBoard and, as JSON lines, to ``WORKDIR/metrics.jsonl``
(:func:`read_metrics`), which reports and plots read back.
"""
import json
import math
import os
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from mrpose_tf.config import backbone_weights_of, model_from_config
from mrpose_tf.convert import is_torch_file, load_torch_backbone
from mrpose_tf.files import atomic_write_json
from mrpose_tf.keypoints import save_keypoint_set
from mrpose_tf.losses import joints_mse
from mrpose_tf.models import dtype_policy, zero_init_residual
from mrpose_tf.training.checkpointing import RunState
from mrpose_tf.training.metrics import heatmap_pck_counts
from mrpose_tf.training.optimizer import make_optimizer
from mrpose_tf.training.rewrite import rewrite_for_training
from mrpose_tf.training.schedule import learning_rate_schedule
from mrpose_tf.training.strategy import device_kind

SKELETON_IMAGES = 4


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing was saved after it."""


def build_training_model(config, strategy, precision="float32"):
    """The config's network in its training form, built in the strategy's scope.

    Args:
      config: the run config (``config.model`` fields; ``config.train.sync_batch_norm``,
        ``fused_batch_norm``, ``unbiased_running_variance`` and ``transposed_conv``).
      strategy: a tf.distribute strategy.
      precision: a Keras dtype policy name ('float32', 'mixed_float16', 'mixed_bfloat16').

    Returns:
      The keras.Model of :func:`mrpose_tf.build_model` after
      :func:`mrpose_tf.training.rewrite.rewrite_for_training`: PyTorch's BatchNorm moving
      variance, synchronized across several replicas unless ``sync_batch_norm`` is False;
      on CPUs the fused BatchNorm kernel and the measured matmul form of the transposed
      convs. Its checkpoints load into the plain model.

    ``config.model.backbone_weights`` may be a torchvision classification checkpoint
    (``resnet50-19c8e357.pth``, with ``backbone_style='pytorch'``): its backbone tensors are
    loaded after the build (:func:`mrpose_tf.convert.load_torch_backbone`; needs torch).

    Raises:
      ValueError: ``zero_init_residual`` together with pretrained backbone weights.
    """
    weights = backbone_weights_of(config)
    zero_init = config.model.get("zero_init_residual", False)
    if zero_init and weights is not None:
        raise ValueError("config.model.zero_init_residual is for random initialisation; it would "
                         f"overwrite the backbone_weights {weights!r} (set them to None)")
    torch_file = weights is not None and is_torch_file(weights)
    train = config.train
    with dtype_policy(precision), strategy.scope():
        model = model_from_config(config, None if torch_file else weights)
        if torch_file:  # torchvision's ImageNet ResNet, as the paper starts from
            load_torch_backbone(model, weights)
        if zero_init:
            zero_init_residual(model)
        return rewrite_for_training(
            model, cpu=device_kind(strategy) == "cpu",
            transposed_conv=train.get("transposed_conv", "auto"),
            fused_batch_norm=bool(train.get("fused_batch_norm", True)),
            unbiased_running_variance=bool(train.get("unbiased_running_variance", True)),
            synchronized=strategy.num_replicas_in_sync > 1 and bool(train.sync_batch_norm))


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
      workdir: where checkpoints, config.json, keypoints.json, metrics.jsonl and TensorBoard
        summaries go.
      strategy: a tf.distribute strategy (see :func:`mrpose_tf.training.make_strategy`).
      steps_per_epoch: optimizer steps (global batches) per epoch.
      precision: 'float32', 'mixed_float16' or 'mixed_bfloat16'.
      jit_compile: XLA-compile the loss-and-gradient function.
      log: a function taking one line of text (progress lines).
      keypoints: the run's :class:`mrpose_tf.keypoints.KeypointSpec`, saved as
        ``keypoints.json`` for inference and export; validation also draws a few predicted
        skeletons on validation crops to TensorBoard with it. Optional (tests).
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
        self.schedule = learning_rate_schedule(config.train, self.steps_per_epoch)
        with strategy.scope():
            self.optimizer = make_optimizer(config.train, self.schedule, precision)
            self.optimizer.build(self.model.trainable_variables)
        self._multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) \
            and strategy.extended._num_workers > 1
        # One replica on the CPU: feed the tf.data batches to it as they are (the distributed
        # iterator, a multi-device iterator, makes the step slower there; see docs/).
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
            if keypoints is not None:
                save_keypoint_set(keypoints, workdir)

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
          train_seconds, images_per_second, last_loss (mean of the last logged steps),
          metrics (last validation).

        Raises:
          TrainingDiverged: the loss became NaN/inf; the last checkpoint is left intact.
        """
        run = _RunProgress(self, self.state.restore_latest())
        if run.resumed is not None:
            self.log(f"resumed from {self.state.latest.latest_checkpoint or 'checkpoint'} "
                     f"at step {run.step}")
        iterator = None
        while run.step < self.total_steps and run.stopped == "done":
            epoch, position = divmod(run.step, self.steps_per_epoch)
            self.state.epoch.assign(epoch)
            if iterator is not None:
                holder, iterator = [iterator], None
                _release_in_background(holder)
            iterator = iter(self.distribute(train_dataset_fn, epoch, skip_steps=position))
            self._train_epoch(run, iterator, epoch)
            if run.stopped == "done" and run.step % self.steps_per_epoch == 0:
                self._end_epoch(run, epoch, val_dataset_fn, evaluate_fn)
        if iterator is not None:
            holder, iterator = [iterator], None
            _release_in_background(holder)
        run.save()
        if run.stopped == "done" and int(self.config.train.max_steps) > 0:
            run.stopped = "max_steps"
        run.close()
        seconds = time.monotonic() - run.started
        return {"step": run.step, "epoch": run.step / self.steps_per_epoch,
                "stopped": run.stopped, "train_seconds": seconds, "last_loss": run.last_loss,
                "metrics": run.metrics,
                "images_per_second": run.trained_steps * self.global_batch / max(seconds, 1e-9)}

    def _train_epoch(self, run, iterator, epoch):
        """Steps of ``epoch`` until its end, the run's last step or the time budget."""
        train = self.config.train
        log_every = max(1, int(train.log_every_steps))
        checkpoint_every = max(1, int(train.checkpoint_every_steps))
        position = run.step - epoch * self.steps_per_epoch
        while position < self.steps_per_epoch and run.step < self.total_steps:
            try:
                batch = next(iterator)
            except StopIteration:
                raise ValueError(
                    f"the training dataset of epoch {epoch} ended after {position} of "
                    f"steps_per_epoch={self.steps_per_epoch} global batches") from None
            run.add_loss(self.train_step(batch))  # a device tensor: no host read here
            position += 1
            self.state.step.assign(run.step)
            over_budget = time.monotonic() - run.started > run.budget
            if run.step % log_every == 0 or run.step == self.total_steps or over_budget:
                run.log(epoch)
            elif _is_tty():
                print(f"\rstep {run.step}/{self.total_steps}", end="", flush=True)
            if run.step % checkpoint_every == 0:
                run.save()
            if self._multi_worker:  # workers' clocks differ: decide together
                over_budget = run.step % log_every == 0 and self._any_worker(over_budget)
            if over_budget:
                run.stopped = "max_minutes"
                return

    def _end_epoch(self, run, epoch, val_dataset_fn, evaluate_fn):
        """Checkpoint at the epoch's end, then validate when the config says."""
        self.state.epoch.assign(epoch + 1)
        run.save()
        eval_every = max(1, int(self.config.train.eval_every_epochs))
        last_epoch = (epoch + 1) * self.steps_per_epoch >= self.total_steps
        if (val_dataset_fn or evaluate_fn) and ((epoch + 1) % eval_every == 0 or last_epoch):
            run.metrics = self._validate_and_keep_best(run, val_dataset_fn, evaluate_fn)

    def _validate_and_keep_best(self, run, val_dataset_fn, evaluate_fn):
        metrics = self.validate(val_dataset_fn) if val_dataset_fn else {}
        if evaluate_fn:
            metrics.update(evaluate_fn(self.model))
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        run.write("val", scalars)
        if self.keypoints is not None and val_dataset_fn and self.state.is_chief:
            with run.writers["val"].as_default(step=run.step):
                tf.summary.image("predicted_skeletons", self._skeleton_images(val_dataset_fn),
                                 max_outputs=SKELETON_IMAGES)
        line = ", ".join(f"{k} {v:.4f}" for k, v in scalars.items())
        self.log(f"validation at step {run.step}: {line}")
        best_metric = self.config.train.best_metric
        if best_metric not in scalars:
            self.log(f"no {best_metric!r} (config.train.best_metric) among the validation "
                     f"metrics {sorted(scalars)}: best/ is not updated")
            return metrics
        higher = not best_metric.endswith("loss")
        if self.state.save_if_best(best_metric, scalars[best_metric], higher):
            self.log(f"new best {best_metric} {scalars[best_metric]:.4f} at step {run.step}")
        return metrics

    def _skeleton_images(self, val_dataset_fn):
        """Predicted skeletons (heatmap argmax) drawn on the first validation crops."""
        from mrpose_tf.codec import heatmap_argmax
        from mrpose_tf.config import input_preprocessing_of
        from mrpose_tf.preprocessing import unpreprocess
        from mrpose_tf.visualization import draw_skeleton

        batch = next(iter(val_dataset_fn(None)))
        images = batch["image"][:SKELETON_IMAGES].numpy()
        heatmaps = self.model(images, training=False).numpy()
        coords, scores = heatmap_argmax(heatmaps)
        stride = images.shape[1] / heatmaps.shape[1]
        crops = np.clip(unpreprocess(images, input_preprocessing_of(self.config)), 0, 255)
        drawn = [draw_skeleton(crop.astype(np.uint8), points * stride, score, self.keypoints)
                 for crop, points, score in zip(crops, coords, scores)]
        return np.stack(drawn)

    def learning_rate(self, step):
        """The learning rate of (0-based) optimizer step ``step``."""
        return float(self.schedule(step))


METRICS_FILE = "metrics.jsonl"


class _RunProgress:
    """What one ``fit`` call tracks: the step, the device-side loss sum, logs, saves."""

    def __init__(self, trainer, resumed):
        self.trainer = trainer
        self.resumed = resumed
        self.step = int(trainer.state.step.numpy())
        self.saved_step = self.step if resumed is not None else None
        minutes = float(trainer.config.train.max_minutes)
        self.budget = minutes * 60.0 if minutes > 0 else math.inf
        self.started = time.monotonic()
        self.stopped, self.metrics, self.last_loss = "done", {}, float("nan")
        self.trained_steps = 0
        self._window_start, self._window_steps, self._window_loss = self.started, 0, 0.0
        self.writers = self._summary_writers()

    def _summary_writers(self):
        if not self.trainer.state.is_chief:
            return {"train": tf.summary.create_noop_writer(),
                    "val": tf.summary.create_noop_writer()}
        root = os.path.join(self.trainer.workdir, "tensorboard")
        return {name: tf.summary.create_file_writer(os.path.join(root, name))
                for name in ("train", "val")}

    def add_loss(self, loss):
        """Counts a step; ``loss`` (a tensor) joins the window's sum on its device."""
        self._window_loss = self._window_loss + loss
        self._window_steps += 1
        self.step += 1
        self.trained_steps += 1

    def check_finite(self):
        """Reads the window's loss sum to the host; raises TrainingDiverged if not finite."""
        total = float(self._window_loss)
        if not math.isfinite(total):
            first = self.step - self._window_steps + 1
            steps = f"at step {first}" if first == self.step else f"in steps {first}..{self.step}"
            raise TrainingDiverged(
                f"loss is {total} {steps}; stopping without saving. The last good checkpoint is "
                f"step {self.saved_step} in {os.path.join(self.trainer.workdir, 'checkpoints')}")
        return total

    def log(self, epoch):
        """The mean loss since the last log, the rate and the ETA: log line, summaries, JSON."""
        trainer = self.trainer
        loss = self.check_finite() / max(self._window_steps, 1)
        now = time.monotonic()
        rate = self._window_steps * trainer.global_batch / max(now - self._window_start, 1e-9)
        learning_rate = trainer.learning_rate(self.step - 1)
        self.write("train", {"loss": loss, "learning_rate": learning_rate,
                             "images_per_second": rate, "epoch": epoch})
        self.last_loss = loss
        self._window_start, self._window_steps, self._window_loss = now, 0, 0.0
        eta = (trainer.total_steps - self.step) * trainer.global_batch / max(rate, 1e-9)
        prefix = "\r" if _is_tty() else ""
        trainer.log(f"{prefix}step {self.step}/{trainer.total_steps} epoch {epoch} loss "
                    f"{loss:.6f} lr {learning_rate:.3g} {rate:.1f} img/s elapsed "
                    f"{_format_seconds(now - self.started)} ETA {_format_seconds(eta)}")

    def save(self):
        """A checkpoint at the current step, unless there is one; never after a NaN."""
        if self.saved_step == self.step:
            return
        self.check_finite()
        self.trainer.state.save()
        self.saved_step = self.step

    def write(self, split, scalars):
        """``scalars`` at the current step: TensorBoard and a line of ``metrics.jsonl``."""
        with self.writers[split].as_default(step=self.step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
        if self.trainer.state.is_chief:
            with open(os.path.join(self.trainer.workdir, METRICS_FILE), "a",
                      encoding="utf-8") as f:
                f.write(json.dumps({"split": split, "step": self.step, **scalars}) + "\n")

    def close(self):
        for writer in self.writers.values():
            writer.flush()


def read_metrics(workdir):
    """The metrics a run wrote to ``WORKDIR/metrics.jsonl``, by split and step.

    A resumed run writes the steps after its checkpoint again; the later line wins.

    Returns:
      {'train': [{'step', 'loss', 'learning_rate', 'images_per_second', 'epoch'}, ...],
      'val': [{'step', 'AP', 'PCK', ...}, ...]}, each sorted by step (empty lists when the
      file is absent).
    """
    rows = {"train": {}, "val": {}}
    path = os.path.join(workdir, METRICS_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    split = row.pop("split")
                    rows.setdefault(split, {})[int(row["step"])] = row
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    raise ValueError(f"{path}: line {number} is not a metrics record: "
                                     f"{line.strip()[:200]}") from None
    return {split: [by_step[s] for s in sorted(by_step)] for split, by_step in rows.items()}
