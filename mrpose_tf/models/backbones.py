"""ResNet backbones and their stage outputs C2..C5 (SPEC section 1), in three styles.

- ``keras``: keras.applications' ResNet50/101/152 (stride 2 in the first 1x1 conv of a
  block, conv biases, BatchNorm epsilon 1.001e-5); loads keras' ImageNet weights.
- ``pytorch``: torchvision's and the authors' ``Bottleneck`` (stride 2 in the 3x3 conv, no
  conv biases, epsilon 1e-5); the paper's trained models and torchvision's ImageNet weights.
- ``caffe``: the authors' ``Bottleneck_CAFFE`` (stride 2 in the first 1x1 conv, no conv
  biases, epsilon 1e-5).

The pytorch and caffe styles are built here with keras.applications' layer names
(``conv1_conv``, ``conv{s}_block{n}_{j}_conv``/``_bn``, ``conv{s}_block{n}_out``), so every
head, :func:`stage_outputs` and :func:`zero_init_residual` work on each style. Where PyTorch
pads, they pad explicitly and symmetrically: TensorFlow's ``'same'`` pads a stride-2 conv
0 before and 1 after on even sizes, which would shift every later feature map by a pixel.
"""
import os
import re

import keras
from keras import layers

from mrpose_tf.models.blocks import BN_MOMENTUM

BACKBONES = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}
BACKBONE_STYLES = ("keras", "pytorch", "caffe")
# Bottleneck blocks per stage (conv2..conv5), as torchvision's resnet_spec.
BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}
TORCH_BN_EPSILON = 1e-5

_BLOCK_OUT = re.compile(r"^conv(\d)_block(\d+)_out$")
# The BatchNorm closing each block's residual branch (``_0_bn`` is the shortcut's projection).
_RESIDUAL_LAST_BN = re.compile(r"^conv\d_block\d+_3_bn$")


def _conv_bn(x, filters, kernel, stride, name, relu=True):
    """Conv (no bias; PyTorch's zero padding of (kernel - 1) / 2 on every side) + BN (+ ReLU)."""
    pad = (kernel - 1) // 2
    if pad and stride > 1:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, kernel, strides=stride, use_bias=False,
                      padding="same" if pad and stride == 1 else "valid",
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=TORCH_BN_EPSILON,
                                  name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _bottleneck(x, planes, stride, style, name, project):
    """One bottleneck block (expansion 4); ``style`` puts the stride on the 1x1 or the 3x3."""
    shortcut = _conv_bn(x, 4 * planes, 1, stride, f"{name}_0", relu=False) if project else x
    first, middle = (stride, 1) if style == "caffe" else (1, stride)
    y = _conv_bn(x, planes, 1, first, f"{name}_1")
    y = _conv_bn(y, planes, 3, middle, f"{name}_2")
    y = _conv_bn(y, 4 * planes, 1, 1, f"{name}_3", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def torch_style_resnet(name, inputs, style="pytorch"):
    """The authors' ResNet (``PoseResNet``'s trunk) on ``inputs``, as a ``keras.Model``.

    Stem: 3-pixel zero padding, 7x7 stride-2 conv, BN, ReLU, 1-pixel zero padding (after a
    ReLU, the same as the -inf of PyTorch's MaxPool2d), 3x3 stride-2 max pool; then stages
    conv2..conv5 of :data:`BLOCKS` bottlenecks with 64, 128, 256, 512 planes (x4 output
    channels), the first block of each stage projecting its shortcut, stride 2 from conv3 on.

    Args:
      name: 'resnet50', 'resnet101' or 'resnet152'.
      inputs: a ``keras.Input`` (H, W, 3), already preprocessed.
      style: 'pytorch' (stride in the 3x3 conv) or 'caffe' (stride in the first 1x1).
    """
    if style not in ("pytorch", "caffe"):
        raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=TORCH_BN_EPSILON,
                                  name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (blocks, planes) in enumerate(zip(BLOCKS[name], (64, 128, 256, 512)), start=2):
        for block in range(1, blocks + 1):
            stride = 2 if block == 1 and stage > 2 else 1
            x = _bottleneck(x, planes, stride, style, f"conv{stage}_block{block}",
                            project=block == 1)
    return keras.Model(inputs, x, name=f"{name}_{style}")


def build_backbone(name, inputs, weights=None, style="keras"):
    """A ResNet on ``inputs`` (its layers become part of the caller's graph).

    Args:
      name: one of ``BACKBONES``.
      inputs: a ``keras.Input`` of shape (H, W, 3), already preprocessed for the weights.
      weights: None (random), or for the keras style 'imagenet' or the path of a local
        keras weights file (``*.weights.h5`` or the keras.applications ``*_notop.h5``).
        PyTorch files are loaded after building (:mod:`mrpose_tf.convert`).
      style: one of :data:`BACKBONE_STYLES`.

    Returns:
      (model, taps): the backbone model and {'C2': ..., 'C5': ...}, the output of the last
      block of each stage, looked up by name from the built model.

    Raises:
      ValueError: an unknown name or style, or weights the style cannot load here.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid choices: {sorted(BACKBONES)}")
    if style not in BACKBONE_STYLES:
        raise ValueError(f"unknown backbone style {style!r}; valid choices: {BACKBONE_STYLES}")
    if style != "keras":
        if weights is not None:
            raise ValueError(f"the {style} ResNet takes no keras weights ({weights!r}); load a "
                             f"PyTorch file with mrpose_tf.convert")
        model = torch_style_resnet(name, inputs, style)
        return model, stage_outputs(model)
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


def is_backbone_layer(layer_name):
    """Whether a layer of a pose model belongs to its ResNet (by the shared layer names)."""
    return bool(re.match(r"^(conv1_|pool1_|conv[2-5]_block\d+_)", layer_name))


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
