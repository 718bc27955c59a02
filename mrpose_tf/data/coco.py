"""COCO-format keypoint annotations (and detection results) -> person records.

Any COCO-format keypoint dataset works. What is taken from the file:

* The keypoint set (:func:`keypoint_spec_from_coco`): the names of a category's
  ``keypoints``; the flip pairs derived from them (:func:`mrpose_tf.keypoints.derive_flip_pairs`);
  its ``skeleton`` (1-based, as the format says; 0-based when it holds a 0), which is only
  drawn, so limbs that do not fit the keypoints are dropped with a warning; OKS sigmas from a
  ``sigmas`` list in the category when there is one, else COCO's for keypoints named as
  COCO's ('left_shoulder', 'Left Shoulder') and :data:`DEFAULT_SIGMA` for the others, with a
  warning. The config may override
  each (:func:`keypoint_overrides`).
* The people of every category whose keypoint names equal the set's (AP-10K has one per
  species), each record keeping its own ``category_id``; ``dataset.category_ids`` chooses.
* The ground truth, normalised once for the reader and the evaluator alike
  (:func:`normalise_ground_truth`): ``area`` and ``num_keypoints`` filled where absent, image
  ids that are not integers mapped to integers.

Boxes are cleaned as in the SimpleBaseline tooling (SPEC section 2): clipped to the image,
zero-area boxes dropped, crowd annotations skipped, and (for training only) people without a
labelled keypoint dropped. What was read and skipped is the output's ``summary``
(:class:`ReadSummary`), logged once per read.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os

import numpy as np

from mrpose_tf.data.records import PersonRecord, ReaderOutput
from mrpose_tf.files import load_json
from mrpose_tf.geometry import box_to_center_scale, person_area
from mrpose_tf.keypoints import COCO_KEYPOINTS, COCO_SIGMAS, KeypointSpec, derive_flip_pairs

_log = logging.getLogger(__name__)

# OKS sigma of a keypoint with no sigma in the file and no COCO namesake: about the median of
# COCO's (0.025 for the eyes to 0.107 for the hips).
DEFAULT_SIGMA = 0.05
# A box without a segmentation area: 0.53 x the box area, COCO's mean ratio of the two (the
# rule of MMPose's COCO-style datasets).
AREA_PER_BOX_AREA = 0.53
_COCO_SIGMA_BY_NAME = dict(zip(COCO_KEYPOINTS, COCO_SIGMAS))


def _plain_name(name):
    """'Right Shoulder', 'right-shoulder' -> 'right_shoulder' (to find COCO's namesakes)."""
    return "_".join(str(name).lower().replace("-", " ").replace("_", " ").split())


def require_dir(path, what="image directory"):
    """Fail up front, naming the path, when a directory is missing."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path}")


def _field(entry, name, where, path):
    try:
        return entry[name]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: {where} has no field {name!r}") from None


@dataclasses.dataclass
class ReadSummary:
    """What one read of a COCO-format file gave.

    Attributes:
      file: the annotation file (or detection file, for detector boxes).
      people: {category name: people read}, for every category read (0 included).
      skipped: {reason: people (annotations or detections) not read}.
    """
    file: str
    people: dict
    skipped: dict

    def __str__(self):
        read = ", ".join(f"{name}: {count}" for name, count in self.people.items() if count)
        empty = sum(1 for count in self.people.values() if not count)
        text = (f"{self.file}: {sum(self.people.values())} people of "
                f"{len(self.people)} categor{'y' if len(self.people) == 1 else 'ies'} "
                f"({read or 'none'}{f'; {empty} with none' if empty else ''})")
        skipped = ", ".join(f"{count} {reason}" for reason, count in self.skipped.items() if count)
        return text + (f"; skipped {skipped}" if skipped else "")


# --- the ground truth, as the reader and the evaluator read it -----------------------------

def _is_integer(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _filled_area(bbox, image):
    """0.53 x the area of ``bbox`` (x, y, w, h) clipped to the image, at least 1 (px^2)."""
    x, y, w, h = (float(v) for v in bbox)
    width, height = float(image.get("width", np.inf)), float(image.get("height", np.inf))
    x1, y1 = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
    x2, y2 = np.clip(x + w, 0, width - 1), np.clip(y + h, 0, height - 1)
    return float(max(1.0, (x2 - x1) * (y2 - y1) * AREA_PER_BOX_AREA))


def normalise_ground_truth(data, path):
    """A COCO-format keypoint file as both the reader and pycocotools need it.

    Fills, where an annotation lacks them (JHMDB, CrowdPose, annotation-tool exports):
    ``num_keypoints`` (keypoints with visibility > 0), ``area`` (:data:`AREA_PER_BOX_AREA`
    x the box clipped to the image, at least 1 px^2), ``iscrowd`` (0) and ``id`` (position + 1).
    When any image id is not an integer ('frame_0001'), every image is given the integer id
    of its position + 1 (pycocotools and the int64 record columns need integers) and the
    annotations' ``image_id`` follow.

    Args:
      data: the loaded JSON (not modified).
      path: the file, for messages.

    Returns:
      (data, original_ids): a normalised copy, and {integer id: the file's id} when ids were
      mapped, else None.

    Raises:
      ValueError naming the file and field: no ``images`` or ``annotations`` list, an image
      without ``id``, or two images with the same id.
    """
    images = _field(data, "images", "the file", path)
    annotations = _field(data, "annotations", "the file", path)
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise ValueError(f"{path}: 'images' and 'annotations' must be lists")
    ids = [_field(image, "id", f"images[{i}]", path) for i, image in enumerate(images)]
    counts = collections.Counter(map(repr, ids))
    if len(counts) != len(ids):
        duplicate = next(i for i in ids if counts[repr(i)] > 1)
        raise ValueError(f"{path}: image id {duplicate!r} is used by {counts[repr(duplicate)]} "
                         f"entries of 'images'")
    out = dict(data, images=[dict(image) for image in images],
               annotations=[dict(ann) if isinstance(ann, dict) else ann for ann in annotations])
    original_ids = None
    if not all(_is_integer(i) for i in ids):
        original_ids = {n + 1: i for n, i in enumerate(ids)}
        to_integer = {i: n for n, i in original_ids.items()}
        for image, new in zip(out["images"], original_ids):
            image["id"] = new
        for ann in out["annotations"]:
            if isinstance(ann, dict) and ann.get("image_id") in to_integer:
                ann["image_id"] = to_integer[ann["image_id"]]
    by_id = {image["id"]: image for image in out["images"]}
    for n, ann in enumerate(out["annotations"]):
        if not isinstance(ann, dict):
            continue
        ann.setdefault("id", n + 1)
        ann.setdefault("iscrowd", 0)
        if "num_keypoints" not in ann and isinstance(ann.get("keypoints"), list):
            ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"],
                                                                   np.float64)[2::3] > 0))
        if "area" not in ann and ann.get("image_id") in by_id and \
                isinstance(ann.get("bbox"), (list, tuple)) and len(ann["bbox"]) == 4:
            ann["area"] = _filled_area(ann["bbox"], by_id[ann["image_id"]])
    return out, original_ids


# --- the keypoint set -----------------------------------------------------------------------

def keypoint_categories(data, path, category_ids=None):
    """The categories to read: those of ``category_ids``, or every category whose keypoint
    names equal those of the first category that has keypoints.

    Raises:
      ValueError naming the file and ``dataset.category_ids``: no category with keypoints,
      a chosen id that is absent or has no keypoints, or chosen categories whose keypoint
      names differ.
    """
    categories = [c for c in data.get("categories", []) if isinstance(c, dict)
                  and c.get("keypoints")]
    if not categories:
        raise ValueError(f"{path}: no category with 'keypoints' names")
    if category_ids is None:
        names = list(categories[0]["keypoints"])
        return [c for c in categories if list(c["keypoints"]) == names]
    by_id = {c.get("id"): c for c in categories}
    missing = [i for i in category_ids if i not in by_id]
    if missing:
        raise ValueError(f"{path}: config.dataset.category_ids {list(category_ids)}: no category "
                         f"with id {missing} has 'keypoints' names (ids with keypoints: "
                         f"{sorted(by_id, key=str)[:20]})")
    if not category_ids:
        raise ValueError(f"{path}: config.dataset.category_ids is empty; leave it unset (None) "
                         f"for every category with the first one's keypoint names")
    chosen = [by_id[i] for i in category_ids]
    names = list(chosen[0]["keypoints"])
    other = [c.get("id") for c in chosen if list(c["keypoints"]) != names]
    if other:
        raise ValueError(f"{path}: config.dataset.category_ids: categories {other} have other "
                         f"keypoint names than category {chosen[0].get('id')}: one model "
                         f"needs one keypoint set")
    return chosen


def _file_skeleton(category, num_joints, path):
    """The category's 0-based limbs that fit ``num_joints``; one warning when some do not."""
    limbs = category.get("skeleton") or []
    try:
        limbs = [tuple(int(i) for i in limb) for limb in limbs]
    except (TypeError, ValueError):
        limbs = [()]
    if any(len(limb) != 2 for limb in limbs):
        _warn_once(f"{path}: field 'skeleton' of category {category.get('name')!r} is not a "
                   f"list of [a, b] pairs; no skeleton is drawn (set config.dataset.skeleton)")
        return ()
    base = 0 if any(min(limb) <= 0 for limb in limbs) else 1
    shifted = [(a - base, b - base) for a, b in limbs]
    kept = tuple(limb for limb in shifted if all(0 <= i < num_joints for i in limb))
    if len(kept) < len(shifted):
        _warn_once(f"{path}: {len(shifted) - len(kept)} of the {len(shifted)} limbs of field "
                   f"'skeleton' ({base}-based) do not fit the {num_joints} keypoints of "
                   f"category {category.get('name')!r} and are dropped; the skeleton is only "
                   f"drawn (set config.dataset.skeleton, 0-based pairs, to replace it)")
    return kept


def _file_sigmas(category, names, path):
    """The category's ``sigmas``, else COCO's by name and DEFAULT_SIGMA (warned) for the rest."""
    given = category.get("sigmas")
    if given is not None:
        if len(given) != len(names):
            raise ValueError(f"{path}: field 'sigmas' of category {category.get('name')!r} has "
                             f"{len(given)} values for {len(names)} keypoints")
        return tuple(float(s) for s in given)
    defaulted = [n for n in names if _plain_name(n) not in _COCO_SIGMA_BY_NAME]
    if defaulted:
        _warn_once(f"{path}: no OKS sigmas in the file; {len(defaulted)} of {len(names)} "
                   f"keypoints have no COCO namesake and get the default {DEFAULT_SIGMA} "
                   f"({', '.join(defaulted[:6])}{' ...' if len(defaulted) > 6 else ''}); set "
                   f"config.dataset.oks_sigmas for the set's own")
    return tuple(_COCO_SIGMA_BY_NAME.get(_plain_name(n), DEFAULT_SIGMA) for n in names)


def _pairs(value, num_joints, field, path):
    """Config pairs as 0-based int tuples; ValueError naming ``field`` when one does not fit."""
    try:
        pairs = tuple(tuple(int(i) for i in pair) for pair in value)
    except (TypeError, ValueError):
        raise ValueError(f"config.dataset.{field} must be 0-based index pairs ((a, b), ...), "
                         f"got {value!r}") from None
    for pair in pairs:
        if len(pair) != 2 or not all(0 <= i < num_joints for i in pair):
            raise ValueError(f"config.dataset.{field}: pair {pair} is out of range for the "
                             f"{num_joints} keypoints of {path}")
    return pairs


def keypoint_spec_from_coco(data, path, category_ids=None, flip_pairs=None, sigmas=None,
                            skeleton=None):
    """The :class:`KeypointSpec` of a loaded COCO-format file (see the module docstring).

    Args:
      data: the loaded JSON.
      path: the file, for names and messages.
      category_ids: ids of the categories to read (default: all sharing the first keypoint
        category's names; :func:`keypoint_categories`).
      flip_pairs, sigmas, skeleton: config overrides (0-based pairs; K sigmas) or None.

    Returns:
      The set, named after its category (after the file when it spans several).

    Raises:
      ValueError naming the file and the config field of an override that does not fit.
    """
    categories = keypoint_categories(data, path, category_ids)
    first = categories[0]
    names = tuple(str(n) for n in first["keypoints"])
    k = len(names)
    pairs = (derive_flip_pairs(names) if flip_pairs is None
             else _pairs(flip_pairs, k, "flip_pairs", path))
    limbs = (_file_skeleton(first, k, path) if skeleton is None
             else _pairs(skeleton, k, "skeleton", path))
    if sigmas is None:
        sigmas = _file_sigmas(first, names, path)
    elif len(sigmas) != k:
        raise ValueError(f"config.dataset.oks_sigmas has {len(sigmas)} values for the {k} "
                         f"keypoints of {path}")
    name = (first.get("name") or "custom") if len(categories) == 1 else \
        os.path.splitext(os.path.basename(path))[0]
    return KeypointSpec(str(name), names, pairs, limbs, tuple(float(s) for s in sigmas))


def keypoint_overrides(dataset_config):
    """What ``config.dataset`` overrides of a COCO-format file's keypoint set, as the keyword
    arguments of :func:`read_coco` and :func:`keypoint_spec_from_coco`: category_ids,
    flip_pairs, sigmas (``dataset.oks_sigmas``) and skeleton; None where the file decides."""
    def get(field):
        value = dataset_config.get(field)
        return None if value is None else tuple(value)

    return {"category_ids": get("category_ids"), "flip_pairs": get("flip_pairs"),
            "sigmas": get("oks_sigmas"), "skeleton": get("skeleton")}


_WARNED = set()


def _warn_once(message):
    """A warning, once per process: a file is read for training, validation and export."""
    if message not in _WARNED:
        _WARNED.add(message)
        _log.warning(message)


# --- person records -------------------------------------------------------------------------

def clean_box(bbox, width, height):
    """SimpleBaseline box cleaning: clip (x, y, w, h) to the image; None when empty."""
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 >= x1 and y2 >= y1:
        return np.array([x1, y1, x2 - x1, y2 - y1], np.float32)
    return None


def _images_by_id(data, path, image_dir):
    images = {}
    for i, image in enumerate(data["images"]):
        where = f"images[{i}]"
        images[image["id"]] = dict(
            path=os.path.join(image_dir, _field(image, "file_name", where, path)),
            width=float(_field(image, "width", where, path)),
            height=float(_field(image, "height", where, path)))
    return images


def _category_names(categories):
    """{category id: its name in summaries} (the id added to names that repeat)."""
    names = [str(c.get("name", c.get("id"))) for c in categories]
    repeated = {n for n in names if names.count(n) > 1}
    return {c.get("id"): f"{n} ({c.get('id')})" if n in repeated else n
            for c, n in zip(categories, names)}


def read_coco(annotation_file, image_dir, *, train, aspect_ratio, padding=1.25, detections=None,
              image_thre=0.0, category_ids=None, flip_pairs=None, sigmas=None, skeleton=None):
    """Read a COCO-format keypoint file into person records.

    Args:
      annotation_file: COCO ``person_keypoints_*.json`` (or any COCO-format keypoint file).
      image_dir: folder holding the images named by ``file_name``.
      train: drop people with no labelled keypoint (training); keep them otherwise.
      aspect_ratio: input width / input height (the box is enlarged to it).
      padding: box enlargement (1.25).
      detections: optional COCO detection-results JSON (image_id, category_id, bbox, score);
        when given, the records are its boxes (score >= ``image_thre``, of the categories
        read) instead of the ground truth, with zero joints and visibility.
      image_thre: detection score threshold (boxes scoring below it are dropped, as in the
        released code).
      category_ids: the categories to read (default: every category with the keypoint names
        of the first; :func:`keypoint_categories`).
      flip_pairs, sigmas, skeleton: optional overrides of the keypoint set (the config's,
        :func:`keypoint_overrides`).

    Returns:
      :class:`ReaderOutput`: unpacks as (records, keypoint_spec); ``.summary`` is the
      :class:`ReadSummary` (also logged: as a warning when several categories are read).
      Records carry the (integer) image id of :func:`normalise_ground_truth` and their
      ``category_id``.

    Raises:
      FileNotFoundError for a missing file or folder; ValueError naming the file, entry and
      field for malformed content, for a detection whose image_id is not in the annotation
      file, and for a detection file with no entries.
    """
    data = load_json(annotation_file)
    require_dir(image_dir)
    data, original_ids = normalise_ground_truth(data, annotation_file)
    spec = keypoint_spec_from_coco(data, annotation_file, category_ids, flip_pairs, sigmas,
                                   skeleton)
    categories = keypoint_categories(data, annotation_file, category_ids)
    names = _category_names(categories)
    images = _images_by_id(data, annotation_file, image_dir)
    if detections is not None:
        to_integer = {v: k for k, v in (original_ids or {}).items()}
        records, summary = _detection_records(detections, images, to_integer, names,
                                              spec.num_joints, aspect_ratio, padding, image_thre)
    else:
        records, summary = _ground_truth_records(data, annotation_file, images, names,
                                                 spec.num_joints, train, aspect_ratio, padding)
    if len(categories) > 1:
        _log.warning("%s: the categories with the same %d keypoint names are read together "
                     "(config.dataset.category_ids chooses)", summary, spec.num_joints)
    else:
        _log.info("%s", summary)
    return ReaderOutput(records, spec, summary)


def _ground_truth_records(data, path, images, names, num_joints, train, aspect_ratio, padding):
    records = []
    people = {name: 0 for name in names.values()}
    skipped = {"crowd": 0, "with an empty box": 0, "without a labelled keypoint": 0,
               "of other categories": 0}
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}] (id {ann.get('id') if isinstance(ann, dict) else '?'})"
        category = _field(ann, "category_id", where, path)
        if category not in names:
            skipped["of other categories"] += 1
            continue
        if ann.get("iscrowd", 0):
            skipped["crowd"] += 1
            continue
        image_id = _field(ann, "image_id", where, path)
        if image_id not in images:
            raise ValueError(f"{path}: {where} refers to image_id {image_id!r}, which is not in "
                             f"'images'")
        image = images[image_id]
        keypoints = np.asarray(_field(ann, "keypoints", where, path), np.float32)
        if keypoints.size != 3 * num_joints:
            raise ValueError(f"{path}: {where} field 'keypoints' has {keypoints.size} values, "
                             f"expected 3 x {num_joints}")
        bbox = _field(ann, "bbox", where, path)
        if np.shape(bbox) != (4,):
            raise ValueError(f"{path}: {where} field 'bbox' must be [x, y, w, h], got {bbox!r}")
        box = clean_box(bbox, image["width"], image["height"])
        if box is None or float(ann.get("area", 0.0)) <= 0:
            skipped["with an empty box"] += 1
            continue
        keypoints = keypoints.reshape(num_joints, 3)
        visibility = np.minimum(1.0, keypoints[:, 2]).astype(np.float32)
        if train and keypoints.max() == 0:
            skipped["without a labelled keypoint"] += 1
            continue
        center, scale = box_to_center_scale(box, aspect_ratio, padding)
        records.append(PersonRecord(
            image_path=image["path"], image_id=int(image_id), center=center, scale=scale,
            joints=keypoints[:, :2].copy(), visibility=visibility, box_score=1.0,
            area=float(ann["area"]), bbox=box, category_id=int(category)))
        people[names[category]] += 1
    return records, ReadSummary(path, people, skipped)


def _detection_records(detections_file, images, to_integer, names, num_joints, aspect_ratio,
                       padding, image_thre):
    detections = load_json(detections_file, what="detection file")
    if not isinstance(detections, list):
        raise ValueError(f"detection file {detections_file} must hold a JSON list of "
                         f"detections, got {type(detections).__name__}")
    if not detections:
        raise ValueError(f"detection file {detections_file} holds no detections")
    records = []
    people = {name: 0 for name in names.values()}
    skipped = {"of other categories": 0, f"scoring below {image_thre}": 0}
    for i, det in enumerate(detections):
        where = f"detection [{i}]"
        category = _field(det, "category_id", where, detections_file)
        if category not in names:
            skipped["of other categories"] += 1
            continue
        image_id = _field(det, "image_id", where, detections_file)
        image_id = to_integer.get(image_id, image_id) if to_integer else image_id
        if image_id not in images:
            raise ValueError(f"detection file {detections_file}: {where} has image_id "
                             f"{det['image_id']!r}, which is not in the annotation file")
        score = float(_field(det, "score", where, detections_file))
        if score < image_thre:
            skipped[f"scoring below {image_thre}"] += 1
            continue
        box = np.asarray(_field(det, "bbox", where, detections_file), np.float32)
        if box.shape != (4,):
            raise ValueError(f"detection file {detections_file}: {where} field 'bbox' must be "
                             f"[x, y, w, h], got {det['bbox']!r}")
        center, scale = box_to_center_scale(box, aspect_ratio, padding)
        records.append(PersonRecord(
            image_path=images[image_id]["path"], image_id=int(image_id), center=center,
            scale=scale, joints=np.zeros((num_joints, 2), np.float32),
            visibility=np.zeros(num_joints, np.float32), box_score=score,
            area=float(person_area(scale)), bbox=box, category_id=int(category)))
        people[names[category]] += 1
    if not records:
        _log.warning("detection file %s: no box of the categories read scores >= %s",
                     detections_file, image_thre)
    return records, ReadSummary(detections_file, people, skipped)
