"""TensorFlow's fused Adam kernel for the trainer: same optimizer, same variables, same maths.

Keras 3's ``Adam.update_step`` updates each variable with separate ops (the difference and
product for the first moment, the square, difference and product for the second, then the
square root, sum, product and quotient of the step): about ten passes over every parameter
and its temporaries. TensorFlow's ``ResourceApplyAdam`` does the whole update in one pass.
MRFeaNet2-R50 has 80 M parameters: on this project's 2-core CPU Keras' update of them takes
~210 ms, the fused kernel's ~64 ms (``python scripts/benchmark.py adam``); the whole training
step gains 2-5% (``python scripts/benchmark.py train --adam fused keras``), as Keras' ops
partly overlap the backward pass.

:class:`FusedAdam` is ``keras.optimizers.Adam`` with only ``update_step`` replaced, so its
variables, config and checkpoint layout are Adam's (a checkpoint written with either
resumes in the other) and everything around the update (loss scaling, the distribution of
the update over replicas, the step counter) is Keras'. The kernel computes Keras' formula,
``alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)``, ``m += (g - m) * (1 - beta_1)``,
``v += (g^2 - v) * (1 - beta_2)``, ``x -= m * alpha / (sqrt(v) + epsilon)``, to float
rounding: it forms ``1 - beta_2`` in the variable's dtype (float32: 1.3e-5 off 1e-3), where
Keras forms it in Python floats, so the second moment and the step differ by ~1e-5 relative.
It falls back to Keras' update for AMSGrad and for anything but a TensorFlow resource
variable.
"""
import keras
import tensorflow as tf


def _resource_variable(variable):
    """The tf.Variable behind a Keras variable (itself if it is one), or None without a handle.

    A distributed variable has one only inside a replica context or a strategy's update().
    """
    if isinstance(variable, keras.Variable):
        variable = variable.value
    try:
        variable.handle
    except (AttributeError, ValueError, NotImplementedError):
        return None
    return variable


@keras.saving.register_keras_serializable(package="mrpose_tf")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose update runs ``tf.raw_ops.ResourceApplyAdam``."""

    def update_step(self, gradient, variable, learning_rate):
        target = _resource_variable(variable)
        index = self._get_variable_index(variable)
        m = _resource_variable(self._momentums[index])
        v = _resource_variable(self._velocities[index])
        if self.amsgrad or target is None or m is None or v is None:
            return super().update_step(gradient, variable, learning_rate)
        dtype = target.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        # Under a tf.distribute update, .handle is the current replica's component.
        return tf.raw_ops.ResourceApplyAdam(
            var=target.handle, m=m.handle, v=v.handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype),
            use_locking=False)
