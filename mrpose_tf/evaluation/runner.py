"""Model + person records -> keypoints -> COCO AP or MPII PCKh, in-process.

Used by ``scripts/evaluate.py`` and by the trainer (``evaluate_fn=lambda m: evaluate_model(m,
config)``). Crops come from the tf.data pipeline (:func:`mrpose_tf.data.pipeline.build_dataset`
with ``train=False``), heatmaps from :func:`mrpose_tf.predictor.predict_heatmaps` (flip test
as configured) and keypoints from :func:`mrpose_tf.codec.decode_heatmaps`.
"""
from __future__ import annotations

import json
import logging
import math
import os

import numpy as np

from mrpose_tf.evaluation.coco import evaluate_coco
from mrpose_tf.evaluation.mpii import evaluate_mpii
from mrpose_tf.codec import decode_heatmaps
from mrpose_tf.geometry import person_area
from mrpose_tf.predictor import predict_heatmaps

_log = logging.getLogger(__name__)


def predict_records(model, records, config, keypoints, flip_test=None, progress=False):
    """Keypoints of every person record (crops from the evaluation pipeline).

    Args:
      model: keras model or callable on preprocessed crops.
      records: sequence of :class:`mrpose_tf.data.records.PersonRecord` (from image files
        or from a TFDS build, as :func:`mrpose_tf.data.pipeline.read_split` gives them).
      config: experiment ConfigDict (model.input_size, model.heatmap_size, test.*).
      keypoints: the :class:`mrpose_tf.keypoints.KeypointSpec` (flip pairs).
      flip_test: override ``config.test.flip_test``.
      progress: show a progress bar.

    Returns:
      dict of numpy arrays, one row per person that was read, in the order of ``records``:
      'keypoints' (N, K, 3: x, y, score), 'center', 'scale', 'image_id', 'category_id',
      'box_score', 'area' (:func:`mrpose_tf.geometry.person_area`); and the counts
      'skipped_people' and 'skipped_images' (people whose image could not be read or
      decoded, and their distinct image files; logged as a warning with the files) and
      'skipped_boxes' (zero-size boxes).

    Raises:
      ValueError: no records, only zero-size boxes, or no image could be read.
    """
    import keras

    from mrpose_tf.config import input_preprocessing_of
    from mrpose_tf.data.pipeline import build_dataset

    if not records:
        raise ValueError("no person records to evaluate (no boxes: check the detection file "
                         "and test.image_thre, or the annotation file)")
    sized = [bool(np.all(np.isfinite(r.scale)) and np.all(np.asarray(r.scale) > 0))
             for r in records]
    skipped_boxes = sized.count(False)
    if skipped_boxes:
        _log.warning("skipping %d person boxes of zero size (first in image %s)", skipped_boxes,
                     records[sized.index(False)].image_id)
    if not any(sized):
        raise ValueError(f"all {len(records)} person boxes have zero size")
    # Each record names where its image is (a file or a TFDS build), so a subset reads alike.
    records = [r for r, ok in zip(records, sized) if ok]
    flip_test = config.test.flip_test if flip_test is None else flip_test
    batch_size = int(config.test.batch_size)
    dataset = build_dataset(records, keypoints=keypoints, input_size=config.model.input_size,
                            heatmap_size=config.model.heatmap_size, sigma=config.model.sigma,
                            train=False, batch_size=batch_size,
                            input_preprocessing=input_preprocessing_of(config))
    bar = keras.utils.Progbar(math.ceil(len(records) / batch_size), unit_name="batch") \
        if progress else None
    columns = {k: [] for k in ("keypoints", "center", "scale", "image_id", "box_score",
                               "record_position")}
    for step, batch in enumerate(dataset):
        heatmaps = predict_heatmaps(model, batch["image"].numpy(), keypoints.flip_pairs,
                                    flip_test, bool(config.test.shift_heatmap))
        center, scale = batch["center"].numpy(), batch["scale"].numpy()
        coords, maxvals = decode_heatmaps(heatmaps, center, scale)
        columns["keypoints"].append(np.concatenate([coords, maxvals[..., None]], axis=-1))
        for key in ("center", "scale", "image_id", "box_score", "record_position"):
            columns[key].append(batch[key].numpy())
        if bar is not None:
            bar.update(step + 1)
    # Whatever kept a person out (an image no decoder reads, a corrupt file), the records
    # that did not come back are the ones to report.
    positions = np.concatenate(columns.pop("record_position")) if columns["keypoints"] \
        else np.zeros(0, np.int64)
    missing = sorted(set(range(len(records))) - set(positions.tolist()))
    unreadable = sorted({records[i].image_path for i in missing})
    if missing:
        _log.warning("%d of %d people could not be read: their %d image files cannot be read "
                     "or decoded: %s%s", len(missing), len(records), len(unreadable),
                     ", ".join(unreadable[:5]), " ..." if len(unreadable) > 5 else "")
    if not columns["keypoints"]:
        raise ValueError(f"none of the {len(records)} person records could be read "
                         f"({len(unreadable)} unreadable images: {', '.join(unreadable[:5])})")
    # A TFDS build yields its people grouped by image: back to the order of the records
    # (MPII's PCKh pairs predictions with the ground truth by position).
    order = np.argsort(positions, kind="stable")
    out = {k: np.concatenate(v)[order] for k, v in columns.items()}
    out["category_id"] = np.array([records[i].category_id for i in positions[order]], np.int64)
    out["area"] = person_area(out["scale"])
    out["skipped_people"] = len(missing)
    out["skipped_images"] = len(unreadable)
    out["skipped_boxes"] = skipped_boxes
    return out


def person_predictions(predictions):
    """Rows of :func:`predict_records` -> the list of dicts :func:`evaluate_coco` takes."""
    return [{"image_id": int(i), "category_id": int(c), "keypoints": k, "box_score": float(s),
             "area": float(a)}
            for i, c, k, s, a in zip(predictions["image_id"], predictions["category_id"],
                                     predictions["keypoints"], predictions["box_score"],
                                     predictions["area"])]


def run_coco_evaluation(model, records, config, annotation_file, keypoints, flip_test=None,
                        output_dir=None, progress=False, log=print):
    """COCO keypoint AP of ``model`` on ``records`` (ground-truth or detector boxes).

    Args:
      model: keras model or callable on preprocessed crops.
      records: person records (:func:`mrpose_tf.data.coco.read_coco`).
      config: experiment ConfigDict (test.in_vis_thre, test.oks_thre, test.flip_test, ...).
      annotation_file: the COCO keypoints ground truth the records come from.
      keypoints: the keypoint set (flip pairs, OKS sigmas).
      flip_test: override ``config.test.flip_test``.
      output_dir: if given, write ``keypoints_results.json`` and ``metrics.json`` there.
      progress: show a progress bar.
      log: function taking a line of text.

    Returns:
      OrderedDict of the 10 COCO stats (see :func:`mrpose_tf.evaluate_coco`).
    """
    predictions = predict_records(model, records, config, keypoints, flip_test, progress)
    if predictions["skipped_images"] or predictions["skipped_boxes"]:
        log(f"skipped {predictions['skipped_people']} people in {predictions['skipped_images']} "
            f"unreadable images and {predictions['skipped_boxes']} zero-size boxes")
    results_file = os.path.join(output_dir, "keypoints_results.json") if output_dir else None
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
    metrics = evaluate_coco(person_predictions(predictions), annotation_file,
                            float(config.test.in_vis_thre), float(config.test.oks_thre),
                            keypoints.sigmas, results_file)
    _write_metrics(output_dir, metrics, predictions, len(records))
    return metrics


def run_mpii_evaluation(model, records, config, gt_file, keypoints, flip_test=None,
                        output_dir=None, progress=False, log=print):
    """MPII PCKh of ``model`` on ``records`` (in the order of the ground-truth file).

    Returns:
      OrderedDict of PCKh (see :func:`mrpose_tf.evaluate_mpii`).
    """
    predictions = predict_records(model, records, config, keypoints, flip_test, progress)
    if len(predictions["keypoints"]) != len(records):
        raise ValueError(f"PCKh needs every person: {predictions['skipped_images']} unreadable "
                         f"images and {predictions['skipped_boxes']} zero-size boxes left "
                         f"{len(predictions['keypoints'])} of {len(records)} people")
    metrics = evaluate_mpii(predictions["keypoints"][..., :2], gt_file)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        np.save(os.path.join(output_dir, "mpii_predictions.npy"), predictions["keypoints"])
    _write_metrics(output_dir, metrics, predictions, len(records))
    return metrics


def evaluate_model(model, config, records=None, keypoints=None, flip_test=None,
                   output_dir=None, progress=False, log=print):
    """The paper's evaluation of ``model`` on the config's validation split.

    COCO-format sets: AP with detector boxes (``config.test.detections``) or ground-truth
    boxes (``config.test.use_gt_boxes``); MPII: PCKh against ``config.dataset.mpii_gt_file``.

    Args:
      model: keras model or callable on preprocessed crops.
      config: experiment ConfigDict.
      records, keypoints: optional pre-read validation records and keypoint set (read from
        the config when None; pass them when calling every few epochs).
      flip_test: override ``config.test.flip_test``.
      output_dir: write the results and metrics JSON there.
      progress: show a progress bar.
      log: function taking a line of text.

    Returns:
      OrderedDict of metrics (COCO: 'AP', ...; MPII: 'Head', ..., 'Mean', 'Mean@0.1').
    """
    from mrpose_tf.data.pipeline import read_split

    if records is None or keypoints is None:
        records, keypoints = read_split(config, "val")
    d = config.dataset
    if d.name == "mpii":
        if not d.mpii_gt_file:
            raise ValueError("config.dataset.mpii_gt_file is empty: PCKh needs MPII's "
                             "gt_valid.mat")
        return run_mpii_evaluation(model, records, config, os.path.join(d.root, d.mpii_gt_file),
                                   keypoints, flip_test, output_dir, progress, log)
    return run_coco_evaluation(model, records, config, os.path.join(d.root, d.val_annotations),
                               keypoints, flip_test, output_dir, progress, log)


def _write_metrics(output_dir, metrics, predictions, num_records):
    if not output_dir:
        return
    summary = {"metrics": dict(metrics), "num_people": int(len(predictions["keypoints"])),
               "num_records": int(num_records),
               "skipped_people": int(predictions["skipped_people"]),
               "skipped_images": int(predictions["skipped_images"]),
               "skipped_boxes": int(predictions["skipped_boxes"])}
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)


def format_metrics_table(metrics, name=""):
    """The paper's table layout: a Markdown row of the metric names and of the values ('-'
    for an absent one, e.g. MPII's Ankle when no ankle is labelled)."""
    names = list(metrics)
    header = "| Arch | " + " | ".join(names) + " |"
    rule = "|---" * (len(names) + 1) + "|"
    values = "| " + (name or "-") + " | " + " | ".join(
        "-" if v is None else f"{v:.3f}" for v in metrics.values())
    values += " |"
    return "\n".join([header, rule, values])


__all__ = ["evaluate_model", "format_metrics_table",
           "person_predictions", "predict_records", "run_coco_evaluation",
           "run_mpii_evaluation"]
