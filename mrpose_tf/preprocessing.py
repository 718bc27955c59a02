"""Image preprocessing for the keras.applications ResNet backbones."""
import numpy as np
from keras import ops

# keras.applications.resnet.preprocess_input ('caffe' mode): RGB -> BGR, minus the ImageNet
# BGR means, no std scaling.
BGR_MEAN = (103.939, 116.779, 123.68)


def preprocess(images_uint8_rgb):
    """RGB images (uint8 or float, 0..255, channels last) -> the backbone's expected input.

    Same result as ``keras.applications.resnet.preprocess_input``; works on numpy arrays and
    on backend tensors (inside tf.data or a SavedModel signature). Returns float32.
    """
    if isinstance(images_uint8_rgb, np.ndarray):
        x = images_uint8_rgb.astype(np.float32)
        return x[..., ::-1] - np.asarray(BGR_MEAN, np.float32)
    x = ops.cast(images_uint8_rgb, "float32")
    return ops.flip(x, axis=-1) - ops.convert_to_tensor(BGR_MEAN, "float32")
