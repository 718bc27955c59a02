"""Export: SavedModel with in-graph keypoints (TF Serving; float32 or bfloat16), TFLite
fp32/fp16/int8, OpenVINO IR.

Not to be confused with the top-level ``export/`` folder, the deployment kit (LiteRT and
OpenVINO runners and a TF Serving client that need neither TensorFlow nor this package).
"""
from mrpose_tf.export.calibration import (calibration_crops, compare_bf16_fp32,
                                          compare_int8_fp32)
from mrpose_tf.export.exporter import (DEFAULT_FORMATS, FORMATS, bfloat16_model, export_model,
                                       export_saved_model)
from mrpose_tf.export.subpixel import (SubPixelDeconv, WinogradDeconv, inference_model,
                                       subpixel_kernels, winograd_kernels)

__all__ = ["DEFAULT_FORMATS", "FORMATS", "SubPixelDeconv", "bfloat16_model", "calibration_crops",
           "compare_bf16_fp32", "compare_int8_fp32", "export_model", "export_saved_model",
           "inference_model", "subpixel_kernels", "WinogradDeconv", "winograd_kernels"]
