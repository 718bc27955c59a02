"""Keypoint set definitions: names, left/right flip pairs, skeleton, OKS sigmas.

One ``KeypointSpec`` describes a dataset's keypoints for every stage (targets, flip
augmentation, flip test, OKS, drawing). COCO and MPII are built in; any COCO-format
dataset gets one from its category entry (:func:`mrpose_tf.data.coco.keypoint_spec_from_coco`).
Every run directory and every export holds the set it was made with as ``keypoints.json``
(:func:`save_keypoint_set`, :func:`load_keypoint_set`; MMPose keeps its dataset metainfo
with the checkpoint the same way), so inference never guesses it.
"""
from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from mrpose_tf.files import atomic_write_json, load_json

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle")
# COCO's skeleton (1-based in the annotation files; 0-based here).
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))
COCO_SIGMAS = tuple(np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07,
                              1.07, .87, .87, .89, .89]) / 10.0)

MPII_KEYPOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "pelvis", "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow",
    "right_shoulder", "left_shoulder", "left_elbow", "left_wrist")
MPII_SKELETON = (
    (0, 1), (1, 2), (2, 6), (3, 6), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
    (7, 12), (7, 13), (10, 11), (11, 12), (13, 14), (14, 15))

# A name's words: separators split them, and so do camel case and digits ('forelegL1' ->
# 'foreleg', 'L', '1'; 'LEye' -> 'L', 'Eye'; 'Left Shoulder' -> 'Left', 'Shoulder').
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_SIDES = {"left": "right", "right": "left", "l": "r", "r": "l"}


def _side_words(name):
    """The (start, end) spans of the words of ``name`` that name a side."""
    return [m.span() for m in _WORD.finditer(name) if m.group().lower() in _SIDES]


def _mirrored_names(name):
    """``name`` with one side word swapped, for each side word ('eyeL' -> ['eyeR']).

    The swapped word keeps its case ('Left' -> 'Right', 'L' -> 'R', 'l' -> 'r').
    """
    out = []
    for start, end in _side_words(name):
        word = name[start:end]
        other = _SIDES[word.lower()]
        other = (other.upper() if word.isupper() else
                 other.capitalize() if word[0].isupper() else other)
        out.append(name[:start] + other + name[end:])
    return out


def derive_flip_pairs(names):
    """Left/right pairs from keypoint names, by the common conventions.

    A side is a word of the name: ``left``/``right``, ``l``/``r`` or ``L``/``R``, as a prefix or
    a suffix, set off by separators (``_``, ``-``, space), camel case or digits: 'left_eye' <->
    'right_eye', 'Left Shoulder' <-> 'Right Shoulder', 'l_knee' <-> 'r_knee', 'leftEye' <->
    'rightEye', 'LEye' <-> 'REye', 'eyeL' <-> 'eyeR', 'forelegL1' <-> 'forelegR1'. A name
    pairs with the name that has its side word swapped, when the set holds it.

    Args:
      names: the K keypoint names.

    Returns:
      Tuple of 0-based (i, j) pairs, i < j, each keypoint in at most one pair.
    """
    index = {n: i for i, n in enumerate(names)}
    pairs, paired = [], set()
    for i, name in enumerate(names):
        for mirrored in _mirrored_names(name):
            j = index.get(mirrored)
            if j is not None and j != i and not {i, j} & paired:
                pairs.append((min(i, j), max(i, j)))
                paired |= {i, j}
                break
    return tuple(sorted(pairs))


def unpaired_sided_names(names, flip_pairs):
    """Names that look like one side of a pair but are in none of ``flip_pairs``.

    A name looks sided when it has a side word (see :func:`derive_flip_pairs`) or contains
    'left' or 'right' anywhere ('leftfoot'). Such a keypoint keeps its label on the mirrored
    limb after a horizontal flip, which corrupts the targets.
    """
    paired = {i for pair in flip_pairs for i in pair}
    return [n for i, n in enumerate(names) if i not in paired
            and (_side_words(n) or "left" in n.lower() or "right" in n.lower())]


@dataclasses.dataclass(frozen=True)
class KeypointSpec:
    """What a dataset's keypoints are.

    Attributes:
      name: dataset name ('coco', 'mpii', or a custom one).
      names: the K keypoint names.
      flip_pairs: 0-based (left, right) index pairs.
      skeleton: 0-based limb pairs, for drawing.
      sigmas: per-keypoint OKS sigmas (None where OKS is not defined for the set).
    """
    name: str
    names: tuple
    flip_pairs: tuple
    skeleton: tuple = ()
    sigmas: tuple | None = None

    @property
    def num_joints(self):
        return len(self.names)

    def __post_init__(self):
        k = len(self.names)
        if k < 1:
            raise ValueError(f"keypoint set {self.name!r} has no keypoints")
        for field in ("flip_pairs", "skeleton"):
            for pair in getattr(self, field):
                if len(pair) != 2 or not all(0 <= int(i) < k for i in pair):
                    raise ValueError(f"keypoint set {self.name!r}: {field} pair {tuple(pair)} "
                                     f"is out of range for {k} keypoints")
        if self.sigmas is not None and len(self.sigmas) != k:
            raise ValueError(f"keypoint set {self.name!r}: {len(self.sigmas)} OKS sigmas for "
                             f"{k} keypoints")

    @classmethod
    def unnamed(cls, num_joints, flip_pairs=(), name="unnamed"):
        """K joints named ``joint_0 .. joint_{K-1}`` (random-data runs, configs without a set)."""
        return cls(name, tuple(f"joint_{j}" for j in range(int(num_joints))),
                   tuple(tuple(int(i) for i in p) for p in flip_pairs or ()))

    def to_dict(self):
        """A JSON-ready dict (lists for tuples), read back by :meth:`from_dict`."""
        return {"name": self.name, "names": list(self.names),
                "flip_pairs": [list(p) for p in self.flip_pairs],
                "skeleton": [list(p) for p in self.skeleton],
                "sigmas": None if self.sigmas is None else [float(s) for s in self.sigmas]}

    @classmethod
    def from_dict(cls, value, source="keypoint set"):
        """The set of a :meth:`to_dict` dict; ValueError naming ``source`` and the field."""
        try:
            sigmas = value.get("sigmas")
            return cls(str(value["name"]), tuple(value["names"]),
                       tuple(tuple(int(i) for i in p) for p in value["flip_pairs"]),
                       tuple(tuple(int(i) for i in p) for p in value.get("skeleton") or ()),
                       None if sigmas is None else tuple(float(s) for s in sigmas))
        except KeyError as error:
            raise ValueError(f"{source}: no field {error.args[0]!r}") from None
        except (TypeError, AttributeError) as error:
            raise ValueError(f"{source}: malformed keypoint set ({error})") from None


KEYPOINTS_FILE = "keypoints.json"


def save_keypoint_set(spec, directory):
    """Write ``spec`` as ``directory/keypoints.json`` (atomically: temporary file + rename).

    Returns:
      The path written.
    """
    path = os.path.join(directory, KEYPOINTS_FILE)
    atomic_write_json(path, spec.to_dict())
    return path


def load_keypoint_set(directory):
    """The set in ``directory/keypoints.json``, or None when the file is absent.

    Raises ValueError naming the file when it is not a valid keypoint set.
    """
    path = os.path.join(directory, KEYPOINTS_FILE)
    if not os.path.isfile(path):
        return None
    return KeypointSpec.from_dict(load_json(path, "keypoint set"), path)


COCO = KeypointSpec("coco", COCO_KEYPOINTS, derive_flip_pairs(COCO_KEYPOINTS), COCO_SKELETON,
                    COCO_SIGMAS)
MPII = KeypointSpec("mpii", MPII_KEYPOINTS, derive_flip_pairs(MPII_KEYPOINTS), MPII_SKELETON)
