"""MPII annotations (the SimpleBaseline JSON layout) -> person records.

Each entry: ``image`` (file name), ``center`` (x, y), ``scale`` (box height / 200),
``joints`` (16 x [x, y], 1-based) and ``joints_vis``. As in the released code (SPEC
section 2): centre y += 15 * scale, scale *= 1.25 (the same on both axes), then centre and
joints -= 1 to make them 0-based. Test files without joints get zero joints and visibility.
"""
from __future__ import annotations

import os

import numpy as np

from mrpose_tf.data.coco import require_dir
from mrpose_tf.data.records import PersonRecord
from mrpose_tf.files import load_json
from mrpose_tf.geometry import person_area
from mrpose_tf.keypoints import MPII


def read_mpii(annotation_file, image_dir, keypoints=MPII):
    """Read an MPII annotation JSON into person records (in file order).

    Args:
      annotation_file: the JSON list (``train.json`` / ``valid.json`` of the tooling).
      image_dir: the folder of the images.
      keypoints: the keypoint set (MPII's 16 joints).

    Returns:
      (records, keypoints). ``image_id`` is the index of the image among the file's distinct
      image names, in order of first appearance. Raises FileNotFoundError for a missing file
      or folder and ValueError naming the file, entry and field for malformed content.
    """
    data = load_json(annotation_file)
    require_dir(image_dir)
    if not isinstance(data, list):
        raise ValueError(f"{annotation_file}: expected a JSON list of people, got "
                         f"{type(data).__name__}")
    k = keypoints.num_joints
    image_ids = {}
    records = []
    for i, entry in enumerate(data):
        try:
            name = entry["image"]
            center = np.asarray(entry["center"], np.float64).reshape(2)
            scale = float(entry["scale"])
            joints = np.asarray(entry.get("joints", np.zeros((k, 2))), np.float64).reshape(k, 2)
            visibility = np.asarray(entry.get("joints_vis", np.zeros(k)), np.float32).reshape(k)
        except KeyError as e:
            raise ValueError(f"{annotation_file}: entry [{i}] has no field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{annotation_file}: entry [{i}] has a malformed field "
                             f"({e})") from None
        if center[0] != -1:  # -1 marks a missing box in the tooling
            center[1] += 15.0 * scale
            scale *= 1.25
        center -= 1.0
        if "joints" in entry:
            joints -= 1.0
        image_id = image_ids.setdefault(name, len(image_ids))
        scales = np.array([scale, scale], np.float32)
        records.append(PersonRecord(
            image_path=os.path.join(image_dir, name), image_id=image_id,
            center=center.astype(np.float32), scale=scales,
            joints=joints.astype(np.float32), visibility=visibility,
            area=float(person_area(scales))))
    return records, keypoints
