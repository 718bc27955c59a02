"""Keypoint datasets as TFDS builds: prepared once, read as sharded records on every worker.

For data that lives in sharded files (cloud storage, TPU pods): a build holds the images and
the person records of one split, and training and evaluation read it instead of the
annotation JSON and the image folder when ``config.dataset.tfds_name`` is set.

Preparing: a build reads a COCO-format keypoint file (or an MPII json) with the project's
readers (:func:`mrpose_tf.data.coco.read_coco`, :func:`mrpose_tf.data.mpii.read_mpii`), so
the cleaning and the (centre, scale) of every person are exactly those of the folder path.
Each (name, split) is its own builder config, so splits are prepared independently::

    python -m mrpose_tf.data.tfds_builder --annotation_file=A.json --image_dir=IMAGES \\
        --data_dir=DATA_DIR --name=coco --split=train [--format=coco|mpii] \\
        [--input_size=256,192] [--padding=1.25] [--detections=DET.json --image_thre=0.0]

writes ``DATA_DIR/pose_keypoints/<name>_<split>/<VERSION>/``:

  ``*.tfrecord-*``   one example per *image*, in order of the image's first appearance among
                     the reader's records: the original encoded file (never re-encoded, so
                     crops equal the folder path's), its path and image_id, and the sequence
                     of its person records (centre, scale, joints, visibility, box_score,
                     area, record_index = the person's position in the reader's order).
                     Whole images once per image, not once per person (COCO has ~2.6 people
                     per image).
  ``records.npz``    the same records without the images, in the reader's order (the columns
                     of :func:`mrpose_tf.data.records.stack_records` plus ``bbox`` and
                     ``category_id``): what counting people (steps per epoch) and
                     evaluation read.
  ``metadata.json``  keypoint set, num_persons, num_images and the box settings (format,
                     aspect_ratio, padding, train, detections, image_thre).

Reading (``config.dataset.tfds_name``/``tfds_data_dir``, builds ``<tfds_name>_train`` and
``<tfds_name>_val``): :func:`mrpose_tf.data.pipeline.read_split` returns
:func:`read_tfds_records`: person records from ``records.npz`` and ``metadata.json`` only,
each carrying its build (``PersonRecord.tfds_dir``) and ``record_index``;
:func:`mrpose_tf.data.pipeline.build_dataset` then reads the image bytes of those records
from the shards (:func:`image_examples`), never from ``image_path`` (the path at preparation,
kept for messages). :func:`records_dataset_from_tfds` unrolls the shards into per-person
elements (records with their image bytes).
"""
from __future__ import annotations

import dataclasses
import io
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from mrpose_tf.data.coco import read_coco  # noqa: E402
from mrpose_tf.data.mpii import read_mpii  # noqa: E402
from mrpose_tf.data.records import PersonRecord, stack_records  # noqa: E402
from mrpose_tf.files import load_json  # noqa: E402
from mrpose_tf.keypoints import KeypointSpec  # noqa: E402

BUILDER_NAME = "pose_keypoints"
FORMATS = ("coco", "mpii")
RECORDS_FILE = "records.npz"
# What a mismatch between a build's metadata and the config is called in the error.
_SETTINGS = {"dataset_format": "annotation format", "aspect_ratio": "boxes for aspect ratio",
             "padding": "box padding", "train": "training cleaning (unlabelled people dropped)",
             "detections": "detector boxes", "image_thre": "detection score threshold"}


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

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.1.0": "Per-image examples: image bytes + person records with their "
                              "record_index; records.npz beside the shards."}

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
            "record_index": np.int64,
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
            "num_images": len({r.image_path for r in records}),
            "aspect_ratio": float(c.aspect_ratio), "padding": float(c.padding),
            "dataset_format": c.dataset_format, "train": bool(c.train),
            "detections": bool(c.detections), "image_thre": float(c.image_thre)})
        # self.data_dir is the build's temporary directory here: the file appears with the
        # shards, when the whole build is renamed into place.
        _write_records(os.path.join(self.data_dir, RECORDS_FILE), records)
        return {c.split: self._generate_examples(records)}

    def _generate_examples(self, records):
        by_image = {}
        for index, r in enumerate(records):  # group per image, in order of first appearance
            by_image.setdefault(r.image_path, []).append((index, r))
        for path, people in by_image.items():
            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(
                    f"{self.builder_config.annotation_file}: image file of image_id "
                    f"{people[0][1].image_id} not found: {path}")
            with tf.io.gfile.GFile(path, "rb") as f:
                data = f.read()
            rows = [r for _, r in people]
            yield path, {
                "image_bytes": data, "image_path": path, "image_id": int(rows[0].image_id),
                "persons": {
                    "center": np.stack([p.center for p in rows]).astype(np.float32),
                    "scale": np.stack([p.scale for p in rows]).astype(np.float32),
                    "joints": np.stack([p.joints for p in rows]).astype(np.float32),
                    "visibility": np.stack([p.visibility for p in rows]).astype(np.float32),
                    "box_score": np.array([p.box_score for p in rows], np.float32),
                    "area": np.array([p.area for p in rows], np.float32),
                    "record_index": np.array([i for i, _ in people], np.int64),
                }}


def _write_records(path, records):
    """``records.npz``: :func:`stack_records` columns plus ``bbox`` (NaN where unknown) and
    ``category_id``."""
    columns = stack_records(records)
    # float64 (not the pipeline's float32): the records read back equal the reader's.
    columns["box_score"] = np.array([r.box_score for r in records], np.float64)
    columns["area"] = np.array([r.area for r in records], np.float64)
    columns["category_id"] = np.array([r.category_id for r in records], np.int64)
    columns["bbox"] = np.stack([np.full(4, np.nan, np.float32) if r.bbox is None
                                else np.asarray(r.bbox, np.float32) for r in records])
    buffer = io.BytesIO()  # np.savez needs a seekable file; a GFile on cloud storage is not
    np.savez(buffer, **columns)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


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


def build_dir(data_dir, name, split):
    """The directory of the build of (name, split) at this module's VERSION."""
    root = os.path.join(data_dir, BUILDER_NAME, _config_name(name, split))
    path = os.path.join(root, str(PoseKeypoints.VERSION))
    if not tf.io.gfile.exists(os.path.join(path, "dataset_info.json")):
        raise FileNotFoundError(
            f"no TFDS build of {name!r} split {split!r} (version {PoseKeypoints.VERSION}) "
            f"under {root} (run prepare_tfds or python -m mrpose_tf.data.tfds_builder)")
    return path


def tfds_metadata(data_dir, name, split="train"):
    """The build's metadata: keypoint set, number of persons and box settings (a dict)."""
    return _metadata(build_dir(data_dir, name, split))


def _metadata(path):
    return load_json(os.path.join(path, "metadata.json"), what="TFDS build metadata")


def _spec(meta):
    return KeypointSpec(meta["keypoint_set"], tuple(meta["keypoint_names"]),
                        tuple(map(tuple, meta["flip_pairs"])), tuple(map(tuple, meta["skeleton"])),
                        None if meta["sigmas"] is None else tuple(meta["sigmas"]))


def keypoint_spec_from_tfds(data_dir, name, split="train"):
    """The :class:`KeypointSpec` a build was written with."""
    return _spec(tfds_metadata(data_dir, name, split))


def _check_settings(path, meta, expect):
    """ValueError naming the setting when the build was made otherwise than ``expect`` says."""
    for key, want in (expect or {}).items():
        got = meta.get(key)
        number = isinstance(want, (int, float)) and not isinstance(want, bool)
        same = (got is not None and math.isclose(float(got), float(want), abs_tol=1e-6)
                if number else got == want)
        if not same:
            raise ValueError(f"TFDS build {path} has {_SETTINGS.get(key, key)} {got!r}, not "
                             f"{want!r} as the config asks: prepare it again for this config")


def read_tfds_records(data_dir, name, split, expect=None):
    """The person records of a build, without reading its images.

    Args:
      data_dir, name, split: which build (:func:`prepare_tfds`).
      expect: optional {setting: value} the build's metadata must hold (keys of
        ``metadata.json``: dataset_format, aspect_ratio, padding, train, detections,
        image_thre); ValueError naming the first that differs.

    Returns:
      (records, keypoint_spec): :class:`PersonRecord` s in the reader's order, read from
      ``records.npz``, each with ``tfds_dir`` (this build) and ``record_index`` set, so that
      :func:`mrpose_tf.data.pipeline.build_dataset` reads their images from the shards.
    """
    path = build_dir(data_dir, name, split)
    meta = _metadata(path)
    _check_settings(path, meta, expect)
    records_file = os.path.join(path, RECORDS_FILE)
    with tf.io.gfile.GFile(records_file, "rb") as f:
        columns = dict(np.load(io.BytesIO(f.read())))
    if len(columns["image_id"]) != meta["num_persons"]:
        raise ValueError(f"{records_file}: {len(columns['image_id'])} records, but the build "
                         f"holds {meta['num_persons']} people: prepare it again")
    records = [
        PersonRecord(image_path=str(columns["image_path"][i]),
                     image_id=int(columns["image_id"][i]), center=columns["center"][i],
                     scale=columns["scale"][i], joints=columns["joints"][i],
                     visibility=columns["visibility"][i],
                     box_score=float(columns["box_score"][i]), area=float(columns["area"][i]),
                     bbox=None if np.isnan(columns["bbox"][i]).all() else columns["bbox"][i],
                     # builds of older versions hold one category
                     category_id=int(columns["category_id"][i]) if "category_id" in columns
                     else 1,
                     tfds_dir=path, record_index=i)
        for i in range(len(columns["image_id"]))]
    return records, _spec(meta)


def image_examples(path, input_context=None):
    """The images of the build at ``path``, in build order, as a ``tf.data.Dataset``.

    Elements: 'image_bytes' () string (the encoded file), 'image_path' () string (the path at
    preparation) and 'record_index' (n,) int64 (the positions of the image's people in the
    reader's order). With an ``input_context`` of several input pipelines, each reads its own
    shards when the build has at least that many, else every n-th image.
    """
    builder = tfds.builder_from_directory(path)
    (split,) = builder.info.splits.keys()
    pipelines = 1 if input_context is None else input_context.num_input_pipelines
    by_file = pipelines > 1 and builder.info.splits[split].num_shards >= pipelines
    ds = builder.as_dataset(
        split=split, shuffle_files=False,
        read_config=tfds.ReadConfig(input_context=input_context if by_file else None),
        decoders=tfds.decode.PartialDecoding(
            {"image_bytes": True, "image_path": True, "persons": {"record_index": True}}))
    if pipelines > 1 and not by_file:
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    return ds.map(lambda e: {"image_bytes": e["image_bytes"], "image_path": e["image_path"],
                             "record_index": e["persons"]["record_index"]})


def _persons_of_image(example):
    persons = dict(example["persons"])
    n = tf.shape(persons["center"])[:1]
    persons["image_bytes"] = tf.fill(n, example["image_bytes"])
    persons["image_path"] = tf.fill(n, example["image_path"])
    persons["image_id"] = tf.fill(n, example["image_id"])
    return persons


def records_dataset_from_tfds(data_dir, name, split="train", *, shuffle_files=False,
                              input_context=None, aspect_ratio=None):
    """Per-person records of a TFDS build with their image bytes, as a ``tf.data.Dataset``.

    Args:
      data_dir: the TFDS data directory given to :func:`prepare_tfds`.
      name, split: which build.
      shuffle_files: shuffle the order of the shards.
      input_context: optional ``tf.distribute.InputContext``: each input pipeline reads its
        own shards (the build needs at least as many shards as pipelines).
      aspect_ratio: when given, raise if the build's boxes were made for another one.

    Returns:
      Unbatched elements in build order (images by first appearance, then their people in
      the reader's order): dicts with the keys of
      :func:`mrpose_tf.data.records.stack_records` (image_path, image_id, center, scale,
      joints, visibility, box_score, area) plus ``record_index`` (the position in the
      reader's order) and ``image_bytes``, the encoded image file.
    """
    path = build_dir(data_dir, name, split)
    if aspect_ratio is not None:
        _check_settings(path, _metadata(path), {"aspect_ratio": float(aspect_ratio)})
    builder = tfds.builder_from_directory(path)
    read_config = tfds.ReadConfig(input_context=input_context)
    ds = builder.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config)
    return ds.map(_persons_of_image, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def main(argv=None):
    """``python -m mrpose_tf.data.tfds_builder --annotation_file=... ...``; ``argv`` without
    the program (None: the command line)."""
    import sys

    from absl import flags

    from mrpose_tf.cli import parse_flags

    fv = flags.FlagValues()
    for name, text in (("annotation_file", "The split's annotation file."),
                       ("image_dir", "Its image folder."),
                       ("data_dir", "The TFDS data directory to write into."),
                       ("name", "The build's name (dataset.tfds_name).")):
        flags.DEFINE_string(name, None, text, required=True, flag_values=fv)
    flags.DEFINE_string("split", "train", "The split's name.", flag_values=fv)
    flags.DEFINE_enum("format", "coco", FORMATS, "The annotation format.", flag_values=fv)
    flags.DEFINE_list("input_size", ["256", "192"], "HEIGHT,WIDTH of the model input (sets "
                      "the box aspect ratio).", flag_values=fv)
    flags.DEFINE_float("padding", 1.25, "Box padding factor.", flag_values=fv)
    flags.DEFINE_string("detections", None, "COCO detection results: boxes instead of the "
                        "ground truth's.", flag_values=fv)
    flags.DEFINE_float("image_thre", 0.0, "Minimum detection score.", flag_values=fv)
    args = parse_flags(fv, "python -m mrpose_tf.data.tfds_builder",
                       "Prepare a keypoint dataset split as a TFDS build.",
                       sys.argv[1:] if argv is None else argv)
    height, width = (int(v) for v in args.input_size)
    path = prepare_tfds(args.annotation_file, args.image_dir, args.data_dir, args.name, args.split,
                        dataset_format=args.format, aspect_ratio=width / height,
                        padding=args.padding, detections=args.detections,
                        image_thre=args.image_thre)
    meta = tfds_metadata(args.data_dir, args.name, args.split)
    print(f"{meta['num_persons']} persons written to {path}")


if __name__ == "__main__":
    # As a script this file is '__main__', which TFDS cannot locate a builder's package from:
    # run the builder of the imported module.
    from mrpose_tf.data import tfds_builder
    tfds_builder.main()
