"""int8 models: calibration crops, and how far int8 (or bfloat16) moves the keypoints from fp32.

Calibration sets the int8 model's value ranges, so its crops should look like what the
model will see: people of the config's validation split. Rendering synthetic figures
instead is an explicit choice (``config.export.calibration = 'synthetic'``), never a silent
fallback.
"""
import os
import tempfile

import numpy as np

from mrpose_tf.codec import decode_heatmaps
from mrpose_tf.geometry import person_area
from mrpose_tf.predictor import predict_heatmaps

CALIBRATION_SOURCES = ("validation", "synthetic")


def _evaluation_crops(config, records, keypoints):
    """Batches of the evaluation pipeline over ``records`` (image files or a TFDS build):
    preprocessed crops with their box centre and scale, as the evaluators see them."""
    from mrpose_tf.config import input_preprocessing_of
    from mrpose_tf.data.pipeline import build_dataset

    return build_dataset(records, keypoints=keypoints, input_size=config.model.input_size,
                         heatmap_size=config.model.heatmap_size, sigma=config.model.sigma,
                         train=False, batch_size=int(config.test.batch_size),
                         input_preprocessing=input_preprocessing_of(config))


def _val_person_crops(config, num_samples):
    """Preprocessed crops of up to ``num_samples`` people spread over the validation split."""
    from mrpose_tf.data.pipeline import read_split

    records, keypoints = read_split(config, "val")
    if not records:
        raise ValueError(f"the validation split of {config.dataset.root} has no people")
    picks = np.linspace(0, len(records) - 1, min(num_samples, len(records))).round().astype(int)
    batches = _evaluation_crops(config, [records[i] for i in sorted(set(picks))], keypoints)
    return np.concatenate([batch["image"].numpy() for batch in batches])


def _synthetic_person_crops(config, num_samples):
    from mrpose_tf.data.synthetic import ensure_synthetic_dataset

    synthetic = config.copy_and_resolve_references()
    with tempfile.TemporaryDirectory() as tmp:
        paths = ensure_synthetic_dataset(tmp, num_train=0, num_val=max(2, num_samples // 2))
        with synthetic.unlocked():
            synthetic.dataset.name = "synthetic"
            synthetic.dataset.root = tmp
            synthetic.dataset.val_annotations = paths["val_annotations"]
            synthetic.dataset.val_images = paths["val_images"]
            synthetic.dataset.flip_pairs = None
            synthetic.test.use_gt_boxes = True
        return _val_person_crops(synthetic, num_samples)


def calibration_crops(config, num_samples=None):
    """Calibration crops for int8, from ``config.export.calibration``.

    Args:
      config: experiment ConfigDict (dataset.*, model.input_size, export.calibration,
        export.representative_samples).
      num_samples: number of crops (default ``config.export.representative_samples``).

    Returns:
      (N, H, W, 3) float32 preprocessed crops: people of the validation split
      ('validation', the default), or of rendered synthetic figures ('synthetic').

    Raises:
      FileNotFoundError, ValueError: the validation split cannot be read (the message names
      the file and the two ways out: a crops file or ``export.calibration='synthetic'``).
    """
    num_samples = int(num_samples or config.export.get("representative_samples", 100))
    source = config.export.get("calibration", "validation")
    if source not in CALIBRATION_SOURCES:
        raise ValueError(f"config.export.calibration must be one of {CALIBRATION_SOURCES}, got "
                         f"{source!r}")
    if source == "synthetic":
        return _synthetic_person_crops(config, num_samples)
    try:
        return _val_person_crops(config, num_samples)
    except (FileNotFoundError, OSError, ValueError) as error:
        raise type(error)(
            f"int8 calibration needs people of the validation split: {error}. Pass crops "
            f"(scripts/export.py --representative_data=crops.npy) or calibrate on rendered "
            f"figures (--config.export.calibration=synthetic)") from None


def _model_keypoints(run, config, keypoints, batches):
    """(N, K, 3) keypoints (x, y, score) of the crops in ``batches`` by ``run`` (preprocessed
    crops -> heatmaps), in the order of the records the batches were built from."""
    out, positions = [], []
    for batch in batches:
        positions.append(batch["record_position"].numpy())
        heatmaps = predict_heatmaps(run, batch["image"].numpy(), keypoints.flip_pairs,
                                    bool(config.test.flip_test), bool(config.test.shift_heatmap))
        coords, scores = decode_heatmaps(heatmaps, batch["center"].numpy(),
                                         batch["scale"].numpy())
        out.append(np.concatenate([coords, scores[..., None]], axis=-1))
    return np.concatenate(out)[np.argsort(np.concatenate(positions), kind="stable")]


def _compare(reference, candidate, config, keypoints, max_people):
    """How far ``candidate`` moves the keypoints of ``reference`` on the config's validation
    people (see :func:`compare_int8_fp32`).

    Args:
      reference, candidate: (name, fn): fn maps (N, H, W, 3) float32 preprocessed crops to
        (N, h, w, K) heatmaps.

    Returns:
      {'mean_oks': float, 'people': int, 'ap_<reference name>': float|None,
      'ap_<candidate name>': float|None} (AP None for MPII).
    """
    from mrpose_tf.data.pipeline import read_split
    from mrpose_tf.evaluation import evaluate_coco
    from mrpose_tf.evaluation.coco import oks_iou

    records, _ = read_split(config, "val")
    records = records[:max_people] if max_people else records
    if not records:
        raise ValueError(f"no people in the validation split of {config.dataset.root}")
    batches = list(_evaluation_crops(config, records, keypoints))
    (reference_name, reference), (candidate_name, candidate) = [
        (name, _model_keypoints(run, config, keypoints, batches))
        for name, run in (reference, candidate)]
    if len(reference) != len(records):
        raise ValueError(f"{len(records) - len(reference)} of {len(records)} validation people "
                         f"could not be read (see the log for their image files)")
    areas = [float(person_area(r.scale)) for r in records]
    oks = [float(oks_iou(a, b[None], area, [area], keypoints.sigmas)[0])
           for a, b, area in zip(reference, candidate, areas)]
    result = {"mean_oks": float(np.mean(oks)), "people": len(records),
              f"ap_{reference_name}": None, f"ap_{candidate_name}": None}
    if config.dataset.name != "mpii":
        annotations = os.path.join(config.dataset.root, config.dataset.val_annotations)
        for name, predicted in ((reference_name, reference), (candidate_name, candidate)):
            people = [{"image_id": r.image_id, "category_id": r.category_id, "keypoints": k,
                       "box_score": r.box_score, "area": area}
                      for r, k, area in zip(records, predicted, areas)]
            result[f"ap_{name}"] = float(evaluate_coco(people, annotations,
                                                      sigmas=keypoints.sigmas)["AP"])
    return result


def compare_int8_fp32(fp32_path, int8_path, config, keypoints, max_people=None):
    """How much int8 quantization moves the keypoints, on the config's validation set.

    Both models run on the same crops (config's val split: GT or detector boxes as
    ``config.test.use_gt_boxes`` says). Returns the mean OKS between the two models'
    keypoints (each person's fp32 keypoints as the reference, area
    :func:`mrpose_tf.geometry.person_area`, the keypoint set's OKS sigmas) and, for a
    COCO-format set, the COCO AP of each.

    Args:
      fp32_path, int8_path: .tflite files from :func:`mrpose_tf.export.export_model`.
      config: the experiment ConfigDict (dataset, model.input_size, test.*).
      keypoints: the model's :class:`mrpose_tf.keypoints.KeypointSpec`.
      max_people: only the first N people (None: all).

    Returns:
      {'mean_oks': float, 'people': int, 'ap_fp32': float|None, 'ap_int8': float|None}.
    """
    from mrpose_tf.export import tflite

    runs = []
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        interpreter = tflite.litert_interpreter(path)
        runs.append((name, lambda x, interpreter=interpreter: tflite.run_tflite(interpreter, x)))
    return _compare(*runs, config, keypoints, max_people)


def compare_bf16_fp32(fp32_path, bf16_path, config, keypoints, max_people=None):
    """:func:`compare_int8_fp32` for the float32 and the bfloat16 SavedModels (their
    ``heatmaps_preprocessed`` signatures): how far bfloat16 moves the keypoints.

    Returns:
      {'mean_oks': float, 'people': int, 'ap_fp32': float|None, 'ap_bf16': float|None}.
    """
    from mrpose_tf.predictor import load_saved_model_heatmaps

    return _compare(("fp32", load_saved_model_heatmaps(fp32_path)[0]),
                    ("bf16", load_saved_model_heatmaps(bf16_path)[0]), config, keypoints,
                    max_people)
