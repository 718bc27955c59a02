"""COCO-format keypoint annotations (and detection results) -> person records.

Any COCO-format keypoint dataset works: the keypoint names, skeleton and flip pairs come from
its category entry (:meth:`KeypointSpec.from_coco_category`). Boxes are cleaned as in the
SimpleBaseline tooling (SPEC section 2): clipped to the image, zero-area boxes dropped, crowd
annotations skipped, and (for training only) people without a labelled keypoint dropped.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from mrpose_tf.data.records import PersonRecord
from mrpose_tf.files import load_json
from mrpose_tf.geometry import box_to_center_scale, person_area
from mrpose_tf.keypoints import KeypointSpec

_log = logging.getLogger(__name__)


def require_dir(path, what="image directory"):
    """Fail up front, naming the path, when a directory is missing."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path}")


def _field(entry, name, where, path):
    try:
        return entry[name]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: {where} has no field {name!r}") from None


def keypoint_category(data, path, category_id=None):
    """The category entry that carries keypoints (``category_id``, or the first such)."""
    categories = [c for c in data.get("categories", []) if c.get("keypoints")]
    if category_id is not None:
        categories = [c for c in categories if c.get("id") == category_id]
    if not categories:
        which = f"with id {category_id} " if category_id is not None else ""
        raise ValueError(f"{path}: no category {which}with 'keypoints' names")
    return categories[0]


def keypoint_spec_from_coco(data, path, category_id=None, flip_pairs=None, sigmas=None):
    """The :class:`KeypointSpec` of a loaded COCO-format file (config overrides optional)."""
    return KeypointSpec.from_coco_category(keypoint_category(data, path, category_id),
                                           flip_pairs=flip_pairs, sigmas=sigmas)


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
    for i, image in enumerate(_field(data, "images", "the file", path)):
        where = f"images[{i}]"
        image_id = _field(image, "id", where, path)
        images[image_id] = dict(path=os.path.join(image_dir, _field(image, "file_name", where, path)),
                                width=float(_field(image, "width", where, path)),
                                height=float(_field(image, "height", where, path)))
    return images


def read_coco(annotation_file, image_dir, *, train, aspect_ratio, padding=1.25, detections=None,
              image_thre=0.0, category_id=None, flip_pairs=None, sigmas=None):
    """Read a COCO-format keypoint file into person records.

    Args:
      annotation_file: COCO ``person_keypoints_*.json`` (or any COCO-format keypoint file).
      image_dir: folder holding the images named by ``file_name``.
      train: drop people with no labelled keypoint (training); keep them otherwise.
      aspect_ratio: input width / input height (the box is enlarged to it).
      padding: box enlargement (1.25).
      detections: optional COCO detection-results JSON (image_id, category_id, bbox, score);
        when given, the records are its boxes (score >= ``image_thre``, the keypoint category
        only) instead of the ground truth, with zero joints and visibility.
      image_thre: detection score threshold (boxes scoring below it are dropped, as in the
        released code).
      category_id: the keypoint category to read (default: the first one with keypoints).
      flip_pairs, sigmas: optional overrides of the keypoint set (e.g. from the config).

    Returns:
      (records, keypoint_spec). Raises FileNotFoundError for a missing file or folder,
      ValueError naming the file and entry for malformed content, for a detection whose
      image_id is not in the annotation file, and for a detection file with no entries.
    """
    data = load_json(annotation_file)
    require_dir(image_dir)
    spec = keypoint_spec_from_coco(data, annotation_file, category_id, flip_pairs, sigmas)
    category = keypoint_category(data, annotation_file, category_id)["id"]
    images = _images_by_id(data, annotation_file, image_dir)
    if detections is not None:
        records = _detection_records(detections, images, category, spec.num_joints,
                                     aspect_ratio, padding, image_thre)
    else:
        records = _ground_truth_records(data, annotation_file, images, category, spec.num_joints,
                                        train, aspect_ratio, padding)
    return records, spec


def _ground_truth_records(data, path, images, category, num_joints, train, aspect_ratio,
                          padding):
    records = []
    for i, ann in enumerate(_field(data, "annotations", "the file", path)):
        where = f"annotations[{i}] (id {ann.get('id') if isinstance(ann, dict) else '?'})"
        if _field(ann, "category_id", where, path) != category or ann.get("iscrowd", 0):
            continue
        image_id = _field(ann, "image_id", where, path)
        if image_id not in images:
            raise ValueError(f"{path}: {where} refers to image_id {image_id}, which is not in "
                             f"'images'")
        image = images[image_id]
        keypoints = np.asarray(_field(ann, "keypoints", where, path), np.float32)
        if keypoints.size != 3 * num_joints:
            raise ValueError(f"{path}: {where} field 'keypoints' has {keypoints.size} values, "
                             f"expected 3 x {num_joints}")
        box = clean_box(_field(ann, "bbox", where, path), image["width"], image["height"])
        if box is None or float(ann.get("area", box[2] * box[3])) <= 0:
            continue
        keypoints = keypoints.reshape(num_joints, 3)
        visibility = np.minimum(1.0, keypoints[:, 2]).astype(np.float32)
        if train and keypoints.max() == 0:
            continue
        center, scale = box_to_center_scale(box, aspect_ratio, padding)
        records.append(PersonRecord(
            image_path=image["path"], image_id=int(image_id), center=center, scale=scale,
            joints=keypoints[:, :2].copy(), visibility=visibility, box_score=1.0,
            area=float(ann.get("area", box[2] * box[3])), bbox=box))
    return records


def _detection_records(detections_file, images, category, num_joints, aspect_ratio, padding,
                       image_thre):
    detections = load_json(detections_file, what="detection file")
    if not isinstance(detections, list):
        raise ValueError(f"detection file {detections_file} must hold a JSON list of "
                         f"detections, got {type(detections).__name__}")
    if not detections:
        raise ValueError(f"detection file {detections_file} holds no detections")
    records = []
    for i, det in enumerate(detections):
        where = f"detection [{i}]"
        if _field(det, "category_id", where, detections_file) != category:
            continue
        image_id = _field(det, "image_id", where, detections_file)
        if image_id not in images:
            raise ValueError(f"detection file {detections_file}: {where} has image_id "
                             f"{image_id}, which is not in the annotation file")
        score = float(_field(det, "score", where, detections_file))
        if score < image_thre:
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
            area=float(person_area(scale)), bbox=box))
    if not records:
        _log.warning("detection file %s: no person box scores >= %s", detections_file,
                     image_thre)
    return records
