"""The whole image -> keypoints pipeline as TensorFlow ops, for the SavedModel signatures.

The TF twin of :mod:`mrpose_tf.inference` (``Predictor``): boxes -> centre/scale, affine
crop, preprocessing, model, flip test, decoding and the inverse transform, all inside one
graph so that TF Serving answers with keypoints in image pixels. Every geometric step uses
the TensorFlow functions of :mod:`mrpose_tf.geometry`.
"""
import tensorflow as tf

from mrpose_tf.geometry import (PIXEL_STD, affine_points_tf, affine_transform_tf,
                                flip_permutation, warp_affine_tf)
from mrpose_tf.inference import QUARTER_PIXEL
from mrpose_tf.preprocessing import preprocess


def box_to_center_scale_tf(boxes, aspect_ratio, padding=1.25):
    """TensorFlow :func:`mrpose_tf.geometry.box_to_center_scale` for (M, 4) xywh boxes.

    Returns:
      centers (M, 2) and scales (M, 2) float32, scales in units of 200 px.
    """
    x, y, w, h = tf.unstack(tf.cast(boxes, tf.float32), num=4, axis=-1)
    centers = tf.stack([x + w * 0.5, y + h * 0.5], axis=-1)
    new_w = tf.where(w < aspect_ratio * h, h * aspect_ratio, w)
    new_h = tf.where(w > aspect_ratio * h, w / aspect_ratio, h)
    return centers, tf.stack([new_w, new_h], axis=-1) / PIXEL_STD * padding


def decode_heatmaps_tf(heatmaps, centers, scales):
    """TensorFlow twin of :func:`mrpose_tf.inference.decode_heatmaps`.

    Argmax (coordinates 0 where the maximum is <= 0), a quarter-pixel step toward the larger
    neighbour when 1 < px < w-1 and 1 < py < h-1, then the inverse affine of (centre, scale,
    rotation 0, heatmap size).

    Args:
      heatmaps: (N, h, w, K) float32.
      centers: (N, 2) box centres in image pixels.
      scales: (N, 2) box scales in units of 200 px.

    Returns:
      keypoints (N, K, 2) float32 in image pixels and scores (N, K) float32.
    """
    heatmaps = tf.cast(heatmaps, tf.float32)
    shape = tf.shape(heatmaps)
    n, h, w, k = shape[0], shape[1], shape[2], shape[3]
    flat = tf.reshape(tf.transpose(heatmaps, [0, 3, 1, 2]), tf.stack([n, k, h * w]))
    index = tf.argmax(flat, axis=2, output_type=tf.int32)
    scores = tf.reduce_max(flat, axis=2)
    found = scores > 0
    px = tf.where(found, index % w, 0)
    py = tf.where(found, index // w, 0)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    px_c, py_c = tf.clip_by_value(px, 1, w - 2), tf.clip_by_value(py, 1, h - 2)
    batch = tf.broadcast_to(tf.range(n)[:, None], tf.shape(px))
    joint = tf.broadcast_to(tf.range(k)[None, :], tf.shape(px))

    def at(y, x):
        return tf.gather_nd(heatmaps, tf.stack([batch, y, x, joint], axis=-1))

    step = tf.stack([tf.sign(at(py_c, px_c + 1) - at(py_c, px_c - 1)),
                     tf.sign(at(py_c + 1, px_c) - at(py_c - 1, px_c))], axis=-1)
    coords = tf.cast(tf.stack([px, py], axis=-1), tf.float32)
    coords += step * QUARTER_PIXEL * tf.cast(inside, tf.float32)[..., None]
    inverse = affine_transform_tf(centers, scales, 0.0, (h, w), inv=True)
    return affine_points_tf(coords, inverse), scores


def flip_test_heatmaps_tf(model, crops, flip_pairs, shift_heatmap=True):
    """Average of the crops' heatmaps and the flipped-back heatmaps of the mirrored crops.

    The TensorFlow twin of :func:`mrpose_tf.inference.predict_heatmaps` with ``flip_test``;
    both halves run in one batch.
    """
    num = tf.shape(crops)[0]
    heatmaps = model(tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0), training=False)
    plain, mirrored = heatmaps[:num], heatmaps[num:]
    order = flip_permutation(int(heatmaps.shape[-1]), flip_pairs)
    flipped = tf.gather(tf.reverse(mirrored, axis=[2]), order, axis=3)
    if shift_heatmap:  # column i takes column i-1; column 0 keeps its value
        flipped = tf.concat([flipped[:, :, :1], flipped[:, :, :-1]], axis=2)
    return (plain + flipped) * 0.5


def checked_crops(crops, input_size):
    """``crops`` after asserting (N, H, W, 3) float32 of the model's size (InvalidArgumentError).

    TF Serving feeds a request's tensor without checking it against the signature's shape,
    so the graph checks it before the model sees it.
    """
    height, width = (int(v) for v in input_size)
    expected = tf.constant([height, width, 3])
    checks = [tf.debugging.assert_rank(crops, 4, message="image must be (N, H, W, 3) crops"),
              tf.debugging.assert_equal(tf.shape(crops)[1:], expected,
                                        message=f"image crops must be (N, {height}, {width}, 3)")]
    with tf.control_dependencies(checks):
        return tf.identity(crops)


def _check_inputs(image, boxes):
    """Asserts with messages: a bad request becomes an InvalidArgumentError, not a crash."""
    checks = [
        tf.debugging.assert_rank(image, 3, message="image must be (height, width, 3)"),
        tf.debugging.assert_equal(tf.shape(image)[2], 3, message="image must have 3 channels"),
        tf.debugging.assert_positive(tf.shape(image)[:2], message="image must not be empty"),
        tf.debugging.assert_rank(boxes, 2, message="boxes must be (M, 4) xywh"),
        tf.debugging.assert_equal(tf.shape(boxes)[1], 4, message="boxes must be (M, 4) xywh"),
        tf.debugging.assert_all_finite(boxes, message="boxes must be finite"),
        tf.debugging.assert_positive(tf.reshape(boxes[:, 2:], [-1]) + 0.0,
                                     message="box width and height must be > 0"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(image), tf.identity(boxes)


def image_keypoints_tf(model, image, boxes, input_size, flip_pairs, flip_test=True,
                       shift_heatmap=True, box_padding=1.25):
    """Keypoints of the people in ``boxes`` of one image, entirely in TensorFlow.

    Equal to ``mrpose_tf.inference.Predictor(model, ...)(image, boxes)`` up to the bilinear
    interpolation of the crop (TF vs OpenCV's fixed point, a fraction of a grey level).
    Bad inputs fail ``tf.debugging`` asserts (InvalidArgumentError with a message); zero
    boxes give empty results without running the model.

    Args:
      model: a keras model on (N, H, W, 3) preprocessed float32 crops -> (N, H/4, W/4, K).
      image: (H, W, 3) uint8 RGB.
      boxes: (M, 4) float32 person boxes (x, y, w, h) in pixels; M may be 0.
      input_size: (height, width) of the model input.
      flip_pairs: (left, right) joint index pairs.
      flip_test: average with the mirrored crops (the paper's evaluation).
      shift_heatmap: the reference's one-pixel shift of the flipped-back heatmaps.
      box_padding: box enlargement factor.

    Returns:
      {'keypoints': (M, K, 2) float32 image pixels, 'scores': (M, K) float32}.
    """
    image, boxes = _check_inputs(image, boxes)
    height, width = (int(v) for v in input_size)
    num_joints = int(model.output.shape[-1])

    def run():
        centers, scales = box_to_center_scale_tf(boxes, width / height, box_padding)
        matrices = affine_transform_tf(centers, scales, 0.0, (height, width))
        crops = tf.map_fn(lambda m: warp_affine_tf(image, m, (height, width)), matrices,
                          fn_output_signature=tf.TensorSpec((height, width, 3), tf.float32))
        crops = preprocess(crops)
        if flip_test:
            heatmaps = flip_test_heatmaps_tf(model, crops, flip_pairs, shift_heatmap)
        else:
            heatmaps = model(crops, training=False)
        return decode_heatmaps_tf(heatmaps, centers, scales)

    def empty():
        return tf.zeros([0, num_joints, 2], tf.float32), tf.zeros([0, num_joints], tf.float32)

    keypoints, scores = tf.cond(tf.shape(boxes)[0] > 0, run, empty)
    return {"keypoints": keypoints, "scores": scores}
