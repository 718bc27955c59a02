"""keras.applications ResNets and their stage outputs C2..C5 (SPEC section 1)."""
import os
import re

import keras

from mrpose_tf.models.blocks import BN_MOMENTUM

BACKBONES = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}

_BLOCK_OUT = re.compile(r"^conv(\d)_block(\d+)_out$")
# The BatchNorm closing each block's residual branch (``_0_bn`` is the shortcut's projection).
_RESIDUAL_LAST_BN = re.compile(r"^conv\d_block\d+_3_bn$")


def build_backbone(name, inputs, weights=None):
    """A keras.applications ResNet on ``inputs`` (its layers become part of the caller's graph).

    Args:
      name: one of ``BACKBONES``.
      inputs: a ``keras.Input`` of shape (H, W, 3), already preprocessed
        (``keras.applications.resnet.preprocess_input``).
      weights: None (random), 'imagenet', or the path of a local weights file
        (``*.weights.h5`` or the keras.applications ``*_notop.h5``).

    Returns:
      (model, taps): the backbone model and {'C2': ..., 'C5': ...}, the output of the last
      block of each stage, looked up by name from the built model.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid choices: {sorted(BACKBONES)}")
    if weights not in (None, "imagenet") and not os.path.isfile(str(weights)):
        raise ValueError(
            f"backbone_weights must be None, 'imagenet' or an existing weights file; "
            f"no file at {weights!r}")
    model = BACKBONES[name](include_top=False, weights=weights, input_tensor=inputs)
    # keras.applications builds its BatchNorms with keras' default momentum 0.99; the authors'
    # ResNet uses torch's 0.1 (keras 0.9) in every layer, as the heads do. Only the moving
    # statistics depend on it (training normalises with the batch's own); the epsilon stays
    # keras.applications' 1.001e-5, which its ImageNet weights were trained with.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    return model, stage_outputs(model)


def zero_init_residual(model):
    """Set gamma to 0 in the last BatchNorm of every residual branch of a ResNet backbone.

    Each bottleneck block then starts as its shortcut alone (torchvision's
    ``resnet50(zero_init_residual=True)``; Goyal et al. 2017, section 5.1), a training aid
    for random initialisation only: it changes where training starts, not the network.
    Works on the backbone or on a whole pose model holding its layers.

    Returns:
      The number of BatchNorm layers set.
    """
    count = 0
    for layer in model.layers:
        if _RESIDUAL_LAST_BN.match(layer.name):
            layer.gamma.assign(keras.ops.zeros_like(layer.gamma))
            count += 1
    if not count:
        raise ValueError(f"{model.name}: no conv{{s}}_block{{n}}_3_bn layers (not a ResNet?)")
    return count


def stage_outputs(model):
    """{'C2'..'C5': output of the last ``conv{s}_block{n}_out`` of stages 2..5}."""
    last = {}
    for layer in model.layers:
        match = _BLOCK_OUT.match(layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            if block > last.get(stage, (0, None))[0]:
                last[stage] = (block, layer)
    missing = [s for s in (2, 3, 4, 5) if s not in last]
    if missing:
        raise ValueError(f"{model.name}: no conv{{s}}_block*_out layers for stages {missing}")
    return {f"C{s}": last[s][1].output for s in (2, 3, 4, 5)}

