"""Train a pose network of the paper; rerunning the same command resumes the run.

  python scripts/train.py --config=configs/coco/simple_baseline_resnet50_256x192.py \
      --workdir=runs/sb50 --config.train.batch_size=32 --mixed_precision=mixed_bfloat16

Multi-worker: set TF_CONFIG on every host and pass --strategy=multi_worker. A smoke run
without data: --config.dataset.name=random. Exit status 3 when the loss diverged.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/...).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, config.json, TensorBoard.")
flags.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_enum("mixed_precision", "auto",
                  ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
                  "Keras dtype policy (auto: the config's train.precision; if that is auto too, "
                  "bfloat16 on TPU/Ampere+, float16 on Volta/Turing, float32 on CPU).")
flags.DEFINE_string("jit_compile", "auto", "XLA for the gradient step: auto (on for GPU/TPU, "
                    "off on CPU), true or false.")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (tests "
                     "of the multi-device code paths without GPUs).")
flags.DEFINE_boolean("evaluate", True, "Run the paper's evaluation (AP / PCKh) at validation.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # TF's per-save INFO lines
    from mrpose_tf.training import (Trainer, TrainingDiverged, make_strategy, resolve_jit,
                                    resolve_precision)
    from mrpose_tf.data.synthetic import prepare_from_config
    from mrpose_tf.training.inputs import training_data_from_config
    from mrpose_tf.training.report import finish_run
    from mrpose_tf.config import resolve_unset_fields

    run_started = time.time()
    config = resolve_unset_fields(FLAGS.config)
    strategy = make_strategy(FLAGS.strategy, cpu_devices=FLAGS.cpu_devices)
    precision = resolve_precision(
        config.train.precision if FLAGS.mixed_precision == "auto" else FLAGS.mixed_precision,
        strategy)
    jit = resolve_jit(FLAGS.jit_compile, strategy)
    prepare_from_config(config)  # renders the synthetic set when the config asks and it is absent
    data = training_data_from_config(config)
    print(f"{config.model.arch}/{config.model.backbone} on {config.dataset.name}: "
          f"{strategy.num_replicas_in_sync} replica(s) ({type(strategy).__name__}), {precision}, "
          f"jit {'on' if jit else 'off'}, global batch {config.train.batch_size}, "
          f"{data.steps_per_epoch} steps/epoch", flush=True)
    trainer = Trainer(config, FLAGS.workdir, strategy, data.steps_per_epoch, precision, jit,
                      log=lambda line: print(line, flush=True), keypoints=data.keypoints)
    evaluate_fn = None
    if FLAGS.evaluate and data.val_records is not None:
        from mrpose_tf.evaluation.runner import evaluate_model

        def evaluate_fn(model):
            return dict(evaluate_model(model, config, data.val_records, data.keypoints))
    try:
        result = trainer.fit(data.train_fn, data.val_fn, evaluate_fn)
    except TrainingDiverged as error:
        print(f"training diverged: {error}", file=sys.stderr, flush=True)
        sys.exit(3)
    print(f"stopped ({result['stopped']}) at step {result['step']} "
          f"(epoch {result['epoch']:.2f}) after {result['train_seconds'] / 60:.1f} min, "
          f"{result['images_per_second']:.1f} img/s, last loss {result['last_loss']:.6f}",
          flush=True)
    if config.get("finish"):  # evaluate, export and draw (the quickstart's outputs)
        finish_run(trainer.model, config, data.keypoints, FLAGS.workdir, result, data.val_records,
                   run_started=run_started, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    app.run(main)
