"""The synthetic keypoint dataset: articulated figures rendered into COCO-format files.

The embedded default for the quickstart, the tests and the demos when no real dataset is
present. Each figure is a 3-D skeleton with joint angles sampled in anatomical ranges,
turned to face front / back / left / right, projected orthographically and drawn as
antialiased tapered limbs, far parts first. Labels follow COCO: ``left`` is the person's
left (on the image's right for a front-facing figure); v=2 visible, v=1 labelled but
hidden (behind the figure's own torso or head, another figure or an occluder; the face
when the head is turned away), v=0 outside the image (coordinates 0).

Difficulties:
  easy:     plain or gradient backgrounds, 1-3 separated figures, fixed distinct colours
            for the left (warm) and right (cool) limbs, no occluders.
  standard: cluttered, textured, noisy backgrounds, 1-4 crowded figures in clothes
            (left and right limbs share a colour), occluder rectangles.

Layout written by :func:`ensure_synthetic_dataset` and the CLI::

    DIR/manifest.json           the render parameters (to skip an identical re-render)
    DIR/train.json, val.json    COCO person_keypoints (file_name relative to images/<split>)
    DIR/images/train/000001.jpg ...
    DIR/images/val/000001.jpg ...
    DIR/val_detections.json     COCO detection results for val (jittered GT + false positives)

    python -m mrpose_tf.data.synthetic --output_dir=DIR --num_train=N --num_val=M --difficulty=easy

Every image has its own random stream (seed, split, index): the same seed gives the same
bytes, and the first n images do not depend on how many are rendered.
"""
from __future__ import annotations

import json
import os
import shutil
import zlib

import cv2
import numpy as np

from mrpose_tf.keypoints import COCO_KEYPOINTS, COCO_SKELETON

DIFFICULTIES = ("easy", "standard")
MANIFEST_VERSION = 1
_J = {name: i for i, name in enumerate(COCO_KEYPOINTS)}
# Easy-mode limb colours (RGB): the person's left is warm, the right is cool.
EASY_LIMB_COLOURS = {
    "left_upper_arm": (230, 40, 40), "left_forearm": (250, 150, 30),
    "right_upper_arm": (40, 70, 230), "right_forearm": (30, 200, 230),
    "left_thigh": (200, 40, 170), "left_shin": (250, 120, 190),
    "right_thigh": (30, 150, 60), "right_shin": (120, 220, 80),
}
_SKIN = ((255, 220, 190), (230, 185, 150), (200, 150, 110), (150, 100, 70), (100, 65, 45))
_HAIR = ((30, 25, 20), (90, 60, 30), (160, 120, 60), (200, 180, 120), (120, 120, 120))
_FACINGS = {"front": 0.0, "right": 90.0, "back": 180.0, "left": -90.0}  # yaw in degrees


# --- 3-D figure -------------------------------------------------------------------------
# Person frame: X = the person's left, Y = up, Z = forward; unit = body height.

def _unit(v):
    return v / max(np.linalg.norm(v), 1e-9)


def _rot_about(axis, angle, v):
    """Rodrigues rotation of v about a unit axis."""
    axis = _unit(axis)
    return (v * np.cos(angle) + np.cross(axis, v) * np.sin(angle)
            + axis * np.dot(axis, v) * (1.0 - np.cos(angle)))


def _limb_direction(side_axis, up, forward, abduction, flexion):
    """Down rotated outwards by ``abduction`` and forwards by ``flexion`` (radians)."""
    sagittal = -np.cos(flexion) * up + np.sin(flexion) * forward
    return _unit(np.sin(abduction) * side_axis + np.cos(abduction) * sagittal)


def _bend(upper, hinge_axis, angle, fallback):
    """Direction of the lower segment: ``upper`` turned by ``angle`` about the hinge."""
    towards = np.cross(hinge_axis, upper)
    if np.linalg.norm(towards) < 1e-3:
        towards = fallback - np.dot(fallback, upper) * upper
    towards = _unit(towards)
    return _unit(np.cos(angle) * upper + np.sin(angle) * towards)


def _sample_figure(rng):
    """3-D points (person frame) of one figure with plausible joint angles.

    Returns:
      dict name -> (3,) point: the 17 COCO keypoints plus 'neck', 'head', 'hair', 'pelvis',
      'l_hand', 'r_hand', 'l_toe', 'r_toe'; and the head radius.
    """
    deg = np.deg2rad
    size = rng.uniform(0.92, 1.08, size=8)
    hip_w, sh_w, torso, neck = 0.085 * size[0], 0.115 * size[1], 0.29 * size[2], 0.05
    upper_arm, forearm = 0.165 * size[3], 0.15 * size[4]
    thigh, shin = 0.235 * size[5], 0.235 * size[6]
    head_r = 0.065 * size[7]
    x, y, z = np.eye(3)
    p = {"pelvis": np.zeros(3)}
    # Torso: forward lean, side bend, twist of the shoulders.
    spine = _rot_about(x, deg(rng.uniform(-10, 30)), y)  # lean forwards (+z)
    spine = _rot_about(z, deg(rng.uniform(-10, 10)), spine)
    twist = deg(rng.uniform(-20, 20))
    sh_axis = _rot_about(spine, twist, x)
    sh_axis = _unit(sh_axis - np.dot(sh_axis, spine) * spine)
    fwd_t = np.cross(sh_axis, spine)
    p["neck"] = spine * torso
    p["left_shoulder"], p["right_shoulder"] = p["neck"] + sh_axis * sh_w, p["neck"] - sh_axis * sh_w
    p["left_hip"], p["right_hip"] = x * hip_w, -x * hip_w
    # Head: turned and nodded relative to the shoulders.
    yaw, pitch = deg(rng.uniform(-45, 45)), deg(rng.uniform(-20, 20))
    h_fwd = _rot_about(spine, yaw, fwd_t)
    h_left = _rot_about(spine, yaw, sh_axis)
    h_fwd, h_up = _rot_about(h_left, -pitch, h_fwd), _rot_about(h_left, -pitch, spine)
    head = p["neck"] + spine * (neck + head_r)
    p["head"] = head
    face = lambda lx, uy, fz: head + head_r * (lx * h_left + uy * h_up + fz * h_fwd)  # noqa: E731
    p["nose"] = face(0.0, -0.15, 1.0)
    p["left_eye"], p["right_eye"] = face(0.35, 0.2, 0.85), face(-0.35, 0.2, 0.85)
    p["left_ear"], p["right_ear"] = face(0.95, 0.0, -0.1), face(-0.95, 0.0, -0.1)
    p["hair"] = face(0.0, 0.3, -0.3)
    for side, s in (("left", 1.0), ("right", -1.0)):
        # Arm: the shoulder's abduction/flexion, then the elbow bends forwards-inwards.
        u = _limb_direction(s * sh_axis, spine, fwd_t, deg(rng.uniform(5, 100)),
                            deg(rng.uniform(-45, 160)))
        hinge = _rot_about(u, s * deg(rng.uniform(-30, 60)), -sh_axis)
        f = _bend(u, hinge, deg(rng.uniform(0, 150)), fwd_t)
        p[f"{side}_elbow"] = p[f"{side}_shoulder"] + u * upper_arm
        p[f"{side}_wrist"] = p[f"{side}_elbow"] + f * forearm
        p[f"{side[0]}_hand"] = p[f"{side}_wrist"] + f * 0.04
        # Leg: mostly standing or walking, sometimes sitting or kicking; the knee bends back.
        flex = rng.uniform(-25, 45) if rng.random() < 0.8 else rng.uniform(45, 100)
        t = _limb_direction(s * x, y, z, deg(rng.uniform(-8, 30)), deg(flex))
        knee = rng.uniform(0, 40) if rng.random() < 0.7 else rng.uniform(40, 120)
        sh = _bend(t, x, deg(knee), -z)
        p[f"{side}_knee"] = p[f"{side}_hip"] + t * thigh
        p[f"{side}_ankle"] = p[f"{side}_knee"] + sh * shin
        p[f"{side[0]}_toe"] = p[f"{side}_ankle"] + _unit(z - np.dot(z, sh) * sh) * 0.06
    return p, head_r


def _project(points, yaw_deg, roll_deg, scale_px, origin_xy):
    """Orthographic view: person frame -> image (x right, y down) and depth (away)."""
    yaw, roll = np.deg2rad(yaw_deg), np.deg2rad(roll_deg)
    cy, sy, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    out = {}
    for name, (px, py, pz) in points.items():
        xr, depth = px * cy + pz * sy, -(-px * sy + pz * cy)
        u, v = xr * scale_px, -py * scale_px
        out[name] = (np.array([origin_xy[0] + u * cr - v * sr, origin_xy[1] + u * sr + v * cr]),
                     depth * scale_px)
    return out


# --- drawing --------------------------------------------------------------------------------
# A part is a list of primitives: a capsule (a, b, ra, rb) (a circle when a == b) or a
# polygon (an (n, 2) array). Parts are drawn far-to-near, each as a dark outline (1 px
# wider) and its fill; the label map records which part is on top at every pixel.

_SHIFT = 4  # sub-pixel drawing: coordinates in 1/16 px
OCCLUDER_LABEL = 1 << 20


def _fx(points):
    return np.round(np.asarray(points, np.float64) * (1 << _SHIFT)).astype(np.int32)


def _draw_part(canvas, primitives, value, line_type, pad=0.0):
    for prim in primitives:
        if isinstance(prim, np.ndarray):
            cv2.fillPoly(canvas, [_fx(prim)], value, line_type, _SHIFT)
            continue
        a, b, ra, rb = prim
        ra, rb = ra + pad, rb + pad
        d = b - a
        if np.linalg.norm(d) > 1e-3:
            n = np.array([-d[1], d[0]]) / np.linalg.norm(d)
            cv2.fillConvexPoly(canvas, _fx([a + n * ra, b + n * rb, b - n * rb, a - n * ra]),
                               value, line_type, _SHIFT)
        for c, r in ((a, ra), (b, rb)):
            cv2.circle(canvas, tuple(int(v) for v in _fx(c)), int(round(r * (1 << _SHIFT))),
                       value, -1, line_type, _SHIFT)


def _face_visible(name, depth, head_r):
    """Whether a face keypoint is on the half of the head turned to the camera."""
    limit = {"nose": 0.2, "left_eye": 0.0, "right_eye": 0.0, "left_ear": 0.3, "right_ear": 0.3}
    return depth[name] - depth["head"] < limit[name] * head_r


def _person_parts(P, D, r):
    """(depth, part name, primitives, joints the part shows) for one projected figure."""
    parts = []
    limb_r = {"upper_arm": (0.42, 0.36), "forearm": (0.36, 0.28), "thigh": (0.6, 0.45),
              "shin": (0.45, 0.33)}
    for side in ("left", "right"):
        chain = {"upper_arm": ("shoulder", "elbow", None), "forearm": ("elbow", "wrist", "hand"),
                 "thigh": ("hip", "knee", None), "shin": ("knee", "ankle", "toe")}
        for seg, (a, b, end) in chain.items():
            a, b = f"{side}_{a}", f"{side}_{b}"
            ra, rb = (max(1.2, f * r) for f in limb_r[seg])
            prims = [(P[a], P[b], ra, rb)]
            if end:  # hand or foot
                prims.append((P[b], P[f"{side[0]}_{end}"], rb, rb * 1.1))
            parts.append(((D[a] + D[b]) / 2, f"{side}_{seg}", prims, (_J[a], _J[b])))
    names = ("left_shoulder", "right_shoulder", "right_hip", "left_hip")
    corners = [P[k] for k in names]
    torso = [np.array(corners)]
    torso += [(corners[i], corners[(i + 1) % 4], 0.35 * r, 0.35 * r) for i in range(4)]
    # The body's depth, which is what shows in profile.
    torso.append(((corners[0] + corners[1]) / 2, (corners[2] + corners[3]) / 2, 0.9 * r, 0.8 * r))
    torso_depth = float(np.mean([D[k] for k in names]))
    # Limbs at the torso's own depth hang beside it: draw them after it.
    parts.append((torso_depth + 0.02 * r, "torso", torso, tuple(_J[k] for k in names)))
    parts.append(((D["neck"] + D["head"]) / 2 + 0.1 * r, "neck",
                  [(P["neck"], P["head"], 0.45 * r, 0.45 * r)], ()))
    face = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
    parts.append((D["head"], "head", [(P["head"], P["head"], r, r)],
                  tuple(_J[k] for k in face if _face_visible(k, D, r))))
    parts.append((D["hair"], "hair", [(P["hair"], P["hair"], 0.85 * r, 0.85 * r)], ()))
    return sorted(parts, key=lambda t: -t[0]), torso_depth


def _draw_face(image, P, D, r, skin):
    dark = tuple(0.7 * c for c in skin)
    for name in ("left_ear", "right_ear"):
        if _face_visible(name, D, r):
            _draw_part(image, [(P[name], P[name], 0.22 * r, 0.22 * r)], dark, cv2.LINE_AA)
    for name in ("left_eye", "right_eye"):
        if _face_visible(name, D, r):
            _draw_part(image, [(P[name], P[name], max(0.8, 0.13 * r), 0)], (20, 20, 20),
                       cv2.LINE_AA)
    if _face_visible("nose", D, r):
        _draw_part(image, [(P["nose"], P["nose"], max(0.8, 0.12 * r), 0)], dark, cv2.LINE_AA)


def _shade(colour, depth_rel):
    """Darker when further away: a lighting cue for what is behind."""
    f = 1.0 - 0.18 * float(np.clip(depth_rel, -1.0, 1.0))
    return tuple(float(np.clip(c * f, 0, 255)) for c in colour)


def _jitter(rng, colour, amount):
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in colour)


def _person_style(rng, difficulty):
    skin = _SKIN[rng.integers(len(_SKIN))]
    style = {"neck": skin, "head": skin, "hair": _HAIR[rng.integers(len(_HAIR))], "skin": skin}
    if difficulty == "easy":
        style.update({k: _jitter(rng, c, 15) for k, c in EASY_LIMB_COLOURS.items()})
        style["torso"] = _jitter(rng, (150, 150, 150), 40)
        return style
    shirt, pants = tuple(rng.uniform(0, 255, 3)), tuple(rng.uniform(0, 255, 3))
    sleeve = skin if rng.random() < 0.4 else shirt
    shin = skin if rng.random() < 0.3 else pants
    for side in ("left", "right"):
        style.update({f"{side}_upper_arm": shirt, f"{side}_forearm": sleeve,
                      f"{side}_thigh": pants, f"{side}_shin": shin})
    style["torso"] = shirt
    return style


def _draw_person(image, labels, mask, label_base, P, D, r, style):
    """Draw one figure; returns {label: joints that part shows} for the visibility test."""
    parts, torso_depth = _person_parts(P, D, r)
    shown = {}
    for i, (depth, name, prims, joints) in enumerate(parts):
        fill = _shade(style[name], (depth - torso_depth) / (2.5 * r))
        _draw_part(image, prims, tuple(0.55 * c for c in fill), cv2.LINE_AA, pad=1.0)
        _draw_part(labels, prims, label_base + i, cv2.LINE_8, pad=1.0)
        _draw_part(mask, prims, 1, cv2.LINE_8, pad=1.0)
        _draw_part(image, prims, fill, cv2.LINE_AA)
        if name == "head":
            _draw_face(image, P, D, r, style["skin"])
        shown[label_base + i] = joints
    return shown


# --- scene ----------------------------------------------------------------------------------

def _muted_colour(rng):
    return 0.45 * rng.uniform(0, 255, 3) + 0.55 * rng.uniform(70, 210)


def _background(rng, difficulty, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    c0, c1 = _muted_colour(rng), _muted_colour(rng)
    if difficulty == "easy" and rng.random() < 0.35:
        c1 = c0
    image = (c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]).astype(np.float32)
    if difficulty == "easy":
        return np.clip(image, 0, 255).astype(np.uint8)
    # Standard: low-frequency texture, then clutter shapes, some of them limb-like.
    grid = (max(2, h // 24), max(2, w // 24))
    blobs = rng.normal(0, 1, grid + (1,)) * 25 + rng.normal(0, 1, grid + (3,)) * 8
    image += cv2.resize(blobs.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(6, 18)):
        vivid = rng.random() < 0.4
        colour = tuple(float(c) for c in (rng.uniform(0, 255, 3) if vivid else _muted_colour(rng)))
        cx, cy, s = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.03, 0.25) * min(h, w)
        kind = rng.integers(4)
        if kind == 0:
            cv2.rectangle(image, (int(cx - s), int(cy - s / 2)), (int(cx + s), int(cy + s / 2)),
                          colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.ellipse(image, (int(cx), int(cy)), (int(s), int(s * rng.uniform(0.3, 1))),
                        float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        elif kind == 2:
            end = (int(cx + rng.uniform(-2, 2) * s), int(cy + rng.uniform(-2, 2) * s))
            cv2.line(image, (int(cx), int(cy)), end, colour, int(rng.integers(2, 9)), cv2.LINE_AA)
        else:  # stripes
            for k in range(int(rng.integers(3, 8))):
                y0 = int(cy + k * s / 3)
                cv2.line(image, (int(cx - s), y0), (int(cx + s), y0), colour, 2, cv2.LINE_AA)
    return image


def _place_people(rng, difficulty, h, w):
    """Figures with their view (yaw, roll, pixel scale, origin), far (small) ones first."""
    easy = difficulty == "easy"
    count = int(rng.integers(1, 4 if easy else 5))
    people, boxes = [], []
    for _ in range(count):
        points, head_r = _sample_figure(rng)
        facing = list(_FACINGS)[rng.choice(4, p=[0.35, 0.25, 0.2, 0.2])]
        yaw, roll = _FACINGS[facing] + rng.uniform(-30, 30), rng.uniform(-15, 15)
        unit = _project(points, yaw, roll, 1.0, (0.0, 0.0))
        xy = np.array([v[0] for v in unit.values()])
        lo, hi = xy.min(0) - head_r, xy.max(0) + head_r
        if easy:
            height = {1: (0.55, 0.9), 2: (0.4, 0.75), 3: (0.35, 0.6)}[count]
        else:
            height = (0.25, 0.9) if count == 1 else (0.2, 0.7)
        scale = min(rng.uniform(*height) * h / (hi - lo)[1], 0.9 * w / (hi - lo)[0])
        size = (hi - lo) * scale
        margin = (0.05 if easy else 0.2) * size
        for attempt in range(20):
            if not easy and boxes and rng.random() < 0.45:  # crowd around someone
                bx, by, bw, bh = boxes[rng.integers(len(boxes))]
                x0 = bx + bw / 2 + rng.uniform(-0.7, 0.7) * bw - size[0] / 2
                y0 = by + bh / 2 + rng.uniform(-0.25, 0.25) * bh - size[1] / 2
                x0 = np.clip(x0, -margin[0], max(-margin[0], w - size[0] + margin[0]))
                y0 = np.clip(y0, -margin[1], max(-margin[1], h - size[1] + margin[1]))
            else:
                x0 = rng.uniform(-margin[0], max(-margin[0], w - size[0] + margin[0]))
                y0 = rng.uniform(-margin[1], max(-margin[1], h - size[1] + margin[1]))
            box = (x0, y0, size[0], size[1])
            if not easy or all(_iou(box, b) < 0.05 for b in boxes):
                break
        boxes.append(box)
        origin = np.array([x0, y0]) - lo * scale
        people.append(dict(points=points, head_r=head_r * scale, yaw=yaw, roll=roll,
                           scale=scale, origin=origin, facing=facing))
    return sorted(people, key=lambda p: p["scale"])


def _iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _add_occluders(rng, image, labels, targets):
    """Rectangles over random keypoints of the figures (standard difficulty)."""
    for _ in range(int(rng.choice(3, p=[0.4, 0.4, 0.2]))):
        centre = targets[rng.integers(len(targets))]
        half = rng.uniform(6, 0.15 * min(image.shape[:2]), 2)
        angle = np.deg2rad(rng.uniform(-20, 20))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half @ rot.T + centre
        _draw_part(image, [corners], tuple(float(c) for c in rng.uniform(0, 255, 3)), cv2.LINE_AA)
        _draw_part(labels, [corners], OCCLUDER_LABEL, cv2.LINE_8)


def _render_image(rng, difficulty, image_size):
    """One image (RGB uint8) and its people: keypoints (17, 3), bbox, area, facing."""
    h, w = image_size
    image = _background(rng, difficulty, h, w)
    labels = np.full((h, w), -1, np.int32)
    drawn = []
    for index, person in enumerate(_place_people(rng, difficulty, h, w)):
        view = _project(person["points"], person["yaw"], person["roll"], person["scale"],
                        person["origin"])
        P = {k: v[0] for k, v in view.items()}
        D = {k: v[1] for k, v in view.items()}
        mask = np.zeros((h, w), np.uint8)
        shown = _draw_person(image, labels, mask, index * 64, P, D, person["head_r"],
                             _person_style(rng, difficulty))
        drawn.append((P, shown, mask, person))
    if difficulty == "standard":
        targets = [P[n] for P, *_ in drawn for n in COCO_KEYPOINTS]
        _add_occluders(rng, image, labels, targets)
        noise = rng.normal(0, rng.uniform(2, 8), image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
        if rng.random() < 0.3:
            image = cv2.GaussianBlur(image, (3, 3), 0)
    people = []
    for P, shown, mask, person in drawn:
        keypoints = np.zeros((len(COCO_KEYPOINTS), 3))
        for j, name in enumerate(COCO_KEYPOINTS):
            x, y = P[name]
            if not (0 <= x < w and 0 <= y < h):
                continue  # outside the image: not labelled
            label = int(labels[int(y), int(x)])
            keypoints[j] = (x, y, 2 if j in shown.get(label, ()) else 1)
        x, y, bw, bh = cv2.boundingRect(mask)
        people.append(dict(keypoints=keypoints, bbox=(x, y, bw, bh), area=int(mask.sum()),
                           facing=person["facing"], yaw=person["yaw"]))
    return image, people


# --- dataset files --------------------------------------------------------------------------

def _image_rng(seed, split, index):
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def _category():
    return {"id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(COCO_KEYPOINTS),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON]}


def render_dataset(output_dir, num_images=100, difficulty="easy", seed=0, image_size=(240, 320),
                   split="train"):
    """Render a COCO person_keypoints dataset of synthetic figures.

    Args:
      output_dir: writes ``output_dir/{split}.json`` and ``output_dir/images/{split}/*.jpg``.
      num_images: number of images (each holds 1-3 figures (easy) or 1-4 (standard)).
      difficulty: 'easy' or 'standard' (see the module docstring).
      seed: the same seed gives byte-identical files.
      image_size: (height, width) of every image.
      split: the split name (also part of the random stream, so splits differ).

    Returns:
      The path of the annotation JSON.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    h, w = (int(v) for v in image_size)
    if h < 32 or w < 32:
        raise ValueError(f"image_size must be at least (32, 32), got {image_size}")
    image_dir = os.path.join(output_dir, "images", split)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        image_id = index + 1
        image, people = _render_image(_image_rng(seed, split, index), difficulty, (h, w))
        file_name = f"{image_id:06d}.jpg"
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise RuntimeError(f"could not encode {file_name}")
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(jpeg.tobytes())
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        for person in people:
            kp = person["keypoints"]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                "keypoints": [round(float(v), 2) for v in kp.reshape(-1)],
                "num_keypoints": int((kp[:, 2] > 0).sum()),
                "bbox": [float(v) for v in person["bbox"]], "area": float(person["area"]),
                "iscrowd": 0, "facing": person["facing"], "yaw": round(float(person["yaw"]), 2)})
    coco = {"info": {"description": "mrpose_tf synthetic figures", "difficulty": difficulty,
                     "seed": seed, "split": split, "version": MANIFEST_VERSION},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": [_category()]}
    path = os.path.join(output_dir, f"{split}.json")
    with open(path, "w") as f:
        json.dump(coco, f)
    return path


def write_detections(annotation_file, output_file, seed=0, false_positive_rate=0.5):
    """Person detections for a synthetic split, in the COCO detection-results format.

    Each ground-truth box jittered (centre +-5%, size x exp(N(0, 0.07))) with a score in
    [0.55, 0.99], plus a false positive (score < 0.45) in about ``false_positive_rate``
    of the images.

    Args:
      annotation_file: the split's person_keypoints JSON.
      output_file: where to write the list of {image_id, category_id, bbox, score}.
      seed: random seed.
      false_positive_rate: expected false positives per image.

    Returns:
      The list of detections written.
    """
    with open(annotation_file) as f:
        coco = json.load(f)
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(b"detections")]))
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["bbox"])
    detections = []
    for image_id, (w, h) in sizes.items():
        boxes = []
        for x, y, bw, bh in by_image.get(image_id, []):
            cx = x + bw / 2 + rng.normal(0, 0.05) * bw
            cy = y + bh / 2 + rng.normal(0, 0.05) * bh
            bw, bh = bw * np.exp(rng.normal(0, 0.07)), bh * np.exp(rng.normal(0, 0.07))
            boxes.append(((cx - bw / 2, cy - bh / 2, bw, bh), rng.uniform(0.55, 0.99)))
        if rng.random() < false_positive_rate:
            bw, bh = rng.uniform(0.1, 0.3) * w, rng.uniform(0.2, 0.5) * h
            boxes.append(((rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh),
                          rng.uniform(0.05, 0.45)))
        for (x, y, bw, bh), score in sorted(boxes, key=lambda b: -b[1]):
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(w - 1.0, x + bw), min(h - 1.0, y + bh)
            detections.append({"image_id": image_id, "category_id": 1,
                               "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                               "score": round(float(score), 4)})
    with open(output_file, "w") as f:
        json.dump(detections, f)
    return detections


def ensure_synthetic_dataset(root, num_train=200, num_val=50, difficulty="easy", seed=0,
                             image_size=(240, 320)):
    """Render the synthetic dataset into ``root`` unless the same one is already there.

    ``root/manifest.json`` records the parameters; it is written last, so an interrupted
    render is redone.

    Args:
      root: the dataset folder (layout in the module docstring).
      num_train, num_val: number of images per split.
      difficulty: 'easy' or 'standard'.
      seed: random seed.
      image_size: (height, width).

    Returns:
      dict of paths: root, train_annotations, train_images, val_annotations, val_images,
      val_detections.
    """
    params = {"version": MANIFEST_VERSION, "num_train": int(num_train), "num_val": int(num_val),
              "difficulty": difficulty, "seed": int(seed),
              "image_size": [int(v) for v in image_size]}
    paths = {"root": root,
             "train_annotations": os.path.join(root, "train.json"),
             "train_images": os.path.join(root, "images", "train"),
             "val_annotations": os.path.join(root, "val.json"),
             "val_images": os.path.join(root, "images", "val"),
             "val_detections": os.path.join(root, "val_detections.json")}
    manifest = os.path.join(root, "manifest.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            if json.load(f) == params and all(os.path.exists(p) for p in paths.values()):
                return paths
        for split in ("train", "val"):  # ours (it has a manifest): clear stale images
            shutil.rmtree(os.path.join(root, "images", split), ignore_errors=True)
        os.remove(manifest)
    render_dataset(root, num_train, difficulty, seed, image_size, "train")
    render_dataset(root, num_val, difficulty, seed, image_size, "val")
    write_detections(paths["val_annotations"], paths["val_detections"], seed)
    with open(manifest, "w") as f:
        json.dump(params, f)
    return paths


def prepare_from_config(config):
    """Render the synthetic dataset a config asks for, unless the same one is there.

    Args:
      config: the run config. Acts only when ``config.dataset.name == 'synthetic'`` and
        ``config.dataset.synthetic`` holds num_train, num_val, difficulty, seed and
        image_size (height, width); renders into ``config.dataset.root``.

    Returns:
      The dict of paths of :func:`ensure_synthetic_dataset`, or None when the config asks
      for no rendering.
    """
    spec = config.dataset.get("synthetic")
    if config.dataset.name != "synthetic" or not spec:
        return None
    return ensure_synthetic_dataset(config.dataset.root, int(spec.num_train), int(spec.num_val),
                                    spec.difficulty, int(spec.seed),
                                    tuple(int(v) for v in spec.image_size))


def main(argv=None):
    """``python -m mrpose_tf.data.synthetic --output_dir=DIR ...``; ``argv`` without the
    program (None: the command line)."""
    import sys

    from absl import flags

    from mrpose_tf.cli import parse_flags

    fv = flags.FlagValues()
    flags.DEFINE_string("output_dir", None, "Where to write the dataset.", required=True,
                        flag_values=fv)
    flags.DEFINE_integer("num_train", 200, "Training images.", flag_values=fv)
    flags.DEFINE_integer("num_val", 50, "Validation images.", flag_values=fv)
    flags.DEFINE_enum("difficulty", "easy", DIFFICULTIES, "Figures and backgrounds.",
                      flag_values=fv)
    flags.DEFINE_integer("seed", 0, "The same seed gives byte-identical files.", flag_values=fv)
    flags.DEFINE_integer("height", 240, "Image height in pixels.", flag_values=fv)
    flags.DEFINE_integer("width", 320, "Image width in pixels.", flag_values=fv)
    args = parse_flags(fv, "python -m mrpose_tf.data.synthetic",
                       "Render the synthetic keypoint dataset.",
                       sys.argv[1:] if argv is None else argv)
    paths = ensure_synthetic_dataset(args.output_dir, args.num_train, args.num_val,
                                     args.difficulty, args.seed, (args.height, args.width))
    for key, path in paths.items():
        print(f"{key}: {path}")


if __name__ == "__main__":
    main()
