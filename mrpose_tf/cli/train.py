"""mrpose-train: train a pose network of the paper; rerunning the same command resumes the run.

  mrpose-train --config=configs/coco/simple_baseline_resnet50_256x192.py --workdir=runs/sb50 \\
      --config.train.batch_size=32 --config.train.precision=mixed_bfloat16

(``python scripts/train.py`` is the same command.) Every setting is a config field that a
``--config.FIELD=VALUE`` flag overrides: precision, strategy and XLA are
``config.train.precision`` / ``strategy`` / ``jit_compile`` ('auto' picks by hardware).
Multi-worker: set TF_CONFIG on every host and pass ``--config.train.strategy=multi_worker``.
A smoke run without data: ``--config.dataset.name=random``. Exit status 3 when the loss
diverged (the last good checkpoint stays intact).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mrpose_tf.cli import run_main  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/...); every "
                                "field can be overridden with --config.FIELD=VALUE.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, config.json, keypoints.json, "
                    "metrics.jsonl, TensorBoard events.")
flags.DEFINE_boolean("evaluate", True, "Run the paper's evaluation (AP / PCKh) at validation.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # TF's per-save INFO lines
    from mrpose_tf.training import TrainingDiverged
    from mrpose_tf.training.run import train

    try:
        train(FLAGS.config, FLAGS.workdir, evaluate=FLAGS.evaluate,
              log=lambda line: print(line, flush=True))
    except TrainingDiverged as error:
        print(f"training diverged: {error}", file=sys.stderr, flush=True)
        sys.exit(3)


def run():
    """The console script's entry point."""
    run_main(main, __name__)


if __name__ == "__main__":
    run()
