"""Person records -> tf.data: read, decode the needed region, augment, crop, targets, batch.

Every element of a built dataset is a dict of batched tensors:

  image          (B, H, W, 3) float32, crop preprocessed with the ``input_preprocessing``
                 convention (:func:`mrpose_tf.preprocess`)
  heatmaps       (B, h, w, K) float32 targets;  target_weight (B, K) float32
  center, scale  (B, 2) float32, the record's (un-augmented) box
  image_id       (B,) int64;  box_score, area (B,) float32
  joints         (B, K, 2) float32 in original image pixels;  visibility (B, K) float32
  matrix         (B, 2, 3) float32, image -> crop matrix (augmentation and flip included)
  flipped        (B,) bool; where True the crop's joints are ``matrix @ joints`` with the
                 keypoint set's left/right pairs swapped
  record_position (B,) int64, the position of the element's record in ``records``

Where the images come from (:func:`read_split` gives either kind of records):

* Image files: records read from the annotation JSON and the image folder; each image is
  read from ``PersonRecord.image_path``.
* A TFDS build (``config.dataset.tfds_name``; :mod:`mrpose_tf.data.tfds_builder`): records
  read from the build's ``records.npz``, each naming its build (``PersonRecord.tfds_dir``);
  the encoded images are streamed from the build's shards, one example per image, and never
  read from ``image_path``. Any subset of a build's records works (the shards' people that
  are not in ``records`` are left out).

Order: the images are visited in order of first appearance in ``records`` (a TFDS build:
in build order, the same for the list :func:`read_split` returns), their people in record
order; training then shuffles by seed. With ``decode_once_per_image`` (the training default)
the same seed therefore gives the same batches from the files and from a build of them.
Per person, the files are visited in record order and a build in build order (people grouped
by image); ``record_position`` tells where each element belongs.

Speed (one CPU core must beat a per-sample OpenCV loop 2x; ``scripts/benchmark.py pipeline``):

* Records are planned in groups (``_PLAN_BATCH`` records, or the people of one image with
  ``decode_once_per_image``): augmentation draws, crop matrices (a horizontal flip folded
  in, independent of the image width), crop joints and the image region each crop samples
  are computed vectorised, once per group, before any decoding.
* Per image only (with ``decode_once_per_image``, the training default: once for all the
  people of an image, over the union of their regions): read, a truncation check, decode of
  just the sampled region (``decode_and_crop_jpeg``) and the warp: ``cv2.warpAffine``
  through ``tf.numpy_function`` when ``opencv_warp`` (the training default; ~0.25 ms against
  ~1.3 ms for TensorFlow's ImageProjectiveTransform), else TensorFlow ops, with
  ``crop_and_resize`` for crops without rotation.
* Per batch: targets and preprocessing (one 1x1 convolution, :func:`_preprocess_batch`).

Image formats: JPEG, PNG, GIF, BMP and WebP (where TF has tf.io.decode_webp) are decoded by
TensorFlow; any other format (TIFF, JPEG 2000, ...) by OpenCV (:mod:`mrpose_tf.images`
through ``tf.numpy_function``), as ``mrpose-demo`` and the deployment kit read every file; all
of them as stored (EXIF orientation ignored).

Bad images: missing files are reported before iteration by :func:`check_image_files`
(``build_dataset`` calls it for image files). A truncated file (JPEG without its end
marker, PNG without IEND) or one that no decoder reads is skipped during iteration, printed
with its path and counted in ``skipped_counter``; other decoder errors drop the element
through ``ignore_errors``. The evaluation counts and names every person that did not come
back (:func:`mrpose_tf.evaluation.runner.predict_records`).
"""
from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import tensorflow as tf

from mrpose_tf.codec import heatmap_targets
from mrpose_tf.data.records import PersonRecord, stack_records
from mrpose_tf.geometry import (affine_points_tf, affine_transform_tf, flip_permutation,
                                invert_affine_tf, warp_affine_tf, warp_axis_aligned_tf)
from mrpose_tf.preprocessing import DEFAULT_CONVENTION, channel_affine

_TAIL_BYTES = 256
_PLAN_BATCH = 64  # records whose augmentation and crop geometry are computed together
# Crops held to mix the people of one image into different batches (decode_once_per_image):
# 512 crops of 256x192 are 75 MB as uint8 (OpenCV warp), 300 MB as float32 (TF warp).
_SAMPLE_SHUFFLE = 512
_OUTPUT_KEYS = ("image", "center", "scale", "image_id", "box_score", "area", "joints",
                "visibility", "matrix", "flipped", "record_position")
# libjpeg's accurate integer IDCT: the same pixels as cv2.imread (the default differs by ~1).
_DCT = "INTEGER_ACCURATE"


def check_image_files(records):
    """Raise FileNotFoundError naming the missing image files of ``records`` (before training)."""
    paths = sorted({r.image_path for r in records})
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} image files are missing: {shown}")


def make_skipped_counter():
    """A counter of skipped (unreadable) images for :func:`build_dataset`; read ``.numpy()``."""
    return tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_images")


def _looks_complete(data):
    """False for a truncated JPEG (no FFD9 end marker near the end) or PNG (no IEND)."""
    size = tf.strings.length(data)
    tail = tf.io.decode_raw(tf.strings.substr(data, tf.maximum(size - _TAIL_BYTES, 0), _TAIL_BYTES),
                            tf.uint8)
    has_eoi = tf.reduce_any((tail[:-1] == 0xFF) & (tail[1:] == 0xD9))
    is_png = tf.strings.substr(data, 0, 4) == b"\x89PNG"
    has_iend = tf.strings.substr(data, tf.maximum(size - 8, 0), 4) == b"IEND"
    return tf.case([(tf.io.is_jpeg(data), lambda: has_eoi), (is_png, lambda: has_iend)],
                   default=lambda: size > 0)


def _crop_matrices(center, scale, rot, flip, input_size):
    """Image -> crop matrices (..., 2, 3), a horizontal flip folded in.

    The crop of the mirrored image (mirrored centre, same scale and rotation) is the crop
    of the image itself with the rotation negated, then mirrored about the crop's centre
    column ``u -> W - u``: a matrix that does not depend on the image width.
    """
    matrix = affine_transform_tf(center, scale, tf.where(flip, -rot, rot), input_size)
    mirrored = matrix * tf.constant([[-1.0], [1.0]]) + tf.constant(
        [[0.0, 0.0, float(input_size[1])], [0.0, 0.0, 0.0]])
    return tf.where(flip[..., None, None], mirrored, matrix)


def _sample_bounds(matrix, input_size):
    """(..., 4) bounding boxes (x0, y0, x1, y1) in the image of the points the crops sample."""
    h, w = input_size
    corners = tf.constant([[0.0, 0.0], [w - 1.0, 0.0], [0.0, h - 1.0], [w - 1.0, h - 1.0]])
    points = affine_points_tf(corners, invert_affine_tf(matrix))
    return tf.concat([tf.reduce_min(points, -2), tf.reduce_max(points, -2)], -1)


def _region(bounds, image_h, image_w):
    """Pixel window (y, x, h, w) of the image that bilinear sampling of ``bounds`` needs."""
    lo = tf.cast(tf.floor(bounds[:2]), tf.int32)
    hi = tf.cast(tf.floor(bounds[2:]), tf.int32) + 1
    x0, y0 = tf.clip_by_value(lo[0], 0, image_w - 1), tf.clip_by_value(lo[1], 0, image_h - 1)
    x1, y1 = tf.clip_by_value(hi[0], 0, image_w - 1), tf.clip_by_value(hi[1], 0, image_h - 1)
    # An empty window (the crop misses the image) still decodes one pixel; it is never sampled.
    return tf.stack([y0, x0, tf.maximum(y1 - y0 + 1, 1), tf.maximum(x1 - x0 + 1, 1)])


def _window_to_crop(matrix, window):
    """Matrices (..., 2, 3): pixel of a decoded window -> crop pixel."""
    offset = tf.cast(window[1::-1], tf.float32)  # window origin (x, y)
    return tf.concat([matrix[..., :2], matrix[..., 2:] + matrix[..., :2] @ offset[:, None]], -1)


def _plan(seed_pair, records, augment, train, input_size, permutation):
    """Vectorised over a batch of records: augmentation, crop matrices and crop joints."""
    scale, rot, flip = _augmentation(seed_pair, records["scale"], augment, train)
    matrix = _crop_matrices(records["center"], scale, rot, flip, input_size)
    joints = affine_points_tf(records["joints"], matrix)
    visibility = records["visibility"]
    flipped_joints = tf.gather(joints, permutation, axis=1)
    flipped_visibility = tf.gather(visibility, permutation, axis=1)
    return dict(records, matrix=matrix, flipped=flip, axis_aligned=tf.equal(rot, 0.0),
                sample_bounds=_sample_bounds(matrix, input_size),
                crop_joints=tf.where(flip[:, None, None], flipped_joints, joints),
                crop_visibility=tf.where(flip[:, None], flipped_visibility, visibility))


class _Cropper:
    """Reads one image and returns the crops of planned elements (see :func:`_plan`).

    The encoded image is the element's ``image_bytes`` (a TFDS build) or the file at its
    ``image_path``. One element is one person, or with ``grouped`` all the people of one
    image (every field but ``image_bytes`` with a leading person axis): then the image is
    read and decoded once, over the union of the regions its crops sample, and warped once
    per person.
    """

    def __init__(self, input_size, opencv_warp=False, grouped=False):
        self.input_size = tuple(int(v) for v in input_size)
        self.opencv_warp = opencv_warp
        self.grouped = grouped

    def __call__(self, element):
        """-> (ok, crop): (H, W, 3), or (n, H, W, 3) when grouped; uint8 (cv2) or float32."""
        bounds, path = element["sample_bounds"], element["image_path"]
        shape = self.input_size + (3,)
        if self.grouped:
            bounds = tf.concat([tf.reduce_min(bounds[:, :2], 0), tf.reduce_max(bounds[:, 2:], 0)], 0)
            path = path[0]
            shape = tf.concat([tf.shape(element["matrix"])[:1], shape], 0)
        data = element["image_bytes"] if "image_bytes" in element else tf.io.read_file(path)
        blank = tf.zeros(shape, tf.uint8 if self.opencv_warp else tf.float32)

        def by_tensorflow():
            return tf.constant(True), tf.cond(
                tf.io.is_jpeg(data), lambda: self._crop_jpeg(data, bounds, element),
                lambda: self._crop_window(
                    tf.io.decode_image(data, channels=3, expand_animations=False), bounds,
                    element))

        def by_opencv():
            decoded, pixels = tf.numpy_function(_opencv_decode, [data], [tf.bool, tf.uint8],
                                                stateful=False)
            pixels = tf.ensure_shape(pixels, (None, None, 3))
            return decoded, tf.cond(decoded, lambda: self._crop_window(pixels, bounds, element),
                                    lambda: blank)

        return tf.cond(_looks_complete(data),
                       lambda: tf.cond(_tensorflow_decodes(data), by_tensorflow, by_opencv),
                       lambda: (tf.constant(False), blank))

    def _warp(self, pixels, window, element):
        matrix = _window_to_crop(element["matrix"], window)
        if self.opencv_warp:
            crop = tf.numpy_function(_opencv_warp, [pixels, matrix, self.input_size], tf.uint8,
                                     stateful=False)
            return tf.ensure_shape(crop, ((None,) if self.grouped else ()) + self.input_size + (3,))

        def warp(matrix, axis_aligned):
            return tf.cond(axis_aligned,
                           lambda: warp_axis_aligned_tf(pixels, matrix, self.input_size),
                           lambda: warp_affine_tf(pixels, matrix, self.input_size))

        if not self.grouped:
            return warp(matrix, element["axis_aligned"])
        return tf.map_fn(lambda args: warp(*args), (matrix, element["axis_aligned"]),
                         fn_output_signature=tf.TensorSpec(self.input_size + (3,), tf.float32))

    def _crop_jpeg(self, data, bounds, element):
        shape = tf.io.extract_jpeg_shape(data)
        window = _region(bounds, shape[0], shape[1])
        pixels = tf.io.decode_and_crop_jpeg(data, window, channels=3, dct_method=_DCT)
        return self._warp(pixels, window, element)

    def _crop_window(self, pixels, bounds, element):
        shape = tf.shape(pixels)
        window = _region(bounds, shape[0], shape[1])
        pixels = pixels[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
        return self._warp(pixels, window, element)


def _tensorflow_decodes(data):
    """True for the formats ``tf.io.decode_image`` reads: JPEG, PNG, GIF, BMP, and WebP in
    the TensorFlow releases that have ``tf.io.decode_webp`` (else OpenCV decodes WebP)."""
    head = tf.strings.substr(data, 0, 4)
    known = (tf.io.is_jpeg(data) | tf.equal(head, b"\x89PNG") | tf.equal(head, b"GIF8")
             | tf.equal(tf.strings.substr(data, 0, 2), b"BM"))
    if not hasattr(tf.io, "decode_webp"):
        return known
    return known | (tf.equal(head, b"RIFF") & tf.equal(
        tf.strings.substr(data, tf.minimum(8, tf.strings.length(data)), 4), b"WEBP"))


def _opencv_decode(data):
    """numpy: (decoded, (H, W, 3) uint8 RGB) of an encoded image in a format TensorFlow does
    not read (TIFF, JPEG 2000, ...), by :func:`mrpose_tf.images.decode_image_rgb`; (False,
    one black pixel) when OpenCV cannot decode it either."""
    from mrpose_tf.images import decode_image_rgb

    image = decode_image_rgb(data)
    if image is None:
        return np.bool_(False), np.zeros((1, 1, 3), np.uint8)
    return np.bool_(True), image


def _opencv_warp(pixels, matrix, output_size):
    """numpy: ``cv2.warpAffine`` (bilinear, zero border) of a uint8 image; uint8 out.

    ``matrix`` (2, 3) gives one crop (H, W, 3); (n, 2, 3) gives n crops (n, H, W, 3).
    """
    import cv2

    size = (int(output_size[1]), int(output_size[0]))
    if matrix.ndim == 3:
        return np.stack([_opencv_warp(pixels, m, output_size) for m in matrix]).reshape(
            (len(matrix), size[1], size[0], 3))
    return cv2.warpAffine(pixels, matrix.astype(np.float64), size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _preprocess_batch(images, input_preprocessing):
    """:func:`mrpose_tf.preprocess` of (B, H, W, 3) crops as one 1x1 convolution plus a bias.

    The channel order is an exact permutation and the scale one product per value: the
    numbers of :func:`mrpose_tf.preprocess` (bit for bit without a scale, to float rounding
    with one), ~4x faster on CPU than a channel reversal and a broadcast subtraction.
    """
    source, scale, offset = channel_affine(input_preprocessing)
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    kernel[0, 0, source, np.arange(3)] = scale
    mapped = tf.nn.conv2d(tf.cast(images, tf.float32), tf.constant(kernel), 1, "VALID")
    return tf.nn.bias_add(mapped, tf.constant(offset))


def _augmentation(seed_pair, scale, augment, train):
    """(scale, rot, flip) for box scales ``scale`` (..., 2): stateless draws keyed by ``seed_pair``.

    Returns (scale (..., 2), rot (...) degrees, flip (...) bool).
    """
    batch_shape = tf.shape(scale)[:-1]
    if not train:
        return scale, tf.zeros(batch_shape), tf.zeros(batch_shape, tf.bool)
    seeds = tf.random.experimental.stateless_split(seed_pair, 2)
    draw_shape = tf.concat([[2], batch_shape], 0)
    normal = tf.random.stateless_normal(draw_shape, seed=seeds[0])
    uniform = tf.random.stateless_uniform(draw_shape, seed=seeds[1])
    sf = float(augment.get("scale_factor", 0.0))
    rf = float(augment.get("rotation_factor", 0.0))
    scale = scale * tf.clip_by_value(normal[0] * sf + 1.0, 1.0 - sf, 1.0 + sf)[..., None]
    rot = tf.where(uniform[0] <= float(augment.get("rotation_prob", 0.6)),
                   tf.clip_by_value(normal[1] * rf, -2.0 * rf, 2.0 * rf), 0.0)
    flip = uniform[1] <= float(augment.get("flip_prob", 0.5))
    return scale, rot, flip if augment.get("flip", True) else tf.zeros(batch_shape, tf.bool)


def _tfds_build(records):
    """The TFDS build directory the records come from, or '' for image files."""
    builds = {r.tfds_dir for r in records}
    if len(builds) > 1:
        raise ValueError(f"the records come from {len(builds)} sources "
                         f"({', '.join(sorted(b or 'image files' for b in builds))}): "
                         f"build one dataset per source")
    return builds.pop()


def _file_images(records):
    """Per image, by first appearance in ``records``: {'rows': (n,) int64 positions}."""
    by_image = {}
    for position, r in enumerate(records):
        by_image.setdefault(r.image_path, []).append(position)
    rows = tf.RaggedTensor.from_row_lengths(np.concatenate(list(by_image.values())),
                                            [len(v) for v in by_image.values()])
    return tf.data.Dataset.from_tensor_slices(rows).map(lambda r: {"rows": r})


def _tfds_images(path, records, input_context):
    """Per image of the build's shards: {'rows': (n,) int64 positions in ``records`` of its
    people, 'image_bytes': () string}; images with none of them are left out."""
    from mrpose_tf.data.tfds_builder import image_examples

    indices = np.array([r.record_index for r in records], np.int64)
    if len(np.unique(indices)) != len(indices) or indices.min() < 0:
        raise ValueError(f"records of TFDS build {path} must name distinct people of it "
                         f"(PersonRecord.record_index, as read_split gives them)")
    # Build position -> position in records (-1: not asked for).
    lookup = np.full(indices.max() + 1, -1, np.int64)
    lookup[indices] = np.arange(len(records))
    size = len(lookup)
    lookup = tf.constant(lookup)

    def select(example):
        index = example["record_index"]
        rows = tf.where(index < size, tf.gather(lookup, tf.minimum(index, size - 1)), -1)
        return {"rows": tf.boolean_mask(rows, rows >= 0), "image_bytes": example["image_bytes"]}

    return image_examples(path, input_context).map(select).filter(
        lambda e: tf.size(e["rows"]) > 0)


def build_dataset(records, *, keypoints, input_size=(256, 192), heatmap_size=(64, 48), sigma=2.0,
                  train, batch_size, augment=None, seed=0, shuffle_buffer=2048, input_context=None,
                  drop_remainder=None, repeat=False, skipped_counter=None, num_parallel_calls=None,
                  deterministic=True, opencv_warp=None, check_files=True,
                  decode_once_per_image=None, input_preprocessing=DEFAULT_CONVENTION):
    """The tf.data pipeline over person records (see the module docstring for the elements).

    Args:
      records: sequence of :class:`PersonRecord`, all from image files or all from one TFDS
        build (``tfds_dir`` set: the images come from its shards).
      keypoints: the :class:`KeypointSpec` (its flip pairs are used by the flip).
      input_size, heatmap_size: (height, width) of the crop and of the targets.
      sigma: target Gaussian sigma (heatmap pixels).
      train: augment (scale, rotation, flip) and shuffle; else plain crops, unshuffled
        (see the module docstring for the order).
      batch_size: global batch size (divided per replica when ``input_context`` is given).
      augment: mapping with scale_factor, rotation_factor, rotation_prob, flip, flip_prob
        (``config.augment``); ignored when not training.
      seed: seeds the shuffle and the stateless augmentation draws (keyed by seed, position
        of the element's group of ``_PLAN_BATCH`` records and input pipeline), so a run is
        reproducible.
      shuffle_buffer: shuffle buffer size (capped at the number of records, or of images
        with ``decode_once_per_image``). From a TFDS build the buffer holds encoded images.
      input_context: ``tf.distribute.InputContext``: shard across input pipelines (image
        files: by record, or by image with ``decode_once_per_image``; a TFDS build: by shard
        file when it has enough, else by image).
      drop_remainder: drop a last partial batch (default: ``train``).
      repeat: repeat forever.
      skipped_counter: optional ``tf.Variable`` (:func:`make_skipped_counter`) incremented for
        every skipped unreadable image.
      num_parallel_calls: map parallelism (default AUTOTUNE).
      deterministic: keep the element order; False lets a slow image be overtaken (the
        augmentation of each record stays the same).
      opencv_warp: crop with ``cv2.warpAffine`` (through ``tf.numpy_function``: ~5x faster
        than the TensorFlow warp ops on CPU, but the dataset graph then needs Python);
        default: when training. False: pure TensorFlow ops.
      check_files: call :func:`check_image_files` first (image files only).
      decode_once_per_image: read and decode each image once for all of its people (COCO
        train has ~2.6 per image) instead of once per person; default: when training
        (evaluation keeps the record order). Images are shuffled (``shuffle_buffer``), and
        their people then pass through a buffer of 512 crops: every person still comes once
        per epoch, but the people of one image land in nearby batches more often than with
        the per-person shuffle. The augmentation draws differ from the per-person
        pipeline's (they are keyed by image).
      input_preprocessing: the convention of the crops ('image'), a name of
        :data:`mrpose_tf.preprocessing.CONVENTIONS`: the run's ``model.input_preprocessing``.

    Returns:
      A ``tf.data.Dataset`` of batched element dicts.
    """
    if not records:
        raise ValueError("build_dataset: no person records")
    tfds_dir = _tfds_build(records)
    if check_files and not tfds_dir:
        check_image_files(records)
    augment = dict(augment or {})
    input_size = tuple(int(v) for v in input_size)
    drop_remainder = train if drop_remainder is None else drop_remainder
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    opencv_warp = train if opencv_warp is None else opencv_warp
    decode_once_per_image = train if decode_once_per_image is None else decode_once_per_image
    cropper = _Cropper(input_size, opencv_warp, grouped=decode_once_per_image)
    permutation = tf.constant(flip_permutation(keypoints.num_joints, keypoints.flip_pairs))

    columns = stack_records(records)
    columns["record_position"] = np.arange(len(records), dtype=np.int64)
    table = {k: tf.constant(v) for k, v in columns.items()}
    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(batch_size)

    # Elements hold 'rows' (positions in records) and, from a TFDS build, 'image_bytes'.
    if tfds_dir:
        ds = _tfds_images(tfds_dir, records, input_context)  # sharded by the reader
        if not decode_once_per_image:
            ds = ds.map(lambda e: {"rows": e["rows"],
                                   "image_bytes": tf.fill(tf.shape(e["rows"]), e["image_bytes"])})
            ds = ds.unbatch()
    else:
        ds = _file_images(records) if decode_once_per_image else \
            tf.data.Dataset.from_tensor_slices({"rows": columns["record_position"]})
        if num_pipelines > 1:
            ds = ds.shard(num_pipelines, pipeline_id)
    if train:
        units = len({r.image_path for r in records}) if decode_once_per_image else len(records)
        ds = ds.shuffle(min(shuffle_buffer, units), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def plan(group, element):
        seed_pair = tf.stack([tf.constant(seed, tf.int64), group * num_pipelines + pipeline_id])
        group_records = {k: tf.gather(v, element["rows"]) for k, v in table.items()}
        planned = _plan(seed_pair, group_records, augment, train, input_size, permutation)
        if "image_bytes" in element:
            planned["image_bytes"] = element["image_bytes"]
        return planned

    def crop(element):
        ok, image = cropper(element)
        element = {k: v for k, v in element.items() if k != "image_bytes"}
        if decode_once_per_image:  # one verdict for all the people of the image
            ok = tf.fill(tf.shape(element["matrix"])[:1], ok)
        return dict(element, image=image, valid=ok)

    def keep(element):
        def report():
            tf.print("mrpose_tf: skipping unreadable image", element["image_path"],
                     output_stream=sys.stderr)
            if skipped_counter is not None:
                skipped_counter.assign_add(1)
            return tf.constant(False)
        return tf.cond(element["valid"], lambda: tf.constant(True), report)

    def finish(batch):
        """Per batch, not per element: targets and preprocessing vectorise over the batch."""
        heatmaps, weights = heatmap_targets(batch["crop_joints"], batch["crop_visibility"],
                                            input_size, heatmap_size, sigma)
        batch = {k: batch[k] for k in _OUTPUT_KEYS}
        return dict(batch, image=_preprocess_batch(batch["image"], input_preprocessing),
                    heatmaps=heatmaps, target_weight=weights)

    if decode_once_per_image:
        ds = ds.enumerate().map(plan, num_parallel_calls=parallel, deterministic=deterministic)
        ds = ds.map(crop, num_parallel_calls=parallel, deterministic=deterministic)
        ds = ds.ignore_errors(log_warning=True).unbatch()
        if train:
            ds = ds.shuffle(min(shuffle_buffer, _SAMPLE_SHUFFLE, len(records)), seed=seed + 1,
                            reshuffle_each_iteration=True)
    else:
        ds = ds.batch(_PLAN_BATCH).enumerate().map(plan).unbatch()
        ds = ds.map(crop, num_parallel_calls=parallel, deterministic=deterministic)
        ds = ds.ignore_errors(log_warning=True)
    ds = ds.filter(keep)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(finish, num_parallel_calls=parallel, deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE)


def read_split(config, split):
    """The records and keypoint set of ``split`` ('train' or 'val') of ``config.dataset``.

    From the annotation JSON and image folder under ``dataset.root``, or, when
    ``dataset.tfds_name`` is set, from the TFDS build ``<tfds_name>_<split>`` under
    ``dataset.tfds_data_dir`` (:func:`mrpose_tf.data.tfds_builder.read_tfds_records`: its
    ``records.npz`` and metadata only, no image; :func:`build_dataset` reads the images
    from its shards). A build must have been prepared with the config's box settings
    (aspect ratio of ``model.input_size``, ``augment.box_padding``; for 'val', detector
    boxes exactly when ``test.detections`` is used, with ``test.image_thre``): ValueError
    otherwise.

    Returns:
      (records, keypoint_spec); records in the reader's order.
    """
    from mrpose_tf.data.coco import keypoint_overrides, read_coco
    from mrpose_tf.data.mpii import read_mpii

    d = config.dataset
    train = split == "train"
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}; valid choices: 'train', 'val'")
    height, width = config.model.input_size
    detections = None
    if not train and not config.test.use_gt_boxes and config.test.detections:
        detections = os.path.join(d.root, config.test.detections)
    if d.get("tfds_name"):
        return _read_tfds_split(config, split, detections is not None)
    annotations = os.path.join(d.root, d.train_annotations if train else d.val_annotations)
    images = os.path.join(d.root, d.train_images if train else d.val_images)
    if d.name == "mpii":
        return read_mpii(annotations, images)
    return read_coco(annotations, images, train=train, aspect_ratio=width / height,
                     padding=config.augment.box_padding, detections=detections,
                     image_thre=config.test.image_thre, **keypoint_overrides(d))


def _read_tfds_split(config, split, detections):
    """:func:`read_split` from a TFDS build (see there)."""
    from mrpose_tf.data.coco import keypoint_overrides
    from mrpose_tf.data.tfds_builder import read_tfds_records

    d = config.dataset
    if not d.get("tfds_data_dir"):
        raise ValueError("config.dataset.tfds_name is set but config.dataset.tfds_data_dir is "
                         "empty: where are the builds?")
    if d.name == "mpii":
        expect = {"dataset_format": "mpii"}
    else:
        height, width = config.model.input_size
        expect = {"dataset_format": "coco", "aspect_ratio": width / height,
                  "padding": float(config.augment.box_padding), "train": split == "train",
                  "detections": detections}
        if detections:
            expect["image_thre"] = float(config.test.image_thre)
    records, spec = read_tfds_records(d.tfds_data_dir, d.tfds_name, split, expect)
    if d.name == "mpii":
        return records, spec
    overrides = {k: v for k, v in keypoint_overrides(d).items()
                 if v is not None and k != "category_ids"}
    for field in ("flip_pairs", "skeleton"):
        if field in overrides:
            overrides[field] = tuple(tuple(int(i) for i in p) for p in overrides[field])
    if "sigmas" in overrides:
        overrides["sigmas"] = tuple(float(v) for v in overrides["sigmas"])
    return records, dataclasses.replace(spec, **overrides) if overrides else spec


__all__ = ["PersonRecord", "build_dataset", "check_image_files", "make_skipped_counter",
           "read_split"]
