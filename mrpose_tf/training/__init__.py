"""Training: strategies, schedules, the optimizer, checkpoints and the custom distributed loop."""
from mrpose_tf.training.checkpointing import RunState
from mrpose_tf.training.metrics import heatmap_pck_counts
from mrpose_tf.training.optimizer import Adam, make_optimizer
from mrpose_tf.training.schedule import learning_rate_schedule, lr_boundaries
from mrpose_tf.training.strategy import (
    PRECISIONS, STRATEGIES, make_strategy, resolve_jit, resolve_precision, split_cpu)
from mrpose_tf.training.trainer import (
    Trainer, TrainingDiverged, build_training_model, read_metrics)

__all__ = ["Adam", "RunState", "Trainer", "TrainingDiverged", "PRECISIONS", "STRATEGIES",
           "build_training_model", "heatmap_pck_counts", "learning_rate_schedule",
           "lr_boundaries", "make_optimizer", "make_strategy", "read_metrics", "resolve_jit",
           "resolve_precision", "split_cpu"]
