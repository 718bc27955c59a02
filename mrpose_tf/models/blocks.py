"""Shared building blocks of the heads (SPEC section 1 notation).

``D(c)``: 4x4 stride-2 transposed conv (no bias) + BatchNorm + ReLU, doubles H and W.
``T(c)``: the same transposed conv alone.
``P(k)``: 1x1 conv (with bias) + BatchNorm + ReLU.
``F``:    the final 1x1 conv (with bias) to K heatmaps.

Pure Keras 3, so the graphs run on every backend. Initialisers follow the authors' code
(normal std 0.001 for every head conv, zero biases, BN gamma 1 / beta 0).
"""
import contextlib

import keras
from keras import layers

# torch BatchNorm2d(momentum=0.1) == Keras momentum 0.9; torch's default epsilon.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _init():
    return keras.initializers.RandomNormal(stddev=0.001)


def _batch_norm(x, name):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)


# Which form transposed() builds: 'auto' (uses_matmul_form's measured rule), 'matmul' (always
# MatmulConv2DTranspose) or 'native' (always keras Conv2DTranspose). Same layer, same function.
TRANSPOSED_CONV_FORM = "auto"
TRANSPOSED_CONV_FORMS = ("auto", "matmul", "native")


@contextlib.contextmanager
def transposed_conv_form(form):
    """Models built inside use ``form`` for their transposed convs (see ``TRANSPOSED_CONV_FORM``);
    the previous form is restored on exit, also after an error."""
    global TRANSPOSED_CONV_FORM
    if form not in TRANSPOSED_CONV_FORMS:
        raise ValueError(f"transposed conv form must be one of {TRANSPOSED_CONV_FORMS}, "
                         f"got {form!r}")
    previous, TRANSPOSED_CONV_FORM = TRANSPOSED_CONV_FORM, form
    try:
        yield
    finally:
        TRANSPOSED_CONV_FORM = previous


def uses_matmul_form(height, width, channels_in, compute_dtype):
    """Whether :func:`transposed` computes a transposed conv as one matmul.

    The rule follows ``python scripts/benchmark.py deconv``, TensorFlow on this project's
    2-core CPU (forward + backward; Conv2DTranspose -> matmul form, ms); the trainer applies it
    on CPUs only and builds keras' Conv2DTranspose on GPUs and TPUs:

    - bfloat16: the matmul form wins or ties on every input of at most 32x24 pixels (3x2
      2048->1024 @32 667 -> 131, 12x8 512->256 @32 113 -> 75, 8x6 256->256 @32 32 -> 21,
      32x24 256->256 @8 87 -> 85) and on larger inputs with >= 512 channels (48x36 512->256
      @8 484 -> 358), but not on larger ones with 256 (48x36 256->256 @8 176 -> 194).
    - float32: it wins only with >= 1024 input channels (8x6 2048->1024 @8 487 -> 290, 16x12
      1024->512 @8 303 -> 266); with 256 or 512 TF's kernel is as fast or faster (32x24
      512->256 @8 247 -> 284, 24x16 256->256 @32 248 -> 319).
    """
    if TRANSPOSED_CONV_FORM != "auto":
        return TRANSPOSED_CONV_FORM == "matmul"
    if height is None or width is None:  # the matmul form needs a static size
        return False
    if compute_dtype == "bfloat16":
        return height * width <= 32 * 24 or channels_in >= 512
    return height * width <= 16 * 12 and channels_in >= 1024


def _shifted(x, axis, offset):
    """``out[m] = x[m - offset]`` along ``axis`` (offset +1 or -1), zero where out of range."""
    n = x.shape[axis]
    pads = [[0, 0]] * len(x.shape)
    pads[axis] = [1, 0] if offset == 1 else [0, 1]
    start = [0] * len(x.shape)
    start[axis] = 0 if offset == 1 else 1
    size = list(keras.ops.shape(x))
    size[axis] = n
    return keras.ops.slice(keras.ops.pad(x, pads), start, size)


def _unstack(x, axis):
    """The size-4 ``axis`` of ``x`` as 4 tensors without it (split + squeeze)."""
    return [keras.ops.squeeze(part, axis) for part in keras.ops.split(x, 4, axis=axis)]


@keras.saving.register_keras_serializable(package="mrpose_tf")
class MatmulConv2DTranspose(layers.Conv2DTranspose):
    """``Conv2DTranspose(c, 4, strides=2, padding='same')``, computed as one matmul.

    Every input pixel times the kernel gives its 4x4 footprint of output contributions
    (one (N*H*W, C_in) x (C_in, 16*C_out) matmul); output row 2i gathers taps 1 and 3 (from
    input rows i and i-1), row 2i+1 taps 2 and 0 (rows i and i+1), and the same along the
    columns. The same layer (kernel layout, variables, weights, checkpoints) computing the
    same function; TensorFlow's CPU kernels run it up to 5x faster than the transposed
    convolution, forward and backward, on the inputs :func:`uses_matmul_form` picks.
    """

    def __init__(self, filters, kernel_size=4, strides=2, padding="same", **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding, **kwargs)
        if (tuple(self.kernel_size) != (4, 4) or tuple(self.strides) != (2, 2)
                or self.padding != "same" or tuple(self.dilation_rate) != (1, 1)
                or self.data_format != "channels_last"):
            raise ValueError(f"{type(self).__name__} computes only the 4x4, stride-2, 'same', "
                             f"channels_last transposed convolution of the paper's heads")

    def call(self, inputs):
        _, height, width, channels_in = inputs.shape
        if height is None or width is None:
            raise ValueError(f"{self.name}: {type(self).__name__} needs a static input height "
                             f"and width, got {inputs.shape}")
        ops = keras.ops
        # The kernel (ty, tx, C_out, C_in) read as (16 C_out, C_in) rows, contracted with the
        # input channels: no transposed copy of the kernel (or of its gradient) per step.
        kernel = ops.reshape(self.kernel, (16 * self.filters, channels_in))
        taps = ops.einsum("pc,kc->pk", ops.reshape(inputs, (-1, channels_in)), kernel)
        # Overlap-add, rows then columns. Taps are taken apart with split and put together with
        # stack, whose gradients are a concat and a split: slicing the taps instead would make
        # every slice's gradient a zero-filled copy of the whole taps tensor.
        t0, t1, t2, t3 = _unstack(ops.reshape(taps, (-1, height, width, 4, 4 * self.filters)), 3)
        rows = ops.stack([t1 + _shifted(t3, 1, 1),     # row 2i: tap 1 of row i, tap 3 of i-1
                          t2 + _shifted(t0, 1, -1)],   # row 2i+1: tap 2 of row i, tap 0 of i+1
                         axis=2)
        c0, c1, c2, c3 = _unstack(ops.reshape(rows, (-1, 2 * height, width, 4, self.filters)), 3)
        out = ops.stack([c1 + _shifted(c3, 2, 1), c2 + _shifted(c0, 2, -1)], axis=3)
        out = ops.reshape(out, (-1, 2 * height, 2 * width, self.filters))
        if self.use_bias:
            out = out + self.bias
        return self.activation(out) if self.activation is not None else out


def transposed(x, channels, name):
    """``T(c)``: Conv2DTranspose(c, 4, stride 2, 'same', no bias).

    Where it is faster (:func:`uses_matmul_form`, under the current dtype policy) it is the same
    layer computed as one matmul (:class:`MatmulConv2DTranspose`).
    """
    compute_dtype = keras.config.dtype_policy().compute_dtype
    matmul = uses_matmul_form(x.shape[1], x.shape[2], x.shape[3], compute_dtype)
    layer = MatmulConv2DTranspose if matmul else layers.Conv2DTranspose
    return layer(channels, 4, strides=2, padding="same", use_bias=False,
                 kernel_initializer=_init(), name=name)(x)


def deconv(x, channels, name):
    """``D(c)``: T(c) + BatchNorm + ReLU; layers ``{name}``, ``{name}_bn``, ``{name}_relu``."""
    x = transposed(x, channels, name)
    x = _batch_norm(x, f"{name}_bn")
    return layers.ReLU(name=f"{name}_relu")(x)


def deconv_stack(x, channels, name):
    """``D(c_n)(...D(c_1)(x))``: one D per entry of ``channels``, named ``{name}{i}``."""
    for i, c in enumerate(channels, start=1):
        x = deconv(x, c, f"{name}{i}")
    return x


def projection(x, channels, name):
    """``P(k)``: Conv2D(k, 1x1, bias) + BatchNorm + ReLU."""
    x = layers.Conv2D(channels, 1, kernel_initializer=_init(), bias_initializer="zeros",
                      name=name)(x)
    x = _batch_norm(x, f"{name}_bn")
    return layers.ReLU(name=f"{name}_relu")(x)


def final(x, num_joints, name="final"):
    """``F``: Conv2D(K, 1x1, bias), the heatmap layer."""
    return layers.Conv2D(num_joints, 1, kernel_initializer=_init(), bias_initializer="zeros",
                         name=name)(x)


def add(inputs, name):
    return layers.Add(name=name)(inputs)
