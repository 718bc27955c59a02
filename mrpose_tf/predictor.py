"""The image -> keypoints ``Predictor``: crop every person box, run the model, decode.

A model (Keras, or a SavedModel's crops -> heatmaps signature) gives (N, h, w, K) heatmaps
for person crops; the codec (:mod:`mrpose_tf.codec`) turns them into keypoints in image
pixels. The keypoint set (flip pairs for the flip test, names and skeleton for drawing) is
the one saved with the run or the export (``keypoints.json``).
"""
from __future__ import annotations

import functools
import os

import numpy as np

from mrpose_tf.codec import decode_heatmaps, fuse_flip_test
from mrpose_tf.geometry import box_to_center_scale, get_affine_transform
from mrpose_tf.keypoints import load_keypoint_set
from mrpose_tf.preprocessing import DEFAULT_CONVENTION, preprocess


def _run_model(model, images):
    """(N, H, W, 3) float32 -> (N, h, w, K) float32 numpy, for a keras model or a callable."""
    import keras

    out = model.predict_on_batch(images) if isinstance(model, keras.Model) else model(images)
    if isinstance(out, dict):
        out = out["heatmaps"] if "heatmaps" in out else next(iter(out.values()))
    if not isinstance(out, np.ndarray):
        out = keras.ops.convert_to_numpy(out)
    return np.asarray(out, dtype=np.float32)


def predict_heatmaps(model, images, flip_pairs, flip_test=True, shift_heatmap=True):
    """Heatmaps of a batch of crops, with the flip test of the paper's evaluation.

    With ``flip_test`` the mirrored crops run in the same call (one batch of 2N: half the
    calls, twice the batch's peak memory) and their heatmaps are fused with
    :func:`mrpose_tf.codec.fuse_flip_test`.

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
    count = len(images)
    if not flip_test:
        return _run_model(model, images)
    both = _run_model(model, np.concatenate([images, images[:, :, ::-1, :]]))
    return fuse_flip_test(both[:count], both[count:], flip_pairs, shift_heatmap)


def checked_image(image):
    """``image`` as a numpy array, if it is (H, W, 3) uint8 RGB.

    The one input contract of the Predictor, the SavedModel's ``keypoints`` signature and the
    deployment kit: 8-bit RGB values 0..255, as ``cv2.imread`` (then BGR -> RGB) gives them.
    A float image in 0..1 or a 16-bit one would be cropped and preprocessed as if it were
    0..255 and give keypoints far off, so it is refused.

    Raises:
      ValueError naming the shape, or the dtype and value range, with the conversion.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        low, high = (image.min(), image.max()) if image.size else (0, 0)
        if np.issubdtype(image.dtype, np.floating) and high <= 1.0:
            hint = "; for values 0..1: (image * 255).round().astype(np.uint8)"
        elif image.dtype == np.uint16:
            hint = "; for 16-bit values: (image >> 8).astype(np.uint8)"
        else:
            hint = "; convert it to 8 bits per channel"
        raise ValueError(f"image must be uint8 RGB with values 0..255, got {image.dtype} with "
                         f"values {low:g}..{high:g}{hint}")
    return image


def crop_person(image, center, scale, input_size):
    """Bilinear affine crop of one person box to ``input_size`` (height, width).

    Args:
      image: (H, W, C) image.
      center: (x, y) box centre in pixels; scale: (sx, sy) in units of 200 px.
      input_size: (height, width) of the crop.

    Returns:
      (height, width, C) crop of the image's dtype (``cv2.warpAffine``, zero border).
    """
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

    Args:
      model: keras model or callable on preprocessed (N, H, W, 3) float32 crops.
      input_size: (height, width) of the model input.
      keypoints: the :class:`mrpose_tf.keypoints.KeypointSpec` the model was trained on
        (its flip pairs drive the flip test).
      flip_test: average with the mirrored crops' heatmaps.
      shift_heatmap: the reference's one-pixel shift of the flipped-back heatmaps.
      box_padding: box enlargement factor (1.25 in the paper).
      batch_size: crops per model call.
      input_preprocessing: the convention of the model's weights
        (:data:`mrpose_tf.preprocessing.CONVENTIONS`; the run's ``model.input_preprocessing``).
      preprocess_fn: uint8 RGB crops -> model input, instead of the convention's
        :func:`mrpose_tf.preprocess`.
    """

    def __init__(self, model, input_size, keypoints, flip_test=True, shift_heatmap=True,
                 box_padding=1.25, batch_size=32, input_preprocessing=DEFAULT_CONVENTION,
                 preprocess_fn=None):
        self.model = model
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.keypoints = keypoints
        self.flip_test = flip_test
        self.shift_heatmap = shift_heatmap
        self.box_padding = box_padding
        self.batch_size = int(batch_size)
        self.input_preprocessing = input_preprocessing
        self.preprocess_fn = preprocess_fn or functools.partial(
            preprocess, input_preprocessing=input_preprocessing)

    @property
    def flip_pairs(self):
        return self.keypoints.flip_pairs

    @classmethod
    def from_checkpoint(cls, path, config=None, **kwargs):
        """A predictor from a training run or checkpoint, with the run's keypoint set.

        Args:
          path: a training run directory (its best/ checkpoint, else the latest), a
            checkpoint prefix ``.../ckpt-<step>``, a ``*.weights.h5`` or ``*.keras`` file;
            see :func:`mrpose_tf.checkpoints.load_model_from_checkpoint`.
          config: the experiment ConfigDict (overrides ``config.json``).
          **kwargs: forwarded to :class:`Predictor` (e.g. ``flip_test=False``).
        """
        from mrpose_tf.checkpoints import load_model_from_checkpoint, run_keypoint_set
        from mrpose_tf.config import input_preprocessing_of

        model, config = load_model_from_checkpoint(path, config)
        kwargs.setdefault("input_preprocessing", input_preprocessing_of(config))
        kwargs.setdefault("flip_test", bool(config.test.flip_test))
        kwargs.setdefault("shift_heatmap", bool(config.test.shift_heatmap))
        kwargs.setdefault("box_padding", float(config.augment.box_padding))
        return cls(model, tuple(config.model.input_size), run_keypoint_set(path, config),
                   **kwargs)

    @classmethod
    def from_saved_model(cls, path, keypoints=None, input_size=None, **kwargs):
        """A predictor from an exported SavedModel, with the export's keypoint set.

        Runs the ``serving_default`` signature on uint8 RGB crops (the SavedModel
        preprocesses them itself).

        Args:
          path: SavedModel directory.
          keypoints: the keypoint set; default: the export's ``keypoints.json`` (in the
            SavedModel's ``assets.extra/`` or beside the SavedModel directory).
          input_size: (height, width); read from the signature when None.
          **kwargs: forwarded to :class:`Predictor`.

        Raises:
          ValueError: no keypoint set given or found, no crops signature, or no fixed
            input size.
        """
        run, signature_size = load_saved_model_heatmaps(path, preprocessed=False)
        input_size = input_size or signature_size
        if input_size is None or None in input_size:
            raise ValueError(f"SavedModel {path}: its signature has no fixed input size; pass "
                             f"input_size=(height, width)")
        if keypoints is None:
            keypoints = saved_model_keypoint_set(path)
        kwargs.setdefault("preprocess_fn", lambda crops: np.asarray(crops, np.uint8))
        return cls(run, input_size, keypoints, **kwargs)

    def __call__(self, image, boxes):
        """Keypoints of the people in ``boxes``.

        Args:
          image: (H, W, 3) uint8 RGB (:func:`checked_image`; ValueError otherwise).
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
        image = checked_image(image)
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
            k = self.keypoints.num_joints
            return {"keypoints": np.zeros((0, k, 2)), "scores": np.zeros((0, k), np.float32),
                    "heatmaps": np.zeros((0, 0, 0, k), np.float32),
                    "crops": np.zeros((0, height, width, 3), np.uint8),
                    "centers": centers, "scales": scales}
        out = {key: np.concatenate(value) for key, value in parts.items()}
        out.update(centers=centers, scales=scales)
        return out


def load_saved_model_heatmaps(path, preprocessed=True):
    """The crops -> heatmaps function of an exported SavedModel.

    Args:
      path: the SavedModel directory.
      preprocessed: take crops already preprocessed (float32, the ``heatmaps_preprocessed``
        signature; ``serving_default`` in exports of older versions) or uint8 RGB crops
        (``serving_default``).

    Returns:
      (fn, input_size): fn maps a numpy batch of crops to its heatmaps; input_size is
      (height, width) from the signature (entries None when not fixed).

    Raises:
      FileNotFoundError: no directory. ValueError: no signature takes such crops.
    """
    import tensorflow as tf

    if not os.path.isdir(path):
        raise FileNotFoundError(f"no SavedModel directory at {path}")
    loaded = tf.saved_model.load(path)
    wanted = tf.float32 if preprocessed else tf.uint8
    preferred = ("heatmaps_preprocessed", "serving_default")
    names = sorted(loaded.signatures, key=lambda n: (n not in preferred,
                                                     preferred.index(n) if n in preferred else 0,
                                                     n))
    for name in names:
        signature = loaded.signatures[name]
        inputs = signature.structured_input_signature[1]
        if len(inputs) == 1:
            (key, spec), = inputs.items()
            if spec.shape.rank == 4 and spec.shape[-1] == 3 and spec.dtype == wanted:
                break
    else:
        raise ValueError(f"SavedModel {path}: no signature takes a (N, H, W, 3) "
                         f"{wanted.name} batch of {'preprocessed ' if preprocessed else ''}crops "
                         f"(signatures: {sorted(loaded.signatures)})")

    def run(crops):
        outputs = signature(**{key: tf.constant(crops, dtype=spec.dtype)})
        return outputs["heatmaps"] if "heatmaps" in outputs else next(iter(outputs.values()))

    run.saved_model = loaded  # keeps the loaded object (and its variables) alive
    size = tuple(spec.shape[1:3])
    return run, size


SAVED_MODEL_EXTRA = "assets.extra"
EXPORT_INFO = "export_info.json"


def saved_model_export_info(path):
    """The export_info.json an export wrote for the SavedModel at ``path`` (in its
    ``assets.extra/`` or beside it), or None."""
    from mrpose_tf.files import load_json

    for directory in (os.path.join(path, SAVED_MODEL_EXTRA),
                      os.path.dirname(os.path.abspath(path))):
        candidate = os.path.join(directory, EXPORT_INFO)
        if os.path.isfile(candidate):
            return load_json(candidate, "export info")
    return None


def saved_model_keypoint_set(path):
    """The keypoint set an export wrote for the SavedModel at ``path``.

    Looked up in ``path/assets.extra/keypoints.json`` (travels with the SavedModel to a
    server), then in the export folder above it. Raises ValueError when there is none.
    """
    for directory in (os.path.join(path, SAVED_MODEL_EXTRA),
                      os.path.dirname(os.path.abspath(path))):
        spec = load_keypoint_set(directory)
        if spec is not None:
            return spec
    raise ValueError(f"SavedModel {path}: no keypoints.json in {SAVED_MODEL_EXTRA}/ or beside "
                     f"it (an export of an older version?); pass keypoints=KeypointSpec(...)")
