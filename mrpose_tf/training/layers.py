"""The trainer's forms of two Keras layers: same variables and checkpoints, other kernels.

- :class:`MatmulConv2DTranspose`: the heads' 4x4 stride-2 transposed convolution computed as
  one matmul plus an overlap-add. TensorFlow's CPU transposed-convolution kernels are slow,
  above all in the backward pass; where :func:`uses_matmul_form` says (measured by
  ``python scripts/benchmark.py deconv``, see docs/) this form is faster.
- :class:`TrainingBatchNormalization`: BatchNormalization whose moving variance follows
  PyTorch (the unbiased batch variance, as the authors' ``nn.BatchNorm2d``; Keras keeps the
  biased one), computed on CPUs by TensorFlow's fused kernel (one pass forward, one back,
  where Keras makes about ten).

:mod:`mrpose_tf.training.rewrite` puts them into a built model; the models package itself
builds only plain Keras layers. Each keeps its Keras parent's variables, names and checkpoint
layout, so checkpoints load both ways.
"""
import keras
import tensorflow as tf
from keras import layers

TRANSPOSED_CONV_CHOICES = ("auto", "matmul", "native")


def uses_matmul_form(height, width, channels_in, compute_dtype):
    """Whether the matmul form of a transposed conv is faster than TF's kernel on a CPU.

    The rule is measured by ``python scripts/benchmark.py deconv`` (forward + backward) on
    the project's CPU; the table and its reasoning are in docs/. In bfloat16 the matmul form
    wins on inputs of at most 32x24 pixels and on larger ones with >= 512 channels; in
    float32 only with >= 1024 input channels on inputs of at most 16x12 pixels.

    Args:
      height, width: the input's size in pixels (None: not static, no matmul form).
      channels_in: input channels.
      compute_dtype: the layer's compute dtype ('bfloat16', 'float32', ...).
    """
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
    same function. Raises ValueError for any other kernel, stride, padding or layout.
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


_FUSABLE_DTYPES = (tf.float32, tf.bfloat16, tf.float16)


@keras.saving.register_keras_serializable(package="mrpose_tf")
class TrainingBatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with PyTorch's moving variance, optionally fused.

    In training, the batch is normalised with its biased variance (as in Keras and PyTorch)
    and the moving variance is updated with the unbiased one, ``var * n / (n - 1)`` with n
    the number of values per channel in the (global, when synchronized) batch: PyTorch's
    ``BatchNorm2d`` rule, which the authors' statistics follow. Inference is Keras'.

    Args:
      unbiased_running_variance: the PyTorch rule (True) or Keras' (False).
      fused: compute with ``tf.raw_ops.FusedBatchNormV3`` where it applies (4-D
        channels-last float32/bfloat16/float16 input, no mask, no renormalisation, not
        synchronized); elsewhere the Keras ops path. Same maths to float rounding.
      **kwargs: as ``keras.layers.BatchNormalization``.
    """

    def __init__(self, unbiased_running_variance=True, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.unbiased_running_variance = bool(unbiased_running_variance)
        self.fused = bool(fused)

    def get_config(self):
        return {**super().get_config(), "fused": self.fused,
                "unbiased_running_variance": self.unbiased_running_variance}

    def _fusable(self, inputs, mask):
        rank = len(inputs.shape)
        return (self.fused and mask is None and rank == 4 and self.axis in (-1, rank - 1)
                and not self.renorm and not self.synchronized
                and tf.as_dtype(inputs.dtype) in _FUSABLE_DTYPES)

    def _update_moving(self, mean, variance, count):
        """The momentum update with the batch's mean and biased ``variance`` over ``count``."""
        count = tf.cast(count, variance.dtype)
        if self.unbiased_running_variance:
            variance = variance * count / tf.maximum(count - 1.0, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum
                                    + variance * (1.0 - momentum))

    def _values_per_channel(self, inputs):
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        context = tf.distribute.get_replica_context()
        if self.synchronized and context is not None:  # the statistics of the global batch
            count = count * context.num_replicas_in_sync
        return count

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or self.renorm or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        if self._fusable(inputs, mask):
            channels = inputs.shape[-1]
            gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
            beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
            outputs, mean, unbiased, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
                epsilon=self.epsilon, data_format="NHWC", is_training=True)
            count = self._values_per_channel(inputs)
            # The kernel returns the unbiased batch variance; the update takes the biased one.
            self._update_moving(mean, unbiased * tf.maximum(count - 1.0, 1.0) / count, count)
            return tf.cast(outputs, self.compute_dtype)
        x = keras.ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = self._moments(x, None)
        self._update_moving(mean, variance, self._values_per_channel(x))
        outputs = keras.ops.batch_normalization(
            x, mean, variance, axis=self.axis, epsilon=self.epsilon,
            offset=keras.ops.cast(self.beta, x.dtype) if self.center else None,
            scale=keras.ops.cast(self.gamma, x.dtype) if self.scale else None)
        return keras.ops.cast(outputs, self.compute_dtype)
