"""Keypoint datasets as TFDS builds: prepared once, read as sharded records on every worker.

A build reads a COCO-format keypoint file (or an MPII json) with the project's readers
(:func:`mrpose_tf.data.coco.read_coco`, :func:`mrpose_tf.data.mpii.read_mpii`), so the
cleaning and the (centre, scale) of every person are exactly those of the raw-folder path.

Storage: one example per *image*: the original encoded file bytes (never re-encoded, so
crops and augmentation are exact) and the sequence of its person records. Storing whole
images once per image rather than once per person avoids copying COCO's images ~2.6x.
:func:`records_dataset_from_tfds` unrolls them into per-person elements with the columns of
:func:`mrpose_tf.data.records.stack_records` plus ``image_bytes``.

Each (name, split) is its own builder config, so splits are prepared independently::

    DATA_DIR/pose_keypoints/<name>_<split>/1.0.0/  (TFRecord shards, dataset_info.json,
                                                   metadata.json: keypoint set, box settings)

    python -m mrpose_tf.data.tfds_builder --annotation_file=A.json --image_dir=IMAGES \\
        --data_dir=DATA_DIR --name=coco --split=train [--format=coco|mpii] \\
        [--input_size=256,192] [--detections=DET.json]
"""
from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from mrpose_tf.data.coco import load_json, read_coco  # noqa: E402
from mrpose_tf.data.mpii import read_mpii  # noqa: E402
from mrpose_tf.keypoints import KeypointSpec  # noqa: E402

BUILDER_NAME = "pose_keypoints"
FORMATS = ("coco", "mpii")


@dataclasses.dataclass(eq=False)
class PoseSourceConfig(tfds.core.BuilderConfig):
    """Where one split comes from and how its boxes are made.

    Attributes (besides ``name``): split, annotation_file and image_dir (the source folder,
    absolute paths), dataset_format ('coco' | 'mpii'), train (drop people with no labelled
    keypoint), aspect_ratio (input width / height, the box is enlarged to it), padding,
    detections (COCO detection results to use instead of the ground-truth boxes), image_thre.
    """
    split: str = "train"
    annotation_file: str = ""
    image_dir: str = ""
    dataset_format: str = "coco"
    train: bool = True
    aspect_ratio: float = 192 / 256
    padding: float = 1.25
    detections: str = ""
    image_thre: float = 0.0


class PoseKeypoints(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Person records of a keypoint dataset, one example per image (see the module doc)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Per-image examples: image bytes + person records."}

    def _info(self):
        c = self.builder_config
        k = self._num_joints
        person = {
            "center": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "scale": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "joints": tfds.features.Tensor(shape=(k, 2), dtype=np.float32),
            "visibility": tfds.features.Tensor(shape=(k,), dtype=np.float32),
            "box_score": np.float32,
            "area": np.float32,
        }
        return self.dataset_info_from_configs(
            description=f"Person keypoint records of {c.annotation_file} ({c.dataset_format}).",
            features=tfds.features.FeaturesDict({
                "image_bytes": tfds.features.Scalar(dtype=np.object_),
                "image_path": tfds.features.Text(),
                "image_id": np.int64,
                "persons": tfds.features.Sequence(person),
            }),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,  # keep the reader's order
        )

    @property
    def _num_joints(self):
        return self._source()[1].num_joints

    def _source(self):
        """(records, keypoint spec) of the configured split, read once and kept."""
        if getattr(self, "_records", None) is None:
            c = self.builder_config
            annotations, images = c.annotation_file, c.image_dir
            if c.dataset_format == "mpii":
                records, spec = read_mpii(annotations, images)
            elif c.dataset_format == "coco":
                detections = c.detections or None
                records, spec = read_coco(annotations, images, train=c.train,
                                          aspect_ratio=c.aspect_ratio, padding=c.padding,
                                          detections=detections, image_thre=c.image_thre)
            else:
                raise ValueError(f"dataset_format must be one of {FORMATS}, got "
                                 f"{c.dataset_format!r}")
            if not records:
                raise ValueError(f"{annotations}: no person records to write")
            self._records, self._spec = records, spec
        return self._records, self._spec

    def _split_generators(self, dl_manager):
        del dl_manager  # the source is local
        records, spec = self._source()
        c = self.builder_config
        self.info.metadata.update({
            "keypoint_names": list(spec.names), "flip_pairs": [list(p) for p in spec.flip_pairs],
            "skeleton": [list(p) for p in spec.skeleton],
            "sigmas": None if spec.sigmas is None else [float(s) for s in spec.sigmas],
            "keypoint_set": spec.name, "num_persons": len(records),
            "aspect_ratio": float(c.aspect_ratio), "padding": float(c.padding),
            "dataset_format": c.dataset_format, "train": bool(c.train),
            "detections": bool(c.detections)})
        return {c.split: self._generate_examples(records)}

    def _generate_examples(self, records):
        by_image = {}
        for r in records:  # group per image, in order of first appearance
            by_image.setdefault(r.image_path, []).append(r)
        for path, people in by_image.items():
            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(
                    f"{self.builder_config.annotation_file}: image file of image_id "
                    f"{people[0].image_id} not found: {path}")
            with tf.io.gfile.GFile(path, "rb") as f:
                data = f.read()
            yield path, {
                "image_bytes": data, "image_path": path, "image_id": int(people[0].image_id),
                "persons": {
                    "center": np.stack([p.center for p in people]).astype(np.float32),
                    "scale": np.stack([p.scale for p in people]).astype(np.float32),
                    "joints": np.stack([p.joints for p in people]).astype(np.float32),
                    "visibility": np.stack([p.visibility for p in people]).astype(np.float32),
                    "box_score": np.array([p.box_score for p in people], np.float32),
                    "area": np.array([p.area for p in people], np.float32),
                }}


def _config_name(name, split):
    if not name or not split or not str(name).replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"name and split must be non-empty words (letters, digits, _ or -), "
                         f"got name={name!r}, split={split!r}")
    if "_" in split:
        raise ValueError(f"split must not contain '_', got {split!r}")
    return f"{name}_{split}"


def prepare_tfds(annotation_file, image_dir, data_dir, name, split="train", *,
                 dataset_format="coco", train=None, aspect_ratio=192 / 256, padding=1.25,
                 detections=None, image_thre=0.0):
    """Write one split of a keypoint dataset as a TFDS build (skipped if already there).

    Args:
      annotation_file: COCO-format keypoint JSON (or MPII json for ``dataset_format='mpii'``).
      image_dir: the folder of the images named in it.
      data_dir: TFDS data directory to write into.
      name: dataset name (e.g. 'coco', 'synthetic'); with ``split`` it names the build.
      split: split name ('train', 'val', ...).
      dataset_format: 'coco' or 'mpii'.
      train: drop people without labelled keypoints (default: ``split == 'train'``).
      aspect_ratio: input width / height for the boxes (192/256 for COCO 256x192 inputs).
      padding: box enlargement.
      detections: optional COCO detection-results JSON (boxes instead of ground truth).
      image_thre: score threshold for ``detections``.

    Returns:
      The directory of the prepared build.
    """
    if dataset_format not in FORMATS:
        raise ValueError(f"dataset_format must be one of {FORMATS}, got {dataset_format!r}")
    config = PoseSourceConfig(
        name=_config_name(name, split), split=split,
        annotation_file=os.path.abspath(annotation_file),
        image_dir=os.path.abspath(image_dir), dataset_format=dataset_format,
        train=split == "train" if train is None else bool(train), aspect_ratio=float(aspect_ratio),
        padding=float(padding), detections=os.path.abspath(detections) if detections else "",
        image_thre=float(image_thre))
    builder = PoseKeypoints(data_dir=data_dir, config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
    return os.fspath(builder.data_dir)


def _build_dir(data_dir, name, split):
    root = os.path.join(data_dir, BUILDER_NAME, _config_name(name, split))
    versions = sorted(v for v in tf.io.gfile.listdir(root) if v[:1].isdigit()) \
        if tf.io.gfile.isdir(root) else []
    if not versions:
        raise FileNotFoundError(f"no TFDS build of {name!r} split {split!r} under {root} "
                                f"(run prepare_tfds first)")
    return os.path.join(root, versions[-1].rstrip("/"))


def tfds_metadata(data_dir, name, split="train"):
    """The build's metadata: keypoint set, number of persons and box settings (a dict)."""
    return load_json(os.path.join(_build_dir(data_dir, name, split), "metadata.json"),
                     what="TFDS build metadata")


def keypoint_spec_from_tfds(data_dir, name, split="train"):
    """The :class:`KeypointSpec` a build was written with."""
    meta = tfds_metadata(data_dir, name, split)
    return KeypointSpec(meta["keypoint_set"], tuple(meta["keypoint_names"]),
                        tuple(map(tuple, meta["flip_pairs"])), tuple(map(tuple, meta["skeleton"])),
                        None if meta["sigmas"] is None else tuple(meta["sigmas"]))


def _persons_of_image(example):
    persons = dict(example["persons"])
    n = tf.shape(persons["center"])[:1]
    persons["image_bytes"] = tf.fill(n, example["image_bytes"])
    persons["image_path"] = tf.fill(n, example["image_path"])
    persons["image_id"] = tf.fill(n, example["image_id"])
    return persons


def records_dataset_from_tfds(data_dir, name, split="train", *, shuffle_files=False,
                              input_context=None, aspect_ratio=None):
    """Per-person records of a TFDS build, as a ``tf.data.Dataset`` (unbatched).

    Args:
      data_dir: the TFDS data directory given to :func:`prepare_tfds`.
      name, split: which build.
      shuffle_files: shuffle the order of the shards.
      input_context: optional ``tf.distribute.InputContext``: each input pipeline reads its
        own shards (the build needs at least as many shards as pipelines).
      aspect_ratio: when given, raise if the build's boxes were made for another one.

    Returns:
      Elements are dicts with the keys of :func:`mrpose_tf.data.records.stack_records`
      (image_path, image_id, center, scale, joints, visibility, box_score, area) plus
      ``image_bytes``, the encoded image file.
    """
    build_dir = _build_dir(data_dir, name, split)
    if aspect_ratio is not None:
        built = tfds_metadata(data_dir, name, split)["aspect_ratio"]
        if abs(built - float(aspect_ratio)) > 1e-6:
            raise ValueError(f"TFDS build {build_dir} has boxes for aspect ratio {built:.4f}, "
                             f"not {float(aspect_ratio):.4f}: rebuild it for this input size")
    builder = tfds.builder_from_directory(build_dir)
    read_config = tfds.ReadConfig(input_context=input_context)
    ds = builder.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config)
    return ds.map(_persons_of_image, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(
        description="Prepare a keypoint dataset split as a TFDS build.")
    parser.add_argument("--annotation_file", required=True)
    parser.add_argument("--image_dir", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--format", dest="dataset_format", choices=FORMATS, default="coco")
    parser.add_argument("--input_size", default="256,192",
                        help="height,width of the model input (sets the box aspect ratio)")
    parser.add_argument("--padding", type=float, default=1.25)
    parser.add_argument("--detections", default=None)
    parser.add_argument("--image_thre", type=float, default=0.0)
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.input_size.split(","))
    path = prepare_tfds(args.annotation_file, args.image_dir, args.data_dir, args.name, args.split,
                        dataset_format=args.dataset_format, aspect_ratio=width / height,
                        padding=args.padding, detections=args.detections,
                        image_thre=args.image_thre)
    meta = tfds_metadata(args.data_dir, args.name, args.split)
    print(f"{meta['num_persons']} persons written to {path}")


if __name__ == "__main__":
    main()
