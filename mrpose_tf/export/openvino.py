"""OpenVINO IR (fp32) of a pose network, and a runner for it.

The IR is converted by ``openvino.convert_model`` from a SavedModel of the network's
crops -> heatmaps function: input ``image`` (N, H, W, 3) float32 crops, preprocessed as the
network's weights expect (the convention is in export_info.json beside it), any batch;
output ``heatmaps`` (N, H/4, W/4, K) float32. Weights are stored as float32
(``compress_to_fp16=False``): the precision at run time is the device's choice
(``INFERENCE_PRECISION_HINT``: bfloat16 on CPUs with AVX512-BF16 or AMX, float32 elsewhere).

The transposed convolutions are exported in the exact sub-pixel form
(:func:`mrpose_tf.export.subpixel.inference_model`: four 2x2 convolutions and a
depth-to-space each, BatchNorm and ReLU folded in): in the quieter benchmark runs on this
project's CPU it was 8-14% faster in OpenVINO than the transposed convolutions as they are
(docs/benchmarks.md; runtime ``openvino_native`` of the inference benchmark).

Needs the ``openvino`` package (``pip install mrpose_tf[openvino]``), imported on first use.
"""
import os
import tempfile

import numpy as np

OPENVINO_EXTRA = "pip install mrpose_tf[openvino]"


def require_openvino():
    """The ``openvino`` module.

    Raises:
      ImportError: naming the extra to install, when openvino is not installed.
    """
    try:
        import openvino
    except ImportError as error:
        raise ImportError(f"the OpenVINO export and runner need the openvino package: "
                          f"{OPENVINO_EXTRA} (or pip install openvino)") from error
    return openvino


def convert_openvino(model, subpixel=True):
    """An ``openvino.Model`` of ``model``'s crops -> heatmaps function, batch dynamic.

    Args:
      model: a keras pose model, (N, H, W, 3) float32 preprocessed crops -> (N, h, w, K).
      subpixel: convert the sub-pixel form of the transposed convolutions (the same function,
        to ~1e-6); False: the transposed convolutions as they are.

    Returns:
      ``openvino.Model`` with input ``image`` (?, H, W, 3) f32 and output ``heatmaps``.

    Raises:
      ImportError: openvino is not installed.
    """
    import keras
    import tensorflow as tf

    from mrpose_tf.export.subpixel import inference_model

    ov = require_openvino()
    model = inference_model(model) if subpixel else model
    _, height, width, channels = model.input.shape
    spec = tf.TensorSpec((None, height, width, channels), tf.float32, name="image")
    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default",
                             lambda image: {"heatmaps": model(image, training=False)}, [spec])
        archive.write_out(tmp, verbose=False)
        converted = ov.convert_model(tmp)
    # The SavedModel's signature names become tensor names; keep exactly these two.
    converted.inputs[0].get_tensor().set_names({"image"})
    converted.outputs[0].get_tensor().set_names({"heatmaps"})
    return converted


def save_openvino(model, path):
    """Write the IR of ``model`` (:func:`convert_openvino`) to ``path`` (model.xml) and
    the .bin beside it, float32 weights. Returns ``path``."""
    ov = require_openvino()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ov.save_model(convert_openvino(model), path, compress_to_fp16=False)
    return path


def compile_openvino(model, num_threads=2, precision=None, device="CPU"):
    """A compiled OpenVINO model, tuned for latency.

    Args:
      model: an IR path (model.xml), an ONNX file path or an ``openvino.Model``.
      num_threads: inference threads.
      precision: ``INFERENCE_PRECISION_HINT`` ('f32', 'bf16', 'f16'); None: the device's
        default (bf16 on CPUs with AVX512-BF16/AMX, f32 elsewhere).
      device: OpenVINO device name.

    Returns:
      ``openvino.CompiledModel``.
    """
    ov = require_openvino()
    config = {"INFERENCE_NUM_THREADS": int(num_threads), "PERFORMANCE_HINT": "LATENCY"}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    return ov.Core().compile_model(model, device, config)


def run_openvino(compiled, crops):
    """Heatmaps of preprocessed crops in one inference call.

    Args:
      compiled: from :func:`compile_openvino`.
      crops: (N, H, W, 3) float32 preprocessed crops.

    Returns:
      (N, h, w, K) float32 heatmaps.
    """
    return np.array(compiled([np.ascontiguousarray(crops, np.float32)])[0], np.float32)
