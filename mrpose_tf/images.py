"""Image files -> (H, W, 3) uint8 RGB pixels outside TensorFlow, decoded as stored.

TensorFlow's decoders (the training and evaluation pipeline) ignore a JPEG's EXIF
orientation, and COCO-format annotations are measured on the stored pixels; OpenCV's
``imread``/``imdecode`` would rotate such a file. Every OpenCV read of an image file (the
pipeline's decoder for the formats TensorFlow does not read, such as TIFF; ``scripts/demo.py``;
the drawings; the deployment kit, which keeps its own copy) therefore passes
``IMREAD_IGNORE_ORIENTATION``, so that every entry point sees the same pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def decode_image_rgb(data):
    """Encoded image bytes -> (H, W, 3) uint8 RGB, or None when OpenCV cannot decode them."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), IMREAD_FLAGS)
    return None if image is None else np.ascontiguousarray(image[..., ::-1])


def read_image_rgb(path):
    """An image file -> (H, W, 3) uint8 RGB, or None when it cannot be read or decoded."""
    image = cv2.imread(str(path), IMREAD_FLAGS)
    return None if image is None else np.ascontiguousarray(image[..., ::-1])
