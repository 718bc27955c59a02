"""The Predictor: crops, decodes, and takes its keypoint set from the run or the export."""
import cv2
import numpy as np
import pytest

from mrpose_tf import keypoints
from mrpose_tf.predictor import Predictor


def test_predictor_crops_boxes_and_decodes_to_image_pixels():
    """A 'model' that puts a peak where the crop is brightest finds a bright dot in the image."""
    image = np.zeros((120, 160, 3), np.uint8)
    cv2.circle(image, (70, 50), 2, (255, 255, 255), -1)
    spec = keypoints.COCO

    def brightest_point_model(x):
        # Preprocessed input: brightness = channel sum (+ means). Heatmap at stride 4.
        n, hh, ww, _ = x.shape
        bright = x.sum(axis=-1)
        pooled = bright.reshape(n, hh // 4, 4, ww // 4, 4).mean(axis=(2, 4))
        pooled = pooled - pooled.min(axis=(1, 2), keepdims=True) + 1e-3
        return np.repeat(pooled[..., None], spec.num_joints, axis=-1)

    predictor = Predictor(brightest_point_model, (64, 48), spec, flip_test=False)
    kpts, scores = predictor(image, [[40, 20, 60, 80], [50, 30, 40, 40]])
    assert kpts.shape == (2, 17, 2) and scores.shape == (2, 17)
    # One heatmap pixel is 4 input px; the crop of box 1 is ~100 image px for 48 input px.
    np.testing.assert_allclose(kpts[0, 0], [70, 50], atol=6.0)
    np.testing.assert_allclose(kpts[1, 0], [70, 50], atol=4.0)
    with pytest.raises(ValueError, match="zero, negative or non-finite width"):
        predictor(image, [[10, 10, 0, 20]])
    with pytest.raises(ValueError, match="image must be"):
        predictor(image[..., 0], [[10, 10, 5, 20]])
