"""Heatmap targets against an independent loop-form numpy generator (the authors' rule)."""
import numpy as np
import pytest
import tensorflow as tf

import mrpose_tf
from mrpose_tf.codec import heatmap_targets
from mrpose_tf.geometry import affine_points, get_affine_transform


def reference_targets(joints, vis, input_size, heatmap_size, sigma):
    """Loop form of the SimpleBaseline generator (image_size / heatmap_size are (w, h) there)."""
    image_wh = np.array([input_size[1], input_size[0]])
    heat_w, heat_h = heatmap_size[1], heatmap_size[0]
    k = len(joints)
    weight = np.array(vis, np.float32).reshape(k).copy()
    target = np.zeros((k, heat_h, heat_w), np.float32)
    tmp_size = sigma * 3
    stride = image_wh / np.array([heat_w, heat_h])
    for j in range(k):
        mu_x = int(joints[j][0] / stride[0] + 0.5)
        mu_y = int(joints[j][1] / stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= heat_w or ul[1] >= heat_h or br[0] < 0 or br[1] < 0:
            weight[j] = 0
            continue
        size = 2 * tmp_size + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, np.newaxis]
        x0 = y0 = size // 2
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2))
        g_x = max(0, -ul[0]), min(br[0], heat_w) - ul[0]
        g_y = max(0, -ul[1]), min(br[1], heat_h) - ul[1]
        img_x = max(0, ul[0]), min(br[0], heat_w)
        img_y = max(0, ul[1]), min(br[1], heat_h)
        if weight[j] > 0.5:
            target[j][img_y[0]:img_y[1], img_x[0]:img_x[1]] = g[g_y[0]:g_y[1], g_x[0]:g_x[1]]
    return target.transpose(1, 2, 0), weight


def random_joints(rng, k, input_size):
    h, w = input_size
    joints = np.stack([rng.uniform(-0.3 * w, 1.3 * w, k), rng.uniform(-0.3 * h, 1.3 * h, k)], 1)
    vis = (rng.uniform(size=k) > 0.2).astype(np.float32)
    return joints, vis


@pytest.mark.parametrize("sigma", [2.0, 3.0, 1.5, 2.3])
@pytest.mark.parametrize("sizes", [((256, 192), (64, 48)), ((256, 256), (64, 64)),
                                   ((384, 288), (96, 72))])
def test_targets_match_loop_reference(sigma, sizes):
    input_size, heatmap_size = sizes
    rng = np.random.default_rng(int(sigma * 10) + input_size[1])
    for _ in range(8):
        joints, vis = random_joints(rng, 17, input_size)
        got_maps, got_w = heatmap_targets(joints, vis, input_size, heatmap_size, sigma)
        want_maps, want_w = reference_targets(joints, vis, input_size, heatmap_size, sigma)
        np.testing.assert_array_equal(got_w.numpy(), want_w)
        np.testing.assert_allclose(got_maps.numpy(), want_maps, rtol=0, atol=1e-5)


def test_target_factors_give_the_maps_back_bit_for_bit_in_numpy():
    """heatmap_target_profiles + the numpy heatmaps_from_profiles (what a replay without
    TensorFlow rebuilds) against heatmap_targets and the loop reference, batched."""
    from mrpose_tf.codec import heatmap_target_profiles, heatmaps_from_profiles

    rng = np.random.default_rng(7)
    joints, vis = zip(*(random_joints(rng, 17, (96, 64)) for _ in range(5)))
    joints, vis = np.stack(joints), np.stack(vis)
    rows, cols, weights = (t.numpy() for t in heatmap_target_profiles(
        joints, vis, (96, 64), (24, 16), 2.0))
    assert rows.shape == (5, 17, 16) and cols.shape == (5, 17, 24)
    assert not rows[weights == 0].any()
    maps, want_weights = heatmap_targets(joints, vis, (96, 64), (24, 16), 2.0)
    rebuilt = heatmaps_from_profiles(rows, cols)
    assert isinstance(rebuilt, np.ndarray) and rebuilt.shape == (5, 24, 16, 17)
    np.testing.assert_array_equal(rebuilt, maps.numpy())
    np.testing.assert_array_equal(weights, want_weights.numpy())
    for i in range(5):
        want, _ = reference_targets(joints[i], vis[i], (96, 64), (24, 16), 2.0)
        np.testing.assert_allclose(rebuilt[i], want, rtol=0, atol=1e-5)


def test_targets_of_rotation_mapped_joints():
    rng = np.random.default_rng(7)
    m = get_affine_transform(np.float32([300, 240]), np.float32([1.2, 1.6]), 37.0, (256, 192))
    joints = affine_points(rng.uniform(100, 500, (17, 2)), m)
    vis = np.ones(17, np.float32)
    got_maps, got_w = heatmap_targets(joints, vis)
    want_maps, want_w = reference_targets(joints, vis, (256, 192), (64, 48), 2.0)
    np.testing.assert_array_equal(got_w.numpy(), want_w)
    np.testing.assert_allclose(got_maps.numpy(), want_maps, rtol=0, atol=1e-5)


def test_targets_edge_cases_by_hand():
    # stride 4: x = -3 -> -0.25 -> int() = 0 (toward zero, not floor): window still hits.
    # y = 20 -> mu 5: rows 0..11 (row -1 clipped).
    # x = -30 -> mu -7, br = -7 + 7 = 0 -> not < 0, so weight 1 with an all-zero map.
    # x = -31 -> mu -7 (int(-7.25)), same; x = -40 -> mu -9, br = -2 < 0 -> weight 0.
    # y = 300 -> mu 75, ul 69 >= 64 -> weight 0.  Joint 5 is not labelled.
    joints = np.array([[-3, 20], [-30, 20], [-31, 20], [-40, 20], [10, 300], [50, 50]], np.float64)
    vis = np.array([1, 1, 1, 1, 1, 0])
    maps, w = heatmap_targets(joints, vis)
    maps = maps.numpy()
    np.testing.assert_array_equal(w.numpy(), [1, 1, 1, 0, 0, 0])
    assert maps[5, 0, 0] == pytest.approx(1.0)          # mu = (0, 5): peak at the map border
    assert maps[5, 3, 0] == pytest.approx(np.exp(-9 / 8), rel=1e-6)
    assert maps[..., 1:].max() == 0.0
    assert maps[..., 0].sum() == pytest.approx(
        sum(np.exp(-(u * u + v * v) / 8) for u in range(0, 7) for v in range(-5, 7)), rel=1e-6)


def test_targets_batched_in_tf_function_and_public_api():
    rng = np.random.default_rng(11)
    joints = rng.uniform(-20, 260, (3, 17, 2)).astype(np.float32)
    vis = (rng.uniform(size=(3, 17, 1)) > 0.3).astype(np.float32)
    fn = tf.function(lambda j, v: mrpose_tf.heatmap_targets(j, v))
    maps, w = fn(tf.constant(joints), tf.constant(vis))
    assert maps.shape == (3, 64, 48, 17) and w.shape == (3, 17)
    for b in range(3):
        want_maps, want_w = reference_targets(joints[b], vis[b], (256, 192), (64, 48), 2.0)
        np.testing.assert_array_equal(w[b].numpy(), want_w)
        np.testing.assert_allclose(maps[b].numpy(), want_maps, atol=1e-5)
