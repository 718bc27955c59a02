"""TFDS builds hold exactly the raw readers' person records and the original image bytes."""
import os

import cv2
import numpy as np
import pytest

from mrpose_tf.data import synthetic
from mrpose_tf.data import tfds_builder as tb
from mrpose_tf.data.coco import read_coco
from mrpose_tf.data.mpii import read_mpii
from mrpose_tf.data.records import stack_records
from tests.conftest import shared_data_path

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
    assert set(rows[0]) == set(stack_records(raw)) | {"image_bytes"}
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
    tb.main(["--annotation_file", paths["train_annotations"], "--image_dir", paths["train_images"],
             "--data_dir", data_dir, "--name", "synthetic", "--split", "train"])
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
