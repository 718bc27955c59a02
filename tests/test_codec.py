"""The codec: decoding and the flip test against independent reference computations, and
each TensorFlow twin against its numpy form."""
import math

import cv2
import keras
import numpy as np
import pytest

import mrpose_tf
import tensorflow as tf

from mrpose_tf import codec, keypoints
from mrpose_tf.predictor import predict_heatmaps


# --- An independent, loop-based version of the reference get_final_preds -------------------

def _reference_affine_inverse(center, scale, out_w, out_h):
    """SimpleBaseline's get_affine_transform(center, scale, 0, [w, h], inv=1), via cv2."""
    src_w = scale[0] * 200.0
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = np.array(center) + np.array([0.0, src_w * -0.5])
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = np.array([out_w * 0.5, out_h * 0.5]) + np.array([0.0, out_w * -0.5])
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]], np.float32)
    return cv2.getAffineTransform(dst, src)


def _reference_final_preds(batch_heatmaps_nchw, centers, scales):
    n, k, h, w = batch_heatmaps_nchw.shape
    coords = np.zeros((n, k, 2), np.float32)
    maxvals = np.zeros((n, k), np.float32)
    for i in range(n):
        for j in range(k):
            hm = batch_heatmaps_nchw[i, j]
            idx = int(np.argmax(hm.reshape(-1)))
            maxvals[i, j] = hm.reshape(-1)[idx]
            if maxvals[i, j] > 0:
                coords[i, j] = (idx % w, math.floor(idx / w))
            px, py = int(math.floor(coords[i, j, 0] + 0.5)), int(math.floor(coords[i, j, 1] + 0.5))
            if 1 < px < w - 1 and 1 < py < h - 1:
                diff = np.array([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]])
                coords[i, j] += np.sign(diff) * 0.25
    preds = np.zeros((n, k, 2))
    for i in range(n):
        t = _reference_affine_inverse(centers[i], scales[i], w, h)
        for j in range(k):
            preds[i, j] = t @ np.array([coords[i, j, 0], coords[i, j, 1], 1.0])
    return preds, maxvals


def _gaussian_heatmaps(points, height, width, sigma=2.0):
    """(N, K, 2) sub-pixel points in heatmap pixels -> (N, h, w, K) Gaussian heatmaps."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    x = points[..., 0][:, None, None, :]
    y = points[..., 1][:, None, None, :]
    return np.exp(-((u[None, :, :, None] - x) ** 2 + (v[None, :, :, None] - y) ** 2)
                  / (2 * sigma ** 2)).astype(np.float32)


def test_decode_heatmaps_equals_reference_on_random_heatmaps():
    rng = np.random.default_rng(0)
    heatmaps = rng.normal(size=(6, 16, 12, 17)).astype(np.float32)
    heatmaps[0, :, :, 3] = -1.0            # max <= 0: coordinates 0
    heatmaps[1, :, :, 4] = 0.5             # flat map: first max, no neighbour shift
    heatmaps[2, 7, 5, 6] = 0.0
    heatmaps[2, :, :, 6] = np.minimum(heatmaps[2, :, :, 6], 0.0)  # max exactly 0
    centers = rng.uniform(50, 400, size=(6, 2))
    scales = rng.uniform(0.3, 2.0, size=(6, 2))
    coords, maxvals = mrpose_tf.decode_heatmaps(heatmaps, centers, scales)
    ref_coords, ref_maxvals = _reference_final_preds(heatmaps.transpose(0, 3, 1, 2), centers,
                                                     scales)
    assert coords.shape == (6, 17, 2) and maxvals.shape == (6, 17)
    np.testing.assert_allclose(coords, ref_coords, atol=1e-3)
    np.testing.assert_array_equal(maxvals, ref_maxvals)


def test_decode_heatmaps_peaks_at_image_borders_are_not_refined():
    heatmaps = np.zeros((1, 8, 8, 4), np.float32)
    heatmaps[0, 3, 1, 0] = 1.0   # px = 1: not > 1
    heatmaps[0, 3, 6, 1] = 1.0   # px = 6 = w - 2: refined
    heatmaps[0, 3, 7, 1] = 0.5   # right neighbour larger than left (0)
    heatmaps[0, 0, 4, 2] = 1.0   # py = 0
    heatmaps[0, 7, 4, 3] = 1.0   # py = h - 1
    heatmaps[0, 6, 4, 3] = 0.0
    coords, _ = mrpose_tf.decode_heatmaps(heatmaps, [[4.0, 4.0]], [[8 / 200, 8 / 200]])
    # A 8 px box onto an 8 px heatmap: identity up to the centre shift (centre 4 <-> 4).
    np.testing.assert_allclose(coords[0], [[1, 3], [6.25, 3], [4, 0], [4, 7]], atol=1e-4)


def test_decode_heatmaps_recovers_known_subpixel_points():
    rng = np.random.default_rng(1)
    h, w = 64, 48
    points = rng.uniform(3, [w - 4, h - 4], size=(5, 17, 2))
    points[0, 0] = [20.0, 30.0]            # integer point: symmetric neighbours, no shift
    heatmaps = _gaussian_heatmaps(points, h, w)
    centers = rng.uniform(100, 300, size=(5, 2))
    sx = rng.uniform(0.5, 1.5, size=5)
    scales = np.stack([sx, sx * h / w], axis=1)  # the crop keeps the heatmap's aspect ratio
    coords, maxvals = mrpose_tf.decode_heatmaps(heatmaps, centers, scales)
    # Expected in heatmap pixels: the rounded point moved 0.25 toward the true point.
    rounded = np.floor(points + 0.5)
    expected_hm = rounded + 0.25 * np.sign(np.round(points - rounded, 9))
    pixel = sx[:, None, None] * 200.0 / w
    expected = centers[:, None, :] + (expected_hm - np.array([w / 2, h / 2])) * pixel
    np.testing.assert_allclose(coords, expected, atol=1e-3)
    np.testing.assert_allclose(coords[0, 0], centers[0] + (np.array([20, 30]) - [24, 32])
                               * pixel[0, 0, 0], atol=1e-3)
    # Decoded points are within 0.25 heatmap px of the truth on each axis (+ rounding).
    assert np.all(np.abs(expected_hm - points) <= 0.5 + 1e-9)
    assert np.all(maxvals > 0.9)


def test_decode_heatmaps_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="heatmaps must be"):
        mrpose_tf.decode_heatmaps(np.zeros((4, 4, 2)), np.zeros((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="2 heatmaps but 1 centers"):
        mrpose_tf.decode_heatmaps(np.zeros((2, 4, 4, 2)), np.zeros((1, 2)), np.ones((1, 2)))


# --- Flip test ------------------------------------------------------------------------------

def _reference_flip_average(normal, flipped_output, flip_pairs, shift):
    """Loop version of the reference: flip back, swap pairs, shift right, average."""
    n, h, w, k = normal.shape
    back = np.zeros_like(flipped_output)
    for x in range(w):
        back[:, :, x, :] = flipped_output[:, :, w - 1 - x, :]
    swapped = back.copy()
    for a, b in flip_pairs:
        swapped[..., a], swapped[..., b] = back[..., b], back[..., a]
    if shift:
        shifted = swapped.copy()
        for x in range(1, w):
            shifted[:, :, x, :] = swapped[:, :, x - 1, :]
        swapped = shifted
    return (normal + swapped) / 2


class _TwoAnswerModel:
    """Returns, crop by crop, one set of heatmaps for the given crops and another for the
    mirrored crops (whichever batch they come in)."""

    def __init__(self, images, normal, flipped):
        self.images, self.normal, self.flipped = images, normal, flipped
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        out = []
        for crop in x:
            plain = [i for i, image in enumerate(self.images) if np.array_equal(crop, image)]
            mirrored = [i for i, image in enumerate(self.images)
                        if np.array_equal(crop, image[:, ::-1])]
            assert plain or mirrored, "expected the crops or the mirrored crops"
            out.append(self.normal[plain[0]] if plain else self.flipped[mirrored[0]])
        return np.stack(out)


@pytest.mark.parametrize("shift", [True, False])
def test_flip_test_flips_back_swaps_shifts_and_averages(shift):
    rng = np.random.default_rng(2)
    images = rng.normal(size=(2, 32, 24, 3)).astype(np.float32)
    normal = rng.normal(size=(2, 8, 6, 17)).astype(np.float32)
    flipped = rng.normal(size=(2, 8, 6, 17)).astype(np.float32)
    model = _TwoAnswerModel(images, normal, flipped)
    out = predict_heatmaps(model, images, keypoints.COCO.flip_pairs, flip_test=True,
                           shift_heatmap=shift)
    np.testing.assert_allclose(
        out, _reference_flip_average(normal, flipped, keypoints.COCO.flip_pairs, shift),
        rtol=1e-6)
    assert model.calls == 1  # the crops and their mirrors in one batch
    out = predict_heatmaps(model, images, keypoints.COCO.flip_pairs, flip_test=False)
    np.testing.assert_array_equal(out, normal)


def test_shift_right_one_pixel_keeps_column_zero():
    heatmaps = np.arange(2 * 3 * 4 * 1, dtype=np.float32).reshape(2, 3, 4, 1)
    shifted = codec.shift_right_one_pixel(heatmaps)
    np.testing.assert_array_equal(shifted[:, :, 0], heatmaps[:, :, 0])
    np.testing.assert_array_equal(shifted[:, :, 1:], heatmaps[:, :, :-1])
    np.testing.assert_array_equal(shifted[0, 0, :, 0], [0, 0, 1, 2])


def _mirror_consistent_heatmaps(h, w, spec, rng):
    """Heatmaps of a left/right symmetric person: pairs at u and w - u, centre joints at w/2.

    Mirroring a heatmap maps column u to w-1-u; with the one-pixel shift u -> w-u, so these
    heatmaps are their own flipped-back-and-shifted version.
    """
    k = spec.num_joints
    points = np.zeros((1, k, 2))
    points[0, :, 0] = w / 2
    points[0, :, 1] = rng.uniform(4, h - 4, size=k)
    for a, b in spec.flip_pairs:
        points[0, a, 0] = rng.uniform(4, w / 2 - 2)
        points[0, b, 0] = w - points[0, a, 0]
        points[0, b, 1] = points[0, a, 1]
    return _gaussian_heatmaps(points, h, w)


def test_flip_test_keeps_keypoints_of_a_mirror_consistent_keras_model():
    rng = np.random.default_rng(3)
    h, w = 16, 12
    heatmaps = _mirror_consistent_heatmaps(h, w, keypoints.COCO, rng)
    # A keras model whose output depends on the mean of its input, which a mirror keeps.
    inputs = keras.Input((64, 48, 3))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    gain = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="ones")(mean)
    out = keras.layers.Lambda(
        lambda g: keras.ops.reshape(g, (-1, 1, 1, 1)) * keras.ops.convert_to_tensor(heatmaps))(gain)
    model = keras.Model(inputs, out)
    half = rng.uniform(0, 255, size=(2, 64, 24, 3)).astype(np.float32)
    images = np.concatenate([half, half[:, :, ::-1]], axis=2)  # left/right symmetric crops
    centers, scales = np.array([[100.0, 120.0]] * 2), np.array([[0.6, 0.8]] * 2)
    plain = predict_heatmaps(model, images, keypoints.COCO.flip_pairs, flip_test=False)
    flipped = predict_heatmaps(model, images, keypoints.COCO.flip_pairs, flip_test=True)
    c_plain, s_plain = mrpose_tf.decode_heatmaps(plain, centers, scales)
    c_flip, s_flip = mrpose_tf.decode_heatmaps(flipped, centers, scales)
    np.testing.assert_allclose(c_flip, c_plain, atol=1e-9)
    np.testing.assert_allclose(s_flip, s_plain, rtol=1e-5)
    # Without the shift the flipped-back maps peak one pixel to the left: keypoints move.
    unshifted = predict_heatmaps(model, images, keypoints.COCO.flip_pairs, flip_test=True,
                                 shift_heatmap=False)
    c_unshifted, _ = mrpose_tf.decode_heatmaps(unshifted, centers, scales)
    assert np.abs(c_unshifted - c_plain)[..., 0].max() > 1.0


# --- TensorFlow twins -----------------------------------------------------------------------

def _hard_heatmaps(seed):
    """Random maps with the decoder's edge cases: max <= 0, flat maps, border peaks, ties."""
    rng = np.random.default_rng(seed)
    heatmaps = rng.normal(size=(5, 16, 12, 7)).astype(np.float32)
    heatmaps[0, :, :, 0] = -1.0                     # max <= 0: coordinates 0
    heatmaps[1, :, :, 1] = 0.5                      # flat: first max, no step
    heatmaps[2, 0, 5, 2] = 50.0                     # top border: no step
    heatmaps[3, 7, 6, 3], heatmaps[3, 7, 7, 3] = 50.0, 10.0   # a step toward the right
    heatmaps[4, 4, 4, 4] = heatmaps[4, 9, 2, 4] = 60.0        # a tie: the first in row order
    centers = rng.uniform(50, 400, (5, 2))
    scales = rng.uniform(0.5, 2.0, (5, 2))
    return heatmaps, centers, scales


def test_tf_argmax_and_decoding_equal_the_numpy_forms():
    for seed in range(3):
        heatmaps, centers, scales = _hard_heatmaps(seed)
        coords, maxvals = codec.heatmap_argmax(heatmaps)
        coords_tf, maxvals_tf = codec.heatmap_argmax_tf(heatmaps)
        np.testing.assert_array_equal(coords_tf.numpy(), coords)
        np.testing.assert_array_equal(maxvals_tf.numpy(), maxvals)
        keypoints_np, scores_np = codec.decode_heatmaps(heatmaps, centers, scales)
        keypoints_tf, scores_tf = tf.function(codec.decode_heatmaps_tf)(
            tf.constant(heatmaps), tf.constant(centers, tf.float32),
            tf.constant(scales, tf.float32))
        # float32 affine in TF against float64 in numpy: well under a thousandth of a pixel.
        np.testing.assert_allclose(keypoints_tf.numpy(), keypoints_np, rtol=0, atol=2e-3)
        np.testing.assert_array_equal(scores_tf.numpy(), scores_np)


@pytest.mark.parametrize("shift", [True, False])
def test_tf_flip_test_fusion_equals_the_numpy_form(shift):
    rng = np.random.default_rng(4)
    heatmaps = rng.normal(size=(3, 8, 6, 17)).astype(np.float32)
    mirrored = rng.normal(size=(3, 8, 6, 17)).astype(np.float32)
    want = codec.fuse_flip_test(heatmaps, mirrored, keypoints.COCO.flip_pairs, shift)
    got = codec.fuse_flip_test_tf(tf.constant(heatmaps), tf.constant(mirrored),
                                  keypoints.COCO.flip_pairs, shift)
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_allclose(
        want, _reference_flip_average(heatmaps, mirrored, keypoints.COCO.flip_pairs, shift),
        rtol=1e-6)
