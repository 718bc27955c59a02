"""Choosing the distribution strategy, the mixed-precision policy and XLA for a run.

Every strategy runs the same custom loop (``strategy.run``), so one test on CPU (split into
logical devices) exercises the code path a multi-GPU run takes.
"""
import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def split_cpu(num_devices):
    """Splits the physical CPU into ``num_devices`` logical devices (before TF initialises).

    Args:
      num_devices: how many logical CPU devices to create (>= 1).

    Returns:
      The names of the logical CPU devices, e.g. ['/device:CPU:0', '/device:CPU:1'].
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is None or len(current) != num_devices:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
        except RuntimeError as error:
            raise RuntimeError(
                f"cannot split the CPU into {num_devices} logical devices: TensorFlow was "
                f"already initialised ({error}); call split_cpu before any TF op") from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _tpu_resolver():
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, tf.errors.NotFoundError, RuntimeError):
        return None


def make_strategy(name="auto", cpu_devices=0):
    """The tf.distribute strategy for a run.

    Args:
      name: 'auto' (TPU if one is reachable, else several GPUs -> mirrored, else one device),
        'one_device', 'mirrored' (all local GPUs, or the logical CPUs), 'multi_worker'
        (MultiWorkerMirroredStrategy across the hosts of TF_CONFIG) or 'tpu'.
      cpu_devices: if > 1 and there is no GPU, split the CPU into this many logical devices
        first (to run the multi-device code paths on one CPU).

    Returns:
      A ``tf.distribute.Strategy``.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; valid choices: {STRATEGIES}")
    gpus = tf.config.list_physical_devices("GPU")
    if cpu_devices > 1 and not gpus:
        split_cpu(cpu_devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment variable "
                             "(cluster and task of this worker)")
        json.loads(os.environ["TF_CONFIG"])  # a clear JSON error before TF's own
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name in ("tpu", "auto"):
        resolver = _tpu_resolver() if name == "tpu" or os.environ.get("TPU_NAME") else None
        if resolver is not None:
            return tf.distribute.TPUStrategy(resolver)
        if name == "tpu":
            raise ValueError("strategy 'tpu' requested but no TPU was found")
    devices = ([d.name for d in tf.config.list_logical_devices("GPU")]
               or [d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "mirrored" or (name == "auto" and len(devices) > 1 and gpus):
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(devices[0])


def device_kind(strategy):
    """'tpu', 'gpu' or 'cpu': where the replicas of ``strategy`` run."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    devices = strategy.extended.worker_devices
    return "gpu" if any("GPU" in d.upper() for d in devices) else "cpu"


def cpu_has_native_bfloat16(cpuinfo="/proc/cpuinfo"):
    """Whether the CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16 in its flags).

    Elsewhere TensorFlow emulates bfloat16 and mixed precision only costs accuracy. False
    where ``cpuinfo`` cannot be read (not Linux).
    """
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = {word for line in f if line.startswith("flags") for word in line.split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(name, strategy):
    """The Keras dtype policy name for ``name``; 'auto' picks by hardware.

    'auto': TPU -> mixed_bfloat16; GPU with compute capability >= 8 -> mixed_bfloat16, 7.x ->
    mixed_float16 (with loss scaling), older -> float32; CPU -> mixed_bfloat16 where it has
    native bfloat16 (:func:`cpu_has_native_bfloat16`), else float32.
    """
    if name not in PRECISIONS:
        raise ValueError(f"train.precision: unknown precision {name!r}; valid: {PRECISIONS}")
    if name != "auto":
        return name
    kind = device_kind(strategy)
    if kind == "tpu":
        return "mixed_bfloat16"
    if kind == "gpu":
        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0])
        major = details.get("compute_capability", (0, 0))[0]
        return "mixed_bfloat16" if major >= 8 else "mixed_float16" if major >= 7 else "float32"
    return "mixed_bfloat16" if cpu_has_native_bfloat16() else "float32"


def resolve_jit(flag, strategy):
    """Whether to XLA-compile the gradient computation: 'auto' -> on for GPU/TPU, off on CPU.

    On CPU, XLA is slower than graph mode for these networks (``mrpose-benchmark train --jit``).
    """
    if isinstance(flag, bool):
        return flag
    flag = str(flag).lower()
    if flag in ("true", "1", "yes", "on"):
        return True
    if flag in ("false", "0", "no", "off"):
        return False
    if flag != "auto":
        raise ValueError(f"train.jit_compile must be auto, true or false, got {flag!r}")
    return device_kind(strategy) in ("gpu", "tpu")
