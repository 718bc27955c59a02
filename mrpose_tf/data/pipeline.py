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

Speed: the affine matrix is known before decoding, so a JPEG is decoded only over the
bounding region of the (rotated) crop (``decode_and_crop_jpeg``) and, when the crop
shrinks the person by at least 2x, optionally at 1/2, 1/4 or 1/8 size (libjpeg's DCT
scaling, ``max_decode_ratio``). A horizontal flip is folded into the crop matrix. Small
datasets can keep their decoded images in memory (``cache_images``).

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
                                invert_affine_tf, warp_affine_tf)
from mrpose_tf.preprocessing import preprocess

_log = logging.getLogger(__name__)
_RATIOS = (1, 2, 4, 8)
_TAIL_BYTES = 256
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


def _compose(m23, a33):
    """(2, 3) @ (3, 3) affine composition."""
    return tf.linalg.matmul(m23, a33)


def _flip_matrix(width):
    """x -> width - 1 - x as a 3x3 matrix."""
    return tf.convert_to_tensor([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _crop_matrix(center, scale, rot, flip, width, input_size):
    """Image -> crop matrix, with the horizontal flip folded in (crop of the mirrored image)."""
    flipped_center = tf.stack([width - 1.0 - center[0], center[1]])
    center = tf.where(flip, flipped_center, center)
    matrix = affine_transform_tf(center, scale, rot, input_size)
    return tf.cond(flip, lambda: _compose(matrix, _flip_matrix(width)), lambda: matrix)


def _sample_bounds(matrix, input_size):
    """Bounding box (x0, y0, x1, y1) in the image of the points the crop samples."""
    h, w = input_size
    corners = tf.constant([[0.0, 0.0], [w - 1.0, 0.0], [0.0, h - 1.0], [w - 1.0, h - 1.0]])
    points = affine_points_tf(corners, invert_affine_tf(matrix))
    return tf.concat([tf.reduce_min(points, 0), tf.reduce_max(points, 0)], 0)


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


def _region_to_image(window, ratio):
    """3x3 matrix: pixel of the decoded window -> pixel of the full-size image."""
    r = float(ratio)
    half = (r - 1.0) / 2.0
    oy, ox = tf.cast(window[0], tf.float32), tf.cast(window[1], tf.float32)
    return tf.stack([tf.stack([r, 0.0, r * ox + half]), tf.stack([0.0, r, r * oy + half]),
                     tf.constant([0.0, 0.0, 1.0])])


class _Decoder:
    """Reads one image and returns its crop through a given matrix builder."""

    def __init__(self, input_size, max_decode_ratio, cache):
        self.input_size = tuple(int(v) for v in input_size)
        self.ratios = tuple(r for r in _RATIOS if r <= max_decode_ratio)
        self.cache = cache

    def crop(self, path, cache_index, make_matrix):
        """-> (ok, crop (H, W, 3) float32 0..255, image -> crop matrix)."""
        if self.cache is not None:
            return (tf.constant(True),) + self._crop_cached(cache_index, make_matrix)
        data = tf.io.read_file(path)
        zeros = (tf.zeros(self.input_size + (3,)), tf.zeros([2, 3]))
        ok = _looks_complete(data)
        crop, matrix = tf.cond(
            ok, lambda: tf.cond(tf.io.is_jpeg(data), lambda: self._crop_jpeg(data, make_matrix),
                                lambda: self._crop_other(data, make_matrix)),
            lambda: zeros)
        return ok, crop, matrix

    def _warp(self, window_image, window_to_image, matrix):
        return warp_affine_tf(window_image, _compose(matrix, window_to_image), self.input_size)

    def _crop_jpeg(self, data, make_matrix):
        shape = tf.io.extract_jpeg_shape(data)
        image_h, image_w = shape[0], shape[1]
        matrix = make_matrix(tf.cast(image_w, tf.float32))
        bounds = _sample_bounds(matrix, self.input_size)
        # Source pixels per crop pixel: decode at 1/ratio when the crop shrinks that much.
        shrink = 1.0 / tf.sqrt(tf.abs(tf.linalg.det(matrix[:, :2])))
        branches = []
        for ratio in self.ratios:
            def branch(ratio=ratio):
                window = _region(bounds, ratio, image_h, image_w)
                pixels = tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=ratio,
                                                    dct_method=_DCT)
                return self._warp(pixels, _region_to_image(window, ratio), matrix)
            branches.append(branch)
        choice = tf.reduce_sum(tf.cast(shrink >= tf.constant(self.ratios[1:], tf.float32), tf.int32))
        crop = tf.switch_case(choice, branches) if len(branches) > 1 else branches[0]()
        return crop, matrix

    def _crop_other(self, data, make_matrix):
        pixels = tf.io.decode_image(data, channels=3, expand_animations=False)
        matrix = make_matrix(tf.cast(tf.shape(pixels)[1], tf.float32))
        return warp_affine_tf(pixels, matrix, self.input_size), matrix

    def _crop_cached(self, index, make_matrix):
        flat, offsets, shapes = self.cache
        shape = shapes[index]
        size = tf.cast(tf.reduce_prod(shape), tf.int64)
        pixels = tf.reshape(flat[offsets[index]:offsets[index] + size], shape)
        matrix = make_matrix(tf.cast(shape[1], tf.float32))
        window = _region(_sample_bounds(matrix, self.input_size), 1, shape[0], shape[1])
        pixels = pixels[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
        return self._warp(pixels, _region_to_image(window, 1), matrix), matrix


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
    """(scale, rot, flip) of one element, from stateless random draws keyed by ``seed_pair``."""
    if not train:
        return scale, tf.constant(0.0), tf.constant(False)
    seeds = tf.random.experimental.stateless_split(seed_pair, 2)
    normal = tf.random.stateless_normal([2], seed=seeds[0])
    uniform = tf.random.stateless_uniform([2], seed=seeds[1])
    sf = float(augment.get("scale_factor", 0.0))
    rf = float(augment.get("rotation_factor", 0.0))
    scale = scale * tf.clip_by_value(normal[0] * sf + 1.0, 1.0 - sf, 1.0 + sf)
    rot = tf.where(uniform[0] <= float(augment.get("rotation_prob", 0.6)),
                   tf.clip_by_value(normal[1] * rf, -2.0 * rf, 2.0 * rf), 0.0)
    flip = uniform[1] <= float(augment.get("flip_prob", 0.5))
    return scale, rot, flip if augment.get("flip", True) else tf.constant(False)


def build_dataset(records, *, keypoints, input_size=(256, 192), heatmap_size=(64, 48), sigma=2.0,
                  train, batch_size, augment=None, seed=0, shuffle_buffer=2048, input_context=None,
                  drop_remainder=None, repeat=False, skipped_counter=None, num_parallel_calls=None,
                  max_decode_ratio=1, cache_images=False, cache_limit_bytes=1 << 30,
                  check_files=True):
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
      seed: seeds the shuffle and the stateless augmentation draws (keyed by seed, element
        position and input pipeline), so a run is reproducible.
      shuffle_buffer: shuffle buffer size (capped at the number of records).
      input_context: ``tf.distribute.InputContext``: shard records across input pipelines.
      drop_remainder: drop a last partial batch (default: ``train``).
      repeat: repeat forever.
      skipped_counter: optional ``tf.Variable`` (:func:`make_skipped_counter`) incremented for
        every skipped unreadable image.
      num_parallel_calls: map parallelism (default AUTOTUNE).
      max_decode_ratio: allow JPEG decoding at 1/2, 1/4, 1/8 size when the crop shrinks the
        image that much (1: always full size, exact cv2.warpAffine equivalence).
      cache_images: keep the decoded images in memory when they fit in ``cache_limit_bytes``.
      check_files: call :func:`check_image_files` first.

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
    cache = _decoded_cache(paths, cache_limit_bytes) if cache_images else None
    decoder = _Decoder(input_size, max_decode_ratio, cache)
    permutation = tf.constant(flip_permutation(keypoints.num_joints, keypoints.flip_pairs))

    columns = stack_records(records)
    path_index = {p: i for i, p in enumerate(paths)}
    columns["cache_index"] = np.array([path_index[r.image_path] for r in records], np.int64)
    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(batch_size)

    ds = tf.data.Dataset.from_tensor_slices(columns)
    if num_pipelines > 1:
        ds = ds.shard(num_pipelines, pipeline_id)
    if train:
        ds = ds.shuffle(min(shuffle_buffer, len(records)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.enumerate()

    def load(position, r):
        seed_pair = tf.stack([tf.constant(seed, tf.int64), position * num_pipelines + pipeline_id])
        scale, rot, flip = _augmentation(seed_pair, r["scale"], augment, train)

        def make_matrix(width):
            return _crop_matrix(r["center"], scale, rot, flip, width, input_size)

        ok, crop, matrix = decoder.crop(r["image_path"], r["cache_index"], make_matrix)
        joints = affine_points_tf(r["joints"], matrix)
        visibility = r["visibility"]
        joints = tf.where(flip, tf.gather(joints, permutation), joints)
        visibility = tf.where(flip, tf.gather(visibility, permutation), visibility)
        return {"image": crop, "crop_joints": joints, "crop_visibility": visibility,
                "center": r["center"], "scale": r["scale"], "image_id": r["image_id"],
                "box_score": r["box_score"], "area": r["area"], "joints": r["joints"],
                "visibility": r["visibility"], "matrix": matrix, "flipped": flip,
                "valid": ok, "path": r["image_path"]}

    def keep(element):
        def report():
            tf.print("mrpose_tf: skipping unreadable image", element["path"], output_stream=sys.stderr)
            if skipped_counter is not None:
                skipped_counter.assign_add(1)
            return tf.constant(False)
        return tf.cond(element["valid"], lambda: tf.constant(True), report)

    ds = ds.map(load, num_parallel_calls=parallel, deterministic=True)
    ds = ds.ignore_errors(log_warning=True).filter(keep)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def finish(batch):
        """Per batch, not per element: targets and preprocessing vectorise over the batch."""
        heatmaps, weights = heatmap_targets(batch.pop("crop_joints"), batch.pop("crop_visibility"),
                                            input_size, heatmap_size, sigma)
        batch = {k: v for k, v in batch.items() if k not in ("valid", "path")}
        return dict(batch, image=preprocess(batch["image"]), heatmaps=heatmaps,
                    target_weight=weights)

    ds = ds.map(finish, num_parallel_calls=parallel, deterministic=True)
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
