"""TFDS builds hold exactly the raw readers' person records and the original image bytes,
and training and evaluation read them (``config.dataset.tfds_name``) as they read the folder."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mrpose_tf.config import base_config
from mrpose_tf.data import synthetic
from mrpose_tf.data import tfds_builder as tb
from mrpose_tf.data.coco import read_coco
from mrpose_tf.data.mpii import read_mpii
from mrpose_tf.data.pipeline import build_dataset, read_split
from mrpose_tf.data.records import stack_records
from tests.conftest import REPO_ROOT, shared_data_path

# Its module fixtures are built once: keep these tests on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("tfds")

COLUMNS = ("center", "scale", "joints", "visibility", "box_score", "area")


@pytest.fixture(scope="module")
def coco_dir():
    return shared_data_path("coco_sample")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _sorted(rows):
    """Records (dicts) in a fixed order: by image, then box centre."""
    return sorted(rows, key=lambda r: (int(r["image_id"]), *np.round(r["center"], 3)))


def _raw_rows(records):
    columns = stack_records(records)
    return _sorted([{k: v[i] for k, v in columns.items()} for i in range(len(records))])


def _assert_same_records(tfds_rows, raw_records):
    rows, raw = _sorted(tfds_rows), _raw_rows(raw_records)
    assert len(rows) == len(raw)
    for got, want in zip(rows, raw):
        assert int(got["image_id"]) == int(want["image_id"])
        assert os.path.realpath(got["image_path"].decode()) == os.path.realpath(want["image_path"])
        for key in COLUMNS:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_coco_train_build_equals_the_raw_reader(coco_dir, data_dir):
    annotations = os.path.join(coco_dir, "test_coco.json")
    tb.prepare_tfds(annotations, coco_dir, data_dir, "cocosample", "train")
    rows = list(tb.records_dataset_from_tfds(data_dir, "cocosample", "train").as_numpy_iterator())
    raw, spec = read_coco(annotations, coco_dir, train=True, aspect_ratio=192 / 256)
    # 14 annotated people, the ones without labelled keypoints dropped for training.
    assert len(raw) == 12
    _assert_same_records(rows, raw)
    assert set(rows[0]) == set(stack_records(raw)) | {"image_bytes", "record_index"}
    for row in rows:  # record_index: the position in the reader's order
        np.testing.assert_array_equal(row["center"], raw[row["record_index"]].center)
    assert sorted(int(row["record_index"]) for row in rows) == list(range(12))
    assert tb.keypoint_spec_from_tfds(data_dir, "cocosample", "train") == spec
    assert tb.tfds_metadata(data_dir, "cocosample", "train")["num_persons"] == 12


def test_image_bytes_are_the_original_file(coco_dir, data_dir):
    annotations = os.path.join(coco_dir, "test_coco.json")
    tb.prepare_tfds(annotations, coco_dir, data_dir, "cocosample", "train")
    seen = set()
    for row in tb.records_dataset_from_tfds(data_dir, "cocosample", "train").as_numpy_iterator():
        path = row["image_path"].decode()
        with open(path, "rb") as f:
            assert row["image_bytes"] == f.read()
        decoded = cv2.imdecode(np.frombuffer(row["image_bytes"], np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(decoded, cv2.imread(path))
        seen.add(path)
    assert len(seen) == 4


def test_detection_boxes_build_equals_the_raw_reader(coco_dir, data_dir):
    annotations = os.path.join(coco_dir, "test_coco.json")
    detections = os.path.join(coco_dir, "test_coco_det_AP_H_56.json")
    tb.prepare_tfds(annotations, coco_dir, data_dir, "cocosample", "valdet", detections=detections,
                    aspect_ratio=1.0)
    rows = list(tb.records_dataset_from_tfds(data_dir, "cocosample", "valdet",
                                             aspect_ratio=1.0).as_numpy_iterator())
    raw, _ = read_coco(annotations, coco_dir, train=False, aspect_ratio=1.0,
                       detections=detections)
    _assert_same_records(rows, raw)
    assert any(r["box_score"] < 1.0 for r in rows)


def test_mpii_build_equals_the_raw_reader(data_dir):
    mpii_dir = shared_data_path("mpii_sample")
    annotations = os.path.join(mpii_dir, "test_mpii.json")
    tb.prepare_tfds(annotations, mpii_dir, data_dir, "mpiisample", "train", dataset_format="mpii",
                    aspect_ratio=1.0)
    rows = list(tb.records_dataset_from_tfds(data_dir, "mpiisample", "train").as_numpy_iterator())
    raw, spec = read_mpii(annotations, mpii_dir)
    _assert_same_records(rows, raw)
    assert tb.keypoint_spec_from_tfds(data_dir, "mpiisample", "train").flip_pairs == spec.flip_pairs


def test_synthetic_build_equals_the_raw_reader(tmp_path, data_dir):
    paths = synthetic.ensure_synthetic_dataset(str(tmp_path / "synthetic"), 5, 2, seed=1)
    # The command line, as documented: python -m mrpose_tf.data.tfds_builder ...
    subprocess.run([sys.executable, "-m", "mrpose_tf.data.tfds_builder",
                    "--annotation_file", paths["train_annotations"],
                    "--image_dir", paths["train_images"], "--data_dir", data_dir,
                    "--name", "synthetic", "--split", "train"],
                   check=True, capture_output=True, cwd=REPO_ROOT)
    rows = list(tb.records_dataset_from_tfds(data_dir, "synthetic", "train").as_numpy_iterator())
    raw, _ = read_coco(paths["train_annotations"], paths["train_images"], train=True,
                       aspect_ratio=192 / 256)
    assert len(raw) >= 5
    _assert_same_records(rows, raw)


def test_prepared_build_is_reused_and_misuse_is_reported(coco_dir, data_dir):
    annotations = os.path.join(coco_dir, "test_coco.json")
    path = tb.prepare_tfds(annotations, coco_dir, data_dir, "cocosample", "train")
    info = os.path.join(path, "dataset_info.json")
    stamp = os.stat(info).st_mtime_ns
    assert tb.prepare_tfds(annotations, coco_dir, data_dir, "cocosample", "train") == path
    assert os.stat(info).st_mtime_ns == stamp
    with pytest.raises(ValueError, match="aspect ratio"):
        tb.records_dataset_from_tfds(data_dir, "cocosample", "train", aspect_ratio=1.0)
    with pytest.raises(FileNotFoundError, match="prepare_tfds"):
        tb.records_dataset_from_tfds(data_dir, "nosuchset", "train")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        tb.prepare_tfds(os.path.join(coco_dir, "missing.json"), coco_dir, data_dir, "bad", "train")


def test_missing_image_is_reported_with_its_path(coco_dir, tmp_path):
    empty_images = tmp_path / "images"
    empty_images.mkdir()
    with pytest.raises(FileNotFoundError, match=r"test_coco.json: image file .*000000000785.jpg"):
        tb.prepare_tfds(os.path.join(coco_dir, "test_coco.json"), str(empty_images),
                        str(tmp_path / "tfds"), "noimages", "train")


# --- training and evaluation from a build (config.dataset.tfds_name) ------------------------

INPUT, HEATMAP = (64, 64), (16, 16)


def coco_config(data_dir=None):
    """A tiny COCO-sample config (64x64 inputs, batch 4); with ``data_dir``, read the builds
    ``cocotiny_train`` / ``cocotiny_val`` there instead of the folder."""
    config = base_config()
    d = config.dataset
    d.root = shared_data_path("coco_sample")
    d.train_annotations = d.val_annotations = "test_coco.json"
    d.train_images = d.val_images = "."
    if data_dir:
        d.tfds_name, d.tfds_data_dir = "cocotiny", data_dir
    config.model.input_size, config.model.heatmap_size = INPUT, HEATMAP
    config.model.backbone_weights = None
    config.train.update(dict(batch_size=4, max_steps=2, log_every_steps=100,
                             checkpoint_every_steps=1000))
    config.test.update(dict(use_gt_boxes=True, batch_size=8, flip_test=False))
    return config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Train and val builds of a copy of the COCO sample whose images are deleted after
    preparation: whatever reads the builds can only get its images from the shards."""
    source = shared_data_path("coco_sample")
    copy = tmp_path_factory.mktemp("coco_copy")
    for name in os.listdir(source):
        shutil.copy(os.path.join(source, name), copy)
    data_dir = str(tmp_path_factory.mktemp("tfds_config"))
    for split in ("train", "val"):
        tb.prepare_tfds(str(copy / "test_coco.json"), str(copy), data_dir, "cocotiny", split,
                        aspect_ratio=INPUT[1] / INPUT[0])
    for image in copy.glob("*.jpg"):
        image.unlink()
    return data_dir


def test_read_split_from_a_build_gives_the_readers_records_in_order(built):
    for split, count in (("train", 12), ("val", 14)):
        folder, folder_spec = read_split(coco_config(), split)
        shards, spec = read_split(coco_config(built), split)
        assert spec == folder_spec and len(shards) == len(folder) == count
        for position, (got, want) in enumerate(zip(shards, folder)):
            assert got.record_index == position and got.tfds_dir and not want.tfds_dir
            assert got.image_id == want.image_id and got.area == want.area
            assert got.box_score == want.box_score
            for key in ("center", "scale", "joints", "visibility", "bbox"):
                np.testing.assert_array_equal(getattr(got, key), getattr(want, key))
    config = coco_config(built)
    config.model.input_size = (256, 192)
    with pytest.raises(ValueError, match="aspect ratio"):
        read_split(config, "train")
    config = coco_config(built)
    config.test.use_gt_boxes = False  # the config's detections, but the build has GT boxes
    with pytest.raises(ValueError, match="detector boxes"):
        read_split(config, "val")


def test_first_training_batch_from_a_build_equals_the_folders(built):
    from mrpose_tf.training.inputs import training_data_from_config

    folder = training_data_from_config(coco_config())
    shards = training_data_from_config(coco_config(built))
    assert folder.steps_per_epoch == shards.steps_per_epoch == 12 // 4
    for epoch in (0, 1):  # the epoch seeds the shuffle and the augmentation
        want = next(iter(folder.train_fn(None, epoch)))
        got = next(iter(shards.train_fn(None, epoch)))
        assert got["image"].shape == (4, *INPUT, 3)
        for key in ("image", "heatmaps", "target_weight"):
            np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), atol=1e-4,
                                       err_msg=key)
        np.testing.assert_array_equal(got["image_id"].numpy(), want["image_id"].numpy())
    assert len(shards.val_records) == 14 and shards.val_fn is not None


def test_a_subset_of_a_builds_records_reads_just_those_people(built):
    records, spec = read_split(coco_config(built), "val")
    subset = records[13:1:-3]  # reversed, every third, images interleaved
    out = [e for batch in build_dataset(subset, keypoints=spec, input_size=INPUT,
                                        heatmap_size=HEATMAP, train=False, batch_size=8)
           for e in zip(*(batch[k].numpy() for k in ("record_position", "center", "image_id")))]
    assert sorted(p for p, _, _ in out) == list(range(len(subset)))
    for position, center, image_id in out:
        np.testing.assert_array_equal(center, subset[position].center)
        assert image_id == subset[position].image_id


def test_input_pipelines_share_out_a_builds_people(built):
    import tensorflow as tf

    records, spec = read_split(coco_config(built), "val")
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        for batch in build_dataset(records, keypoints=spec, input_size=INPUT,
                                   heatmap_size=HEATMAP, train=True, batch_size=4,
                                   input_context=context, drop_remainder=False):
            assert batch["image"].shape[0] <= 2  # per-replica batches
            seen.append(batch["record_position"].numpy())
    # One shard file: every other image each, all 14 people once (images of 1, 3, 5, 5).
    assert sorted(np.concatenate(seen)) == list(range(14))


def test_two_training_steps_run_from_a_build(built, tmp_path):
    from mrpose_tf.training import Trainer, make_strategy
    from mrpose_tf.training.inputs import training_data_from_config

    config = coco_config(built)
    data = training_data_from_config(config)
    trainer = Trainer(config, str(tmp_path), make_strategy("one_device"), data.steps_per_epoch,
                      log=lambda line: None)
    result = trainer.fit(data.train_fn, data.val_fn)
    assert result["step"] == 2
    # A fresh model's heatmaps are near zero, so its loss 0.5 * mean((pred - target)^2 *
    # weight) is near that of all-zero predictions on the targets of the two batches read:
    # the trainer learnt from the build's targets (empty targets would give ~1e-4).
    batches = list(data.train_fn(None, 0).take(2))
    zero_prediction = np.mean([0.5 * np.mean((b["heatmaps"].numpy()
                                              * b["target_weight"].numpy()[:, None, None]) ** 2)
                               for b in batches])
    assert zero_prediction > 0.01
    assert 0.5 * zero_prediction < result["last_loss"] < 1.5 * zero_prediction


class TargetOracle:
    """A 'model' that knows the folder pipeline's evaluation crops: for a crop it returns the
    target heatmaps of the nearest known crop, zeros when none is within one grey level."""

    def __init__(self, records, spec):
        batches = list(build_dataset(records, keypoints=spec, input_size=INPUT,
                                     heatmap_size=HEATMAP, train=False, batch_size=16))
        self.crops = np.concatenate([b["image"].numpy() for b in batches])
        self.heatmaps = np.concatenate([b["heatmaps"].numpy() for b in batches])

    def __call__(self, images):
        distance = np.abs(np.asarray(images)[:, None] - self.crops[None]).mean(axis=(2, 3, 4))
        nearest = distance.argmin(1)
        known = distance[np.arange(len(nearest)), nearest] < 1.0
        return np.where(known[:, None, None, None], self.heatmaps[nearest], 0.0)


def test_evaluation_from_a_build_gives_the_folders_ap(built):
    from mrpose_tf.evaluation import evaluate_model

    records, spec = read_split(coco_config(), "val")
    oracle = TargetOracle(records, spec)
    folder = evaluate_model(oracle, coco_config(), log=lambda line: None)
    shards = evaluate_model(oracle, coco_config(built), log=lambda line: None)
    assert folder["AP"] > 0.5  # the decoded targets: near the resolution ceiling
    assert dict(shards) == dict(folder)


def test_mpii_records_and_predictions_come_back_in_the_readers_order(tmp_path):
    from mrpose_tf.evaluation.runner import predict_records

    mpii_dir = shared_data_path("mpii_sample")
    with open(os.path.join(mpii_dir, "test_mpii.json")) as f:
        entries = json.load(f)
    # A second person in the first image, listed last: the build stores it second.
    extra = dict(entries[0], center=[v + 30.0 for v in entries[0]["center"]])
    with open(tmp_path / "valid.json", "w") as f:
        json.dump(entries + [extra], f)
    data_dir = str(tmp_path / "tfds")
    tb.prepare_tfds(str(tmp_path / "valid.json"), mpii_dir, data_dir, "mpiitiny", "val",
                    dataset_format="mpii")
    build_order = [int(row["record_index"]) for row in
                   tb.records_dataset_from_tfds(data_dir, "mpiitiny", "val").as_numpy_iterator()]
    assert build_order == [0, 5, 1, 2, 3, 4]

    def config(tfds):
        c = base_config()
        c.dataset.update(dict(name="mpii", root=str(tmp_path), val_annotations="valid.json",
                              val_images=mpii_dir))
        if tfds:
            c.dataset.tfds_name, c.dataset.tfds_data_dir = "mpiitiny", data_dir
        c.model.update(dict(input_size=INPUT, heatmap_size=HEATMAP, num_joints=16))
        c.test.update(dict(use_gt_boxes=True, batch_size=4, flip_test=False))
        return c

    folder, spec = read_split(config(False), "val")
    shards, _ = read_split(config(True), "val")
    assert [r.record_index for r in shards] == list(range(6))
    np.testing.assert_array_equal([r.center for r in shards], [r.center for r in folder])

    def model(images):
        """Heatmaps that depend on the crop: its mean channel, shifted by one pixel per joint."""
        small = cv2.resize(np.asarray(images).mean(-1).transpose(1, 2, 0), HEATMAP[::-1])
        small = small.reshape(*HEATMAP, -1).transpose(2, 0, 1)
        return np.stack([np.roll(small, j, axis=2) for j in range(16)], -1)

    want = predict_records(model, folder, config(False), spec)
    got = predict_records(model, shards, config(True), spec)
    np.testing.assert_array_equal(got["center"], np.stack([r.center for r in folder]))
    np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=1e-4)
    assert len({tuple(k[0, :2]) for k in got["keypoints"]}) == 6  # six different answers
