"""Heatmap decoding, flip test and the image -> keypoints ``Predictor`` (SPEC section 4).

The codec half of the pipeline: a model gives (N, h, w, K) heatmaps for person crops;
:func:`decode_heatmaps` turns them into image coordinates and joint scores exactly as the
SimpleBaseline tooling's ``get_final_preds`` (argmax, quarter-pixel shift toward the larger
neighbour, inverse crop affine).
"""
from __future__ import annotations

import json
import os

import numpy as np

from mrpose_tf.geometry import box_to_center_scale, flip_back, get_affine_transform
from mrpose_tf.preprocessing import preprocess

QUARTER_PIXEL = 0.25


def argmax_heatmaps(heatmaps):
    """Integer peak of every heatmap.

    Args:
      heatmaps: (N, h, w, K) array.

    Returns:
      coords (N, K, 2) float32 (x, y) of the first maximum, zeroed where the maximum is
      <= 0; maxvals (N, K) float32.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (N, height, width, K), got shape {heatmaps.shape}")
    n, h, w, k = heatmaps.shape
    flat = np.moveaxis(heatmaps, 3, 1).reshape(n, k, h * w)
    index = np.argmax(flat, axis=2)
    maxvals = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    coords = np.stack([index % w, index // w], axis=-1).astype(np.float32)
    return coords * (maxvals > 0)[..., None], maxvals


def refine_quarter_pixel(heatmaps, coords):
    """Move each peak 0.25 px toward its larger neighbour on each axis (away from borders).

    Only peaks with 1 < px < w-1 and 1 < py < h-1 move (px, py = the rounded peak), as in
    the reference tooling.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    n, h, w, k = heatmaps.shape
    px = np.floor(coords[..., 0] + 0.5).astype(np.int64)
    py = np.floor(coords[..., 1] + 0.5).astype(np.int64)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    px_c, py_c = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)
    batch, joint = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def at(y, x):
        return heatmaps[batch, y, x, joint]

    diff = np.stack([at(py_c, px_c + 1) - at(py_c, px_c - 1),
                     at(py_c + 1, px_c) - at(py_c - 1, px_c)], axis=-1)
    return coords + np.sign(diff) * QUARTER_PIXEL * inside[..., None]


def decode_heatmaps(heatmaps, centers, scales):
    """Heatmaps of person crops -> keypoints in image pixels and joint scores.

    Equal to the SimpleBaseline/HRNet ``get_final_preds`` with post-processing: argmax
    (coordinates 0 where the maximum is <= 0), quarter-pixel refinement, then the inverse
    affine of (center, scale, rotation 0, heatmap size).

    Args:
      heatmaps: (N, h, w, K) numpy array (NHWC).
      centers: (N, 2) box centres (x, y) in image pixels.
      scales: (N, 2) box sizes in units of 200 px.

    Returns:
      coords (N, K, 2) float64 in image pixels, maxvals (N, K) float32.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    coords, maxvals = argmax_heatmaps(heatmaps)
    coords = refine_quarter_pixel(heatmaps, coords)
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    scales = np.asarray(scales, dtype=np.float64).reshape(-1, 2)
    if len(centers) != len(heatmaps) or len(scales) != len(heatmaps):
        raise ValueError(f"{len(heatmaps)} heatmaps but {len(centers)} centers and "
                         f"{len(scales)} scales")
    heatmap_size = heatmaps.shape[1:3]
    inverse = np.stack([get_affine_transform(c, s, 0.0, heatmap_size, inv=True)
                        for c, s in zip(centers, scales)]).reshape(-1, 2, 3)
    image_coords = np.einsum("nkj,nij->nki", coords.astype(np.float64), inverse[:, :, :2])
    return image_coords + inverse[:, None, :, 2], maxvals


def shift_right_one_pixel(heatmaps):
    """Column i takes column i-1; column 0 keeps its value (NHWC)."""
    shifted = np.array(heatmaps, copy=True)
    shifted[:, :, 1:, :] = heatmaps[:, :, :-1, :]
    return shifted


def _run_model(model, images):
    """(N, H, W, 3) float32 -> (N, h, w, K) float32 numpy, for a keras model or a callable."""
    import keras

    if isinstance(model, keras.Model):
        out = model.predict_on_batch(images)
    else:
        out = model(images)
    if isinstance(out, dict):
        out = out["heatmaps"] if "heatmaps" in out else next(iter(out.values()))
    if not isinstance(out, np.ndarray):
        out = keras.ops.convert_to_numpy(out)
    return np.asarray(out, dtype=np.float32)


def predict_heatmaps(model, images, flip_pairs, flip_test=True, shift_heatmap=True):
    """Heatmaps of a batch of crops, with the flip test of the paper's evaluation.

    With ``flip_test`` the mirrored crops are run too; their heatmaps are flipped back
    (mirror + swap the left/right channels), shifted one pixel to the right when
    ``shift_heatmap`` (column i takes column i-1, column 0 keeps its value) and averaged
    with the heatmaps of the crops as given.

    Args:
      model: a ``keras.Model`` or any callable mapping (N, H, W, 3) float32 to (N, h, w, K)
        heatmaps (or a dict holding 'heatmaps').
      images: (N, H, W, 3) preprocessed crops.
      flip_pairs: (left, right) joint index pairs.
      flip_test: also run the mirrored crops and average.
      shift_heatmap: shift the flipped-back heatmaps one pixel right (the reference does).

    Returns:
      (N, h, w, K) float32 numpy heatmaps.
    """
    images = np.asarray(images, dtype=np.float32)
    heatmaps = _run_model(model, images)
    if not flip_test:
        return heatmaps
    flipped = flip_back(_run_model(model, np.ascontiguousarray(images[:, :, ::-1, :])),
                        flip_pairs)
    if shift_heatmap:
        flipped = shift_right_one_pixel(flipped)
    return (heatmaps + flipped) * 0.5


def crop_person(image, center, scale, input_size):
    """Bilinear affine crop of one person box to ``input_size`` (height, width)."""
    import cv2

    matrix = get_affine_transform(center, scale, 0.0, input_size)
    return cv2.warpAffine(image, matrix, (int(input_size[1]), int(input_size[0])),
                          flags=cv2.INTER_LINEAR)


class Predictor:
    """Keypoints of the people in an image, given their boxes.

    Crops every box (``box_to_center_scale`` + bilinear affine), runs the model (with the
    flip test by default) and decodes the heatmaps back to image pixels.

    Example:
      predictor = Predictor.from_checkpoint("runs/coco_r50")
      keypoints, scores = predictor(image_rgb_uint8, [[x, y, w, h], ...])
    """

    def __init__(self, model, input_size, flip_pairs, flip_test=True, shift_heatmap=True,
                 box_padding=1.25, batch_size=32, preprocess_fn=None):
        """Args:
          model: keras model or callable on preprocessed (N, H, W, 3) float32 crops.
          input_size: (height, width) of the model input.
          flip_pairs: (left, right) joint index pairs of the keypoint set.
          flip_test: average with the mirrored crops' heatmaps.
          shift_heatmap: the reference's one-pixel shift of the flipped-back heatmaps.
          box_padding: box enlargement factor (1.25 in the paper).
          batch_size: crops per model call.
          preprocess_fn: uint8 RGB crops -> model input; default :func:`mrpose_tf.preprocess`.
        """
        self.model = model
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.flip_pairs = tuple(tuple(p) for p in flip_pairs)
        self.flip_test = flip_test
        self.shift_heatmap = shift_heatmap
        self.box_padding = box_padding
        self.batch_size = int(batch_size)
        self.preprocess_fn = preprocess_fn or preprocess

    @classmethod
    def from_checkpoint(cls, path, config=None, **kwargs):
        """A predictor from a training checkpoint.

        Args:
          path: a training run directory (its best/ checkpoint, else the latest), a
            checkpoint prefix ``.../ckpt-<step>``, a ``*.weights.h5`` or ``*.keras`` file;
            see :func:`load_model_from_checkpoint`.
          config: the experiment ConfigDict (overrides ``config.json``).
          **kwargs: forwarded to :class:`Predictor` (e.g. ``flip_test=False``).
        """
        model, config = load_model_from_checkpoint(path, config)
        kwargs.setdefault("flip_test", bool(config.test.flip_test))
        kwargs.setdefault("shift_heatmap", bool(config.test.shift_heatmap))
        kwargs.setdefault("box_padding", float(config.augment.box_padding))
        return cls(model, tuple(config.model.input_size), _flip_pairs_of(config), **kwargs)

    @classmethod
    def from_saved_model(cls, path, flip_pairs, input_size=None, **kwargs):
        """A predictor from a SavedModel with a crops -> heatmaps signature.

        Args:
          path: SavedModel directory.
          flip_pairs: (left, right) joint index pairs of the keypoint set.
          input_size: (height, width); read from the signature when None.
          **kwargs: forwarded to :class:`Predictor`.
        """
        run, signature_size = load_saved_model_heatmaps(path)
        input_size = input_size or signature_size
        if input_size is None or None in input_size:
            raise ValueError(f"SavedModel {path}: its signature has no fixed input size; pass "
                             f"input_size=(height, width)")
        return cls(run, input_size, flip_pairs, **kwargs)

    def __call__(self, image, boxes):
        """Keypoints of the people in ``boxes``.

        Args:
          image: (H, W, 3) uint8 RGB.
          boxes: (M, 4) person boxes (x, y, w, h) in pixels.

        Returns:
          keypoints (M, K, 2) float64 (x, y) in image pixels and scores (M, K) float32.
        """
        out = self.predict(image, boxes)
        return out["keypoints"], out["scores"]

    def predict(self, image, boxes):
        """Like ``__call__``, also returning the crops and heatmaps (for visualisation).

        Returns:
          dict: 'keypoints' (M, K, 2), 'scores' (M, K), 'heatmaps' (M, h, w, K) float32,
          'crops' (M, H, W, 3) uint8, 'centers' and 'scales' (M, 2).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if np.any(boxes[:, 2:] <= 0) or not np.all(np.isfinite(boxes)):
            bad = np.nonzero(np.any(~(boxes[:, 2:] > 0), axis=1)
                             | ~np.all(np.isfinite(boxes), axis=1))[0].tolist()
            raise ValueError(f"boxes {bad} have zero, negative or non-finite width/height: "
                             f"{boxes[bad].tolist()}")
        height, width = self.input_size
        centers, scales = box_to_center_scale(boxes, width / height, self.box_padding)
        parts = {"keypoints": [], "scores": [], "heatmaps": [], "crops": []}
        for start in range(0, len(boxes), self.batch_size):
            stop = start + self.batch_size
            crops = np.stack([crop_person(image, c, s, self.input_size)
                              for c, s in zip(centers[start:stop], scales[start:stop])])
            heatmaps = predict_heatmaps(self.model, self.preprocess_fn(crops), self.flip_pairs,
                                        self.flip_test, self.shift_heatmap)
            coords, maxvals = decode_heatmaps(heatmaps, centers[start:stop], scales[start:stop])
            for key, value in zip(parts, (coords, maxvals, heatmaps, crops)):
                parts[key].append(value)
        if not len(boxes):
            shape = getattr(self.model, "output_shape", None)  # K of a keras model, else 0
            k = int(shape[-1]) if shape and shape[-1] else 0
            return {"keypoints": np.zeros((0, k, 2)), "scores": np.zeros((0, k), np.float32),
                    "heatmaps": np.zeros((0, 0, 0, k), np.float32),
                    "crops": np.zeros((0, height, width, 3), np.uint8),
                    "centers": centers, "scales": scales}
        out = {key: np.concatenate(value) for key, value in parts.items()}
        out.update(centers=centers, scales=scales)
        return out


def load_saved_model_heatmaps(path):
    """The crops -> heatmaps function of a SavedModel.

    Picks the signature with one rank-4 input (preprocessed (N, H, W, 3) crops), preferring
    one named 'heatmaps', then 'serving_default'.

    Returns:
      (fn, input_size): fn maps a float32 numpy batch to its heatmaps; input_size is
      (height, width) from the signature (entries None when not fixed).
    """
    import tensorflow as tf

    if not os.path.isdir(path):
        raise FileNotFoundError(f"no SavedModel directory at {path}")
    loaded = tf.saved_model.load(path)
    names = sorted(loaded.signatures, key=lambda n: (n != "heatmaps", n != "serving_default", n))
    for name in names:
        signature = loaded.signatures[name]
        inputs = signature.structured_input_signature[1]
        if len(inputs) == 1:
            (key, spec), = inputs.items()
            if spec.shape.rank == 4 and spec.shape[-1] == 3:
                break
    else:
        raise ValueError(f"SavedModel {path}: no signature takes a (N, H, W, 3) batch of crops "
                         f"(signatures: {sorted(loaded.signatures)})")

    def run(crops):
        outputs = signature(**{key: tf.constant(crops, dtype=spec.dtype)})
        return outputs["heatmaps"] if "heatmaps" in outputs else next(iter(outputs.values()))

    run.saved_model = loaded  # keeps the loaded object (and its variables) alive
    size = tuple(spec.shape[1:3])
    return run, size


def _read_run_config(path):
    """The ConfigDict of a run's ``config.json`` (searched beside and above ``path``)."""
    import ml_collections

    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    for candidate in (directory, os.path.dirname(directory)):
        config_file = os.path.join(candidate, "config.json")
        if os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as f:
                return ml_collections.ConfigDict(json.load(f))
    raise FileNotFoundError(f"no config.json beside or above checkpoint {path}; pass the "
                            f"experiment config (--config) explicitly")


def resolve_checkpoint(path):
    """A run directory -> its checkpoint prefix (best/ first, else the latest one).

    A ``*.keras``/``*.weights.h5`` file or a checkpoint prefix (``.../ckpt-1234``) is
    returned unchanged.
    """
    import tensorflow as tf

    if os.path.isfile(path) or os.path.isfile(path + ".index"):
        return path
    if os.path.isdir(path):
        for sub in ("best", "checkpoints", ""):
            prefix = tf.train.latest_checkpoint(os.path.join(path, sub))
            if prefix:
                return prefix
        raise FileNotFoundError(f"no checkpoint in {path} (looked in best/, checkpoints/ "
                                f"and the directory itself)")
    raise FileNotFoundError(f"checkpoint not found: {path}")


def load_model_from_checkpoint(path, config=None):
    """The config's network with the weights of a checkpoint, for inference.

    Args:
      path: a training run directory (best/ checkpoint first, else the latest), a checkpoint
        prefix ``.../ckpt-<step>``, a ``*.weights.h5`` file or a ``*.keras`` model file.
      config: the experiment ConfigDict; default: the run's ``config.json``.

    Returns:
      (model, config). Raises ValueError naming the checkpoint and the architecture when
      the weights do not fit the config's model (e.g. a checkpoint of another architecture).
    """
    import keras
    import tensorflow as tf

    from mrpose_tf.models import build_model

    path = resolve_checkpoint(str(path))
    config = config if config is not None else _read_run_config(path)
    if path.endswith(".keras"):
        return keras.saving.load_model(path, compile=False), config
    arch, backbone = config.model.arch, config.model.backbone
    model = build_model(arch, backbone, int(config.model.num_joints),
                        tuple(config.model.input_size), backbone_weights=None)
    try:
        if path.endswith(".h5"):
            model.load_weights(path)
        else:
            # A trainer checkpoint also holds the optimizer, and TensorFlow files each
            # variable under the first path that reaches it (often the optimizer's), so
            # variables are matched through the object graph, not counted by name.
            status = tf.train.Checkpoint(model=model).restore(path)
            # Every model variable must be matched (a shape mismatch raises too).
            status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, KeyError, tf.errors.OpError) as error:
        raise ValueError(
            f"checkpoint {path} does not fit the {arch}/{backbone} model with "
            f"{config.model.num_joints} joints and input {tuple(config.model.input_size)} of the "
            f"config (a checkpoint of another architecture?): {str(error)[:500]}") from None
    return model, config


def _flip_pairs_of(config):
    """Flip pairs of a config's keypoint set (explicit ``dataset.flip_pairs`` first)."""
    from mrpose_tf import keypoints

    if config.dataset.get("flip_pairs"):
        return tuple(tuple(p) for p in config.dataset.flip_pairs)
    spec = {"coco": keypoints.COCO, "mpii": keypoints.MPII}.get(config.dataset.name)
    if spec is not None and spec.num_joints == config.model.num_joints:
        return spec.flip_pairs
    if config.model.num_joints == keypoints.COCO.num_joints:
        return keypoints.COCO.flip_pairs
    raise ValueError(f"config for dataset {config.dataset.name!r} with "
                     f"{config.model.num_joints} joints has no dataset.flip_pairs")
