"""Evaluators: COCO keypoint AP (OKS-NMS, pycocotools), MPII PCKh, and the model runner."""
from mrpose_tf.evaluation.coco import coco_keypoint_results, evaluate_coco, oks_nms
from mrpose_tf.evaluation.mpii import evaluate_mpii
from mrpose_tf.evaluation.runner import evaluate_model, run_coco_evaluation, run_mpii_evaluation

__all__ = ["coco_keypoint_results", "evaluate_coco", "evaluate_model", "evaluate_mpii",
           "oks_nms", "run_coco_evaluation", "run_mpii_evaluation"]
