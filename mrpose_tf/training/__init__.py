"""Training: strategies, the step schedule, checkpoints and the custom distributed loop."""
from mrpose_tf.training.checkpointing import RunState, atomic_write_json
from mrpose_tf.training.inputs import random_examples, tensor_dataset_fn
from mrpose_tf.training.metrics import heatmap_pck_counts
from mrpose_tf.training.schedule import StepDecay, learning_rate_schedule, lr_boundaries
from mrpose_tf.training.strategy import (
    PRECISIONS, STRATEGIES, make_strategy, resolve_jit, resolve_precision, split_cpu)
from mrpose_tf.training.trainer import (
    Trainer, TrainingDiverged, build_training_model, make_optimizer)

__all__ = ["RunState", "StepDecay", "Trainer", "TrainingDiverged", "PRECISIONS", "STRATEGIES",
           "atomic_write_json", "build_training_model", "heatmap_pck_counts",
           "learning_rate_schedule", "lr_boundaries", "make_optimizer", "make_strategy",
           "random_examples", "resolve_jit", "resolve_precision", "split_cpu",
           "tensor_dataset_fn"]
