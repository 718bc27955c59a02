"""The input conventions of the backbones' weights: uint8 RGB crops -> the network's input.

Each convention is a channel order and a per-channel affine map on 0..255 values,
``(x - mean) / std`` in the network's channel order (``torch_layouts.md`` section 5):

- ``keras_caffe``: keras.applications' ResNet weights (``resnet.preprocess_input``):
  RGB -> BGR, minus the ImageNet BGR means, no scaling.
- ``torch_bgr``: SimpleBaseline and SimMRPose (their training and evaluation): the image as
  OpenCV reads it, BGR, /255, minus (0.485, 0.456, 0.406), divided by (0.229, 0.224,
  0.225), in that channel order (B gets 0.485 / 0.229).
- ``torch_rgb``: torchvision and MMPose: the same numbers in RGB order.

The convention travels with a run (``config.model.input_preprocessing``) and an export
(``export_info.json``); nothing assumes one by default but the config's field.
"""
import numpy as np
from keras import ops

_TORCH_MEAN = tuple(255.0 * v for v in (0.485, 0.456, 0.406))
_TORCH_STD = tuple(255.0 * v for v in (0.229, 0.224, 0.225))
# name: (network channel order, mean, std), mean and std on 0..255 in that order.
CONVENTIONS = {
    "keras_caffe": ("bgr", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0)),
    "torch_bgr": ("bgr", _TORCH_MEAN, _TORCH_STD),
    "torch_rgb": ("rgb", _TORCH_MEAN, _TORCH_STD),
}
DEFAULT_CONVENTION = "keras_caffe"
BGR_MEAN = CONVENTIONS["keras_caffe"][1]


def convention(name):
    """(channel order 'bgr' | 'rgb', mean (3,), std (3,)) of a convention; ValueError naming
    the valid ones."""
    if name not in CONVENTIONS:
        raise ValueError(f"unknown input preprocessing {name!r}; valid choices: "
                         f"{sorted(CONVENTIONS)}")
    return CONVENTIONS[name]


def channel_affine(name):
    """The convention as ``y[c] = x[source[c]] * scale[c] + offset[c]`` on RGB 0..255 values.

    Returns:
      (source (3,) int: the RGB channel each network channel reads, scale (3,), offset (3,))
      float32 arrays; one 1x1 convolution plus a bias computes it on a batch.
    """
    order, mean, std = convention(name)
    source = np.array([2, 1, 0] if order == "bgr" else [0, 1, 2])
    scale = 1.0 / np.asarray(std, np.float64)
    return source, scale.astype(np.float32), (-np.asarray(mean) * scale).astype(np.float32)


def preprocess(images_uint8_rgb, input_preprocessing=DEFAULT_CONVENTION):
    """RGB images (uint8 or float, 0..255, channels last) -> the backbone's input.

    Works on numpy arrays and on backend tensors (inside tf.data or a SavedModel signature).
    ``keras_caffe`` equals ``keras.applications.resnet.preprocess_input``.

    Args:
      images_uint8_rgb: (..., 3) RGB values in 0..255.
      input_preprocessing: a name of :data:`CONVENTIONS`.

    Returns:
      float32 of the same shape: ``(x[order] - mean) / std``.
    """
    order, mean, std = convention(input_preprocessing)
    if isinstance(images_uint8_rgb, np.ndarray):
        x = images_uint8_rgb.astype(np.float32)
        x = x[..., ::-1] if order == "bgr" else x
        return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    x = ops.cast(images_uint8_rgb, "float32")
    x = ops.flip(x, axis=-1) if order == "bgr" else x
    return (x - ops.convert_to_tensor(mean, "float32")) / ops.convert_to_tensor(std, "float32")


def unpreprocess(images, input_preprocessing=DEFAULT_CONVENTION):
    """The inverse of :func:`preprocess` on numpy arrays: network input -> RGB 0..255 float32
    (for drawing crops)."""
    order, mean, std = convention(input_preprocessing)
    x = np.asarray(images, np.float32) * np.asarray(std, np.float32) + np.asarray(mean,
                                                                                    np.float32)
    return x[..., ::-1] if order == "bgr" else x
