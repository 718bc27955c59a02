"""The trainer's one rewrite of a built model: the layer forms it trains with.

:func:`mrpose_tf.build_model` gives plain Keras layers, which is what inference, evaluation
and export use everywhere. Training swaps two kinds of layer for subclasses computing the
same function with the same variables (:mod:`mrpose_tf.training.layers`):

- every BatchNormalization -> :class:`TrainingBatchNormalization` (PyTorch's moving
  variance on every device; on CPUs also TensorFlow's fused kernel; synchronized across
  replicas when asked);
- on CPUs, the transposed convolutions that :func:`uses_matmul_form` picks ->
  :class:`MatmulConv2DTranspose`.

The copy is made with ``keras.models.clone_model``: layers that are not swapped are shared
with the original, swapped ones are built anew and take the original's weights. Layer
names, variables and their order are unchanged, so a checkpoint of the rewritten model loads
into a plain one and back.
"""
import keras

from mrpose_tf.training.layers import (TRANSPOSED_CONV_CHOICES, MatmulConv2DTranspose,
                                       TrainingBatchNormalization, uses_matmul_form)


def _matmul_form(layer, transposed_conv, cpu):
    if type(layer) is not keras.layers.Conv2DTranspose:
        return False
    if transposed_conv != "auto":
        return transposed_conv == "matmul"
    _, height, width, channels = layer.input.shape
    return cpu and uses_matmul_form(height, width, channels, layer.compute_dtype)


def rewrite_for_training(model, *, cpu, transposed_conv="auto", fused_batch_norm=True,
                         unbiased_running_variance=True, synchronized=False):
    """The training form of ``model`` (see the module docstring); call in the strategy scope.

    Args:
      model: a functional pose model from :func:`mrpose_tf.build_model` (any dtype policy).
      cpu: whether the replicas run on CPUs (the fused BatchNorm and the measured matmul
        rule apply there only).
      transposed_conv: 'auto' (the measured rule on CPUs, Keras' layer elsewhere), 'matmul'
        (every 4x4 stride-2 transposed conv as a matmul) or 'native' (Keras' layer).
      fused_batch_norm: on CPUs, TF's fused BatchNorm kernel where it applies.
      unbiased_running_variance: PyTorch's moving-variance rule (see
        :class:`TrainingBatchNormalization`).
      synchronized: BatchNorm statistics over the replicas' global batch.

    Returns:
      A ``keras.Model`` with the same name, inputs, outputs, layer names and weights.

    Raises:
      ValueError: an unknown ``transposed_conv``.
    """
    if transposed_conv not in TRANSPOSED_CONV_CHOICES:
        raise ValueError(f"config.train.transposed_conv must be one of {TRANSPOSED_CONV_CHOICES}, "
                         f"got {transposed_conv!r}")
    swapped = []

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            config = dict(layer.get_config(), synchronized=bool(synchronized),
                          fused=bool(cpu and fused_batch_norm),
                          unbiased_running_variance=bool(unbiased_running_variance))
            new = TrainingBatchNormalization.from_config(config)
        elif _matmul_form(layer, transposed_conv, cpu):
            new = MatmulConv2DTranspose.from_config(layer.get_config())
        else:
            return layer
        swapped.append((layer, new))
        return new

    rewritten = keras.models.clone_model(model, clone_function=clone)
    for old, new in swapped:
        new.set_weights(old.get_weights())
    return rewritten
