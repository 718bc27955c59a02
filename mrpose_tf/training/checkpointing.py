"""Run state on disk: checkpoints (latest N and the best), config.json, best.json.

Layout of a workdir::

    config.json              the run's full config (written atomically)
    checkpoints/ckpt-<step>  model, optimizer (with its step counter), step, epoch
    checkpoints/checkpoint   TF's state file naming the latest complete checkpoint
    best/ckpt-<step>         the checkpoint with the best validation metric so far
    best/best.json           {"metric", "value", "step"} of that checkpoint
    tensorboard/{train,val}  summaries

TF writes a checkpoint's data and index files first and then replaces the state file
atomically (write to a temporary file + rename), so a process killed mid-save leaves the
previous checkpoint as the latest one. The data position is the step counter: epoch
``step // steps_per_epoch`` is rebuilt with its own seed and the batches already trained in it
are skipped on resume.
"""
import json
import math
import os
import shutil

import tensorflow as tf

from mrpose_tf.files import atomic_write_json


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def _worker_directory(directory, strategy):
    """The chief writes to ``directory``; other workers to a scratch copy (removed after)."""
    if _is_chief(strategy):
        return directory
    resolver = strategy.cluster_resolver
    return os.path.join(directory, f".worker_{resolver.task_type}_{resolver.task_id}")


class RunState:
    """Checkpoints of one run: the latest ``keep`` plus the best by a validation metric.

    Args:
      workdir: the run's directory.
      strategy: the run's tf.distribute strategy (non-chief workers write scratch copies,
        as MultiWorkerMirroredStrategy needs every worker to take part in a save).
      model, optimizer: the Keras objects to save.
      keep: how many of the latest checkpoints to keep.
    """

    def __init__(self, workdir, strategy, model, optimizer, keep=3):
        self.workdir = workdir
        self.strategy = strategy
        self.is_chief = _is_chief(strategy)
        with strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                              step=self.step, epoch=self.epoch)
        self._latest_dir = os.path.join(workdir, "checkpoints")
        self._best_dir = os.path.join(workdir, "best")
        self.latest = tf.train.CheckpointManager(
            self.checkpoint, _worker_directory(self._latest_dir, strategy), max_to_keep=keep)
        self.best = tf.train.CheckpointManager(
            self.checkpoint, _worker_directory(self._best_dir, strategy), max_to_keep=1)
        self.best_record = self._read_best()

    def _read_best(self):
        path = os.path.join(self._best_dir, "best.json")
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def restore_latest(self):
        """Restores the latest checkpoint of the workdir if there is one.

        Returns:
          The restored step, or None when the run starts fresh.
        """
        path = tf.train.latest_checkpoint(self._latest_dir)
        if path is None:
            return None
        self.checkpoint.restore(path).assert_existing_objects_matched()
        return int(self.step.numpy())

    def save(self):
        """Saves a checkpoint at the current step (all workers must call it)."""
        path = self.latest.save(checkpoint_number=int(self.step.numpy()))
        self._drop_scratch(self.latest.directory)
        return path

    def save_if_best(self, metric, value, higher_is_better=True):
        """Saves into best/ when ``value`` beats the best so far; returns whether it did.

        A NaN value is never the best, and a NaN best (from an older run) is beaten by any
        number, so a NaN can neither take nor freeze best/.
        """
        record = self.best_record
        if not math.isfinite(value):
            return False
        best = float(record["value"]) if record is not None else math.nan
        better = not math.isfinite(best) or (value > best if higher_is_better else value < best)
        if not better:
            return False
        self.best.save(checkpoint_number=int(self.step.numpy()))
        self._drop_scratch(self.best.directory)
        self.best_record = {"metric": metric, "value": float(value),
                            "step": int(self.step.numpy())}
        if self.is_chief:
            atomic_write_json(os.path.join(self._best_dir, "best.json"), self.best_record)
        return True

    def _drop_scratch(self, directory):
        if not self.is_chief:
            shutil.rmtree(directory, ignore_errors=True)
