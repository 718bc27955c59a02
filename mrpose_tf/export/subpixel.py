"""Export-time rewrite of the 4x4 stride-2 transposed convolutions into sub-pixel convolutions.

A ``Conv2DTranspose(c, 4, strides=2, padding='same')`` scatters every input pixel into a
4x4 patch. Each output phase (row parity py, column parity px) only ever receives two
kernel rows and two kernel columns, so it equals a 2x2 'valid' convolution of the input
padded by one pixel; the four phases interleave with ``depth_to_space``. Same MACs, same
function (to float rounding), but made of plain convolutions that every TFLite delegate
runs on its fast path (XNNPACK is slow on large TRANSPOSE_CONVs and drops them to the
reference kernel under a dynamic batch).

Layout chosen for XNNPACK (fp32 and int8 alike): each phase pads the input by exactly the
pixels it reads (PAD, which XNNPACK fuses into the next convolution; no STRIDED_SLICE), and
a following BatchNorm and ReLU are folded into every phase convolution (CONV_2D with bias
and fused ReLU). A separate int8 RELU between CONCATENATION and DEPTH_TO_SPACE would change
the quantization scale, which XNNPACK does not support: it would split the delegate.

The training graph stays the paper's; :func:`inference_model` builds the rewritten copy.
"""
import keras
import numpy as np
from keras import layers, ops

# Output o = 2 m + p of a k=4, s=2, 'same' transposed conv receives input m - 1 + j (j = 0, 1,
# in the input padded by one pixel on each side) through kernel tap _PHASE_TAPS[p][j].
_PHASE_TAPS = ((3, 1), (2, 0))


def subpixel_kernels(transposed_kernel):
    """The four 2x2 phase kernels of a k=4, s=2 transposed-conv kernel.

    Args:
      transposed_kernel: (4, 4, C_out, C_in), the Keras ``Conv2DTranspose`` layout.

    Returns:
      (4, 2, 2, C_in, C_out) array: phase ``2 py + px`` first, ``Conv2D`` kernel layout.
    """
    kernel = np.asarray(transposed_kernel)
    if kernel.shape[:2] != (4, 4):
        raise ValueError(f"expected a 4x4 transposed-conv kernel, got shape {kernel.shape}")
    phases = []
    for rows in _PHASE_TAPS:
        for cols in _PHASE_TAPS:
            phase = kernel[np.ix_(rows, cols)]                  # (2, 2, C_out, C_in)
            phases.append(np.transpose(phase, (0, 1, 3, 2)))
    return np.stack(phases)


class SubPixelDeconv(layers.Layer):
    """A k=4, s=2, 'same' transposed conv (optionally with a bias and a ReLU) as four 2x2 convs.

    Args:
      phase_kernels: (4, 2, 2, C_in, C_out) from :func:`subpixel_kernels`.
      bias: (C_out,) or None.
      relu: apply a ReLU (to every phase, before the interleave: the same function).
    """

    def __init__(self, phase_kernels, bias=None, relu=False, **kwargs):
        super().__init__(**kwargs)
        phase_kernels = np.asarray(phase_kernels, np.float32)
        self.filters = phase_kernels.shape[-1]
        self.relu = bool(relu)
        # One weight per phase: a slice of a stacked weight would reach the converter as a
        # computed (not constant) filter and break int8 quantization.
        self.phase_kernels = [
            self.add_weight(shape=kernel.shape, initializer=keras.initializers.Constant(kernel),
                            trainable=False, name=f"phase_kernel_{i}")
            for i, kernel in enumerate(phase_kernels)]
        self.bias = None if bias is None else self.add_weight(
            shape=(self.filters,), initializer=keras.initializers.Constant(np.asarray(bias)),
            trainable=False, name="bias")

    def call(self, x):
        phases = []
        for py in (0, 1):
            for px in (0, 1):
                # Phase (py, px) reads rows m - 1 + py .. m + py: pad 1 - py above, py below.
                window = ops.pad(x, [[0, 0], [1 - py, py], [1 - px, px], [0, 0]])
                y = ops.conv(window, self.phase_kernels[2 * py + px], padding="valid")
                y = y if self.bias is None else y + self.bias
                phases.append(ops.relu(y) if self.relu else y)
        # Channel block 2 py + px of depth_to_space lands at (2 m + py, 2 n + px).
        return ops.depth_to_space(ops.concatenate(phases, axis=-1), 2)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)


def _consumer_counts(model):
    counts = {}
    for layer in model.operations:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                counts[id(tensor)] = counts.get(id(tensor), 0) + 1
    return counts


def _batch_norm_fold(bn):
    """(scale, shift) with bn(x) == x * scale + shift in inference mode."""
    gamma = bn.gamma.numpy() if bn.scale else 1.0
    beta = bn.beta.numpy() if bn.center else 0.0
    scale = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    return scale, beta - bn.moving_mean.numpy() * scale


def _is_subpixel_candidate(layer):
    return (isinstance(layer, layers.Conv2DTranspose) and tuple(layer.kernel_size) == (4, 4)
            and tuple(layer.strides) == (2, 2) and layer.padding == "same"
            and tuple(layer.dilation_rate) == (1, 1) and layer.data_format == "channels_last"
            and layer.activation is keras.activations.linear)


def _is_plain_relu(layer):
    return (isinstance(layer, layers.ReLU) and layer.max_value is None
            and float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0)


def _sole_consumer(model, consumers, tensor, accept):
    """The layer that alone consumes ``tensor`` (once, unshared) if ``accept(layer)``."""
    if consumers.get(id(tensor)) != 1 or any(t is tensor for t in model.outputs):
        return None
    for layer in model.operations:
        if (accept(layer) and len(layer._inbound_nodes) == 1
                and any(t is tensor for t in layer._inbound_nodes[0].input_tensors)):
            return layer
    return None


def _foldable_followers(model):
    """{id(transposed conv): (its BatchNormalization or None, its ReLU or None)}.

    A BatchNormalization that alone consumes a candidate transposed conv, then a ReLU that
    alone consumes that (or the conv itself), are folded into the sub-pixel layer.
    """
    consumers = _consumer_counts(model)
    followers = {}
    for conv in model.operations:
        if not _is_subpixel_candidate(conv) or len(conv._inbound_nodes) != 1:
            continue
        bn = _sole_consumer(model, consumers, conv.output,
                            lambda l: isinstance(l, layers.BatchNormalization))
        relu = _sole_consumer(model, consumers, (bn or conv).output, _is_plain_relu)
        followers[id(conv)] = (bn, relu)
    return followers


def inference_model(model):
    """An inference-only copy of ``model`` with every k4/s2 transposed conv made sub-pixel.

    A BatchNormalization that is the only consumer of such a transposed conv is folded into
    its kernels and bias, and a ReLU that is the only consumer of the two into its phase
    convolutions. Every other layer is shared with ``model`` (same weights). The result
    computes the same function as ``model`` in inference mode (to ~1e-6).

    Args:
      model: a functional ``keras.Model`` from :func:`mrpose_tf.build_model`.

    Returns:
      A functional ``keras.Model`` named ``{model.name}_inference``.
    """
    followers = _foldable_followers(model)
    absorbed = {id(layer) for pair in followers.values() for layer in pair if layer is not None}

    def call(layer, *args, **kwargs):
        if id(layer) in absorbed:
            return args[0]               # already applied inside the sub-pixel conv
        if not _is_subpixel_candidate(layer):
            return layer(*args, **kwargs)
        kernel = layer.kernel.numpy()
        bias = layer.bias.numpy() if layer.use_bias else None
        bn, relu = followers.get(id(layer), (None, None))
        if bn is not None:
            scale, shift = _batch_norm_fold(bn)
            kernel = kernel * scale[None, None, :, None]
            bias = shift if bias is None else bias * scale + shift
        return SubPixelDeconv(subpixel_kernels(kernel), bias, relu=relu is not None,
                              name=f"{layer.name}_subpixel")(args[0])

    rewritten = keras.models.clone_model(model, clone_function=lambda layer: layer,
                                         call_function=call)
    return keras.Model(rewritten.input, rewritten.output, name=f"{model.name}_inference")
