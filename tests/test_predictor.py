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


def test_flip_test_runs_one_batch_and_equals_two_separate_runs():
    """The original and mirrored crops go through a keras model as one batch; the result
    equals running them apart and fusing by hand (the flip pairs swapped, the mirrored
    heatmaps flipped back and shifted one cell right, then averaged)."""
    import keras

    from mrpose_tf.predictor import predict_heatmaps

    inputs = keras.Input((16, 12, 3))
    x = keras.layers.Conv2D(3, 5, strides=4, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    batches = []
    predict_on_batch = model.predict_on_batch
    model.predict_on_batch = lambda batch: batches.append(len(batch)) or predict_on_batch(batch)
    crops = np.random.default_rng(0).normal(size=(3, 16, 12, 3)).astype(np.float32)
    got = predict_heatmaps(model, crops, [(0, 2)], flip_test=True)
    assert batches == [6]

    plain = np.asarray(model(crops, training=False))
    mirrored = np.asarray(model(crops[:, :, ::-1], training=False))
    back = mirrored[:, :, ::-1][..., [2, 1, 0]]
    back[:, :, 1:] = back[:, :, :-1].copy()
    np.testing.assert_allclose(got, (plain + back) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predict_heatmaps(model, crops[:1], [(0, 2)], flip_test=False),
                               plain[:1], rtol=1e-5, atol=1e-6)
    assert batches == [6, 1]
