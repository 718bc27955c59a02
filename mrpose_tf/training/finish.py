"""The quickstart's steps around training: render the synthetic set, then evaluate, export, draw.

``scripts/train.py`` calls :func:`prepare_dataset` before reading data and
:func:`finish_run` after ``Trainer.fit``. What a finished run leaves in its workdir::

    metrics.json            the 10 COCO stats by name, PCK@0.1 and the mean-pose baseline's,
                            training time, images/s and the learning curve
    export/saved_model/     export/model_fp32.tflite  export/model_int8.tflite  (as configured)
    demo.png                predicted skeletons drawn on validation images

PCK@0.1 (defined here, for the COCO-format sets): a labelled keypoint (v > 0) is correct
when its distance to the ground truth is at most 0.1 x the longer side of the person's
ground-truth box. The mean-pose baseline predicts, for every person, the training set's
average keypoint positions in box-normalised coordinates ((x - x0) / w, (y - y0) / h),
placed in that person's box: what a network that ignores the image could reach.
"""
import os
import time

import cv2
import numpy as np

from mrpose_tf.training.checkpointing import atomic_write_json

PCK_THRESHOLD = 0.1
DEMO_COLUMNS = 3


# --- the data -------------------------------------------------------------------------------

def prepare_dataset(config):
    """Render the synthetic dataset the config asks for, unless the same one is there.

    Args:
      config: the run config. Acts only when ``config.dataset.name == 'synthetic'`` and
        ``config.dataset.synthetic`` holds num_train, num_val, difficulty, seed and
        image_size (height, width); renders into ``config.dataset.root``.

    Returns:
      The dict of paths of :func:`mrpose_tf.data.synthetic.ensure_synthetic_dataset`, or
      None when the config asks for no rendering.
    """
    spec = config.dataset.get("synthetic")
    if config.dataset.name != "synthetic" or not spec:
        return None
    from mrpose_tf.data.synthetic import ensure_synthetic_dataset

    return ensure_synthetic_dataset(config.dataset.root, int(spec.num_train), int(spec.num_val),
                                    spec.difficulty, int(spec.seed),
                                    tuple(int(v) for v in spec.image_size))


# --- PCK and the mean-pose baseline ---------------------------------------------------------

def _checked_boxes(boxes, count, name):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) != count:
        raise ValueError(f"{name}: {len(boxes)} boxes for {count} people")
    bad = np.flatnonzero(~(np.all(np.isfinite(boxes), 1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)))
    if len(bad):
        raise ValueError(f"{name}: person {bad[0]} has box {boxes[bad[0]].tolist()}; "
                         f"PCK needs a box (x, y, w, h) with w, h > 0")
    return boxes


def pck(predicted, joints, visibility, boxes, threshold=PCK_THRESHOLD):
    """Fraction of labelled keypoints within ``threshold`` x the longer box side.

    Args:
      predicted: (N, K, 2+) predicted (x, y) in image pixels (extra columns ignored).
      joints: (N, K, 2) ground-truth (x, y).
      visibility: (N, K); keypoints with visibility > 0 are counted.
      boxes: (N, 4) ground-truth boxes (x, y, w, h).
      threshold: the fraction of max(w, h).

    Returns:
      The fraction (float) of counted keypoints whose error is <= threshold * max(w, h).
    """
    predicted = np.asarray(predicted, np.float64)[..., :2]
    joints = np.asarray(joints, np.float64)
    labelled = np.asarray(visibility) > 0
    boxes = _checked_boxes(boxes, len(joints), "pck")
    if predicted.shape != joints.shape:
        raise ValueError(f"pck: predictions {predicted.shape} vs ground truth {joints.shape}")
    if not labelled.any():
        raise ValueError("pck: no labelled keypoints")
    error = np.linalg.norm(predicted - joints, axis=-1)
    correct = error <= threshold * boxes[:, 2:].max(axis=1)[:, None]
    return float((correct & labelled).sum() / labelled.sum())


def mean_pose(joints, visibility, boxes):
    """The average keypoint positions in box-normalised coordinates.

    Args:
      joints: (N, K, 2) keypoints (x, y) in image pixels.
      visibility: (N, K); only keypoints with visibility > 0 are averaged.
      boxes: (N, 4) person boxes (x, y, w, h).

    Returns:
      (K, 2) mean of ((x - x0) / w, (y - y0) / h) per keypoint; (0.5, 0.5), the box
      centre, for a keypoint never labelled.
    """
    joints = np.asarray(joints, np.float64)
    labelled = (np.asarray(visibility) > 0)[..., None]
    boxes = _checked_boxes(boxes, len(joints), "mean_pose")
    normalised = (joints - boxes[:, None, :2]) / boxes[:, None, 2:]
    counts = labelled.sum(axis=0)
    sums = np.where(labelled, normalised, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.5)


def place_mean_pose(pose, boxes):
    """(N, K, 2) image coordinates of a box-normalised pose (K, 2) in each box (x, y, w, h)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return boxes[:, None, :2] + np.asarray(pose, np.float64)[None] * boxes[:, None, 2:]


def _columns(records):
    """(joints, visibility, boxes) of person records (boxes: the records' ground-truth bbox)."""
    missing = [r.image_id for r in records if r.bbox is None]
    if missing:
        raise ValueError(f"person records of images {missing[:5]} have no bbox: PCK needs "
                         f"ground-truth boxes")
    return (np.stack([r.joints for r in records]), np.stack([r.visibility for r in records]),
            np.stack([r.bbox for r in records]))


# --- after training -------------------------------------------------------------------------

def float32_copy(model, config):
    """The same network under the float32 policy with ``model``'s weights (for eval/export).

    Mixed-precision models keep float32 variables, so the weights carry over unchanged.
    """
    from mrpose_tf.models import build_model, dtype_policy

    with dtype_policy("float32"):
        copy = build_model(config.model.arch, config.model.backbone, int(config.model.num_joints),
                           tuple(config.model.input_size), backbone_weights=None)
    copy.set_weights(model.get_weights())
    return copy


def learning_curve(workdir):
    """Scalars the trainer wrote to ``workdir/tensorboard/{train,val}``, by step.

    Returns:
      {'train': [{'step', 'loss', ...}], 'val': [{'step', 'AP', 'PCK', ...}]} (empty lists
      when there are no summaries).
    """
    import tensorflow as tf

    curve = {}
    for split in ("train", "val"):
        rows = {}
        folder = os.path.join(workdir, "tensorboard", split)
        files = sorted(tf.io.gfile.glob(os.path.join(folder, "events.out.tfevents.*")))
        for path in files:
            for record in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name not in ("scalars", ""):
                        continue
                    number = (tf.make_ndarray(value.tensor) if value.HasField("tensor")
                              else value.simple_value)
                    if np.ndim(number) == 0:
                        rows.setdefault(int(event.step), {})[value.tag] = float(number)
        curve[split] = [dict(step=step, **rows[step]) for step in sorted(rows)]
    return curve


def gt_box_records(config):
    """The validation records on ground-truth boxes (labelled joints; for PCK)."""
    from mrpose_tf.data.pipeline import read_split

    gt_config = config.copy_and_resolve_references()
    with gt_config.unlocked():
        gt_config.test.use_gt_boxes = True
    return read_split(gt_config, "val")[0]


def draw_demo(path, predictions, records, keypoints, num_images, columns=DEMO_COLUMNS):
    """Predicted skeletons of every person on the first ``num_images`` validation images.

    Args:
      path: the PNG file to write.
      predictions: (N, K, 3) keypoints (x, y, score) of ``records``.
      records: the person records (image_path, image_id).
      keypoints: the :class:`KeypointSpec` (skeleton).
      num_images: how many images (tiled ``columns`` wide).

    Returns:
      The (H, W, 3) uint8 RGB picture written.
    """
    from mrpose_tf.visualization import draw_skeleton, tile

    people = {}
    for record, points in zip(records, predictions):
        people.setdefault(record.image_path, []).append(points)
    drawn = []
    for image_path in list(people)[:max(1, int(num_images))]:
        image = cv2.imread(image_path, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"demo: cannot read image {image_path}")
        points = np.stack(people[image_path])
        drawn.append(draw_skeleton(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), points[..., :2],
                                   points[..., 2], keypoints))
    shape = max(im.shape[0] for im in drawn), max(im.shape[1] for im in drawn)
    drawn = [cv2.copyMakeBorder(im, 0, shape[0] - im.shape[0], 0, shape[1] - im.shape[1],
                                cv2.BORDER_CONSTANT, value=(255, 255, 255)) for im in drawn]
    picture = tile(drawn, min(columns, len(drawn)))
    cv2.imwrite(path, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return picture


def finish_run(model, config, workdir, train_result, val_records, keypoints, train_records=None,
               run_started=None, log=print):
    """Evaluate, compare with the mean-pose baseline, export and draw; write metrics.json.

    Args:
      model: the trained keras model (any dtype policy; evaluated and exported in float32).
      config: the run config; ``config.finish`` (optional) holds evaluate (bool),
        export_formats (comma-separated, '' for none) and demo_images (0 for none).
      workdir: the run directory.
      train_result: the dict ``Trainer.fit`` returned (train_seconds, images_per_second,
        step, epoch, stopped).
      val_records: validation records with the config's test boxes (detections or GT).
      keypoints: the :class:`KeypointSpec`.
      train_records: training records for the mean pose (read from the config when None).
      run_started: ``time.time()`` at the start of the run, for 'total_seconds'.
      log: function taking a line of text.

    Returns:
      The metrics dict written to ``workdir/metrics.json``.
    """
    from mrpose_tf.data.pipeline import read_split
    from mrpose_tf.evaluation.coco import evaluate_coco
    from mrpose_tf.evaluation.runner import evaluate_model, person_predictions, predict_records

    started = time.time()
    finish = config.get("finish") or {}
    if config.dataset.name in ("mpii", "random"):
        raise ValueError(f"finish_run handles COCO-format sets, not {config.dataset.name!r}")
    model = float32_copy(model, config)
    metrics = {"steps": int(train_result["step"]), "epochs": float(train_result["epoch"]),
               "stopped": train_result["stopped"],
               "train_seconds": float(train_result["train_seconds"]),
               "images_per_second": float(train_result["images_per_second"])}

    gt_records = val_records if config.test.use_gt_boxes else gt_box_records(config)
    predictions = predict_records(model, gt_records, config, keypoints)
    if len(predictions["keypoints"]) != len(gt_records):
        raise ValueError(f"PCK needs every validation person: {predictions['skipped_images']} "
                         f"unreadable images, {predictions['skipped_boxes']} zero-size boxes")
    if finish.get("evaluate", True):
        annotations = os.path.join(config.dataset.root, config.dataset.val_annotations)
        if config.test.use_gt_boxes:  # the predictions above are the evaluation's
            coco = evaluate_coco(person_predictions(predictions), annotations,
                                 float(config.test.in_vis_thre), float(config.test.oks_thre),
                                 keypoints.sigmas)
        else:
            coco = evaluate_model(model, config, val_records, keypoints, log=log)
        metrics.update(coco)
    labelled = [i for i, r in enumerate(gt_records) if np.any(r.visibility > 0)]
    joints, visibility, boxes = _columns([gt_records[i] for i in labelled])
    metrics["PCK@0.1"] = pck(predictions["keypoints"][labelled], joints, visibility, boxes)
    if train_records is None:
        train_records, _ = read_split(config, "train")
    pose = mean_pose(*_columns(train_records))
    metrics["mean_pose_PCK@0.1"] = pck(place_mean_pose(pose, boxes), joints, visibility, boxes)
    log(f"validation: AP {metrics.get('AP', float('nan')):.4f}, PCK@0.1 {metrics['PCK@0.1']:.4f} "
        f"(mean pose {metrics['mean_pose_PCK@0.1']:.4f})")

    formats = finish.get("export_formats", "")
    if formats:
        from mrpose_tf.export import export_model

        paths = export_model(model, config, os.path.join(workdir, "export"), formats)
        metrics["export"] = {k: os.path.relpath(v, workdir) for k, v in paths.items()}
        log(f"exported {', '.join(sorted(paths))} to {os.path.join(workdir, 'export')}")
    if int(finish.get("demo_images", 0)) > 0:
        demo = os.path.join(workdir, "demo.png")
        draw_demo(demo, predictions["keypoints"], gt_records, keypoints,
                  int(finish.demo_images))
        log(f"wrote {demo}")
    metrics["learning_curve"] = learning_curve(workdir)
    if metrics["learning_curve"]["train"]:
        from mrpose_tf.visualization import draw_learning_curve

        picture = os.path.join(workdir, "learning_curve.png")
        cv2.imwrite(picture, draw_learning_curve(metrics["learning_curve"])[..., ::-1])
        log(f"wrote {picture}")
    metrics["finish_seconds"] = time.time() - started
    if run_started is not None:
        metrics["total_seconds"] = time.time() - float(run_started)
    atomic_write_json(os.path.join(workdir, "metrics.json"), metrics)
    return metrics


__all__ = ["draw_demo", "finish_run", "float32_copy", "gt_box_records", "learning_curve",
           "mean_pose", "pck", "place_mean_pose", "prepare_dataset"]
