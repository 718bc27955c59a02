"""The whole image -> keypoints pipeline as TensorFlow ops, for the SavedModel signatures.

The TF twin of :class:`mrpose_tf.predictor.Predictor`: boxes -> centre/scale, affine
crop, preprocessing, model, flip test, decoding and the inverse transform, all inside one
graph so that TF Serving answers with keypoints in image pixels. Every geometric step uses
the TensorFlow functions of :mod:`mrpose_tf.geometry`, every heatmap step those of
:mod:`mrpose_tf.codec`.
"""
import tensorflow as tf

from mrpose_tf.codec import decode_heatmaps_tf, fuse_flip_test_tf
from mrpose_tf.geometry import affine_transform_tf, box_to_center_scale_tf, warp_affine_tf
from mrpose_tf.preprocessing import DEFAULT_CONVENTION, preprocess


def flip_test_heatmaps_tf(model, crops, flip_pairs, shift_heatmap=True):
    """The flip test in one model call: the crops and their mirror images as one batch.

    TensorFlow form of :func:`mrpose_tf.predictor.predict_heatmaps` with ``flip_test``.
    """
    num = tf.shape(crops)[0]
    heatmaps = model(tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0), training=False)
    return fuse_flip_test_tf(heatmaps[:num], heatmaps[num:], flip_pairs, shift_heatmap)


def checked_crops(crops, input_size):
    """``crops`` after asserting (N, H, W, 3) of the model's size (InvalidArgumentError).

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
                       shift_heatmap=True, box_padding=1.25,
                       input_preprocessing=DEFAULT_CONVENTION):
    """Keypoints of the people in ``boxes`` of one image, entirely in TensorFlow.

    Equal to ``mrpose_tf.Predictor(model, ...)(image, boxes)`` up to the bilinear
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
      input_preprocessing: the convention of the model's weights
        (:data:`mrpose_tf.preprocessing.CONVENTIONS`).

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
        crops = preprocess(crops, input_preprocessing)
        if flip_test:
            heatmaps = flip_test_heatmaps_tf(model, crops, flip_pairs, shift_heatmap)
        else:
            heatmaps = model(crops, training=False)
        return decode_heatmaps_tf(heatmaps, centers, scales)

    def empty():
        return tf.zeros([0, num_joints, 2], tf.float32), tf.zeros([0, num_joints], tf.float32)

    keypoints, scores = tf.cond(tf.shape(boxes)[0] > 0, run, empty)
    return {"keypoints": keypoints, "scores": scores}
