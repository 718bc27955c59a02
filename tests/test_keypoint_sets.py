"""Real files of other keypoint datasets, and real users' inputs: each kind of failure of
issue 20 as one example, its right value computed independently (pycocotools directly, a
hand count). The five sets end to end: tests/test_keypoint_sets_end_to_end.py."""
import contextlib
import io
import json
import logging
import os
import shutil
import struct

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO as CocoGroundTruth
from pycocotools.cocoeval import COCOeval

import mrpose_tf
from mrpose_tf.config import base_config
from mrpose_tf.data.coco import normalise_ground_truth, read_coco
from mrpose_tf.keypoints import COCO, derive_flip_pairs
from tests.conftest import REPO_ROOT, load_kit, shared_data_path

ASPECT = 192 / 256


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """The reader warns once per process and message; these tests each want their own."""
    from mrpose_tf.data import coco

    monkeypatch.setattr(coco, "_WARNED", set())


def _set(name, file_name):
    root = shared_data_path("keypoint_sets", name)
    path = os.path.join(root, file_name)
    with open(path) as f:
        return path, root, json.load(f)


def _write(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def _perfect(annotations, num_joints, with_category=True):
    """Predictions at every ground-truth keypoint, all scores 1."""
    people = []
    for a in annotations:
        keypoints = np.asarray(a["keypoints"], np.float64).reshape(num_joints, 3)
        keypoints[:, 2] = 1.0
        person = {"image_id": a["image_id"], "keypoints": keypoints, "box_score": 1.0,
                  "area": float(a.get("area", 1000.0))}
        if with_category:
            person["category_id"] = a["category_id"]
        people.append(person)
    return people


def _pycocotools_ap(annotation_file, results, sigmas):
    """COCO keypoint AP of ``results`` by pycocotools alone."""
    with contextlib.redirect_stdout(io.StringIO()):
        truth = CocoGroundTruth(annotation_file)
        evaluator = COCOeval(truth, truth.loadRes(results), "keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


# --- 1. several categories with one keypoint set (AP-10K) ----------------------------------

def test_every_category_with_the_sets_names_is_read_and_counted(caplog):
    path, root, data = _set("ap10k", "test_ap10k.json")
    names = {c["id"]: c["name"] for c in data["categories"]}
    # The file: 54 species with the same 17 keypoints; one animal each of ids 1 and 26.
    assert (names[1], names[26]) == ("antelope", "jaguar")
    with caplog.at_level(logging.WARNING, logger="mrpose_tf"):
        records, spec = out = read_coco(path, root, train=True, aspect_ratio=ASPECT)
    assert sorted(r.category_id for r in records) == [1, 26]
    assert out.summary.people == {name: int(i in (1, 26)) for i, name in names.items()}
    assert sum(out.summary.skipped.values()) == 0
    assert "2 people of 54 categories (antelope: 1, jaguar: 1; 52 with none)" in caplog.text
    assert "config.dataset.category_ids" in caplog.text
    assert spec.num_joints == 17 and spec.name == "test_ap10k"
    chosen = read_coco(path, root, train=True, aspect_ratio=ASPECT, category_ids=(26,))
    assert [r.category_id for r in chosen.records] == [26]
    assert chosen.summary.people == {"jaguar": 1}
    with pytest.raises(ValueError, match=r"config\.dataset\.category_ids \[99\]: no category "
                                         r"with id \[99\]"):
        read_coco(path, root, train=True, aspect_ratio=ASPECT, category_ids=(99,))


def test_perfect_predictions_of_two_categories_score_ap_one_as_pycocotools(tmp_path):
    path, _, data = _set("ap10k", "test_ap10k.json")
    sigmas = [0.05] * 17
    people = _perfect(data["annotations"], 17)
    results_file = str(tmp_path / "results.json")
    stats = mrpose_tf.evaluate_coco(people, path, sigmas=sigmas, results_file=results_file)
    with open(results_file) as f:
        written = json.load(f)
    assert sorted(r["category_id"] for r in written) == [1, 26]
    reference = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                  "keypoints": p["keypoints"].reshape(-1).tolist()}
                 for a, p in zip(data["annotations"], people)]
    assert stats["AP"] == pytest.approx(_pycocotools_ap(path, reference, sigmas)) == 1.0
    # Every result in the first category (what evaluation did before): pycocotools gives 0.5.
    in_one = [dict(r, category_id=1) for r in reference]
    assert _pycocotools_ap(path, in_one, sigmas) == pytest.approx(0.5)


# --- 2. a skeleton that does not fit the keypoints (CrowdPose, ExLPose) --------------------

def test_a_skeleton_that_does_not_fit_is_dropped_with_one_warning(caplog, tmp_path):
    path, root, data = _set("crowdpose", "test_crowdpose.json")
    with caplog.at_level(logging.WARNING, logger="mrpose_tf"):
        records, spec = out = read_coco(path, root, train=False, aspect_ratio=ASPECT)
    assert len(records) == len(data["annotations"]) == 5
    assert out.summary.people == {"person": 5}
    # COCO's 1-based limbs on 14 keypoints: the 3 naming keypoints 15, 16 or 17 are dropped.
    assert spec.skeleton == ((13, 11), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
                             (7, 9), (8, 10))
    warning = [r.getMessage() for r in caplog.records if "skeleton" in r.getMessage()]
    assert len(warning) == 1 and path in warning[0]
    assert "3 of the 12 limbs of field 'skeleton' (1-based)" in warning[0]
    # The config's skeleton (0-based) replaces the file's.
    _, spec = read_coco(path, root, train=False, aspect_ratio=ASPECT,
                        skeleton=((12, 13), (0, 1)))
    assert spec.skeleton == ((12, 13), (0, 1))
    with pytest.raises(ValueError, match=r"config\.dataset\.skeleton: pair \(0, 14\) is out "
                                         r"of range for the 14 keypoints of .*crowdpose"):
        read_coco(path, root, train=False, aspect_ratio=ASPECT, skeleton=((0, 14),))
    with pytest.raises(ValueError, match=r"config\.dataset\.flip_pairs: pair \(0, 20\)"):
        read_coco(path, root, train=False, aspect_ratio=ASPECT, flip_pairs=((0, 20),))
    # ExLPose's layout: 0-based, with -1 for a keypoint it does not have.
    data["categories"][0]["skeleton"] = [[0, 1], [-1, 2], [1, 2], [13, 14]]
    exlpose = _write(tmp_path / "exlpose.json", data)
    assert read_coco(exlpose, root, train=False, aspect_ratio=ASPECT)[1].skeleton == (
        (0, 1), (1, 2))


# --- 3. ground truth without area or num_keypoints (JHMDB, CrowdPose) ----------------------

def test_ground_truth_without_area_is_filled_once_for_reader_and_evaluator():
    path, root, data = _set("jhmdb", "test_jhmdb_sub1.json")
    assert not {"area", "num_keypoints"} & set(data["annotations"][0])
    normalised, original_ids = normalise_ground_truth(data, path)
    first = normalised["annotations"][0]
    # bbox (79, 62, 54, 159) in a 320 x 240 frame lies inside it: 0.53 x 54 x 159.
    assert first["area"] == pytest.approx(0.53 * 54 * 159)
    assert first["num_keypoints"] == 15 and original_ids is None
    records, _ = read_coco(path, root, train=False, aspect_ratio=ASPECT)
    assert records[0].area == pytest.approx(0.53 * 54 * 159)
    stats = mrpose_tf.evaluate_coco(_perfect(data["annotations"], 15), path, sigmas=[0.05] * 15)
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)


def test_crowdpose_perfect_predictions_score_what_pycocotools_gives_on_the_filled_file(
        tmp_path):
    path, _, data = _set("crowdpose", "test_crowdpose.json")
    images = {i["id"]: i for i in data["images"]}
    for a in data["annotations"]:  # filled here by hand: 0.53 x the box clipped to the image
        x, y, w, h = a["bbox"]
        image = images[a["image_id"]]
        x1, y1 = np.clip([x, y], 0, [image["width"] - 1, image["height"] - 1])
        x2, y2 = np.clip([x + w, y + h], 0, [image["width"] - 1, image["height"] - 1])
        a["area"] = max(1.0, 0.53 * (x2 - x1) * (y2 - y1))
        a["num_keypoints"] = sum(v > 0 for v in a["keypoints"][2::3])
    filled = _write(tmp_path / "filled.json", data)
    sigmas = [0.05] * 14
    people = _perfect(data["annotations"], 14)
    reference = [{"image_id": p["image_id"], "category_id": 1, "score": 1.0,
                  "keypoints": p["keypoints"].reshape(-1).tolist()} for p in people]
    expected = _pycocotools_ap(filled, reference, sigmas)
    assert expected == pytest.approx(0.9504950495)  # the person with no keypoint costs one FP
    assert mrpose_tf.evaluate_coco(people, path, sigmas=sigmas)["AP"] == pytest.approx(expected)


def test_detector_boxes_are_counted_per_category_and_threshold():
    path, root, _ = _set("crowdpose", "test_crowdpose.json")
    detections = os.path.join(root, "test_crowdpose_det_AP_40.json")
    with open(detections) as f:
        scores = [d["score"] for d in json.load(f)]
    out = read_coco(path, root, train=False, aspect_ratio=ASPECT, detections=detections,
                    image_thre=0.99)
    below = sum(s < 0.99 for s in scores)
    assert below == 1 and len(out.records) == len(scores) - below == 5  # one scores 0.967
    assert out.summary.people == {"person": 5}
    assert out.summary.skipped == {"of other categories": 0, "scoring below 0.99": 1}


# --- OKS sigmas: the file's, else COCO's by name and a default with a warning --------------

def test_oks_sigmas_from_the_file_else_coco_by_name_and_a_warned_default(tmp_path, caplog):
    path, root, data = _set("crowdpose", "test_crowdpose.json")
    with caplog.at_level(logging.WARNING, logger="mrpose_tf"):
        _, spec = read_coco(path, root, train=False, aspect_ratio=ASPECT)
    coco = {"shoulder": .079, "elbow": .072, "wrist": .062, "hip": .107, "knee": .087,
            "ankle": .089}
    expected = [coco[n.split("_")[1]] if "_" in n else 0.05 for n in spec.names]
    np.testing.assert_allclose(spec.sigmas, expected, rtol=0, atol=1e-12)
    assert "2 of 14 keypoints have no COCO namesake and get the default 0.05 (head, neck)" \
        in caplog.text
    own = [0.03 + 0.001 * i for i in range(14)]
    data["categories"][0]["sigmas"] = own
    _, spec = read_coco(_write(tmp_path / "with_sigmas.json", data), root, train=False,
                        aspect_ratio=ASPECT)
    np.testing.assert_allclose(spec.sigmas, own)


# --- 4. left/right names that are not left_*/right_* --------------------------------------

def test_flip_pairs_from_suffixes_prefixes_and_camel_case():
    _, _, fly = _set("fly", "test_fly.json")
    names = fly["categories"][0]["keypoints"]
    by_name = {(names[a], names[b]) for a, b in derive_flip_pairs(names)}
    legs = {(f"{leg}R{i}", f"{leg}L{i}") for leg in ("foreleg", "midleg", "hindleg")
            for i in range(1, 5)}  # the file lists the right legs first
    assert by_name == legs | {("eyeL", "eyeR"), ("wingL", "wingR")}
    _, _, zebra = _set("zebra", "test_zebra.json")
    names = zebra["categories"][0]["keypoints"]
    assert derive_flip_pairs(names) == ((3, 4), (5, 6))  # forelegL1/R1, hindlegL1/R1
    _, _, locust = _set("locust", "test_locust.json")
    assert len(derive_flip_pairs(locust["categories"][0]["keypoints"])) == 15  # 35 = 5 + 2 x 15
    conventions = ["LEye", "REye", "leftHand", "rightHand", "l_knee", "r_knee", "KNEE_L",
                   "KNEE_R", "Left Shoulder", "Right Shoulder", "tail", "left-paw", "right-paw"]
    assert derive_flip_pairs(conventions) == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (11, 12))


def test_training_with_flips_refuses_sided_names_without_pairs(tmp_path):
    from mrpose_tf.keypoints import KeypointSpec
    from mrpose_tf.training.inputs import check_training_keypoints

    spec = KeypointSpec("pets", ("nose", "lefteye", "righteye"), ())
    config = base_config()
    config.model.num_joints = 3
    with pytest.raises(ValueError, match=r"pets\.json: keypoints \['lefteye', 'righteye'\] look "
                                         r"left/right-sided .*config\.dataset\.flip_pairs"):
        check_training_keypoints(config, spec, "pets.json")
    config.dataset.flip_pairs = ()  # "no pairs", said explicitly
    check_training_keypoints(config, spec, "pets.json")
    config.dataset.flip_pairs = None
    config.augment.flip = False
    check_training_keypoints(config, spec, "pets.json")


# --- 5. the dataset's K differs from model.num_joints (AI Challenger) ----------------------

def test_a_dataset_of_14_keypoints_under_a_17_joint_config_stops_before_the_model():
    from mrpose_tf.training.inputs import training_data_from_config

    path, root, _ = _set("aic", "test_aic.json")
    config = base_config()  # COCO's 17 joints
    config.dataset.update(name="aic", root=root, train_annotations="test_aic.json",
                          val_annotations="test_aic.json", train_images=".", val_images=".")
    with pytest.raises(ValueError, match=r"config\.model\.num_joints is 17 but "
                                         r".*test_aic\.json has K=14 keypoints \(Right Shoulder"
                                         r".*--config\.model\.num_joints=14"):
        training_data_from_config(config)


# --- 6. image ids that are not integers ----------------------------------------------------

def test_string_image_ids_work_through_the_pipeline_and_evaluation(coco_sample_dir, tmp_path):
    from mrpose_tf.data.pipeline import build_dataset

    with open(os.path.join(coco_sample_dir, "test_coco.json")) as f:
        data = json.load(f)
    rename = {image["id"]: f"frame_{n:04d}" for n, image in enumerate(data["images"], 1)}
    for image in data["images"]:
        image["id"] = rename[image["id"]]
    for a in data["annotations"]:
        a["image_id"] = rename[a["image_id"]]
    path = _write(tmp_path / "frames.json", data)
    with open(os.path.join(coco_sample_dir, "test_coco_det_AP_H_56.json")) as f:
        detections = json.load(f)
    for d in detections:
        d["image_id"] = rename[d["image_id"]]
    detections_file = _write(tmp_path / "frames_det.json", detections)

    records, spec = read_coco(path, coco_sample_dir, train=True, aspect_ratio=ASPECT)
    # Integers by position in 'images' (1..4) for the int64 columns and pycocotools.
    assert len(records) == 12 and {r.image_id for r in records} == {1, 2, 3, 4}
    assert len(read_coco(path, coco_sample_dir, train=False, aspect_ratio=ASPECT,
                         detections=detections_file).records) == len(detections)
    batch = next(iter(build_dataset(records, keypoints=spec, input_size=(64, 48),
                                    heatmap_size=(16, 12), train=True, batch_size=4)))
    assert set(batch["image_id"].numpy().tolist()) <= {1, 2, 3, 4}

    people = _perfect([a for a in data["annotations"] if a["num_keypoints"]], 17)
    results_file = str(tmp_path / "results.json")
    stats = mrpose_tf.evaluate_coco(people, path, results_file=results_file)
    assert stats["AP"] == pytest.approx(1.0)  # as on the file with integer ids
    with open(results_file) as f:
        assert {r["image_id"] for r in json.load(f)} == set(rename.values())


# --- 7. an image TensorFlow cannot decode (TIFF) -------------------------------------------

def _sample_with_tiff(coco_sample_dir, folder):
    """The COCO sample with image 196141 (5 people) stored as TIFF."""
    shutil.copytree(coco_sample_dir, folder)
    with open(os.path.join(folder, "test_coco.json")) as f:
        data = json.load(f)
    image = next(i for i in data["images"] if i["id"] == 196141)
    jpeg = os.path.join(folder, image["file_name"])
    image["file_name"] = "000000196141.tiff"
    cv2.imwrite(os.path.join(folder, image["file_name"]), cv2.imread(jpeg))
    return _write(os.path.join(folder, "tiff.json"), data), data


def _zero_heatmaps(crops):
    return np.zeros((len(crops), 16, 12, 17), np.float32)


def test_a_tiff_is_decoded_like_the_jpeg_it_was_saved_from(coco_sample_dir, tmp_path):
    from mrpose_tf.data.pipeline import build_dataset

    folder = str(tmp_path / "sample")
    path, _ = _sample_with_tiff(coco_sample_dir, folder)
    crops = {}
    for name, annotations in (("jpeg", os.path.join(coco_sample_dir, "test_coco.json")),
                              ("tiff", path)):
        records, spec = read_coco(annotations, folder, train=False, aspect_ratio=ASPECT)
        batches = build_dataset(records, keypoints=spec, input_size=(64, 48),
                                heatmap_size=(16, 12), train=False, batch_size=16)
        crops[name] = np.concatenate([b["image"].numpy() for b in batches])
    assert len(crops["tiff"]) == len(crops["jpeg"]) == 14
    # The TIFF holds OpenCV's decoding of the JPEG, TensorFlow's equals it (integer IDCT).
    np.testing.assert_allclose(crops["tiff"], crops["jpeg"], atol=1e-3)


def test_an_image_no_decoder_reads_is_counted_named_and_written(coco_sample_dir, tmp_path,
                                                                caplog):
    from mrpose_tf.evaluation.runner import run_coco_evaluation

    folder = str(tmp_path / "sample")
    path, data = _sample_with_tiff(coco_sample_dir, folder)
    broken = os.path.join(folder, "000000196141.tiff")
    with open(broken, "wb") as f:  # a TIFF header, then nothing any decoder can use
        f.write(b"II*\x00" + bytes(200))
    records, spec = read_coco(path, folder, train=False, aspect_ratio=ASPECT)
    config = base_config()
    config.model.input_size, config.model.heatmap_size = (64, 48), (16, 12)
    config.test.batch_size, config.test.flip_test = 16, False
    with caplog.at_level(logging.WARNING, logger="mrpose_tf"):
        run_coco_evaluation(_zero_heatmaps, records, config, path, spec,
                            output_dir=str(tmp_path / "eval"), log=lambda line: None)
    assert f"5 of 14 people could not be read: their 1 image files cannot be read or decoded: " \
           f"{broken}" in caplog.text
    with open(tmp_path / "eval" / "metrics.json") as f:
        summary = json.load(f)
    assert (summary["num_people"], summary["skipped_people"], summary["skipped_images"]) == \
        (9, 5, 1)


def _exif_rotated_jpeg(path):
    """A 40 x 80 JPEG whose EXIF orientation (6) asks viewers to rotate it to 80 x 40."""
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :40] = 255
    data = cv2.imencode(".jpg", image)[1].tobytes()
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<I", 0))
    exif = b"Exif\x00\x00" + tiff
    with open(path, "wb") as f:
        f.write(data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:])


def test_every_entry_point_decodes_a_file_as_stored(tmp_path):
    import tensorflow as tf

    from mrpose_tf.images import read_image_rgb

    path = str(tmp_path / "rotated.jpg")
    _exif_rotated_jpeg(path)
    assert cv2.imread(path).shape == (80, 40, 3)  # OpenCV's default would rotate it
    stored = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE")
    assert stored.shape == (40, 80, 3)
    np.testing.assert_array_equal(read_image_rgb(path), stored.numpy())
    np.testing.assert_array_equal(load_kit().read_image_rgb(path), stored.numpy())


# --- 8. the Predictor given float or 16-bit images -----------------------------------------

def test_the_predictor_refuses_float_and_16_bit_images_naming_dtype_and_range(coco_sample_dir):
    from mrpose_tf.predictor import Predictor

    image = cv2.imread(os.path.join(coco_sample_dir, "000000000785.jpg"))[..., ::-1]
    predictor = Predictor(_zero_heatmaps, (64, 48), COCO, flip_test=False)
    boxes = [[280.79, 44.73, 218.7, 346.68]]
    assert predictor(image, boxes)[0].shape == (1, 17, 2)
    with pytest.raises(ValueError, match=r"uint8 RGB with values 0\.\.255, got float32 with "
                                         r"values 0\.\.1; .*\(image \* 255\)"):
        predictor(image.astype(np.float32) / 255, boxes)
    with pytest.raises(ValueError, match=r"got uint16 with values 0\.\.65535; .*>> 8"):
        predictor(image.astype(np.uint16) * 257, boxes)
    with pytest.raises(ValueError, match=r"uint8 RGB with values 0\.\.255, got float32"):
        load_kit().TFLitePose.__call__(type("Stub", (), {})(), image.astype(np.float32), boxes)


# --- 10. negative numbers in the kit's --boxes ---------------------------------------------

def test_the_kit_reads_negative_box_values_as_values():
    kit = load_kit()
    argv = ["--model", "m.tflite", "--boxes", "-50,100,120,240", "--boxes", "5,6,7,8",
            "--boxes=-1,-2,3,4", "--image", "a.jpg"]
    assert kit.joined_box_values(argv) == [
        "--model", "m.tflite", "--boxes=-50,100,120,240", "--boxes", "5,6,7,8",
        "--boxes=-1,-2,3,4", "--image", "a.jpg"]


# --- 11. 'None' from the command line ------------------------------------------------------

def test_none_on_the_command_line_unsets_every_optional_field(coco_sample_dir):
    from absl import flags
    from ml_collections import config_flags

    from mrpose_tf.config import backbone_weights_of, resolve_unset_fields
    from mrpose_tf.data.pipeline import read_split

    argv = ["prog", f"--config={REPO_ROOT}/configs/coco/simple_baseline_resnet50_256x192.py",
            "--config.model.backbone_weights=None", "--config.test.detections=None",
            "--config.dataset.flip_pairs=None", "--config.dataset.tfds_name=none",
            f"--config.dataset.root={coco_sample_dir}", "--config.dataset.val_images=.",
            "--config.dataset.val_annotations=test_coco.json"]
    values = flags.FlagValues()  # as scripts/train.py defines it, on a private flag set
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)
    values(argv)
    config = values.config
    # What absl hands over: strings, and a one-element tuple.
    assert (config.model.backbone_weights, config.test.detections, config.dataset.flip_pairs,
            config.dataset.tfds_name) == ("None", "None", (None,), "none")
    resolve_unset_fields(config)
    assert (config.model.backbone_weights, config.test.detections, config.dataset.flip_pairs,
            config.dataset.tfds_name) == (None, "", None, "")
    assert backbone_weights_of(config) is None
    records, spec = read_split(config, "val")  # no detection file: the 14 ground-truth boxes
    assert len(records) == 14 and spec.flip_pairs == COCO.flip_pairs
