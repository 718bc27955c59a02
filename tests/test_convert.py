"""PyTorch checkpoints -> runs: the converted networks equal PyTorch references on real crops.

The references are the authors' networks written in PyTorch from the checkpoint layouts
(tests/torch_reference.py), with seeded weights and BatchNorm statistics, saved in every
file layout the converter reads. Each is converted into a run directory and run through the
whole path: image file -> box -> crop -> the run's preprocessing -> model (the Predictor).
"""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the conversion tests need torch (the test extra)")

from mrpose_tf.config import paper_config  # noqa: E402
from mrpose_tf.convert import ConversionError, convert_checkpoint, detect_source  # noqa: E402
from mrpose_tf.geometry import box_to_center_scale, get_affine_transform  # noqa: E402
from tests.conftest import REPO_ROOT, shared_data_path  # noqa: E402
from tests.torch_reference import crops_tensor, seeded_pose_net  # noqa: E402

INPUT = (128, 96)  # small crops: the same path as 256x192, a quarter of the work
LAYOUTS = ("plain", "module", "training", "legacy", "mmpose_0x", "mmpose_1x")


def _config(arch, depth=50, num_joints=17):
    config = paper_config("coco", arch, f"resnet{depth}", (256, 192))
    config.model.input_size, config.model.heatmap_size = INPUT, (INPUT[0] // 4, INPUT[1] // 4)
    config.model.num_joints = num_joints
    config.dataset.root = shared_data_path("coco_sample")
    config.dataset.val_annotations, config.dataset.val_images = "test_coco.json", "."
    config.test.use_gt_boxes, config.test.batch_size = True, 16
    return config


def save_in_layout(net, path, layout):
    """``net``'s state dict as one of the sources' files (torch_layouts.md section 1)."""
    state = net.state_dict()
    if layout == "module":        # SimMRPose's released MR models (DataParallel)
        state = {f"module.{k}": v for k, v in state.items()}
    elif layout == "training":    # the authors' checkpoint.pth.tar
        state = {"epoch": 140, "model": ("pose_resnet", "x"), "perf": np.float64(0.71),
                 "best_perf": np.float64(0.72), "best_epoch": 139, "optimizer": {},
                 "state_dict": {f"module.{k}": v for k, v in state.items()}}
    elif layout == "legacy":      # SimpleBaseline's releases: torch 0.4, no num_batches_tracked
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    elif layout in ("mmpose_0x", "mmpose_1x"):
        head = "keypoint_head." if layout == "mmpose_0x" else "head."
        state = {"meta": {"mmpose_version": layout},
                 "state_dict": {(head if k.startswith(("deconv_layers", "final_layer"))
                                 else "backbone.") + k: v for k, v in state.items()}}
    torch.save(state, path, _use_new_zipfile_serialization=layout != "legacy")
    return path


def _people():
    """(image BGR uint8, boxes (M, 4)) of the 4 COCO sample images, ground-truth boxes."""
    root = shared_data_path("coco_sample")
    with open(os.path.join(root, "test_coco.json")) as f:
        data = json.load(f)
    out = []
    for image in data["images"]:
        boxes = [a["bbox"] for a in data["annotations"] if a["image_id"] == image["id"]]
        out.append((cv2.imread(os.path.join(root, image["file_name"])),
                    np.asarray(boxes, np.float64).reshape(-1, 4)))
    return out


def reference_heatmaps(net, people, convention):
    """The authors' inference path in PyTorch: BGR image, _box2cs, warpAffine, normalise,
    the network. (M, h, w, K) numpy."""
    crops = []
    for image_bgr, boxes in people:
        centers, scales = box_to_center_scale(boxes, INPUT[1] / INPUT[0])
        crops += [cv2.warpAffine(image_bgr, get_affine_transform(c, s, 0.0, INPUT),
                                 (INPUT[1], INPUT[0]), flags=cv2.INTER_LINEAR)
                  for c, s in zip(centers, scales)]
    with torch.no_grad():  # one batch of every person (eval mode: the same per crop)
        return net(crops_tensor(np.stack(crops), convention)).numpy().transpose(0, 2, 3, 1)


def converted_heatmaps(model, workdir, people):
    """The Predictor's heatmaps (no flip test) with the run's keypoint set and input
    preprocessing; ``model`` is the converted network (checkpoint round trips: the export
    and evaluation tests)."""
    from mrpose_tf.checkpoints import read_run_config, run_keypoint_set
    from mrpose_tf.predictor import Predictor

    config = read_run_config(workdir)
    # The model called eagerly: four batch sizes would cost two graph traces per network.
    predictor = Predictor(lambda crops: model(crops, training=False), INPUT,
                          run_keypoint_set(workdir, config), flip_test=False,
                          input_preprocessing=config.model.input_preprocessing)
    return np.concatenate([predictor.predict(cv2.cvtColor(image, cv2.COLOR_BGR2RGB),
                                             boxes)["heatmaps"] for image, boxes in people])


# Every architecture on ResNet-50 in both styles and one on ResNet-101; the file layouts
# take turns, MMPose's with SimpleBaseline (the only network MMPose has).
CASES = [(arch, 50, style) for arch in ("simple_baseline", "mrheatnet1", "mrheatnet2",
                                         "mrfeanet1", "mrfeanet2")
         for style in ("pytorch", "caffe")] + [("mrfeanet2", 101, "pytorch")]
CASE_LAYOUTS = ["mmpose_0x", "mmpose_1x", "module", "training", "legacy", "plain", "training",
                "module", "plain", "legacy", "module"]


@pytest.mark.parametrize("case,layout", list(zip(CASES, CASE_LAYOUTS)),
                         ids=[f"{a}-r{d}-{s}-{layout}" for (a, d, s), layout
                              in zip(CASES, CASE_LAYOUTS)])
def test_converted_network_equals_the_pytorch_reference_on_real_crops(case, layout, tmp_path):
    arch, depth, style = case
    net = seeded_pose_net(arch, depth, style, seed=depth + len(arch))
    path = save_in_layout(net, str(tmp_path / "model.pth.tar"), layout)
    workdir = str(tmp_path / "run")
    model = convert_checkpoint(path, _config(arch, depth), workdir, style=style,
                               log=lambda line: None)
    assert sorted(os.listdir(workdir)) == ["checkpoints", "config.json", "conversion.json",
                                           "keypoints.json"]
    conversion = json.load(open(os.path.join(workdir, "conversion.json")))
    convention = "torch_rgb" if layout.startswith("mmpose") else "torch_bgr"
    assert conversion["input_preprocessing"] == convention
    people = _people()
    want = reference_heatmaps(net, people, convention)
    got = converted_heatmaps(model, workdir, people)
    assert got.shape == want.shape == (14, INPUT[0] // 4, INPUT[1] // 4, 17)
    scale = np.abs(want).max()
    assert scale > 0.1  # heatmaps far from zero: the comparison can fail
    error = np.abs(got - want).max() / scale
    print(f"{arch} r{depth} {style} {layout}: max |heatmap difference| {error:.2e} of the "
          f"largest magnitude {scale:.3g}")
    assert error <= 1e-4
    # Decoded keypoints agree where the peak is clear (a margin over the runner-up pixel).
    from mrpose_tf.codec import heatmap_argmax

    flat = want.reshape(len(want), -1, want.shape[-1])
    top2 = np.sort(flat, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-3 * scale
    np.testing.assert_array_equal(heatmap_argmax(got)[0][clear], heatmap_argmax(want)[0][clear])
    assert clear.mean() > 0.5


def test_the_other_style_gives_other_heatmaps(tmp_path):
    """pytorch and caffe files have the same keys: converted with the wrong style, the same
    file gives other heatmaps (the style is what --style is for)."""
    net = seeded_pose_net("simple_baseline", 50, "caffe", seed=3)
    path = save_in_layout(net, str(tmp_path / "caffe.pth"), "plain")
    model = convert_checkpoint(path, _config("simple_baseline"), str(tmp_path / "wrong"),
                               style="pytorch", log=lambda line: None)
    people = _people()[:1]
    want = reference_heatmaps(net, people, "torch_bgr")
    got = converted_heatmaps(model, str(tmp_path / "wrong"), people)
    assert np.abs(got - want).max() > 0.05 * np.abs(want).max()


def test_source_detection_strips_each_sources_prefixes():
    tensor = np.zeros(1)
    plain = {"conv1.weight": tensor, "deconv_layers.0.weight": tensor,
             "final_layer.bias": tensor}
    assert detect_source(plain) == ("simmrpose", plain)
    assert detect_source({f"module.{k}": v for k, v in plain.items()}) == ("simmrpose", plain)
    for prefix, source in (("keypoint_head.", "mmpose_0x"), ("head.", "mmpose_1x")):
        mm = {"backbone.conv1.weight": tensor, f"{prefix}deconv_layers.0.weight": tensor,
              f"{prefix}final_layer.bias": tensor}
        assert detect_source(mm) == (source, plain)
    assert detect_source({"conv1.weight": tensor, "fc.weight": tensor})[0] == "torchvision"


@pytest.fixture(scope="module")
def simple_baseline_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    net = seeded_pose_net("simple_baseline", 50, "pytorch", seed=5)
    return net, save_in_layout(net, str(folder / "sb50.pth"), "plain"), folder


@pytest.mark.parametrize("arch,depth,num_joints,words", [
    ("mrfeanet2", 50, 17, r"missing: deconv11\.0\.weight.*unexpected: deconv_layers\.0\.weight"),
    ("simple_baseline", 50, 16, r"shape: final_layer\.weight \(17, 256, 1, 1\), "
                                r"final_layer\.bias \(17,\) for layer final"),
    ("simple_baseline", 101, 17, r"missing: layer3\.6\.conv1\.weight"),
])
def test_a_file_of_another_network_is_refused_naming_the_keys(simple_baseline_file, tmp_path,
                                                             arch, depth, num_joints, words):
    _, path, _ = simple_baseline_file
    workdir = tmp_path / "out"
    with pytest.raises(ConversionError, match=words) as error:
        convert_checkpoint(path, _config(arch, depth, num_joints), str(workdir),
                           log=lambda line: None)
    assert "sb50.pth" in str(error.value)
    assert not workdir.exists() and not list(tmp_path.glob("out.converting-*"))


def test_files_that_are_no_checkpoint_are_refused_naming_the_file(simple_baseline_file,
                                                                 tmp_path):
    _, path, _ = simple_baseline_file
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(path, "rb").read()[:100000])
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), str(tensor_only))
    for bad, words in ((truncated, "truncated.pth is not a readable PyTorch checkpoint"),
                       (text, "notes.pth is not a readable PyTorch checkpoint"),
                       (tensor_only, "tensor.pth holds no state dict")):
        with pytest.raises(ConversionError, match=words):
            convert_checkpoint(str(bad), _config("simple_baseline"), str(tmp_path / "out"),
                               log=lambda line: None)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        convert_checkpoint(str(tmp_path / "missing.pth"), _config("simple_baseline"),
                           str(tmp_path / "out"), log=lambda line: None)
    assert not (tmp_path / "out").exists()
    # A pickle that would run code is refused, never executed (weights_only loading).
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": os.system}, str(evil))
    with pytest.raises(ConversionError, match="evil.pth is not a readable"):
        convert_checkpoint(str(evil), _config("simple_baseline"), str(tmp_path / "out"),
                           log=lambda line: None)


def test_script_convert_then_evaluate_in_fresh_processes_gives_the_references_ap(
        simple_baseline_file, tmp_path):
    from mrpose_tf.codec import decode_heatmaps
    from mrpose_tf.data.pipeline import read_split
    from mrpose_tf.evaluation import evaluate_coco
    from mrpose_tf.geometry import person_area
    from mrpose_tf.keypoints import COCO

    net, path, folder = simple_baseline_file
    config_file = os.path.join(REPO_ROOT, "configs", "coco", "simple_baseline_resnet50_256x192.py")
    workdir = tmp_path / "run"
    root = shared_data_path("coco_sample")
    overrides = [f"--config.model.input_size=({INPUT[0]},{INPUT[1]})",
                 f"--config.model.heatmap_size=({INPUT[0] // 4},{INPUT[1] // 4})",
                 f"--config.dataset.root={root}", "--config.dataset.val_annotations=test_coco.json",
                 "--config.dataset.val_images=.", "--config.test.use_gt_boxes=True"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    convert = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "convert_weights.py"),
                              f"--checkpoint={path}", f"--config={config_file}",
                              f"--workdir={workdir}", *overrides],
                             capture_output=True, text=True, env=env, timeout=300)
    assert convert.returncode == 0, convert.stderr[-3000:]
    evaluate = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "evaluate.py"),
                               f"--checkpoint={workdir}", f"--output_dir={tmp_path / 'eval'}"],
                              capture_output=True, text=True, env=env, timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    got = json.load(open(tmp_path / "eval" / "metrics.json"))["metrics"]
    # The reference network's own predictions (with the paper's flip test) through the same
    # evaluator: the AP must match.
    config = _config("simple_baseline")
    records, _ = read_split(config, "val")
    image_cache, people = {}, []
    for record in records:
        image = image_cache.setdefault(record.image_path, cv2.imread(record.image_path))
        crop = cv2.warpAffine(image, get_affine_transform(record.center, record.scale, 0.0,
                                                          INPUT), (INPUT[1], INPUT[0]),
                              flags=cv2.INTER_LINEAR)
        with torch.no_grad():
            x = crops_tensor(crop[None])
            plain = net(x).numpy().transpose(0, 2, 3, 1)
            mirrored = net(torch.flip(x, [3])).numpy().transpose(0, 2, 3, 1)
        from mrpose_tf.codec import fuse_flip_test

        heatmaps = fuse_flip_test(plain, mirrored, COCO.flip_pairs, True)
        coords, scores = decode_heatmaps(heatmaps, record.center[None], record.scale[None])
        people.append({"image_id": record.image_id, "box_score": 1.0,
                       "area": float(person_area(record.scale)),
                       "keypoints": np.concatenate([coords[0], scores[0][:, None]], -1)})
    want = evaluate_coco(people, os.path.join(root, "test_coco.json"))
    for name in ("AP", "AP .5", "AR"):
        assert abs(got[name] - want[name]) <= 1e-3, (name, got[name], want[name])
    # The seeded network scores near AP 0 on the sample, so the keypoints themselves are
    # compared too: each result against the nearest reference person of its image.
    with open(tmp_path / "eval" / "keypoints_results.json") as f:
        results = json.load(f)
    assert len(results) == len(people)
    distances = []
    for result in results:
        mine = np.asarray(result["keypoints"], np.float64).reshape(-1, 3)[:, :2]
        distances.append(min((np.linalg.norm(mine - p["keypoints"][:, :2], axis=1)
                              for p in people if p["image_id"] == result["image_id"]),
                             key=np.max))
    distances = np.concatenate(distances)
    print(f"AP {got['AP']:.4f} / reference {want['AP']:.4f}; keypoints within 0.5 px: "
          f"{np.mean(distances < 0.5):.3f}, median distance {np.median(distances):.2e} px")
    assert np.mean(distances < 0.5) >= 0.95
    results = json.load(open(tmp_path / "eval" / "keypoints_results.json"))
    assert len(results) == len(records)


def test_training_starts_from_a_torchvision_imagenet_file(tmp_path):
    """torchvision's classification layout (the paper's starting point): the backbone's first
    and last convolutions equal the file's before the first step; fc is dropped."""
    from mrpose_tf.training import Trainer, make_strategy
    from tests.training_worker import tiny_config

    net = seeded_pose_net("simple_baseline", 50, "pytorch", seed=7)
    state = {k: v for k, v in net.state_dict().items()
             if not k.startswith(("deconv_layers", "final_layer"))}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = str(tmp_path / "resnet50-19c8e357.pth")
    torch.save(state, path, _use_new_zipfile_serialization=False)
    config = tiny_config(max_steps=2)
    config.model.backbone_style = "pytorch"
    config.model.backbone_weights = path
    trainer = Trainer(config, str(tmp_path / "run"), make_strategy("one_device"),
                      steps_per_epoch=2, log=lambda line: None)
    first = trainer.model.get_layer("conv1_conv").kernel.numpy()
    last = trainer.model.get_layer("conv5_block3_3_conv").kernel.numpy()
    np.testing.assert_array_equal(first, state["conv1.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(last, state["layer4.2.conv3.weight"].numpy()
                                  .transpose(2, 3, 1, 0))
    bn = trainer.model.get_layer("conv2_block1_0_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(),
                                  state["layer1.0.downsample.1.running_var"].numpy())
    config.model.backbone_weights = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        Trainer(config, str(tmp_path / "run2"), make_strategy("one_device"), steps_per_epoch=2,
                log=lambda line: None)
