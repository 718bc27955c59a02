"""Model builders: ``build_model(arch, backbone, num_joints, input_size, backbone_weights)``."""
import contextlib

import keras
from keras import layers

from mrpose_tf.models.architectures import ARCHITECTURES
from mrpose_tf.models.backbones import (BACKBONE_STYLES, BACKBONES, build_backbone,
                                        is_backbone_layer, zero_init_residual)

HEATMAP_STRIDE = 4


@contextlib.contextmanager
def dtype_policy(name):
    """Layers created inside use the Keras dtype policy ``name`` (e.g. 'mixed_bfloat16');
    the previous global policy is restored on exit, also after an error."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(arch, backbone="resnet50", num_joints=17, input_size=(256, 192),
                backbone_weights=None, backbone_style="keras"):
    """A pose network of the paper as a functional ``keras.Model``.

    Args:
      arch: one of 'simple_baseline', 'mrheatnet1', 'mrheatnet2', 'mrfeanet1', 'mrfeanet2'.
      backbone: 'resnet50', 'resnet101' or 'resnet152'.
      num_joints: K, the number of keypoints (17 for COCO, 16 for MPII).
      input_size: (height, width), each divisible by 32.
      backbone_weights: None (random); for the keras style also 'imagenet' or a local keras
        weights file (PyTorch files: :func:`mrpose_tf.convert.load_torch_backbone`).
      backbone_style: 'keras' (keras.applications), 'pytorch' (torchvision's and the
        authors' ResNet) or 'caffe' (the authors' caffe-style ResNet); see
        :mod:`mrpose_tf.models.backbones`.

    Returns:
      A model named ``{arch}_{backbone}``: input (N, H, W, 3) float32 crops preprocessed as
      its weights expect (:func:`mrpose_tf.preprocess`), output 'heatmaps'
      (N, H/4, W/4, K), always float32.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid choices: {sorted(ARCHITECTURES)}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; valid choices: {sorted(BACKBONES)}")
    try:
        height, width = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be (height, width), got {input_size!r}") from None
    if height < 32 or width < 32 or height % 32 or width % 32:
        raise ValueError(
            f"input_size {tuple(input_size)} is not valid: height and width must be positive "
            f"multiples of 32 (e.g. (256, 192), (384, 288), (256, 256))")
    if not isinstance(num_joints, int) or num_joints < 1:
        raise ValueError(f"num_joints must be an integer >= 1 (17 for COCO, 16 for MPII), "
                         f"got {num_joints!r}")

    inputs = keras.Input((height, width, 3), name="image")
    _, taps = build_backbone(backbone, inputs, backbone_weights, backbone_style)
    heatmaps = ARCHITECTURES[arch](taps, num_joints)
    # Heatmaps leave the model in float32, also under a mixed-precision policy.
    heatmaps = layers.Activation("linear", dtype="float32", name="heatmaps")(heatmaps)
    return keras.Model(inputs, heatmaps, name=f"{arch}_{backbone}")


def head_trainable_params(model):
    """Trainable parameters outside the backbone (the table of SPEC section 1).

    The backbone's layers are told by their names (every style uses keras.applications'
    ``conv1_*``, ``conv{s}_block{n}_*``; the heads use others).
    """
    return sum(int(w.numpy().size) for layer in model.layers
               if not is_backbone_layer(layer.name) for w in layer.trainable_weights)


__all__ = ["ARCHITECTURES", "BACKBONES", "BACKBONE_STYLES", "HEATMAP_STRIDE", "build_model",
           "dtype_policy",
           "head_trainable_params", "zero_init_residual"]
