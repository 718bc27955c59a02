"""Affine crop geometry: numpy and TensorFlow versions against an independent reference."""
import cv2
import numpy as np
import pytest
import tensorflow as tf

from mrpose_tf.geometry import (affine_points, affine_points_tf, affine_transform_tf,
                                get_affine_transform, invert_affine_tf, warp_affine_tf,
                                warp_axis_aligned_tf)


def reference_affine(center, scale, rot, output_size, inv=False):
    """SimpleBaseline's algorithm: three float32 point pairs + cv2.getAffineTransform."""
    out_w, out_h = output_size[1], output_size[0]
    src_w = scale[0] * 200.0
    rad = np.pi * rot / 180
    sn, cs = np.sin(rad), np.cos(rad)
    src_dir = np.array([0 * cs - (src_w * -0.5) * sn, 0 * sn + (src_w * -0.5) * cs])
    dst_dir = np.array([0, out_w * -0.5], np.float32)
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + src_dir
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = np.array([out_w * 0.5, out_h * 0.5]) + dst_dir
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]], np.float32)
    return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


def random_cases(n, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        center = rng.uniform(-50, 1300, 2).astype(np.float32)
        scale = rng.uniform(0.2, 6.0, 2).astype(np.float32)
        rot = float(rng.uniform(-80, 80)) if i % 3 else 0.0
        size = [(256, 192), (64, 48), (384, 288), (256, 256)][i % 4]
        yield center, scale, rot, size


@pytest.mark.parametrize("inv", [False, True])
def test_numpy_affine_matches_reference_to_1e6(inv):
    # float32 scales (COCO records) and float64 ones (the reference's MPII path) alike.
    for dtype in (np.float32, np.float64):
        for center, scale, rot, size in random_cases(60):
            scale = scale.astype(dtype)
            np.testing.assert_allclose(get_affine_transform(center, scale, rot, size, inv=inv),
                                       reference_affine(center, scale, rot, size, inv=inv),
                                       rtol=0, atol=1e-6)


@pytest.mark.parametrize("inv", [False, True])
def test_tf_affine_batched_matches_reference_to_1e4(inv):
    cases = list(random_cases(60, seed=1))
    for size in [(256, 192), (64, 48)]:
        centers = np.stack([c[0] for c in cases])
        scales = np.stack([c[1] for c in cases])
        rots = np.array([c[2] for c in cases], np.float32)
        got = affine_transform_tf(centers, scales, rots, size, inv=inv).numpy()
        want = np.stack([reference_affine(c, s, r, size, inv=inv)
                         for c, s, r in zip(centers, scales, rots)])
        assert got.shape == (60, 2, 3)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_tf_affine_hand_worked_case():
    # A 400 px wide box centred at (300, 200) onto a 256x192 crop: zoom 192/400 = 0.48,
    # no rotation: x' = 0.48 (x - 300) + 96, y' = 0.48 (y - 200) + 128.
    m = affine_transform_tf([300.0, 200.0], [2.0, 8.0], 0.0, (256, 192)).numpy()
    np.testing.assert_allclose(m, [[0.48, 0, 96 - 144], [0, 0.48, 128 - 96]], atol=1e-5)
    # rot = 90: the crop's "up" is the image's +x: the point 200 px right of the centre lands
    # 96 px above the crop centre, the point 100 px above it 48 px left of the crop centre.
    m = affine_transform_tf([300.0, 200.0], [2.0, 2.0], 90.0, (256, 192)).numpy()
    np.testing.assert_allclose(m @ [500, 200, 1], [96, 128 - 96], atol=1e-4)
    np.testing.assert_allclose(m @ [300, 100, 1], [96 - 48, 128], atol=1e-4)


def test_invert_and_points_tf_match_numpy():
    m = reference_affine(np.float32([320, 200]), np.float32([1.3, 1.7]), 25.0, (256, 192))
    inv = invert_affine_tf(tf.constant(m)).numpy()
    np.testing.assert_allclose(inv, cv2.invertAffineTransform(m), atol=1e-9)
    pts = np.random.default_rng(2).uniform(0, 600, (17, 2))
    np.testing.assert_allclose(affine_points_tf(pts, tf.constant(m)).numpy(),
                               affine_points(pts, m), atol=1e-9)


def exact_bilinear_warp(image, matrix, output_size):
    """cv2.warpAffine's definition in exact arithmetic: dst(u, v) = bilinear src(M^-1 [u, v, 1]),
    with every neighbour outside the image read as 0 (BORDER_CONSTANT)."""
    h, w = output_size
    inverse = cv2.invertAffineTransform(np.float64(matrix))
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    x = inverse[0, 0] * u + inverse[0, 1] * v + inverse[0, 2]
    y = inverse[1, 0] * u + inverse[1, 1] * v + inverse[1, 2]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    padded = np.pad(np.float64(image), ((2, 2), (2, 2), (0, 0)))

    def at(yy, xx):
        inside = (yy >= -1) & (yy <= image.shape[0]) & (xx >= -1) & (xx <= image.shape[1])
        return padded[np.clip(yy, -2, image.shape[0] + 1) + 2,
                      np.clip(xx, -2, image.shape[1] + 1) + 2] * inside[..., None]

    return ((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
            + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)))


@pytest.mark.parametrize("rot", [0.0, 33.0])
def test_warp_affine_tf_matches_cv2_bilinear(rot):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (120, 90, 3)).astype(np.float32)
    m = reference_affine(np.float32([40, 70]), np.float32([0.5, 0.7]), rot, (64, 48))
    want = cv2.warpAffine(image, m, (48, 64), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    got = warp_affine_tf(image, m, (64, 48)).numpy()
    np.testing.assert_allclose(got, exact_bilinear_warp(image, m, (64, 48)), atol=0.05)
    # OpenCV quantises sample positions to 1/32 px (worst case on noise: ~1 grey level).
    assert np.abs(got - want).mean() < 1.5
    # Batched call and a hand-checked pixel: the identity shift by (+2, +1) reads image[y-1, x-2].
    shift = np.float32([[1, 0, 2], [0, 1, 1]])
    got = warp_affine_tf(np.stack([image, image]), np.stack([shift, shift]), (10, 10)).numpy()
    np.testing.assert_array_equal(got[1, 5, 7], image[4, 5])
    np.testing.assert_array_equal(got[0, 0, 0], [0, 0, 0])  # outside the input: fill 0


@pytest.mark.parametrize("matrix", [[[1.7, 0, -20.3], [0, 1.7, -5.2]],     # zoom in, off the edge
                                    [[-0.6, 0, 70.1], [0, 0.6, 3.3]]])    # mirrored, zoom out
def test_warp_axis_aligned_tf_matches_the_general_warp_and_cv2(matrix):
    image = np.random.default_rng(4).integers(0, 256, (100, 80, 3)).astype(np.uint8)
    m = np.float64(matrix)
    got = warp_axis_aligned_tf(image, m, (64, 48)).numpy()
    np.testing.assert_allclose(got, warp_affine_tf(image, m, (64, 48)).numpy(), atol=0.02)
    want = cv2.warpAffine(image.astype(np.float32), m, (48, 64), flags=cv2.INTER_LINEAR)
    np.testing.assert_allclose(got, exact_bilinear_warp(image, m, (64, 48)), atol=0.05)
    assert np.abs(got - want).mean() < 1.5  # OpenCV's 1/32 px sample positions
    # Hand check: x = 2 u + 1.5, y = 2 v reads the mean of columns 1 and 2 of row 2 v.
    half = warp_axis_aligned_tf(image, np.float64([[0.5, 0, -0.75], [0, 0.5, 0]]), (4, 4)).numpy()
    np.testing.assert_allclose(half[1, 0], (image[2, 1] + image[2, 2].astype(np.float32)) / 2,
                               atol=1e-3)
