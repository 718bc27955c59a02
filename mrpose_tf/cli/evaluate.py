"""Evaluate a trained model: COCO keypoint AP (OKS-NMS, pycocotools) or MPII PCKh.

Examples:
  python scripts/evaluate.py --checkpoint=runs/coco_mrfeanet2_r50        # config.json beside
  python scripts/evaluate.py --config=configs/coco/simple_baseline_resnet50_256x192.py \\
      --checkpoint=runs/sb/best/ckpt-1000 --use_gt_boxes --noflip_test
  python scripts/evaluate.py --config=configs/mpii/mrfeanet1_resnet50_256x256.py \\
      --saved_model=export/saved_model

Writes ``keypoints_results.json`` (COCO) and ``metrics.json`` into ``--output_dir`` (default:
an ``eval`` folder beside the checkpoint) and prints the paper's table layout.
``--error_analysis`` adds where the keypoints go wrong (``errors.json``): PCK at three
tolerances, left/right swaps per joint and the AP ceiling of the heatmap resolution.
"""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mrpose_tf.cli import run_main  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/...). "
                                "Default: the config.json of the --checkpoint run.")
flags.DEFINE_string("checkpoint", None, "Run directory, checkpoint prefix, *.weights.h5 or "
                    "*.keras file.")
flags.DEFINE_string("saved_model", None, "SavedModel directory with a crops -> heatmaps "
                    "signature (instead of --checkpoint).")
flags.DEFINE_boolean("use_gt_boxes", None, "Ground-truth person boxes (default: the config's "
                     "test.use_gt_boxes).")
flags.DEFINE_string("detections", None, "COCO detection-results JSON of person boxes "
                    "(overrides test.detections; relative paths are taken as given).")
flags.DEFINE_boolean("flip_test", None, "Flip test (default: the config's test.flip_test).")
flags.DEFINE_string("output_dir", None, "Where to write the results and metrics JSON.")
flags.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy of the evaluation (not the run's train.strategy: a "
                  "run trained on many hosts is often evaluated on one).")
flags.DEFINE_integer("batch_size", None, "Crops per batch (default: test.batch_size).")
flags.DEFINE_boolean("error_analysis", False, "Also print and write (errors.json), on the "
                     "ground-truth boxes: PCK at 0.1/0.05/0.025 of the box side, left/right "
                     "swaps per joint and, for COCO sets, the AP of the decoded targets (the "
                     "heatmap resolution's ceiling).")
FLAGS = flags.FLAGS


def load_model_and_config(config, checkpoint, saved_model, strategy):
    """(model, config, keypoint set) from the flags; the model is built in ``strategy``'s scope.

    The keypoint set is the one saved with the run or the export.
    """
    from mrpose_tf.checkpoints import load_model_from_checkpoint, run_keypoint_set
    from mrpose_tf.predictor import (load_saved_model_heatmaps, saved_model_export_info,
                                     saved_model_keypoint_set)

    if bool(checkpoint) == bool(saved_model):
        raise app.UsageError("give exactly one of --checkpoint and --saved_model")
    if saved_model:
        if config is None:
            raise app.UsageError("--saved_model needs --config (dataset and test settings)")
        model, _ = load_saved_model_heatmaps(saved_model, preprocessed=True)
        info = saved_model_export_info(saved_model) or {}
        if "input_preprocessing" in info:  # the pipeline preprocesses as the export expects
            config = config.copy_and_resolve_references()
            with config.unlocked():
                config.model.input_preprocessing = info["input_preprocessing"]
        return model, config, saved_model_keypoint_set(saved_model)
    with strategy.scope():
        model, config = load_model_from_checkpoint(checkpoint, config)
    return model, config, run_keypoint_set(checkpoint, config)


def default_output_dir(checkpoint, saved_model):
    source = os.path.abspath(checkpoint or saved_model)
    base = source if os.path.isdir(source) else os.path.dirname(source)
    return os.path.join(base, "eval")


def evaluate_from_flags():
    """Runs the evaluation the flags describe; returns the metrics dict."""
    from mrpose_tf.config import resolve_unset_fields
    from mrpose_tf.data.pipeline import read_split
    from mrpose_tf.evaluation.errors import analyze_errors, format_error_table
    from mrpose_tf.evaluation.runner import evaluate_model, format_metrics_table
    from mrpose_tf.training.strategy import make_strategy

    config = None if FLAGS.config is None else resolve_unset_fields(FLAGS.config)
    strategy = make_strategy(FLAGS.strategy)
    model, config, keypoints = load_model_and_config(config, FLAGS.checkpoint, FLAGS.saved_model,
                                                     strategy)
    config = config.copy_and_resolve_references()
    with config.unlocked():
        if FLAGS.use_gt_boxes is not None:
            config.test.use_gt_boxes = FLAGS.use_gt_boxes
        if FLAGS.detections:
            config.test.use_gt_boxes = False
            config.test.detections = os.path.abspath(FLAGS.detections)
        if FLAGS.batch_size:
            config.test.batch_size = FLAGS.batch_size
    output_dir = FLAGS.output_dir or default_output_dir(FLAGS.checkpoint, FLAGS.saved_model)
    boxes = "ground-truth boxes" if config.test.use_gt_boxes or config.dataset.name == "mpii" \
        else f"detections {config.test.detections}"
    flip = config.test.flip_test if FLAGS.flip_test is None else FLAGS.flip_test
    print(f"evaluating {config.model.arch}/{config.model.backbone} on {config.dataset.name} "
          f"({boxes}, flip test {'on' if flip else 'off'})")
    records, dataset_keypoints = read_split(config, "val")
    if dataset_keypoints.num_joints != keypoints.num_joints:
        raise app.UsageError(f"the model has {keypoints.num_joints} keypoints "
                             f"({keypoints.name}) but the validation annotations "
                             f"{_val_source(config)} have {dataset_keypoints.num_joints}")
    metrics = evaluate_model(model, config, records, keypoints, flip_test=flip,
                             output_dir=output_dir, progress=True)
    print(format_metrics_table(metrics, f"{config.model.arch}_{config.model.backbone}"))
    if FLAGS.error_analysis:  # on the ground-truth boxes, whatever boxes were evaluated
        truth = config.copy_and_resolve_references()
        with truth.unlocked():
            truth.test.use_gt_boxes = True
        annotations = None if config.dataset.name == "mpii" else os.path.join(
            config.dataset.root, config.dataset.val_annotations)
        errors = analyze_errors(model, truth, read_split(truth, "val")[0], keypoints, flip,
                                annotations)
        print(format_error_table(errors))
        with open(os.path.join(output_dir, "errors.json"), "w") as f:
            json.dump(errors, f, indent=1)
    print(f"results and metrics written to {output_dir}")
    return metrics


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    evaluate_from_flags()


def _val_source(config):
    """The validation split's file (or TFDS build), for messages."""
    if config.dataset.get("tfds_name"):
        return f"of TFDS build {config.dataset.tfds_name}"
    return os.path.join(config.dataset.root, config.dataset.val_annotations)


def run():
    """The console script's entry point."""
    run_main(main, __name__)


if __name__ == "__main__":
    run()
