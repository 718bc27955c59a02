"""``export_model``: a trained pose model -> SavedModel (TF Serving) and TFLite files.

Layout written under ``output_dir``::

    saved_model/          signatures serving_default, keypoints, keypoints_encoded
    model_fp32.tflite     batch-1 crops -> heatmaps (sub-pixel deconvs)
    model_fp16.tflite     float16 weights
    model_int8.tflite     full-integer, calibrated on validation crops
    export_info.json      input size, K, flip pairs, box padding (for the deployment kit)
"""
import json
import logging
import os
import tempfile

import cv2
import keras
import numpy as np
import tensorflow as tf

from mrpose_tf.export import graph, tflite
from mrpose_tf.inference import _flip_pairs_of, crop_person
from mrpose_tf.preprocessing import preprocess

FORMATS = ("saved_model", "tflite_fp32", "tflite_fp16", "tflite_int8")
FILE_NAMES = {"saved_model": "saved_model", "tflite_fp32": "model_fp32.tflite",
              "tflite_fp16": "model_fp16.tflite", "tflite_int8": "model_int8.tflite"}


def parse_formats(formats):
    """'saved_model,tflite_int8' or a sequence -> a tuple of valid format names."""
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    names = [f for f in names if f]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown export formats {unknown or formats!r}; valid: {FORMATS}")
    return tuple(names)


def _val_person_crops(config, num_samples):
    """Preprocessed crops of up to ``num_samples`` people of the config's validation split."""
    from mrpose_tf.data.pipeline import read_split

    records, _ = read_split(config, "val")
    if not records:
        raise ValueError("the validation split has no people")
    picks = np.linspace(0, len(records) - 1, min(num_samples, len(records))).round().astype(int)
    crops, images = [], {}
    for i in picks:
        record = records[i]
        if record.image_path not in images:
            image = cv2.imread(record.image_path, cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"cannot read image {record.image_path}")
            images[record.image_path] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        crops.append(crop_person(images[record.image_path], record.center, record.scale,
                                 config.model.input_size))
    return preprocess(np.stack(crops))


def calibration_crops(config, num_samples=None):
    """Calibration crops for int8: people of the config's validation set, else synthetic ones.

    Args:
      config: experiment ConfigDict (dataset.*, model.input_size, export.*).
      num_samples: number of crops (default ``config.export.representative_samples``).

    Returns:
      (N, H, W, 3) float32 preprocessed crops.
    """
    num_samples = int(num_samples or config.export.get("representative_samples", 100))
    try:
        return _val_person_crops(config, num_samples)
    except (FileNotFoundError, OSError, ValueError) as error:
        logging.warning("int8 calibration: validation set unusable (%s); using synthetic "
                        "people instead", error)
    from mrpose_tf.data.synthetic import ensure_synthetic_dataset

    synthetic = config.copy_and_resolve_references()
    with tempfile.TemporaryDirectory() as tmp:
        paths = ensure_synthetic_dataset(tmp, num_train=0, num_val=max(2, num_samples // 2))
        synthetic.dataset.name = "synthetic"
        synthetic.dataset.root = tmp
        synthetic.dataset.val_annotations = paths["val_annotations"]
        synthetic.dataset.val_images = paths["val_images"]
        synthetic.dataset.flip_pairs = None
        synthetic.test.use_gt_boxes = True
        return _val_person_crops(synthetic, num_samples)


def export_saved_model(model, config, path):
    """A SavedModel for TF Serving with three signatures.

    - ``serving_default``: ``image`` (N, H, W, 3) float32 preprocessed crops -> ``heatmaps``.
    - ``keypoints``: ``image`` (height, width, 3) uint8 RGB of any size and ``boxes`` (M, 4)
      float32 xywh -> ``keypoints`` (M, K, 2) image pixels and ``scores`` (M, K).
    - ``keypoints_encoded``: the same with ``image_bytes``, a JPEG/PNG/BMP/GIF string.

    Crop, preprocessing, model, flip test (``config.test.flip_test``, baked in), decoding
    and the inverse transform run inside the graph (:mod:`mrpose_tf.export.graph`).

    Args:
      model: the keras pose model.
      config: experiment ConfigDict (model.input_size, test.*, augment.box_padding, dataset).
      path: output directory.

    Returns:
      ``path``.
    """
    height, width = (int(v) for v in config.model.input_size)
    options = dict(input_size=(height, width), flip_pairs=_flip_pairs_of(config),
                   flip_test=bool(config.test.flip_test),
                   shift_heatmap=bool(config.test.shift_heatmap),
                   box_padding=float(config.augment.box_padding))
    crops = tf.TensorSpec((None, height, width, 3), tf.float32, name="image")
    image = tf.TensorSpec((None, None, 3), tf.uint8, name="image")
    image_bytes = tf.TensorSpec((), tf.string, name="image_bytes")
    boxes = tf.TensorSpec((None, 4), tf.float32, name="boxes")

    # Traced once; keypoints_encoded calls the same concrete function (no second trace).
    keypoints = tf.function(lambda image, boxes: graph.image_keypoints_tf(model, image, boxes,
                                                                          **options),
                            input_signature=[image, boxes])

    def keypoints_encoded(image_bytes, boxes):
        decoded = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8,
                                     expand_animations=False)
        return keypoints(decoded, boxes)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda image: {"heatmaps": model(graph.checked_crops(image, (height, width)),
                                         training=False)},
        [crops])
    archive.add_endpoint("keypoints", keypoints)
    archive.add_endpoint("keypoints_encoded", keypoints_encoded, [image_bytes, boxes])
    archive.write_out(path, verbose=False)
    return path


def export_info(config):
    """What a deployment needs besides the model: sizes, flip pairs, padding."""
    height, width = (int(v) for v in config.model.input_size)
    return {"input_size": [height, width], "num_joints": int(config.model.num_joints),
            "flip_pairs": [list(p) for p in _flip_pairs_of(config)],
            "flip_test": bool(config.test.flip_test),
            "shift_heatmap": bool(config.test.shift_heatmap),
            "box_padding": float(config.augment.box_padding),
            "arch": config.model.arch, "backbone": config.model.backbone}


def export_model(model, config, output_dir, formats=FORMATS, representative_crops=None,
                 winograd=True):
    """Export ``model`` in every requested format.

    Args:
      model: the keras pose model (training graph, from :func:`mrpose_tf.build_model`).
      config: its experiment ConfigDict.
      output_dir: folder to write into (created).
      formats: subset of ('saved_model', 'tflite_fp32', 'tflite_fp16', 'tflite_int8'),
        as a sequence or a comma-separated string.
      representative_crops: (N, H, W, 3) preprocessed float32 crops for int8 calibration;
        default :func:`calibration_crops` of the config.
      winograd: the Winograd form in the float TFLite models where it pays
        (:func:`mrpose_tf.export.tflite.convert_pose_model`); False: smaller, slower files.

    Returns:
      dict format -> path of what was written (plus 'export_info').
    """
    formats = parse_formats(formats)
    os.makedirs(output_dir, exist_ok=True)
    paths = {}
    if "saved_model" in formats:
        paths["saved_model"] = export_saved_model(
            model, config, os.path.join(output_dir, FILE_NAMES["saved_model"]))
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
    paths["export_info"] = os.path.join(output_dir, "export_info.json")
    with open(paths["export_info"], "w") as f:
        json.dump(export_info(config), f, indent=1)
    return paths


def _tflite_keypoints(path, config, records, images):
    """(N, K, 3) keypoints (x, y, score) of ``records`` by a .tflite model (config's flip test)."""
    from mrpose_tf.inference import decode_heatmaps, predict_heatmaps

    interpreter = tflite.litert_interpreter(path)
    out = []
    for record in records:
        crop = preprocess(crop_person(images[record.image_path], record.center, record.scale,
                                      config.model.input_size)[None])
        heatmaps = predict_heatmaps(lambda x: tflite.run_tflite(interpreter, x), crop,
                                    _flip_pairs_of(config), bool(config.test.flip_test),
                                    bool(config.test.shift_heatmap))
        coords, scores = decode_heatmaps(heatmaps, record.center[None], record.scale[None])
        out.append(np.concatenate([coords[0], scores[0][:, None]], axis=1))
    return np.stack(out)


def compare_int8_fp32(fp32_path, int8_path, config, max_people=None):
    """How much int8 quantization moves the keypoints, on the config's validation set.

    Both models run on the same crops (config's val split: GT or detector boxes as
    ``config.test.use_gt_boxes`` says). Returns the mean OKS between the two models'
    keypoints (each person's fp32 keypoints as the reference, area = scale_x*scale_y*200^2,
    the keypoint set's OKS sigmas) and, for a COCO-format set, the COCO AP of each.

    Args:
      fp32_path, int8_path: .tflite files from :func:`export_model`.
      config: the experiment ConfigDict (dataset, model.input_size, test.*).
      max_people: only the first N people (None: all).

    Returns:
      {'mean_oks': float, 'people': int, 'ap_fp32': float|None, 'ap_int8': float|None}.
    """
    from mrpose_tf.data.pipeline import read_split
    from mrpose_tf.evaluation import evaluate_coco
    from mrpose_tf.evaluation.coco import oks_iou

    records, keypoint_set = read_split(config, "val")
    records = records[:max_people] if max_people else records
    if not records:
        raise ValueError(f"no people in the validation split of {config.dataset.root}")
    images = {}
    for record in records:
        if record.image_path not in images:
            image = cv2.imread(record.image_path, cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"cannot read image {record.image_path}")
            images[record.image_path] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    fp32 = _tflite_keypoints(fp32_path, config, records, images)
    int8 = _tflite_keypoints(int8_path, config, records, images)
    sigmas = keypoint_set.sigmas
    areas = [float(r.scale[0] * r.scale[1] * 200.0 ** 2) for r in records]
    oks = [float(oks_iou(a, b[None], area, [area], sigmas)[0])
           for a, b, area in zip(fp32, int8, areas)]
    result = {"mean_oks": float(np.mean(oks)), "people": len(records),
              "ap_fp32": None, "ap_int8": None}
    if config.dataset.name != "mpii":
        annotations = os.path.join(config.dataset.root, config.dataset.val_annotations)
        for name, keypoints in (("ap_fp32", fp32), ("ap_int8", int8)):
            people = [{"image_id": r.image_id, "keypoints": k, "box_score": r.box_score,
                       "area": area} for r, k, area in zip(records, keypoints, areas)]
            result[name] = float(evaluate_coco(people, annotations,
                                               sigmas=sigmas)["AP"])
    return result
