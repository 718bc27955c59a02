"""The tf.data pipeline on the real COCO sample: crops vs cv2.warpAffine, joints, bad images."""
import os
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf

from mrpose_tf.data.coco import read_coco
from mrpose_tf.data.pipeline import (_augmentation, _preprocess_batch, build_dataset,
                                     check_image_files, make_skipped_counter)
from mrpose_tf.geometry import get_affine_transform
from mrpose_tf.preprocessing import BGR_MEAN, preprocess, unpreprocess
from tests.test_targets import reference_targets

INPUT, HEATMAP = (128, 96), (32, 24)
AUG = dict(scale_factor=0.3, rotation_factor=40.0, rotation_prob=0.6, flip=True, flip_prob=0.5)


@pytest.fixture(scope="module")
def coco(request):
    from tests.conftest import shared_data_path
    folder = shared_data_path("coco_sample")
    records, spec = read_coco(os.path.join(folder, "test_coco.json"), folder, train=False,
                              aspect_ratio=INPUT[1] / INPUT[0])
    return records, spec, folder


def elements(dataset):
    """Unbatched numpy elements of a dataset."""
    return [{k: v.numpy() for k, v in e.items()} for e in dataset.unbatch()]


def crop_rgb(element):
    """Undo preprocess: BGR minus means -> RGB 0..255."""
    return (element["image"] + np.float32(BGR_MEAN))[..., ::-1]


def cv2_crop(path, matrix):
    image = cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1]
    return cv2.warpAffine(image, matrix, (INPUT[1], INPUT[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32)


def build(records, spec, **kwargs):
    kwargs.setdefault("train", False)
    kwargs.setdefault("batch_size", 4)
    return build_dataset(records, keypoints=spec, input_size=INPUT, heatmap_size=HEATMAP,
                         sigma=2.0, **kwargs)


def test_eval_crops_match_cv2_and_targets_match_reference(coco):
    records, spec, _ = coco
    out = elements(build(records, spec))
    assert len(out) == len(records) == 14
    for record, e in zip(records, out):
        m = get_affine_transform(record.center, record.scale, 0.0, INPUT)
        np.testing.assert_allclose(e["matrix"], m, rtol=1e-5, atol=1e-3)
        assert np.abs(crop_rgb(e) - cv2_crop(record.image_path, m)).mean() < 2.0
        joints = record.joints @ m[:, :2].T + m[:, 2]
        maps, weights = reference_targets(joints, record.visibility, INPUT, HEATMAP, 2.0)
        np.testing.assert_array_equal(e["target_weight"], weights)
        np.testing.assert_allclose(e["heatmaps"], maps, atol=1e-4)
        np.testing.assert_array_equal(e["joints"], record.joints)
        np.testing.assert_array_equal(e["center"], record.center)
        assert e["image_id"] == record.image_id and not e["flipped"]


def check_train_element(record, e, spec):
    """A training crop equals cv2.warpAffine of its matrix; the matrix follows the recipe
    (mirrored centre when flipped, scale in [0.7, 1.3], rotation in +-80 degrees); the
    targets equal the reference targets of the (flipped) joints."""
    m = e["matrix"]
    image = cv2.imread(record.image_path)
    width = image.shape[1]
    if e["flipped"]:
        # The crop of the mirrored image: mirrored centre, the same zoom and rotation.
        unflipped = m @ np.array([[-1, 0, width - 1], [0, 1, 0], [0, 0, 1]], np.float64)
        mirrored = cv2.warpAffine(image[:, ::-1][..., ::-1].copy(), unflipped,
                                  (INPUT[1], INPUT[0]), flags=cv2.INTER_LINEAR)
        assert np.abs(crop_rgb(e) - mirrored).mean() < 2.0
        centre_x = width - 1 - record.center[0]
    else:
        unflipped, centre_x = m, record.center[0]
    # The matrix is a crop of (possibly mirrored) centre, scale*[0.7, 1.3], rot in +-80 deg.
    zoom = np.hypot(*unflipped[0, :2])
    rot = np.degrees(np.arctan2(unflipped[0, 1], unflipped[0, 0]))
    assert 0.7 - 1e-4 <= INPUT[1] / (record.scale[0] * 200 * zoom) <= 1.3 + 1e-4
    assert abs(rot) <= 80 + 1e-3
    np.testing.assert_allclose(unflipped @ [centre_x, record.center[1], 1],
                               [INPUT[1] / 2, INPUT[0] / 2], atol=1e-3)
    assert np.abs(crop_rgb(e) - cv2_crop(record.image_path, m)).mean() < 2.0
    joints = record.joints @ m[:, :2].T + m[:, 2]
    visibility = record.visibility
    if e["flipped"]:
        order = np.arange(17)
        for a, b in spec.flip_pairs:
            order[a], order[b] = b, a
        joints, visibility = joints[order], visibility[order]
    maps, weights = reference_targets(joints, visibility, INPUT, HEATMAP, 2.0)
    np.testing.assert_array_equal(e["target_weight"], weights)
    np.testing.assert_allclose(e["heatmaps"], maps, atol=1e-4)


@pytest.mark.parametrize("opencv_warp", [True, False])
def test_train_crops_with_rotation_and_flip_match_cv2(coco, opencv_warp):
    records, spec, _ = coco
    # Per person, shuffle_buffer=1: element i is record i, checked against cv2.
    out = elements(build(records, spec, train=True, augment=AUG, seed=3, shuffle_buffer=1,
                         drop_remainder=False, opencv_warp=opencv_warp,
                         decode_once_per_image=False))
    assert len(out) == 14
    for record, e in zip(records, out):
        check_train_element(record, e, spec)
    assert 0 < sum(e["flipped"] for e in out) < 14


def _record_of(records, e):
    """The record an element was made from (its image and un-augmented box centre)."""
    (match,) = [r for r in records if r.image_id == e["image_id"]
                and np.allclose(r.center, e["center"])]
    return match


@pytest.mark.parametrize("opencv_warp", [True, False])
def test_decoding_once_per_image_gives_every_person_once_with_correct_crops(coco, opencv_warp):
    records, spec, _ = coco
    out = elements(build(records, spec, train=True, augment=AUG, seed=3, drop_remainder=False,
                         opencv_warp=opencv_warp, decode_once_per_image=True))
    assert len(out) == len(records) == 14
    matched = [_record_of(records, e) for e in out]
    assert len({id(r) for r in matched}) == 14  # each person once per epoch
    for record, e in zip(matched, out):
        check_train_element(record, e, spec)
    assert 0 < sum(e["flipped"] for e in out) < 14
    # The sample shuffle mixes the people of the 4 images: more than 4 runs of one image.
    ids = [e["image_id"] for e in out]
    assert 1 + sum(a != b for a, b in zip(ids, ids[1:])) > 4


# Each convention written out by hand (torch_layouts.md section 5): the network's channel c
# reads RGB channel SOURCE[c] and gets (x - mean[c]) / std[c].
HAND_CONVENTIONS = {
    "keras_caffe": ([2, 1, 0], [103.939, 116.779, 123.68], [1.0, 1.0, 1.0]),
    "torch_bgr": ([2, 1, 0], [0.485 * 255, 0.456 * 255, 0.406 * 255],
                  [0.229 * 255, 0.224 * 255, 0.225 * 255]),
    "torch_rgb": ([0, 1, 2], [0.485 * 255, 0.456 * 255, 0.406 * 255],
                  [0.229 * 255, 0.224 * 255, 0.225 * 255]),
}


@pytest.mark.parametrize("convention", sorted(HAND_CONVENTIONS))
def test_batch_preprocessing_equals_preprocess(convention):
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 6, 3)).astype(np.uint8)
    source, mean, std = HAND_CONVENTIONS[convention]
    want = (images[..., source].astype(np.float64) - mean) / std
    np.testing.assert_allclose(_preprocess_batch(images, convention).numpy(), want, atol=1e-5)
    np.testing.assert_allclose(preprocess(images, convention), want, atol=1e-5)
    np.testing.assert_allclose(preprocess(tf.constant(images), convention).numpy(), want,
                               atol=1e-5)
    np.testing.assert_allclose(unpreprocess(want, convention), images, atol=1e-3)


def test_augmentation_draws_follow_the_recipe():
    ds = tf.data.Dataset.range(2000).map(lambda i: _augmentation(
        tf.stack([tf.constant(5, tf.int64), i]), tf.constant([1.0, 1.0]), AUG, True))
    scale, rot, flip = (np.stack(x) for x in zip(*[[t.numpy() for t in e] for e in ds]))
    assert scale.min() >= 0.7 - 1e-6 and scale.max() <= 1.3 + 1e-6
    assert np.abs(rot).max() <= 80 and abs((rot != 0).mean() - 0.6) < 0.04
    assert abs(flip.mean() - 0.5) < 0.04
    # N(0, 1) * 0.3 clipped at +-1 sigma: std 0.3 * sqrt(0.683 - 2 * 0.242 + 0.317) = 0.2155,
    # and P(draw > 1 sigma) = 0.159 of the draws sit on the upper clip.
    assert abs(scale[:, 0].std() - 0.2155) < 0.01
    assert abs((scale[:, 0] >= 1.3 - 1e-6).mean() - 0.159) < 0.03


def test_training_is_deterministic_per_seed_and_sharded(coco):
    records, spec, _ = coco

    def first_batch(seed):
        ds = build(records, spec, train=True, augment=AUG, seed=seed, batch_size=4)
        return next(iter(ds))

    a, b, c = first_batch(1), first_batch(1), first_batch(2)
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    np.testing.assert_array_equal(a["heatmaps"].numpy(), b["heatmaps"].numpy())
    assert not np.array_equal(a["matrix"].numpy(), c["matrix"].numpy())
    ids = []
    for shard in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=shard,
                                             num_replicas_in_sync=2)
        ds = build(records, spec, batch_size=8, input_context=context)
        batches = list(ds)
        assert batches[0]["image"].shape[0] == 4  # per-replica batch
        ids.append(np.concatenate([e["area"].numpy() for e in batches]))
    assert len(ids[0]) == len(ids[1]) == 7
    np.testing.assert_allclose(np.sort(np.concatenate(ids)), np.sort([r.area for r in records]))


@pytest.mark.parametrize("once_per_image", [False, True])
def test_truncated_jpeg_is_skipped_and_counted(coco, tmp_path, once_per_image):
    records, spec, folder = coco
    for name in os.listdir(folder):
        if name.endswith(".jpg"):
            shutil.copy(os.path.join(folder, name), tmp_path)
    broken = tmp_path / "000000040083.jpg"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    moved = [type(r)(**{**r.__dict__, "image_path": str(tmp_path / os.path.basename(r.image_path))})
             for r in records]
    counter = make_skipped_counter()
    out = elements(build(moved, spec, skipped_counter=counter,
                         decode_once_per_image=once_per_image))
    lost = sum(r.image_id == 40083 for r in records)
    assert lost == 3 and counter.numpy() == lost
    assert len(out) == len(records) - lost and 40083 not in {e["image_id"] for e in out}


def test_missing_image_file_is_reported_before_iteration(coco, tmp_path):
    records, spec, _ = coco
    gone = type(records[0])(**{**records[0].__dict__, "image_path": str(tmp_path / "gone.jpg")})
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        check_image_files(records + [gone])
    with pytest.raises(FileNotFoundError, match="1 of 5 image files are missing.*gone.jpg"):
        build(records + [gone], spec)


def test_decoding_once_per_image_gives_the_per_person_crops(coco):
    records, spec, _ = coco
    # The same crops as the per-person pipeline, person by person (to float rounding: the
    # shared window moves the origin of each crop's matrix).
    plain = elements(build(records, spec))
    grouped = elements(build(records, spec, decode_once_per_image=True))
    assert len(grouped) == len(plain) == 14
    by_record = {id(_record_of(records, e)): e for e in plain}
    for e in grouped:
        np.testing.assert_allclose(e["image"], by_record[id(_record_of(records, e))]["image"],
                                   atol=0.05)


def test_images_come_in_order_of_first_appearance_and_positions_name_the_records(coco):
    records, spec, _ = coco
    # The people of the 4 images interleaved (records: 785 | 40083 x3 | 196141 x5 | 197388 x5).
    reordered = [records[i] for i in (9, 0, 4, 1, 10, 5, 2, 11, 6, 3, 12, 7, 13, 8)]
    first_seen = [197388, 785, 196141, 40083]
    assert list(dict.fromkeys(r.image_id for r in reordered)) == first_seen
    for once in (False, True):
        out = elements(build(reordered, spec, decode_once_per_image=once))
        positions = [int(e["record_position"]) for e in out]
        assert sorted(positions) == list(range(14))
        for e in out:
            record = reordered[int(e["record_position"])]
            assert e["image_id"] == record.image_id
            np.testing.assert_array_equal(e["center"], record.center)
        if once:  # per image: every image's people together, images by first appearance
            ids = [e["image_id"] for e in out]
            assert list(dict.fromkeys(ids)) == first_seen
            assert sum(a != b for a, b in zip(ids, ids[1:])) == len(first_seen) - 1
        else:  # per person: record order
            assert positions == list(range(14))
