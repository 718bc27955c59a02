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

For float models there is a cheaper exact form, :class:`WinogradDeconv`: the Winograd
F(2, 2) algorithm on every phase, with the four phases sharing one input transform. It
needs 36 instead of 64 multiply-accumulates per 2x2 input pixels (0.5625x) at the price of
2.25x the weights and ~130 small ops per layer (transforms, GEMMs, sums). The sums of
products widen the value range, so int8 models keep the direct sub-pixel form.

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


class _Upsampling2x(layers.Layer):
    """What the rewrites share: the 2x output shape and their multiply-accumulate count."""

    MACS_PER_PIXEL_AND_CHANNEL_PAIR = None   # per input pixel, input and output channel

    def build(self, input_shape):
        self.input_hwc = tuple(input_shape[1:])  # for multiply_accumulates

    def multiply_accumulates(self):
        """Per image (read by :func:`mrpose_tf.models.complexity.count_flops`)."""
        height, width, channels = self.input_hwc
        return self.MACS_PER_PIXEL_AND_CHANNEL_PAIR * height * width * channels * self.filters

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)


class SubPixelDeconv(_Upsampling2x):
    """A k=4, s=2, 'same' transposed conv (optionally with a bias and a ReLU) as four 2x2 convs.

    Args:
      phase_kernels: (4, 2, 2, C_in, C_out) from :func:`subpixel_kernels`.
      bias: (C_out,) or None.
      relu: apply a ReLU (to every phase, before the interleave: the same function).
    """

    MACS_PER_PIXEL_AND_CHANNEL_PAIR = 16   # 4 phases x 2x2 taps, as the transposed conv

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



# Winograd F(2, 2) for both phases of one axis at once. Along an axis, the four outputs
# 4t .. 4t + 3 of a k=4, s=2, 'same' transposed conv with taps w0..w3 read the inputs
# x[2t - 1] .. x[2t + 2] (the window). Five components of the window (_WINDOW_TO_COMPONENT)
# times six combinations of the taps (_TAPS_TO_PRODUCT) give six products; each output is
# the sum of two of them (_PRODUCTS_TO_OUTPUT):
#   y[4t]     = w3 x[2t-1] + w1 x[2t]   = w3 (x[2t-1] - x[2t]) + (w3 + w1) x[2t]
#   y[4t + 2] = w3 x[2t] + w1 x[2t+1]   = (w3 + w1) x[2t] + w1 (x[2t+1] - x[2t])
#   y[4t + 1] = w2 x[2t] + w0 x[2t+1]   = -w2 (x[2t+1] - x[2t]) + (w2 + w0) x[2t+1]
#   y[4t + 3] = w2 x[2t+1] + w0 x[2t+2] = (w2 + w0) x[2t+1] + w0 (x[2t+2] - x[2t+1])
# In 2-D the product (p, q) multiplies component (_PRODUCT_COMPONENT[p], [q]) of the 4x4
# window by the taps combined by rows p and q: 36 GEMMs instead of the 64 of four 2x2 convs.
_WINDOW_TO_COMPONENT = np.array([[1, -1, 0, 0], [0, 1, 0, 0], [0, -1, 1, 0], [0, 0, 1, 0],
                                 [0, 0, -1, 1]])
_TAPS_TO_PRODUCT = np.array([[0, 0, 0, 1], [0, 1, 0, 1], [0, 1, 0, 0], [0, 0, -1, 0],
                             [1, 0, 1, 0], [1, 0, 0, 0]])
_PRODUCT_COMPONENT = (0, 1, 2, 2, 3, 4)
_PRODUCTS_TO_OUTPUT = ((0, 1), (3, 4), (1, 2), (4, 5))   # output 4t + i = sum of two products
# Products 1 and 4 enter every output exactly once: the bias goes into (1|4, 1|4).
_BIAS_PRODUCTS = (1, 4)


def winograd_kernels(transposed_kernel):
    """The 36 product kernels of a k=4, s=2 transposed-conv kernel (see :class:`WinogradDeconv`).

    Args:
      transposed_kernel: (4, 4, C_out, C_in), the Keras ``Conv2DTranspose`` layout.

    Returns:
      (6, 6, C_in, C_out) float64 array: ``[p, q]`` combines the taps by rows p and q of
      ``_TAPS_TO_PRODUCT``.
    """
    kernel = np.asarray(transposed_kernel, np.float64)
    if kernel.shape[:2] != (4, 4):
        raise ValueError(f"expected a 4x4 transposed-conv kernel, got shape {kernel.shape}")
    return np.einsum("pa,qb,aboi->pqio", _TAPS_TO_PRODUCT, _TAPS_TO_PRODUCT, kernel)


def _window_components(x, tiles, channels, axis):
    """The five components (list) of every tile's 4-pixel window along ``axis`` (1 or 2).

    ``x`` is padded by one pixel on both sides of that axis, so tile t's window is pixels
    2t .. 2t + 3. Pairs of pixels are folded into the next axis by a reshape, so that every
    window pixel is a stride-1 slice (XNNPACK takes no strided slice).
    """
    if axis == 1:
        pairs = ops.reshape(x, (-1, tiles + 1, 2 * x.shape[2], channels))
        half = x.shape[2]
        window = [pairs[:, :tiles, :half], pairs[:, :tiles, half:],
                  pairs[:, 1:, :half], pairs[:, 1:, half:]]
    else:
        pairs = ops.reshape(x, (-1, x.shape[1], tiles + 1, 2 * channels))
        window = [pairs[:, :, :tiles, :channels], pairs[:, :, :tiles, channels:],
                  pairs[:, :, 1:, :channels], pairs[:, :, 1:, channels:]]
    components = []
    for row in _WINDOW_TO_COMPONENT:
        plus, minus = int(np.flatnonzero(row == 1)[0]), np.flatnonzero(row == -1)
        components.append(window[plus] - window[int(minus[0])] if len(minus) else window[plus])
    return components


class WinogradDeconv(_Upsampling2x):
    """A k=4, s=2, 'same' transposed conv (optionally with a bias and a ReLU) by Winograd F(2, 2).

    The input (even height and width) is cut into 2x2-pixel tiles; each tile's 4x4 window
    gives 25 components (sums and differences of pixels), the components go through 36 1x1
    convolutions (:func:`winograd_kernels`), and sums of four products give the 4x4 output
    pixels of the tile, interleaved by ``depth_to_space``. The same function as the
    transposed conv (to float rounding) with 0.5625x its multiply-accumulates.

    Args:
      product_kernels: (6, 6, C_in, C_out) from :func:`winograd_kernels`.
      bias: (C_out,) or None.
      relu: apply a ReLU to the output.
    """

    MACS_PER_PIXEL_AND_CHANNEL_PAIR = 9   # 36 products per 2x2 pixels (adds not counted)

    def __init__(self, product_kernels, bias=None, relu=False, **kwargs):
        super().__init__(**kwargs)
        product_kernels = np.asarray(product_kernels, np.float32)
        if product_kernels.shape[:2] != (6, 6):
            raise ValueError(f"expected (6, 6, C_in, C_out) product kernels, got shape "
                             f"{product_kernels.shape}")
        self.filters = product_kernels.shape[-1]
        self.relu = bool(relu)
        # One constant weight per product, as in SubPixelDeconv (the converter folds them).
        self.product_kernels = [
            self.add_weight(shape=(1, 1) + kernel.shape, trainable=False, name=f"product_{i}",
                            initializer=keras.initializers.Constant(kernel[None, None]))
            for i, kernel in enumerate(product_kernels.reshape((36,) + product_kernels.shape[2:]))]
        self.bias = None if bias is None else self.add_weight(
            shape=(self.filters,), initializer=keras.initializers.Constant(np.asarray(bias)),
            trainable=False, name="bias")

    def call(self, x):
        _, height, width, channels = x.shape
        if height is None or width is None or height % 2 or width % 2:
            raise ValueError(f"{self.name}: needs a static, even height and width, got "
                             f"{height} x {width}")
        rows, cols = height // 2, width // 2
        x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        components = [_window_components(c, cols, channels, axis=2)
                      for c in _window_components(x, rows, channels, axis=1)]
        products = {}
        for p in range(6):
            for q in range(6):
                y = ops.conv(components[_PRODUCT_COMPONENT[p]][_PRODUCT_COMPONENT[q]],
                             self.product_kernels[6 * p + q])
                if self.bias is not None and p in _BIAS_PRODUCTS and q in _BIAS_PRODUCTS:
                    y = y + self.bias
                products[p, q] = y
        # Sum over the column products first (24 sums), then over the row products (16).
        by_column = {(p, j): products[p, a] + products[p, b]
                     for p in range(6) for j, (a, b) in enumerate(_PRODUCTS_TO_OUTPUT)}
        rows_out = []
        for i, (a, b) in enumerate(_PRODUCTS_TO_OUTPUT):
            outputs = [by_column[a, j] + by_column[b, j] for j in range(4)]
            outputs = [ops.relu(y) for y in outputs] if self.relu else outputs
            # Concatenations of 4 (XNNPACK takes at most a few inputs per concatenation).
            rows_out.append(ops.concatenate(outputs, axis=-1))
        # Channel block 4 i + j lands at (4 t + i, 4 s + j).
        return ops.depth_to_space(ops.concatenate(rows_out, axis=-1), 4)



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


# WinogradDeconv replaces a direct sub-pixel layer where it saves at least this many
# multiply-accumulates (~1.5 ms of XNNPACK fp32 on the 2-core CPU of scripts/benchmark.py):
# below it its ~130 small ops cost more than they save. Measured there (ms, direct ->
# Winograd): 8x6 2048->256 4.8 -> 3.8 (saves 176M MACs), 32x24 256->256 9.0 -> 7.0 (352M),
# 16x12 1024->512 16.2 -> 10.5, but 16x12 256->256 2.2 -> 2.5 (88M).
WINOGRAD_MIN_SAVED_MACS = 150e6


def _winograd_pays(input_shape, transposed_kernel_shape):
    _, height, width, _ = input_shape
    if not height or not width or height % 2 or width % 2:
        return False
    _, _, c_out, c_in = transposed_kernel_shape
    saved = (64 - 36) * (height // 2) * (width // 2) * c_in * c_out
    return saved >= WINOGRAD_MIN_SAVED_MACS


def inference_model(model, winograd=False):
    """An inference-only copy of ``model`` with every k4/s2 transposed conv made sub-pixel.

    A BatchNormalization that is the only consumer of such a transposed conv is folded into
    its kernels and bias, and a ReLU that is the only consumer of the two into its phase
    convolutions. Every other layer is shared with ``model`` (same weights). The result
    computes the same function as ``model`` in inference mode (to ~1e-6).

    Args:
      model: a functional ``keras.Model`` from :func:`mrpose_tf.build_model`.
      winograd: use :class:`WinogradDeconv` where the conv's input has a static, even
        height and width and it saves at least ``WINOGRAD_MIN_SAVED_MACS``
        multiply-accumulates (for float models: it has 2.25x the weights),
        :class:`SubPixelDeconv` elsewhere.

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
        if winograd and _winograd_pays(args[0].shape, kernel.shape):
            return WinogradDeconv(winograd_kernels(kernel), bias, relu=relu is not None,
                                  name=f"{layer.name}_winograd")(args[0])
        return SubPixelDeconv(subpixel_kernels(kernel), bias, relu=relu is not None,
                              name=f"{layer.name}_subpixel")(args[0])

    rewritten = keras.models.clone_model(model, clone_function=lambda layer: layer,
                                         call_function=call)
    return keras.Model(rewritten.input, rewritten.output, name=f"{model.name}_inference")
