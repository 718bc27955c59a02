"""Benchmarks, one subcommand (and one module) each; their latest tables are in docs/.

  mrpose-benchmark pipeline --annotations=FILE --images=DIR --json=OUT
  mrpose-benchmark inference --json=OUT [--naive_tflite]
  mrpose-benchmark stages [--arch mrfeanet2] [--quantization fp32]
  mrpose-benchmark train [--archs mrfeanet2] [--transposed_conv auto native]
  mrpose-benchmark adam [--archs mrfeanet2]
  mrpose-benchmark deconv [--shapes 3x2x2048x1024@32 ...]
  mrpose-benchmark keras --backend=jax --json=OUT   (e.g. on a GPU, no TensorFlow)

(``python scripts/benchmark.py ...`` and ``python -m mrpose_tf.benchmarks ...`` are the same.)
A benchmark module defines ``add(subparsers)``, which declares its flags and sets
``func=run``, and ``run(args)``; list it in ``MODULES``. Importing this package loads neither
TensorFlow nor Keras: the 'keras' subcommand chooses the Keras backend first.
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mrpose_tf.benchmarks import (adam, deconv, inference, keras_backends, pipeline,  # noqa: E402
                                  stages, train)

MODULES = (pipeline, train, adam, deconv, inference, stages, keras_backends)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mrpose-benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in MODULES:
        module.add(subparsers)
    args = parser.parse_args(argv)
    args.func(args)
