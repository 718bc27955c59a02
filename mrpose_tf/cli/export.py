"""mrpose-export: a pose model as SavedModel (TF Serving), TFLite fp32 / fp16 / int8, and
optionally a bfloat16 SavedModel and an OpenVINO IR.

Examples:
  python scripts/export.py --checkpoint=runs/coco_mrfeanet2_r50 --output_dir=exported
  mrpose-export --checkpoint=runs/coco_mrfeanet2_r50 --output_dir=exported \\
      --formats=saved_model,openvino     # pip install -e '.[openvino]'
  python scripts/export.py --config=configs/coco/simple_baseline_resnet50_256x192.py \\
      --checkpoint=runs/sb/best/ckpt-1000 --output_dir=exported --formats=tflite_int8
  python scripts/export.py ... --compare_int8   # mean OKS int8 vs fp32 and AP of each
  python scripts/export.py ... --formats=saved_model,saved_model_bf16 --compare_bf16

Without --checkpoint the model has random weights (for trying the pipeline and timing it).
int8 is calibrated on crops of --representative_data (a .npy of preprocessed crops) or, by
default, on people of the config's validation set (--config.export.calibration=synthetic:
rendered figures instead). The keypoint set is the run's (keypoints.json), written beside the
exported files.
"""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mrpose_tf.cli import run_main  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/...). "
                                "Default: the config.json of the --checkpoint run.")
flags.DEFINE_string("checkpoint", None, "Run directory, checkpoint prefix, *.weights.h5 or "
                    "*.keras file; none: random weights.")
flags.DEFINE_string("output_dir", None, "Where to write the exported files.", required=True)
flags.DEFINE_list("formats", ["saved_model", "tflite_fp32", "tflite_fp16", "tflite_int8"],
                  "Comma-separated subset of saved_model, saved_model_bf16 (bfloat16 inside, "
                  "for CPUs with native bfloat16), tflite_fp32, tflite_fp16, tflite_int8, "
                  "openvino (the IR, needs the openvino extra).")
flags.DEFINE_string("representative_data", None, "A .npy of (N, H, W, 3) preprocessed crops "
                    "for int8 calibration (default: crops from the validation set).")
flags.DEFINE_boolean("winograd", True, "Float TFLite models: Winograd form of the transposed "
                     "convs where it saves compute (faster; 2.25x those layers' weights). "
                     "--nowinograd: the direct sub-pixel form, smaller files.")
flags.DEFINE_boolean("compare_int8", False, "After exporting, report the mean OKS between the "
                     "int8 and fp32 keypoints and the AP of each on the validation set.")
flags.DEFINE_boolean("compare_bf16", False, "After exporting, report the mean OKS between the "
                     "bfloat16 and float32 SavedModels' keypoints and the AP of each on the "
                     "validation set.")
FLAGS = flags.FLAGS


def load_model(config, checkpoint):
    """(model, config, keypoint set) from a checkpoint, or the config's with random weights."""
    from mrpose_tf.checkpoints import (keypoint_set_from_config, load_model_from_checkpoint,
                                       run_keypoint_set)
    from mrpose_tf.config import model_from_config

    if checkpoint:
        model, config = load_model_from_checkpoint(checkpoint, config)
        return model, config, run_keypoint_set(checkpoint, config)
    if config is None:
        raise app.UsageError("give --checkpoint and/or --config")
    logging.warning("no --checkpoint: exporting %s with random weights", config.model.arch)
    model = model_from_config(config)
    return model, config, keypoint_set_from_config(config)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import numpy as np

    from mrpose_tf.export import compare_bf16_fp32, compare_int8_fp32, export_model

    from mrpose_tf.config import resolve_unset_fields

    for flag, needed in (("compare_int8", {"tflite_fp32", "tflite_int8"}),
                         ("compare_bf16", {"saved_model", "saved_model_bf16"})):
        if FLAGS[flag].value and not needed <= set(FLAGS.formats):
            raise app.UsageError(f"--{flag} needs {' and '.join(sorted(needed))} in --formats")
    config = None if FLAGS.config is None else resolve_unset_fields(FLAGS.config)
    model, config, keypoints = load_model(config, FLAGS.checkpoint)
    crops = np.load(FLAGS.representative_data) if FLAGS.representative_data else None
    paths = export_model(model, config, keypoints, FLAGS.output_dir, FLAGS.formats, crops,
                         winograd=FLAGS.winograd)
    for name, path in paths.items():
        print(f"{name:<12} {path}")
    if FLAGS.compare_int8:
        report = compare_int8_fp32(paths["tflite_fp32"], paths["tflite_int8"], config,
                                   keypoints)
        print(json.dumps(report, indent=1))
    if FLAGS.compare_bf16:
        report = compare_bf16_fp32(paths["saved_model"], paths["saved_model_bf16"], config,
                                   keypoints)
        print(json.dumps(report, indent=1))


def run():
    """The console script's entry point."""
    run_main(main, __name__)


if __name__ == "__main__":
    run()
