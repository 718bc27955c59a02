"""What several benchmarks share: sizes, the machine's ceilings, model costs, the peer."""
import os

INPUT_SIZE, HEATMAP_SIZE = (256, 192), (64, 48)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COCO_SAMPLE = os.path.join(REPO_ROOT, "..", "shared", "data", "coco_sample")
ARCHS = ("simple_baseline", "mrfeanet2")


def define_list(fv, module_name, name, default, help_text, choices=None, parse=str, length=None):
    """A comma-separated list flag in ``fv`` (absl), its items parsed by ``parse``.

    ``module_name``: the defining module (``--help`` groups flags by it); ``choices``: the
    allowed items; ``length``: the exact number of items.
    """
    from absl import flags

    class Parser(flags.ListParser):
        def parse(self, argument):
            return [parse(item) for item in super().parse(argument)]

    flags.DEFINE(Parser(), name, list(default), help_text, flag_values=fv,
                 serializer=flags.CsvListSerializer(","), module_name=module_name)
    if choices is not None:
        flags.register_validator(name, lambda items: set(items) <= set(choices),
                                 f"--{name}: each item must be one of {', '.join(choices)}",
                                 flag_values=fv)
    if length is not None:
        flags.register_validator(name, lambda items: len(items) == length,
                                 f"--{name} takes {length} comma-separated values",
                                 flag_values=fv)


def model_macs(arch, winograd=None, input_size=INPUT_SIZE):
    """Multiply-accumulates of one forward pass (``count_flops`` / 2), 256x192 by default.

    ``winograd`` (True/False) counts the TFLite inference model of that form instead of the
    training graph (False: the direct sub-pixel form, the same count).
    """
    import keras

    from mrpose_tf.export import inference_model
    from mrpose_tf.models import build_model
    from mrpose_tf.models.complexity import count_flops

    model = build_model(arch, "resnet50", 17, input_size)
    if winograd is not None:
        model = inference_model(model, winograd=winograd)
    macs = count_flops(model) / 2
    keras.utils.clear_session()
    return macs


def gemm_rate(dtype, size=2048, runs=5):
    """Best multiply-accumulates/s of a size^3 TF matmul in ``dtype`` (the GEMM ceiling)."""
    import time

    import tensorflow as tf

    a = tf.cast(tf.random.stateless_normal((size, size), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_normal((size, size), seed=(3, 4)), dtype)
    matmul = tf.function(lambda a, b: tf.matmul(a, b))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return size ** 3 / best


def _convolution_stacks():
    """Yields (keras model, (4, 32, 24, C) float32 inputs, MACs of one input through the
    model) for two stacks of four convolutions at ResNet-like sizes: 1x1 1024->1024 and
    3x3 256->256 at 32x24."""
    import keras
    import numpy as np

    layers = 4
    for kernel, channels in ((1, 1024), (3, 256)):
        inputs = keras.Input((32, 24, channels))
        x = inputs
        for _ in range(layers):
            x = keras.layers.Conv2D(channels, kernel, padding="same")(x)
        crops = np.random.default_rng(0).normal(0, 1, (4, 32, 24, channels)).astype(np.float32)
        try:
            yield (keras.Model(inputs, x), crops,
                   layers * 32 * 24 * kernel * kernel * channels * channels)
        finally:
            keras.utils.clear_session()


def xnnpack_rate(quantization, threads, runs=20):
    """Best multiply-accumulates/s of XNNPACK here on plain convolutions (the ceiling).

    The faster of :func:`_convolution_stacks` as TFLite models in ``quantization`` ('fp32',
    'int8', ...): its median rate is the ceiling for a whole model.
    """
    from mrpose_tf.benchmarks.timing import timed
    from mrpose_tf.export.tflite import convert_all, litert_interpreter, run_tflite

    best = 0.0
    for model, crops, macs in _convolution_stacks():
        flatbuffer = convert_all(model, [quantization], crops)[quantization]
        interpreter = litert_interpreter(flatbuffer, num_threads=threads)
        best = max(best, macs / (timed(lambda: run_tflite(interpreter, crops[:1]), runs, 3)
                                 / 1e3))
    return best


def openvino_int8_rate(threads, runs=20):
    """The same ceiling as :func:`xnnpack_rate` for OpenVINO int8 (``nncf.quantize`` of the
    same convolution stacks, calibrated on their 4 crops), in multiply-accumulates/s.

    Their ratio bounds what any int8 TFLite model can reach against OpenVINO int8 on this CPU
    (both run the same convolutions; only the kernels differ).
    """
    import nncf

    from mrpose_tf.benchmarks.timing import timed
    from mrpose_tf.export.openvino import compile_openvino, convert_openvino, run_openvino

    best = 0.0
    for model, crops, macs in _convolution_stacks():
        quantized = nncf.quantize(convert_openvino(model, subpixel=False),
                                  nncf.Dataset([crop[None] for crop in crops]),
                                  subset_size=len(crops))
        compiled = compile_openvino(quantized, threads)
        best = max(best, macs / (timed(lambda: run_openvino(compiled, crops[:1]), runs, 3)
                                 / 1e3))
    return best


def calibrate_batch_norm(model, crops):
    """Set every BatchNormalization's moving statistics to its batch statistics on ``crops``.

    A random-weight network keeps the initial statistics (mean 0, variance 1), so its branches
    end up orders of magnitude apart, unlike a trained one; int8 then sees scales that no
    trained model has (an MRFeaNet2 int8 ADD of two such branches falls outside XNNPACK).
    """
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(crops, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


def torch_peer(arch):
    """(the same network in plain PyTorch, torch), or (None, None) without torch."""
    try:
        import torch

        from mrpose_tf.benchmarks.torch_peer import PoseNet
    except ImportError:
        return None, None
    return PoseNet(arch, 50, "pytorch", 17), torch
