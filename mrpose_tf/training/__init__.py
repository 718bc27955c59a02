"""Training: strategies, schedules, the optimizer, checkpoints and the custom distributed loop.

The names below load on first use, so that ``mrpose_tf.training.schedule`` and
``mrpose_tf.training.optimizer`` import under a Keras backend without TensorFlow
(``scripts/replay_on_jax.py``; there Adam's variables have no TensorFlow handle, so its
update takes the Keras-ops path).
"""
import importlib

_PUBLIC = {
    "RunState": "checkpointing", "heatmap_pck_counts": "metrics", "Adam": "optimizer",
    "make_optimizer": "optimizer", "learning_rate_schedule": "schedule",
    "lr_boundaries": "schedule", "PRECISIONS": "strategy", "STRATEGIES": "strategy",
    "make_strategy": "strategy", "resolve_jit": "strategy", "resolve_precision": "strategy",
    "split_cpu": "strategy", "Trainer": "trainer", "TrainingDiverged": "trainer",
    "build_training_model": "trainer", "read_metrics": "trainer",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
