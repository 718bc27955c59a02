"""TFLite conversion (fp32 / fp16 / full-integer int8) and a LiteRT runner.

Every model is converted from a batch-1 SavedModel of an inference model without transposed
convs (:func:`mrpose_tf.export.subpixel.inference_model`, Winograd for float models, direct
sub-pixel for int8: :func:`convert_pose_model`): a fixed batch keeps the converter from
emitting SHAPE/STRIDED_SLICE/PACK around the convolutions, and plain convolutions stay on
XNNPACK's fast path. Inputs and outputs stay float32 (preprocessed crops -> heatmaps); the
int8 model quantizes/dequantizes at its two ends and runs int8 everywhere in between. Both
run as a single XNNPACK partition (:func:`delegation`), the interpreter's default delegate.
"""
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from mrpose_tf.export.subpixel import inference_model

QUANTIZATIONS = ("fp32", "fp16", "int8")


def convert_pose_model(model, quantizations, representative_crops=None, winograd=True):
    """TFLite models of a pose network, each in its fastest exact form.

    Float models (fp32, fp16) replace the transposed convs by Winograd convolutions
    (:class:`~mrpose_tf.export.subpixel.WinogradDeconv`) where their input size allows:
    fewer multiply-accumulates, 2.25x their weights. int8 models use the direct sub-pixel
    form (:class:`~mrpose_tf.export.subpixel.SubPixelDeconv`): the Winograd sums would
    widen the quantized ranges.

    Args:
      model: the keras pose model (training graph, from :func:`mrpose_tf.build_model`).
      quantizations: a sequence of 'fp32', 'fp16', 'int8'.
      representative_crops: (N, H, W, 3) preprocessed float32 crops; required for 'int8'.
      winograd: False keeps the float models in the direct sub-pixel form too (smaller files:
        MRFeaNet2-R50 fp32 320 MB instead of 604 MB; slower).

    Returns:
      dict quantization -> bytes of the .tflite model.
    """
    floats = [q for q in quantizations if q != "int8"]
    converted = {}
    if floats:
        converted.update(convert_all(inference_model(model, winograd=winograd), floats))
    if "int8" in quantizations:
        converted.update(convert_all(inference_model(model), ["int8"], representative_crops))
    return converted


def convert_all(model, quantizations, representative_crops=None):
    """Serialized TFLite flatbuffers of ``model`` with a fixed batch of 1, one per quantization.

    One batch-1 SavedModel is traced and converted once per quantization.

    Args:
      model: a keras model (N, H, W, 3) float32 -> (N, h, w, K); pass the sub-pixel
        :func:`~mrpose_tf.export.subpixel.inference_model` for speed.
      quantizations: a sequence of 'fp32', 'fp16' (float16 weights) and 'int8'
        (full-integer, calibrated).
      representative_crops: (N, H, W, 3) preprocessed float32 crops; required for 'int8'.

    Returns:
      dict quantization -> bytes of the .tflite model.
    """
    unknown = [q for q in quantizations if q not in QUANTIZATIONS]
    if unknown:
        raise ValueError(f"unknown quantization {unknown[0]!r}; valid: {QUANTIZATIONS}")
    _, height, width, channels = model.input.shape
    spec = tf.TensorSpec((1, height, width, channels), tf.float32, name="image")
    with tempfile.TemporaryDirectory() as tmp:
        # Through a batch-1 SavedModel: the converter then freezes every variable (a concrete
        # function of a Keras 3 model would keep them as VAR_HANDLE/READ_VARIABLE ops).
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default",
                             lambda image: {"heatmaps": model(image, training=False)}, [spec])
        archive.write_out(os.path.join(tmp, "model"), verbose=False)
        return {q: _convert(tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "model")),
                            q, representative_crops, (height, width, channels))
                for q in quantizations}


def _convert(converter, quantization, representative_crops, crop_shape):
    """``converter.convert()`` with the settings of ``quantization``."""
    height, width, channels = crop_shape
    if quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        crops = np.asarray(representative_crops if representative_crops is not None else [],
                           np.float32)
        if crops.ndim != 4 or len(crops) == 0 or crops.shape[1:] != (height, width, channels):
            raise ValueError(f"int8 needs representative crops of shape (N, {height}, {width}, "
                             f"{channels}), got {crops.shape}")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([crop[None]] for crop in crops)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def litert_interpreter(model_path_or_bytes, num_threads=2):
    """A LiteRT interpreter (XNNPACK delegate, ``num_threads`` threads), tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model_path_or_bytes, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(model_path_or_bytes),
                                  num_threads=num_threads)
    else:
        interpreter = Interpreter(model_path=str(model_path_or_bytes), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def delegation(interpreter):
    """How a LiteRT interpreter's graph is delegated (to XNNPACK, the default CPU delegate).

    Args:
      interpreter: from :func:`litert_interpreter` (tensors allocated).

    Returns:
      (partitions, whole): the number of delegate partitions, and whether a single one of them
      takes the graph's inputs and produces its outputs, i.e. no op runs outside it.
    """
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    produced = {t for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    outputs = {d["index"] for d in interpreter.get_output_details()}
    whole = (len(delegates) == 1 and not set(delegates[0]["inputs"]) & produced
             and outputs <= set(delegates[0]["outputs"]))
    return len(delegates), whole


def run_tflite(interpreter, crops):
    """Heatmaps of preprocessed crops, one crop per invocation (the models have batch 1).

    Args:
      interpreter: from :func:`litert_interpreter`.
      crops: (N, H, W, 3) float32 preprocessed crops.

    Returns:
      (N, h, w, K) float32 heatmaps.
    """
    (source,) = interpreter.get_input_details()
    (target,) = interpreter.get_output_details()
    out = []
    for crop in np.asarray(crops, np.float32):
        interpreter.set_tensor(source["index"], crop[None])
        interpreter.invoke()
        out.append(interpreter.get_tensor(target["index"])[0].copy())
    return np.stack(out) if out else np.zeros((0,) + tuple(target["shape"][1:]), np.float32)
