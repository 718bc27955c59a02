"""The report of a finished run: evaluate, compare with the mean pose, export, draw.

``scripts/train.py`` calls :func:`finish_run` after ``Trainer.fit`` when the config has a
``finish`` section (the quickstart and the learning proof). What it leaves in the workdir::

    metrics.json            the 10 COCO stats by name, PCK@0.1 and the mean-pose baseline's
                            (:mod:`mrpose_tf.evaluation.pck`), training time, images/s and
                            the learning curve (read back from metrics.jsonl)
    export/                 saved_model/, model_fp32.tflite, model_int8.tflite, keypoints.json
                            (with both TFLite models, metrics.json has 'int8_vs_fp32': their
                            mean OKS and the AP of each)
    demo.png                predicted skeletons drawn on validation images
    learning_curve.png      training loss and validation metrics against the step
"""
import os
import time

import numpy as np

from mrpose_tf.evaluation.pck import mean_pose, pck, place_mean_pose, record_columns
from mrpose_tf.files import atomic_write_json
from mrpose_tf.training.trainer import read_metrics

PCK_THRESHOLD = 0.1


def float32_copy(model, config):
    """The same network, plain Keras layers under the float32 policy, with ``model``'s weights.

    Mixed-precision models keep float32 variables, and the trainer's layer forms have the
    plain layers' variables, so the weights carry over unchanged.
    """
    from mrpose_tf.config import model_from_config
    from mrpose_tf.models import dtype_policy

    with dtype_policy("float32"):
        copy = model_from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def gt_box_records(config):
    """The validation records on ground-truth boxes (labelled joints; for PCK)."""
    from mrpose_tf.data.pipeline import read_split

    gt_config = config.copy_and_resolve_references()
    with gt_config.unlocked():
        gt_config.test.use_gt_boxes = True
    return read_split(gt_config, "val")[0]


def validation_metrics(predictions, gt_records, config, keypoints, train_records=None,
                       coco=True):
    """COCO AP, PCK@0.1 and the mean-pose baseline of predictions at the ground-truth boxes.

    Args:
      predictions: :func:`mrpose_tf.evaluation.runner.predict_records` of ``gt_records``
        (every person: PCK pairs them by position).
      gt_records: the validation records with their ground-truth boxes.
      config: the run config (dataset files, test thresholds).
      keypoints: the run's :class:`mrpose_tf.keypoints.KeypointSpec` (OKS sigmas).
      train_records: training records for the mean pose (read from the config when None).
      coco: also evaluate with pycocotools (the 'AP...' keys).

    Returns:
      A dict: 'PCK@0.1' and 'mean_pose_PCK@0.1' (fractions of the labelled joints within 0.1
      of the box's longer side), and with ``coco`` the COCO keypoint metrics.
    """
    from mrpose_tf.data.pipeline import read_split
    from mrpose_tf.evaluation.coco import evaluate_coco
    from mrpose_tf.evaluation.runner import person_predictions

    metrics = {}
    if coco:
        annotations = os.path.join(config.dataset.root, config.dataset.val_annotations)
        metrics.update(evaluate_coco(person_predictions(predictions), annotations,
                                     float(config.test.in_vis_thre), float(config.test.oks_thre),
                                     keypoints.sigmas))
    labelled = [i for i, r in enumerate(gt_records) if np.any(r.visibility > 0)]
    joints, visibility, boxes = record_columns([gt_records[i] for i in labelled])
    metrics["PCK@0.1"] = pck(predictions["keypoints"][labelled], joints, visibility, boxes,
                             PCK_THRESHOLD)
    if train_records is None:
        train_records, _ = read_split(config, "train")
    pose = mean_pose(*record_columns(train_records))
    metrics["mean_pose_PCK@0.1"] = pck(place_mean_pose(pose, boxes), joints, visibility, boxes,
                                       PCK_THRESHOLD)
    return metrics


def finish_run(model, config, keypoints, workdir, train_result, val_records, train_records=None,
               run_started=None, log=print):
    """Evaluate, compare with the mean-pose baseline, export and draw; write metrics.json.

    Args:
      model: the trained keras model (any dtype policy; evaluated and exported as a float32
        copy with plain Keras layers).
      config: the run config; ``config.finish`` (optional) holds evaluate (bool),
        export_formats (comma-separated, '' for none) and demo_images (0 for none).
      keypoints: the run's :class:`mrpose_tf.keypoints.KeypointSpec`.
      workdir: the run directory.
      train_result: the dict ``Trainer.fit`` returned (train_seconds, images_per_second,
        step, epoch, stopped).
      val_records: validation records with the config's test boxes (detections or GT).
      train_records: training records for the mean pose (read from the config when None).
      run_started: ``time.time()`` at the start of the run, for 'total_seconds'.
      log: function taking a line of text.

    Returns:
      The metrics dict written to ``workdir/metrics.json``.

    Raises:
      ValueError: an MPII or 'random' config (PCK against boxes needs COCO-format ground
        truth), or a validation person whose image cannot be read.
    """
    from mrpose_tf.evaluation.runner import evaluate_model, predict_records

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
    evaluate = finish.get("evaluate", True)
    if evaluate and not config.test.use_gt_boxes:
        metrics.update(evaluate_model(model, config, val_records, keypoints, log=log))
    metrics.update(validation_metrics(predictions, gt_records, config, keypoints, train_records,
                                      coco=evaluate and config.test.use_gt_boxes))
    log(f"validation: AP {metrics.get('AP', float('nan')):.4f}, PCK@0.1 {metrics['PCK@0.1']:.4f} "
        f"(mean pose {metrics['mean_pose_PCK@0.1']:.4f})")

    formats = finish.get("export_formats", "")
    if formats:
        from mrpose_tf.export import export_model

        paths = export_model(model, config, keypoints, os.path.join(workdir, "export"), formats)
        metrics["export"] = {k: os.path.relpath(v, workdir) for k, v in paths.items()}
        log(f"exported {', '.join(sorted(paths))} to {os.path.join(workdir, 'export')}")
        if {"tflite_fp32", "tflite_int8"} <= set(paths):
            from mrpose_tf.export import compare_int8_fp32

            gt_config = config.copy_and_resolve_references()
            with gt_config.unlocked():
                gt_config.test.use_gt_boxes = True
            int8 = compare_int8_fp32(paths["tflite_fp32"], paths["tflite_int8"], gt_config,
                                     keypoints)
            metrics["int8_vs_fp32"] = int8
            log(f"TFLite int8 against fp32: mean OKS {int8['mean_oks']:.3f}, AP "
                f"{int8['ap_int8']:.4f} against {int8['ap_fp32']:.4f}")
    if int(finish.get("demo_images", 0)) > 0:
        from mrpose_tf.visualization import draw_people

        demo = os.path.join(workdir, "demo.png")
        draw_people(demo, predictions["keypoints"], gt_records, keypoints,
                    int(finish.demo_images))
        log(f"wrote {demo}")
    metrics["learning_curve"] = read_metrics(workdir)
    if metrics["learning_curve"]["train"]:
        from mrpose_tf.plots import plot_learning_curve

        picture = os.path.join(workdir, "learning_curve.png")
        plot_learning_curve(metrics["learning_curve"], picture,
                            title=f"{config.model.arch} on {config.dataset.name}")
        log(f"wrote {picture}")
    metrics["finish_seconds"] = time.time() - started
    if run_started is not None:
        metrics["total_seconds"] = time.time() - float(run_started)
    atomic_write_json(os.path.join(workdir, "metrics.json"), metrics)
    return metrics
