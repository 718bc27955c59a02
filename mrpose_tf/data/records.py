"""The person record: what every reader produces and every pipeline consumes."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class PersonRecord:
    """One person to crop: the unit of training, evaluation and export.

    Attributes:
      image_path: path of the image file.
      image_id: the dataset's image id (COCO ``image_id``; MPII: index of the image).
      center: (2,) float32, box centre (x, y) in image pixels, 0-based.
      scale: (2,) float32, box size (sx, sy) in units of 200 px (padding included).
      joints: (K, 2) float32, keypoints (x, y) in image pixels, 0-based (zeros when unknown).
      visibility: (K,) float32, 1 where the keypoint is labelled, else 0.
      box_score: detector score of the box (1.0 for ground-truth boxes).
      area: the person's area in px^2 (COCO ``area``; else scale_x * scale_y * 200^2).
      bbox: (4,) float32, the (cleaned) box x, y, w, h in pixels.
      tfds_dir: the TFDS build whose shards hold this person's image bytes
        (:mod:`mrpose_tf.data.tfds_builder`); '' when they are read from ``image_path``.
      record_index: the person's position in the build's record order (the reader's order);
        -1 outside a build.
      category_id: the COCO category of the person (one keypoint set may span several:
        AP-10K has one per species); 1 for MPII.
    """
    image_path: str
    image_id: int
    center: np.ndarray
    scale: np.ndarray
    joints: np.ndarray
    visibility: np.ndarray
    box_score: float = 1.0
    area: float = 0.0
    bbox: np.ndarray | None = None
    tfds_dir: str = ""
    record_index: int = -1
    category_id: int = 1


class ReaderOutput(tuple):
    """What a reader returns: unpacks as ``(records, keypoints)``, and carries the reader's
    ``summary`` (e.g. :class:`mrpose_tf.data.coco.ReadSummary`; None when it gives none)."""

    def __new__(cls, records, keypoints, summary=None):
        output = super().__new__(cls, (records, keypoints))
        output.summary = summary
        return output

    @property
    def records(self):
        return self[0]

    @property
    def keypoints(self):
        return self[1]


def stack_records(records):
    """Columns of a list of records as numpy arrays (for ``tf.data.Dataset.from_tensor_slices``)."""
    if not records:
        raise ValueError("no person records to stack")
    k = len(records[0].joints)
    return {
        "image_path": np.array([r.image_path for r in records]),
        "image_id": np.array([r.image_id for r in records], np.int64),
        "center": np.stack([r.center for r in records]).astype(np.float32),
        "scale": np.stack([r.scale for r in records]).astype(np.float32),
        "joints": np.stack([r.joints for r in records]).astype(np.float32).reshape(-1, k, 2),
        "visibility": np.stack([r.visibility for r in records]).astype(np.float32),
        "box_score": np.array([r.box_score for r in records], np.float32),
        "area": np.array([r.area for r in records], np.float32),
    }
