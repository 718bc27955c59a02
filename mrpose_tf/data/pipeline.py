"""Person records -> tf.data: read, decode the needed region, augment, crop, targets, batch.

Every element of a built dataset is a dict of batched tensors:

  image          (B, H, W, 3) float32, preprocessed crop (:func:`mrpose_tf.preprocess`)
  heatmaps       (B, h, w, K) float32 targets;  target_weight (B, K) float32
  center, scale  (B, 2) float32, the record's (un-augmented) box
  image_id       (B,) int64;  box_score, area (B,) float32
  joints         (B, K, 2) float32 in original image pixels;  visibility (B, K) float32
  matrix         (B, 2, 3) float32, image -> crop matrix (augmentation and flip included)
  flipped        (B,) bool; where True the crop's joints are ``matrix @ joints`` with the
                 keypoint set's left/right pairs swapped

Speed (one CPU core must beat a per-sample OpenCV loop 2x; ``scripts/benchmark.py pipeline``):

* Records are planned in groups (``_PLAN_BATCH`` records, or the people of one image with
  ``decode_once_per_image``): augmentation draws, crop matrices (a
  horizontal flip folded in, independent of the image width), crop joints and the image
  region each crop samples are computed vectorised, once per group, before any decoding.
* Per image only (with ``decode_once_per_image``, the training default: once for all the
  people of an image, over the union of their regions): read, a truncation check, decode of
  just the sampled region
  (``decode_and_crop_jpeg``; optionally at 1/2..1/8 size by DCT scaling, ``max_decode_ratio``)
  and the warp: ``cv2.warpAffine`` through ``tf.numpy_function`` when ``opencv_warp`` (the
  training default; ~0.25 ms against ~1.3 ms for TensorFlow's ImageProjectiveTransform),
  else TensorFlow ops, with ``crop_and_resize`` for crops without rotation.
* Per batch: targets and preprocessing (one 1x1 convolution, :func:`_preprocess_batch`).
Small datasets can keep their decoded images in memory (``cache_images``).

Bad images: missing files are reported before iteration by :func:`check_image_files`
(``build_dataset`` calls it). A truncated file (JPEG without its end marker, PNG without
IEND) is skipped during iteration, logged with its path and counted in ``skipped_counter``;
other decoder errors drop the element through ``ignore_errors`` (logged, not counted).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from mrpose_tf.data.records import PersonRecord, stack_records
from mrpose_tf.data.targets import heatmap_targets
from mrpose_tf.geometry import (affine_points_tf, affine_transform_tf, flip_permutation,
                                invert_affine_tf, warp_affine_tf, warp_axis_aligned_tf)
from mrpose_tf.preprocessing import BGR_MEAN

_log = logging.getLogger(__name__)
_RATIOS = (1, 2, 4, 8)
_TAIL_BYTES = 256
_PLAN_BATCH = 64  # records whose augmentation and crop geometry are computed together
# Crops held to mix the people of one image into different batches (decode_once_per_image):
# 512 crops of 256x192 are 75 MB as uint8 (OpenCV warp), 300 MB as float32 (TF warp).
_SAMPLE_SHUFFLE = 512
_OUTPUT_KEYS = ("image", "center", "scale", "image_id", "box_score", "area", "joints",
                "visibility", "matrix", "flipped")
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


def _region(bounds, ratio, image_h, image_w):
    """Pixel window (y, x, h, w) of an image decoded at 1/ratio that bilinear sampling needs."""
    half = (ratio - 1.0) / 2.0
    size_h = -(-image_h // ratio)
    size_w = -(-image_w // ratio)
    lo = tf.cast(tf.floor((bounds[:2] - half) / ratio), tf.int32)
    hi = tf.cast(tf.floor((bounds[2:] - half) / ratio), tf.int32) + 1
    x0, y0 = tf.clip_by_value(lo[0], 0, size_w - 1), tf.clip_by_value(lo[1], 0, size_h - 1)
    x1, y1 = tf.clip_by_value(hi[0], 0, size_w - 1), tf.clip_by_value(hi[1], 0, size_h - 1)
    # An empty window (the crop misses the image) still decodes one pixel; it is never sampled.
    return tf.stack([y0, x0, tf.maximum(y1 - y0 + 1, 1), tf.maximum(x1 - x0 + 1, 1)])


def _window_to_crop(matrix, window, ratio):
    """Matrices (..., 2, 3): pixel of a window decoded at 1/ratio -> crop pixel."""
    r = float(ratio)
    offset = tf.cast(window[1::-1], tf.float32) * r + (r - 1.0) / 2.0  # window origin (x, y)
    return tf.concat([matrix[..., :2] * r, matrix[..., 2:] + matrix[..., :2] @ offset[:, None]], -1)


def _plan(seed_pair, records, augment, train, input_size, ratios, permutation):
    """Vectorised over a batch of records: augmentation, crop matrices and crop joints."""
    scale, rot, flip = _augmentation(seed_pair, records["scale"], augment, train)
    matrix = _crop_matrices(records["center"], scale, rot, flip, input_size)
    joints = affine_points_tf(records["joints"], matrix)
    visibility = records["visibility"]
    flipped_joints = tf.gather(joints, permutation, axis=1)
    flipped_visibility = tf.gather(visibility, permutation, axis=1)
    # Source pixels per crop pixel: decode at 1/ratio when the crop shrinks that much.
    shrink = 1.0 / tf.sqrt(tf.abs(tf.linalg.det(matrix[:, :, :2])))
    ratio_index = tf.reduce_sum(
        tf.cast(shrink[:, None] >= tf.constant(ratios[1:], tf.float32), tf.int32), 1)
    return dict(records, matrix=matrix, flipped=flip, axis_aligned=tf.equal(rot, 0.0),
                sample_bounds=_sample_bounds(matrix, input_size), ratio_index=ratio_index,
                crop_joints=tf.where(flip[:, None, None], flipped_joints, joints),
                crop_visibility=tf.where(flip[:, None], flipped_visibility, visibility))


class _Cropper:
    """Reads one image and returns the crops of planned elements (see :func:`_plan`).

    One element is one person, or with ``grouped`` all the people of one image (every field
    with a leading person axis): then the image is read and decoded once, over the union of
    the regions its crops sample, and warped once per person.
    """

    def __init__(self, input_size, ratios, cache, opencv_warp=False, grouped=False):
        self.input_size = tuple(int(v) for v in input_size)
        self.ratios = ratios
        self.cache = cache
        self.opencv_warp = opencv_warp
        self.grouped = grouped

    def __call__(self, element):
        """-> (ok, crop): (H, W, 3), or (n, H, W, 3) when grouped; uint8 (cv2) or float32."""
        bounds, ratio_index = element["sample_bounds"], element["ratio_index"]
        path, cache_index = element["image_path"], element["cache_index"]
        shape = self.input_size + (3,)
        if self.grouped:
            bounds = tf.concat([tf.reduce_min(bounds[:, :2], 0), tf.reduce_max(bounds[:, 2:], 0)], 0)
            ratio_index = tf.reduce_min(ratio_index)  # the finest any of the crops needs
            path, cache_index = path[0], cache_index[0]
            shape = tf.concat([tf.shape(element["matrix"])[:1], shape], 0)
        if self.cache is not None:
            return tf.constant(True), self._crop_window(self._cached(cache_index), bounds, element)
        data = tf.io.read_file(path)
        ok = _looks_complete(data)
        crop = tf.cond(
            ok, lambda: tf.cond(
                tf.io.is_jpeg(data), lambda: self._crop_jpeg(data, bounds, ratio_index, element),
                lambda: self._crop_window(
                    tf.io.decode_image(data, channels=3, expand_animations=False), bounds, element)),
            lambda: tf.zeros(shape, tf.uint8 if self.opencv_warp else tf.float32))
        return ok, crop

    def _warp(self, pixels, window, ratio, element):
        matrix = _window_to_crop(element["matrix"], window, ratio)
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

    def _crop_jpeg(self, data, bounds, ratio_index, element):
        shape = tf.io.extract_jpeg_shape(data)

        def branch(ratio):
            window = _region(bounds, ratio, shape[0], shape[1])
            pixels = tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=ratio,
                                                dct_method=_DCT)
            return self._warp(pixels, window, ratio, element)

        if len(self.ratios) == 1:
            return branch(1)
        return tf.switch_case(ratio_index, [lambda r=r: branch(r) for r in self.ratios])

    def _crop_window(self, pixels, bounds, element):
        shape = tf.shape(pixels)
        window = _region(bounds, 1, shape[0], shape[1])
        pixels = pixels[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
        return self._warp(pixels, window, 1, element)

    def _cached(self, index):
        flat, offsets, shapes = self.cache
        shape = shapes[index]
        size = tf.cast(tf.reduce_prod(shape), tf.int64)
        return tf.reshape(flat[offsets[index]:offsets[index] + size], shape)


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


def _preprocess_batch(images):
    """:func:`mrpose_tf.preprocess` of (B, H, W, 3) crops as one 1x1 convolution plus a bias.

    The same numbers (RGB -> BGR is an exact permutation), ~4x faster on CPU than a channel
    reversal and a broadcast subtraction.
    """
    swap_channels = tf.constant(np.eye(3, dtype=np.float32)[::-1].reshape(1, 1, 3, 3))
    bgr = tf.nn.conv2d(tf.cast(images, tf.float32), swap_channels, 1, "VALID")
    return tf.nn.bias_add(bgr, -tf.constant(BGR_MEAN, tf.float32))


def _decoded_cache(paths, limit_bytes):
    """All distinct images decoded into one flat uint8 tensor, or None when over the limit."""
    images = []
    total = 0
    for path in paths:
        data = tf.io.read_file(path)
        if tf.io.is_jpeg(data):
            image = tf.io.decode_jpeg(data, channels=3, dct_method=_DCT)
        else:
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
        total += int(np.prod(image.shape))
        if total > limit_bytes:
            _log.info("not caching decoded images: more than %d bytes", limit_bytes)
            return None
        images.append(image.numpy())
    flat = tf.constant(np.concatenate([im.reshape(-1) for im in images]))
    sizes = np.array([im.size for im in images], np.int64)
    offsets = tf.constant(np.concatenate([[0], np.cumsum(sizes)[:-1]]), tf.int64)
    shapes = tf.constant(np.array([im.shape for im in images], np.int32))
    return flat, offsets, shapes


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


def build_dataset(records, *, keypoints, input_size=(256, 192), heatmap_size=(64, 48), sigma=2.0,
                  train, batch_size, augment=None, seed=0, shuffle_buffer=2048, input_context=None,
                  drop_remainder=None, repeat=False, skipped_counter=None, num_parallel_calls=None,
                  deterministic=True, opencv_warp=None, max_decode_ratio=1, cache_images=False,
                  cache_limit_bytes=1 << 30, check_files=True, decode_once_per_image=None):
    """The tf.data pipeline over person records (see the module docstring for the elements).

    Args:
      records: list of :class:`PersonRecord`.
      keypoints: the :class:`KeypointSpec` (its flip pairs are used by the flip).
      input_size, heatmap_size: (height, width) of the crop and of the targets.
      sigma: target Gaussian sigma (heatmap pixels).
      train: augment (scale, rotation, flip) and shuffle; else plain crops in record order.
      batch_size: global batch size (divided per replica when ``input_context`` is given).
      augment: mapping with scale_factor, rotation_factor, rotation_prob, flip, flip_prob
        (``config.augment``); ignored when not training.
      seed: seeds the shuffle and the stateless augmentation draws (keyed by seed, position
        of the element's group of ``_PLAN_BATCH`` records and input pipeline), so a run is
        reproducible.
      shuffle_buffer: shuffle buffer size (capped at the number of records).
      input_context: ``tf.distribute.InputContext``: shard records across input pipelines.
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
      max_decode_ratio: allow JPEG decoding at 1/2, 1/4, 1/8 size when the crop shrinks the
        image that much (1: always full size, exact cv2.warpAffine equivalence).
      cache_images: keep the decoded images in memory when they fit in ``cache_limit_bytes``.
      check_files: call :func:`check_image_files` first.
      decode_once_per_image: read and decode each image once for all of its people (COCO
        train has ~2.6 per image) instead of once per person; default: when training
        (evaluation keeps the record order). Images are shuffled (``shuffle_buffer``), and
        their people then pass through a buffer of 512 crops: every person still comes once
        per epoch, but the people of one image land in nearby batches more often than with
        the per-person shuffle. The augmentation draws differ from the per-person
        pipeline's (they are keyed by image).

    Returns:
      A ``tf.data.Dataset`` of batched element dicts.
    """
    if not records:
        raise ValueError("build_dataset: no person records")
    if check_files:
        check_image_files(records)
    augment = dict(augment or {})
    input_size = tuple(int(v) for v in input_size)
    drop_remainder = train if drop_remainder is None else drop_remainder
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    paths = sorted({r.image_path for r in records})
    ratios = tuple(r for r in _RATIOS if r <= max_decode_ratio)
    cache = _decoded_cache(paths, cache_limit_bytes) if cache_images else None
    opencv_warp = train if opencv_warp is None else opencv_warp
    decode_once_per_image = train if decode_once_per_image is None else decode_once_per_image
    cropper = _Cropper(input_size, ratios, cache, opencv_warp, grouped=decode_once_per_image)
    permutation = tf.constant(flip_permutation(keypoints.num_joints, keypoints.flip_pairs))

    columns = stack_records(records)
    path_index = {p: i for i, p in enumerate(paths)}
    columns["cache_index"] = np.array([path_index[r.image_path] for r in records], np.int64)
    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(batch_size)

    if decode_once_per_image:
        # One element per image: the indices of its records (records of an image are
        # usually adjacent; a stable sort keeps their order).
        order = np.argsort(columns["cache_index"], kind="stable")
        lengths = np.bincount(columns["cache_index"], minlength=len(paths))
        ds = tf.data.Dataset.from_tensor_slices(tf.RaggedTensor.from_row_lengths(order, lengths))
        shuffle_units = len(paths)
    else:
        ds = tf.data.Dataset.from_tensor_slices(columns)
        shuffle_units = len(records)
    if num_pipelines > 1:
        ds = ds.shard(num_pipelines, pipeline_id)
    if train:
        ds = ds.shuffle(min(shuffle_buffer, shuffle_units), seed=seed,
                        reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def plan(group, group_records):
        seed_pair = tf.stack([tf.constant(seed, tf.int64), group * num_pipelines + pipeline_id])
        return _plan(seed_pair, group_records, augment, train, input_size, ratios, permutation)

    def crop(element):
        ok, image = cropper(element)
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
        return dict(batch, image=_preprocess_batch(batch["image"]), heatmaps=heatmaps,
                    target_weight=weights)

    if decode_once_per_image:
        table = {k: tf.constant(v) for k, v in columns.items()}
        ds = ds.enumerate().map(
            lambda group, rows: plan(group, {k: tf.gather(v, rows) for k, v in table.items()}),
            num_parallel_calls=parallel, deterministic=deterministic)
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


class DataSplit(NamedTuple):
    """What :func:`datasets_from_config` returns."""
    dataset: tf.data.Dataset
    records: list
    keypoints: object
    skipped: tf.Variable


def read_split(config, split):
    """The records and keypoint set of ``split`` ('train' or 'val') of ``config.dataset``."""
    from mrpose_tf.data.coco import read_coco
    from mrpose_tf.data.mpii import read_mpii

    d = config.dataset
    train = split == "train"
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}; valid choices: 'train', 'val'")
    annotations = os.path.join(d.root, d.train_annotations if train else d.val_annotations)
    images = os.path.join(d.root, d.train_images if train else d.val_images)
    if d.name == "mpii":
        return read_mpii(annotations, images)
    height, width = config.model.input_size
    detections = None
    if not train and not config.test.use_gt_boxes and config.test.detections:
        detections = os.path.join(d.root, config.test.detections)
    return read_coco(annotations, images, train=train, aspect_ratio=width / height,
                     padding=config.augment.box_padding, detections=detections,
                     image_thre=config.test.image_thre, flip_pairs=d.get("flip_pairs"),
                     sigmas=d.get("oks_sigmas"))


def datasets_from_config(config, split, input_context=None, repeat=None, **kwargs):
    """Records and tf.data pipeline of a split, as the config says.

    Args:
      config: an experiment ConfigDict (:mod:`mrpose_tf.config`).
      split: 'train' (augmented, shuffled, config.train.batch_size) or 'val' (plain crops in
        record order, config.test.batch_size; detector boxes unless test.use_gt_boxes).
      input_context: optional ``tf.distribute.InputContext``.
      repeat: repeat forever (default: for 'train').
      **kwargs: passed on to :func:`build_dataset` (e.g. max_decode_ratio, cache_images).

    Returns:
      :class:`DataSplit` (dataset, records, keypoints, skipped-image counter).
    """
    records, keypoints = read_split(config, split)
    train = split == "train"
    skipped = make_skipped_counter()
    dataset = build_dataset(
        records, keypoints=keypoints, input_size=config.model.input_size,
        heatmap_size=config.model.heatmap_size, sigma=config.model.sigma, train=train,
        batch_size=config.train.batch_size if train else config.test.batch_size,
        augment=config.augment.to_dict() if train else None, seed=config.train.seed,
        shuffle_buffer=config.train.shuffle_buffer, input_context=input_context,
        repeat=train if repeat is None else repeat, skipped_counter=skipped, **kwargs)
    return DataSplit(dataset, records, keypoints, skipped)


__all__ = ["PersonRecord", "build_dataset", "check_image_files", "datasets_from_config",
           "make_skipped_counter", "read_split"]
