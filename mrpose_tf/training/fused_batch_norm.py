"""TensorFlow's fused BatchNorm kernel for the trainer: same layer, same variables, same maths.

Keras 3's ``BatchNormalization`` upcasts to float32 and normalises with separate ops (the
casts, the moments, the scale and shift, and the gradients of each: about ten passes over
every activation). TensorFlow's ``FusedBatchNormV3`` does the forward pass in one kernel and
the backward pass in one more, reads bfloat16/float16 activations directly and still keeps
its statistics in float32. On this project's 2-core CPU (``python scripts/benchmark.py
train``, 256x192, batch 8, bfloat16) it takes the training step of SimpleBaseline-R50 from
5.45 to 7.76 img/s and that of MRFeaNet2-R50 from 2.74 to 3.20.

:func:`use_fused_batch_norm` switches the BatchNorm layers of a built model over in place;
the models package stays pure Keras, and each layer keeps its name, variables, config and
checkpoint layout, so a checkpoint written with either runs in the other. Outputs, gradients
and moving statistics equal the Keras layer's to float rounding (the same biased batch
variance and momentum; the summation order differs). The layer falls back to the Keras
implementation where the kernel does not apply: synchronized statistics across replicas, a
mask, renormalisation, float64, or anything but a 4-D channels-last input.
"""
import keras
import tensorflow as tf

_FUSABLE_DTYPES = (tf.float32, tf.bfloat16, tf.float16)


@keras.saving.register_keras_serializable(package="mrpose_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed with ``tf.raw_ops.FusedBatchNormV3``."""

    def _fusable(self, inputs, mask):
        rank = len(inputs.shape)
        return (mask is None and rank == 4 and self.axis in (-1, rank - 1)
                and not self.renorm and not self.synchronized
                and tf.as_dtype(inputs.dtype) in _FUSABLE_DTYPES)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        if training and self.trainable:
            outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
                epsilon=self.epsilon, data_format="NHWC", is_training=True)
            # The kernel returns the unbiased (n - 1) batch variance; Keras keeps the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
            variance = variance * tf.maximum(count - 1.0, 1.0) / tf.maximum(count, 1.0)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            outputs, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=moving_mean, variance=moving_variance,
                epsilon=self.epsilon, data_format="NHWC", is_training=False)
        return tf.cast(outputs, self.compute_dtype)


def use_fused_batch_norm(model):
    """Switch every plain ``BatchNormalization`` layer of ``model`` to the fused kernel.

    In place: each layer keeps its name, variables and config. Layers that are already
    fused, or subclasses of the Keras layer other than the plain one, are left alone.

    Returns:
      The number of layers switched.
    """
    switched = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer) is keras.layers.BatchNormalization:
            layer.__class__ = FusedBatchNormalization
            switched += 1
    return switched
