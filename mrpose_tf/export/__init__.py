"""Export: SavedModel with in-graph keypoints (TF Serving), TFLite fp32/fp16/int8.

Not to be confused with the top-level ``export/`` folder, the deployment kit (a LiteRT
runner and a TF Serving client that need neither TensorFlow nor this package).
"""
from mrpose_tf.export.calibration import calibration_crops, compare_int8_fp32
from mrpose_tf.export.exporter import FORMATS, export_model, export_saved_model
from mrpose_tf.export.subpixel import (SubPixelDeconv, WinogradDeconv, inference_model,
                                       subpixel_kernels, winograd_kernels)

__all__ = ["FORMATS", "SubPixelDeconv", "calibration_crops", "compare_int8_fp32",
           "export_model", "export_saved_model", "inference_model", "subpixel_kernels",
           "WinogradDeconv", "winograd_kernels"]
