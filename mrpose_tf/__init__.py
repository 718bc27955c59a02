"""mrpose_tf: multi-resolution representation learning for human pose estimation (TF/Keras 3).

The public names below load on first use, so ``import mrpose_tf.models`` needs Keras alone
(the models are pure Keras 3 and build under any Keras backend, e.g. JAX on a GPU machine
without TensorFlow); the data, evaluation and export code load TensorFlow when first used.
"""
import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "build_model": "mrpose_tf.models",
    "preprocess": "mrpose_tf.preprocessing",
    "box_to_center_scale": "mrpose_tf.geometry",
    "get_affine_transform": "mrpose_tf.geometry",
    "decode_heatmaps": "mrpose_tf.codec",
    "Predictor": "mrpose_tf.predictor",
    "oks_nms": "mrpose_tf.evaluation",
    "evaluate_coco": "mrpose_tf.evaluation",
    "evaluate_mpii": "mrpose_tf.evaluation",
    "heatmap_targets": "mrpose_tf.codec",
    "train": "mrpose_tf.training.run",
    "load_config": "mrpose_tf.config",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mrpose_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
