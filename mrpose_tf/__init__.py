"""mrpose_tf: multi-resolution representation learning for human pose estimation (TF/Keras 3)."""
from mrpose_tf.geometry import box_to_center_scale, get_affine_transform
from mrpose_tf.models import build_model
from mrpose_tf.preprocessing import preprocess

__version__ = "0.1.0"

__all__ = ["build_model", "preprocess", "box_to_center_scale", "get_affine_transform"]
