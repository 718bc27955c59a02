"""Shared building blocks of the heads (SPEC section 1 notation).

``D(c)``: 4x4 stride-2 transposed conv (no bias) + BatchNorm + ReLU, doubles H and W.
``T(c)``: the same transposed conv alone.
``P(k)``: 1x1 conv (with bias) + BatchNorm + ReLU.
``F``:    the final 1x1 conv (with bias) to K heatmaps.

Pure Keras 3, so the graphs run on every backend. Initialisers follow the authors' code
(normal std 0.001 for every head conv, zero biases, BN gamma 1 / beta 0).
"""
import keras
from keras import layers

# torch BatchNorm2d(momentum=0.1) == Keras momentum 0.9; torch's default epsilon.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _init():
    return keras.initializers.RandomNormal(stddev=0.001)


def _batch_norm(x, name):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)


# Transposed convs with inputs of at most MATMUL_MAX_INPUT_PIXELS (H x W) and at least
# MATMUL_MIN_INPUT_CHANNELS use MatmulConv2DTranspose: there TensorFlow's CPU transposed-conv
# kernels are slowest. Forward + backward, bfloat16, this project's 2-core CPU
# (python scripts/benchmark.py deconv): 3x2 2048->1024 at batch 32 836 -> 159 ms, 4x3
# 2048->256 at 32 149 -> 55 ms, 8x6 2048->256 at 8 103 -> 68 ms, 6x4 1024->512 at 32 256 ->
# 215 ms; but as one matmul 8x6 256->256 at 32 takes 142 instead of 32 ms, 12x8 512->256 at
# 32 322 instead of 139 ms, 16x12 1024->512 at 8 398 instead of 201 ms.
MATMUL_MAX_INPUT_PIXELS = 48
MATMUL_MIN_INPUT_CHANNELS = 1024


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


@keras.saving.register_keras_serializable(package="mrpose_tf")
class MatmulConv2DTranspose(layers.Conv2DTranspose):
    """``Conv2DTranspose(c, 4, strides=2, padding='same')``, computed as one matmul.

    Every input pixel times the kernel gives its 4x4 footprint of output contributions
    (one (N*H*W, C_in) x (C_in, 16*C_out) matmul); output row 2i gathers taps 1 and 3 (from
    input rows i and i-1), row 2i+1 taps 2 and 0 (rows i and i+1), and the same along the
    columns. The same layer (kernel layout, variables, weights, checkpoints) computing the
    same function; on small inputs TensorFlow's CPU kernels run it several times faster than
    the transposed convolution, forward and backward (see ``MATMUL_MAX_INPUT_PIXELS``).
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
        kernel = ops.reshape(ops.transpose(self.kernel, (3, 0, 1, 2)),
                             (channels_in, 16 * self.filters))  # rows: C_in; cols: (ty, tx, c)
        taps = ops.matmul(ops.reshape(inputs, (-1, channels_in)), kernel)
        taps = ops.reshape(taps, (-1, height, width, 4, 4, self.filters))
        rows = ops.stack([taps[:, :, :, 1] + _shifted(taps[:, :, :, 3], 1, 1),    # row 2i
                          taps[:, :, :, 2] + _shifted(taps[:, :, :, 0], 1, -1)],  # row 2i+1
                         axis=2)  # (N, H, 2, W, 4 column taps, C)
        out = ops.stack([rows[..., 1, :] + _shifted(rows[..., 3, :], 3, 1),
                         rows[..., 2, :] + _shifted(rows[..., 0, :], 3, -1)], axis=4)
        out = ops.reshape(out, (-1, 2 * height, 2 * width, self.filters))
        if self.use_bias:
            out = out + self.bias
        return self.activation(out) if self.activation is not None else out


def transposed(x, channels, name):
    """``T(c)``: Conv2DTranspose(c, 4, stride 2, 'same', no bias).

    On small static inputs with many channels (see ``MATMUL_MAX_INPUT_PIXELS``) it is the same
    layer computed as one matmul (:class:`MatmulConv2DTranspose`).
    """
    height, width, channels_in = x.shape[1], x.shape[2], x.shape[3]
    matmul = (height is not None and width is not None
              and height * width <= MATMUL_MAX_INPUT_PIXELS
              and channels_in >= MATMUL_MIN_INPUT_CHANNELS)
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
