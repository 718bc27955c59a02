"""PNG grid of augmented training crops, their target heatmaps and skeletons.

  python scripts/visualize_data.py --output=crops.png                      # the COCO sample
  python scripts/visualize_data.py --dataset=synthetic --output=synth.png  # rendered figures
  python scripts/visualize_data.py --mode=images --output=docs/synthetic_examples.png

Each tile is one pipeline element: the augmented crop with the (max over joints) target
heatmap blended in and the skeleton drawn from the crop-space joints. ``--mode=images``
draws rendered synthetic images as they are instead, one row per difficulty (easy, standard;
the picture in docs/data.md).
"""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

from mrpose_tf.data.coco import read_coco  # noqa: E402
from mrpose_tf.data.pipeline import build_dataset  # noqa: E402
from mrpose_tf.geometry import affine_points, flip_permutation  # noqa: E402
from mrpose_tf.preprocessing import unpreprocess  # noqa: E402
from mrpose_tf.visualization import draw_skeleton, heatmap_overlay, tile  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO_SAMPLE = os.path.join(REPO_ROOT, "..", "shared", "data", "coco_sample")


def sample_files(dataset, workdir):
    """(annotation file, image folder) of the chosen dataset."""
    if dataset == "coco":
        return os.path.join(COCO_SAMPLE, "test_coco.json"), COCO_SAMPLE
    from mrpose_tf.data.synthetic import render_dataset
    annotations = render_dataset(workdir, num_images=8, difficulty="easy", seed=0)
    return annotations, os.path.join(workdir, "images", "train")


def crop_tiles(records, spec, args):
    ds = build_dataset(records, keypoints=spec, input_size=(256, 192), heatmap_size=(64, 48),
                       sigma=2.0, train=True, batch_size=args.count, seed=args.seed,
                       augment=dict(scale_factor=0.3, rotation_factor=40.0, rotation_prob=0.6,
                                    flip=True, flip_prob=0.5), repeat=True)
    batch = {k: v.numpy() for k, v in next(iter(ds)).items()}
    order = flip_permutation(spec.num_joints, spec.flip_pairs)
    tiles = []
    for i in range(args.count):
        crop = np.clip(unpreprocess(batch["image"][i]), 0, 255)
        joints = affine_points(batch["joints"][i], batch["matrix"][i])
        weights = batch["target_weight"][i]
        if batch["flipped"][i]:
            joints = joints[order]
        picture = heatmap_overlay(crop.astype(np.uint8), batch["heatmaps"][i], alpha=0.6)
        tiles.append(draw_skeleton(picture, joints, weights, spec, score_threshold=0.5))
    return tiles


flags.DEFINE_enum("dataset", "coco", ["coco", "synthetic"], "The COCO sample (../shared/data) "
                  "or rendered synthetic figures.")
flags.DEFINE_string("output", "data_grid.png", "The PNG to write.")
flags.DEFINE_enum("mode", "crops", ["crops", "images"], "crops: augmented training crops; "
                  "images: whole synthetic images, a row of --columns per difficulty.")
flags.DEFINE_integer("count", 12, "Crops to draw.")
flags.DEFINE_integer("columns", 6, "Tiles per row.")
flags.DEFINE_integer("seed", 0, "Augmentation seed.")


def synthetic_rows(workdir, columns, seed):
    """Rendered images, ``columns`` per difficulty (easy, standard), at 0.7x (168 x 224)."""
    from mrpose_tf.data.synthetic import DIFFICULTIES, render_dataset
    from mrpose_tf.images import read_image_rgb

    tiles = []
    for difficulty in DIFFICULTIES:
        root = os.path.join(workdir, difficulty)
        render_dataset(root, num_images=columns, difficulty=difficulty, seed=seed)
        folder = os.path.join(root, "images", "train")
        for name in sorted(os.listdir(folder)):
            image = read_image_rgb(os.path.join(folder, name))
            tiles.append(cv2.resize(image, (224, 168), interpolation=cv2.INTER_AREA))
    return tiles


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    args = flags.FLAGS
    with tempfile.TemporaryDirectory() as workdir:
        if args.mode == "images":
            grid = tile(synthetic_rows(workdir, args.columns, args.seed), args.columns, pad=0)
            cv2.imwrite(args.output, grid[..., ::-1])
            print(f"wrote {args.output} ({grid.shape[1]}x{grid.shape[0]})")
            return
        annotations, images = sample_files(args.dataset, workdir)
        records, spec = read_coco(annotations, images, train=True, aspect_ratio=192 / 256)
        tiles = crop_tiles(records, spec, args)
    grid = tile(tiles, args.columns)
    cv2.imwrite(args.output, grid[..., ::-1])
    print(f"wrote {args.output} ({len(tiles)} crops, {grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    app.run(main)
