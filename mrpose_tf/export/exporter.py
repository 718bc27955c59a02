"""``export_model``: a trained pose model -> SavedModel (TF Serving), TFLite and OpenVINO files.

Layout written under ``output_dir``::

    saved_model/          signatures serving_default, heatmaps_preprocessed, keypoints,
                          keypoints_encoded
    saved_model_bf16/     the same signatures, computing in bfloat16 (float32 in and out)
    openvino/model.xml    OpenVINO IR (+ model.bin), preprocessed crops -> heatmaps, any batch,
                          with its own keypoints.json and export_info.json
    model_fp32.tflite     batch-1 crops -> heatmaps (sub-pixel deconvs)
    model_fp16.tflite     float16 weights
    model_int8.tflite     full-integer, calibrated on validation crops
    keypoints.json        the keypoint set: names, flip pairs, skeleton, OKS sigmas
    export_info.json      input size, input preprocessing, flip test, box padding

Each SavedModel carries its own copies of keypoints.json and export_info.json in
``assets.extra/``, and the OpenVINO folder its own beside model.xml, so that they travel
with the model to a server (TF Serving, OpenVINO Model Server).
"""
import os

import keras
import tensorflow as tf

from mrpose_tf import preprocessing
from mrpose_tf.config import input_preprocessing_of
from mrpose_tf.export import graph, openvino, tflite
from mrpose_tf.export.calibration import calibration_crops
from mrpose_tf.files import atomic_write_json
from mrpose_tf.keypoints import save_keypoint_set
from mrpose_tf.predictor import EXPORT_INFO, SAVED_MODEL_EXTRA
from mrpose_tf.preprocessing import preprocess

FORMATS = ("saved_model", "saved_model_bf16", "tflite_fp32", "tflite_fp16", "tflite_int8",
           "openvino")
FILE_NAMES = {"saved_model": "saved_model", "saved_model_bf16": "saved_model_bf16",
              "tflite_fp32": "model_fp32.tflite", "tflite_fp16": "model_fp16.tflite",
              "tflite_int8": "model_int8.tflite",
              "openvino": os.path.join("openvino", "model.xml")}
# What export_model writes when no formats are given: the optional-package and slow-on-most-
# CPUs formats (OpenVINO, bfloat16) only on request.
DEFAULT_FORMATS = ("saved_model", "tflite_fp32", "tflite_fp16", "tflite_int8")


def parse_formats(formats):
    """'saved_model,tflite_int8' or a sequence -> a tuple of valid format names."""
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    names = [f for f in names if f]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown export formats {unknown or formats!r}; valid: {FORMATS}")
    return tuple(names)


def export_saved_model(model, config, keypoints, path):
    """A SavedModel for TF Serving with four signatures.

    - ``serving_default``: ``image`` (N, H, W, 3) uint8 RGB crops -> ``heatmaps``; the
      crops are preprocessed inside the graph (the run's ``model.input_preprocessing``), so
      a client never needs to know the convention.
    - ``heatmaps_preprocessed``: ``image`` (N, H, W, 3) float32 crops already preprocessed
      (evaluation pipelines) -> ``heatmaps``.
    - ``keypoints``: ``image`` (height, width, 3) uint8 RGB of any size and ``boxes`` (M, 4)
      float32 xywh -> ``keypoints`` (M, K, 2) image pixels and ``scores`` (M, K).
    - ``keypoints_encoded``: the same with ``image_bytes``, a JPEG/PNG/BMP/GIF string.

    Crop, preprocessing, model, flip test (``config.test.flip_test`` with the keypoint set's
    flip pairs, baked in), decoding and the inverse transform run inside the graph
    (:mod:`mrpose_tf.export.graph`). The keypoint set and :func:`export_info` go to
    ``assets.extra/``.

    Args:
      model: the keras pose model.
      config: experiment ConfigDict (model.input_size, test.*, augment.box_padding).
      keypoints: the model's :class:`mrpose_tf.keypoints.KeypointSpec`.
      path: output directory.

    Returns:
      ``path``.
    """
    height, width = (int(v) for v in config.model.input_size)
    convention = input_preprocessing_of(config)
    options = dict(input_size=(height, width), flip_pairs=keypoints.flip_pairs,
                   flip_test=bool(config.test.flip_test),
                   shift_heatmap=bool(config.test.shift_heatmap),
                   box_padding=float(config.augment.box_padding),
                   input_preprocessing=convention)
    crops = tf.TensorSpec((None, height, width, 3), tf.uint8, name="image")
    preprocessed = tf.TensorSpec((None, height, width, 3), tf.float32, name="image")
    image = tf.TensorSpec((None, None, 3), tf.uint8, name="image")
    image_bytes = tf.TensorSpec((), tf.string, name="image_bytes")
    boxes = tf.TensorSpec((None, 4), tf.float32, name="boxes")

    # Traced once; keypoints_encoded calls the same concrete function (no second trace).
    image_keypoints = tf.function(
        lambda image, boxes: graph.image_keypoints_tf(model, image, boxes, **options),
        input_signature=[image, boxes])

    def keypoints_encoded(image_bytes, boxes):
        decoded = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8,
                                     expand_animations=False)
        return image_keypoints(decoded, boxes)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda image: {"heatmaps": model(preprocess(graph.checked_crops(image, (height, width)),
                                                    convention), training=False)},
        [crops])
    archive.add_endpoint(
        "heatmaps_preprocessed",
        lambda image: {"heatmaps": model(graph.checked_crops(image, (height, width)),
                                         training=False)},
        [preprocessed])
    archive.add_endpoint("keypoints", image_keypoints)
    archive.add_endpoint("keypoints_encoded", keypoints_encoded, [image_bytes, boxes])
    archive.write_out(path, verbose=False)
    save_keypoint_set(keypoints, os.path.join(path, SAVED_MODEL_EXTRA))
    atomic_write_json(os.path.join(path, SAVED_MODEL_EXTRA, EXPORT_INFO), export_info(config))
    return path


def bfloat16_model(model):
    """A copy of ``model`` computing in bfloat16, float32 in and out.

    Every layer is rebuilt under Keras' 'mixed_bfloat16' policy (float32 weights, cast to
    bfloat16 where used; inputs cast on entry), except the output layers, which keep
    ``model``'s float32 so that heatmaps leave in float32. The weights are ``model``'s.
    oneDNN runs the bfloat16 convolutions natively on CPUs with AVX512-BF16 or AMX; elsewhere
    TensorFlow emulates them, several times slower than float32.

    Args:
      model: a functional keras pose model, (N, H, W, 3) float32 -> (N, h, w, K) float32.

    Returns:
      A functional ``keras.Model`` named ``{model.name}_bf16``, (N, H, W, 3) float32 ->
      (N, h, w, K) float32.
    """
    kept = {id(t._keras_history.operation) for t in model.outputs}  # the layers making them

    def clone(layer):
        config = layer.get_config()
        if id(layer) not in kept and not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = "mixed_bfloat16"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return keras.Model(copy.input, copy.output, name=f"{model.name}_bf16")


def export_info(config):
    """What a deployment needs besides the model and its keypoint set: the input size, the
    input convention (name, the network's channel order, mean and std on 0..255), the flip
    test and the box padding."""
    height, width = (int(v) for v in config.model.input_size)
    convention = input_preprocessing_of(config)
    order, mean, std = preprocessing.convention(convention)
    return {"input_size": [height, width], "num_joints": int(config.model.num_joints),
            "input_preprocessing": convention, "channel_order": order,
            "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "flip_test": bool(config.test.flip_test),
            "shift_heatmap": bool(config.test.shift_heatmap),
            "box_padding": float(config.augment.box_padding),
            "arch": config.model.arch, "backbone": config.model.backbone}


def export_model(model, config, keypoints, output_dir, formats=DEFAULT_FORMATS,
                 representative_crops=None, winograd=True):
    """Export ``model`` in every requested format.

    Args:
      model: the keras pose model (training graph, from :func:`mrpose_tf.build_model`).
      config: its experiment ConfigDict.
      keypoints: its :class:`mrpose_tf.keypoints.KeypointSpec` (written as keypoints.json).
      output_dir: folder to write into (created).
      formats: subset of :data:`FORMATS` ('saved_model', 'saved_model_bf16', 'tflite_fp32',
        'tflite_fp16', 'tflite_int8', 'openvino'), as a sequence or a comma-separated string.
      representative_crops: (N, H, W, 3) preprocessed float32 crops for int8 calibration;
        default :func:`mrpose_tf.export.calibration.calibration_crops` of the config.
      winograd: the Winograd form in the float TFLite models where it pays
        (:func:`mrpose_tf.export.tflite.convert_pose_model`); False: smaller, slower files.

    Returns:
      dict format -> path of what was written (plus 'export_info' and 'keypoints').

    Raises:
      ValueError: an unknown format, or a keypoint set that does not fit the model.
      ImportError: 'openvino' requested without the openvino package installed.
    """
    if keypoints.num_joints != int(model.output.shape[-1]):
        raise ValueError(f"keypoint set {keypoints.name!r} has {keypoints.num_joints} keypoints, "
                         f"the model {model.output.shape[-1]} heatmaps")
    formats = parse_formats(formats)
    os.makedirs(output_dir, exist_ok=True)
    paths = {}
    if "openvino" in formats:
        openvino.require_openvino()  # before minutes of other exports
    if "saved_model" in formats:
        paths["saved_model"] = export_saved_model(
            model, config, keypoints, os.path.join(output_dir, FILE_NAMES["saved_model"]))
    if "saved_model_bf16" in formats:
        path = os.path.join(output_dir, FILE_NAMES["saved_model_bf16"])
        paths["saved_model_bf16"] = export_saved_model(bfloat16_model(model), config, keypoints,
                                                       path)
        info = {**export_info(config), "compute_dtype": "bfloat16"}
        atomic_write_json(os.path.join(path, SAVED_MODEL_EXTRA, EXPORT_INFO), info)
    tflite_formats = [f for f in formats if f.startswith("tflite_")]
    if tflite_formats:
        quantizations = [name.split("_", 1)[1] for name in tflite_formats]
        crops = None
        if "int8" in quantizations:
            crops = (representative_crops if representative_crops is not None
                     else calibration_crops(config))
        converted = tflite.convert_pose_model(model, quantizations, crops, winograd)
        for name, quantization in zip(tflite_formats, quantizations):
            paths[name] = os.path.join(output_dir, FILE_NAMES[name])
            with open(paths[name], "wb") as f:
                f.write(converted[quantization])
    if "openvino" in formats:
        paths["openvino"] = openvino.save_openvino(
            model, os.path.join(output_dir, FILE_NAMES["openvino"]))
        folder = os.path.dirname(paths["openvino"])
        save_keypoint_set(keypoints, folder)  # the folder alone is what a model server gets
        atomic_write_json(os.path.join(folder, EXPORT_INFO), export_info(config))
    paths["keypoints"] = save_keypoint_set(keypoints, output_dir)
    paths["export_info"] = os.path.join(output_dir, EXPORT_INFO)
    atomic_write_json(paths["export_info"], export_info(config))
    return paths
