"""mrpose_tf: multi-resolution representation learning for human pose estimation (TF/Keras 3)."""
from mrpose_tf.data.targets import heatmap_targets
from mrpose_tf.evaluation import evaluate_coco, evaluate_mpii, oks_nms
from mrpose_tf.geometry import box_to_center_scale, get_affine_transform
from mrpose_tf.inference import Predictor, decode_heatmaps
from mrpose_tf.models import build_model
from mrpose_tf.preprocessing import preprocess

__version__ = "0.1.0"

__all__ = ["build_model", "preprocess", "box_to_center_scale", "get_affine_transform",
           "decode_heatmaps", "oks_nms", "evaluate_coco", "evaluate_mpii", "Predictor",
           "heatmap_targets"]
