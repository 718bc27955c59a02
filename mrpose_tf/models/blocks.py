"""Shared building blocks of the heads (SPEC section 1 notation).

``D(c)``: 4x4 stride-2 transposed conv (no bias) + BatchNorm + ReLU, doubles H and W.
``T(c)``: the same transposed conv alone.
``P(k)``: 1x1 conv (with bias) + BatchNorm + ReLU.
``F``:    the final 1x1 conv (with bias) to K heatmaps.

Pure Keras 3 layers and no module state, so the graphs run on every backend and every
device; faster forms for one kind of device are a rewrite applied where they pay (the CPU
trainer: :mod:`mrpose_tf.training.rewrite`; TFLite: :mod:`mrpose_tf.export.subpixel`).
Initialisers follow the authors' code (normal std 0.001 for every head conv, zero biases, BN
gamma 1 / beta 0).
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


def transposed(x, channels, name):
    """``T(c)``: Conv2DTranspose(c, 4, stride 2, 'same', no bias)."""
    return layers.Conv2DTranspose(channels, 4, strides=2, padding="same", use_bias=False,
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
