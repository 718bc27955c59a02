"""Benchmarks, one subcommand (and one module) each; their latest tables are in docs/.

  mrpose-benchmark pipeline --annotations=FILE --images=DIR --json=OUT
  mrpose-benchmark inference --json=OUT [--naive_tflite]
  mrpose-benchmark stages [--arch=mrfeanet2] [--quantization=fp32]
  mrpose-benchmark train [--archs=mrfeanet2] [--transposed_conv=auto,native]
  mrpose-benchmark adam [--archs=mrfeanet2]
  mrpose-benchmark deconv [--shapes=3x2x2048x1024@32,...]
  mrpose-benchmark keras --backend=jax --json=OUT   (e.g. on a GPU, no TensorFlow)

``mrpose-benchmark SUBCOMMAND --help`` lists a subcommand's flags (absl: ``--flag=value``,
booleans ``--flag``/``--noflag``, lists comma-separated). ``python scripts/benchmark.py``
and ``python -m mrpose_tf.benchmarks`` are the same. A benchmark module defines ``NAME``,
``HELP``, ``define_flags(fv)`` (its absl flags in its own FlagValues) and ``run(args)``;
list it in ``MODULES``. Importing this package loads neither TensorFlow nor Keras: the
'keras' subcommand chooses the Keras backend first.
"""
import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from mrpose_tf.cli import HELP_FLAGS, parse_flags  # noqa: E402
from mrpose_tf.benchmarks import (adam, deconv, inference, keras_backends, pipeline,  # noqa: E402
                                  stages, train)

MODULES = (pipeline, train, adam, deconv, inference, stages, keras_backends)


def _usage():
    lines = [__doc__.split("\n\n")[0], "", "subcommands:"]
    lines += [f"  {module.NAME:<10} {module.HELP}" for module in MODULES]
    return "\n".join(lines)


def main(argv=None):
    """Parses ``[PROG] SUBCOMMAND --flags...`` (``argv`` without the program) and runs it.

    Exits with status 2 (message on stderr) on an unknown subcommand or a bad flag.
    """
    argv = list(sys.argv if argv is None else ["mrpose-benchmark"] + list(argv))
    modules = {module.NAME: module for module in MODULES}
    if len(argv) < 2 or argv[1] in HELP_FLAGS:
        print(_usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    if argv[1] not in modules:
        sys.exit(f"mrpose-benchmark: unknown subcommand {argv[1]!r}\n\n{_usage()}")
    module = modules[argv[1]]
    fv = flags.FlagValues()
    module.define_flags(fv)
    prog = f"mrpose-benchmark {module.NAME}"
    parse_flags(fv, prog, f"{prog}: {module.HELP}", argv[2:])
    module.run(types.SimpleNamespace(**fv.flag_values_dict()))
