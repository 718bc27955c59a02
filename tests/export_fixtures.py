"""One small exported model shared by tests/test_export.py and tests/test_tflite_infer.py."""
import atexit
import functools
import json
import os
import shutil
import subprocess
import tempfile

import cv2
import keras
import numpy as np

from tests.conftest import SHARED_DATA

INPUT_SIZE = (64, 64)

# Runs a script with 'tensorflow' and 'mrpose_tf' made unimportable.
BLOCKED_RUNNER = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'mrpose_tf', 'keras'):
            raise ImportError('blocked in this test: ' + name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def custom_keypoints():
    """17 keypoints whose left/right pairs and skeleton differ from COCO's, with COCO's
    sigmas: an export must carry this set to every stage, never COCO's by joint count."""
    from mrpose_tf.keypoints import COCO_SIGMAS, KeypointSpec

    return KeypointSpec("custom17", tuple(f"point_{i}" for i in range(17)),
                        ((0, 3), (1, 5), (2, 8), (4, 7), (9, 16), (10, 13)),
                        ((0, 1), (1, 2), (3, 4), (11, 12)), COCO_SIGMAS)


def small_config():
    """COCO keypoints (K=17, flip test on) at a tiny 64x64 input."""
    from mrpose_tf.config import base_config

    config = base_config()
    config.model.input_size = INPUT_SIZE
    config.model.heatmap_size = (INPUT_SIZE[0] // 4, INPUT_SIZE[1] // 4)
    config.model.backbone_weights = None
    config.dataset.root = os.path.join(SHARED_DATA, "coco_sample")
    config.dataset.val_annotations = "test_coco.json"
    config.dataset.val_images = "."
    config.test.use_gt_boxes = True
    return config


def coco_sample_people():
    """[(image RGB uint8, image path, GT boxes (M, 4) float32)] of the 4 COCO sample images."""
    root = os.path.join(SHARED_DATA, "coco_sample")
    with open(os.path.join(root, "test_coco.json")) as f:
        data = json.load(f)
    out = []
    for entry in data["images"]:
        path = os.path.join(root, entry["file_name"])
        boxes = [a["bbox"] for a in data["annotations"] if a["image_id"] == entry["id"]]
        image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        out.append((image, path, np.asarray(boxes, np.float32).reshape(-1, 4)))
    return out


class BackgroundRun:
    """A subprocess started now and checked later, so that it overlaps with in-process work.

    The export tests spend most of their time in single-threaded TensorFlow work (tracing,
    TFLite conversion); their subprocesses (a fresh TensorFlow import each) run meanwhile on
    the second core. Killed at exit if nobody waited for it.
    """

    def __init__(self, command, cwd=None):
        self.command = command
        self.process = subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        atexit.register(self._stop)

    def _stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @functools.cached_property
    def stdout(self):
        """Waits for the process; its stdout. Raises CalledProcessError (with stderr) if it failed."""
        stdout, stderr = self.process.communicate()
        if self.process.returncode:
            raise subprocess.CalledProcessError(self.process.returncode, self.command,
                                                stdout, stderr)
        return stdout


_EXPORTED = []


def exported_small_model(after_saved_model=None):
    """(model, config, paths): SimpleBaseline-R50 64x64 K=17, converted from a PyTorch
    network of the authors' layout (pytorch-style ResNet, ``torch_bgr`` input; seeded
    weights whose heatmaps have clear, content-dependent peaks): SavedModel, TFLite fp32
    and int8, exported with :func:`custom_keypoints`.

    Built once per test session (cached).

    Args:
      after_saved_model: optional ``fn(model, paths)`` called once the SavedModel is written,
        before the (slower) TFLite conversions, e.g. to start a :class:`BackgroundRun` on it.
    """
    import torch

    from mrpose_tf.checkpoints import read_run_config
    from mrpose_tf.convert import convert_checkpoint
    from mrpose_tf.export import export_model
    from tests.torch_reference import seeded_pose_net

    if _EXPORTED:
        return _EXPORTED[0]
    output_dir = tempfile.mkdtemp(prefix="mrpose_export_test_")
    atexit.register(shutil.rmtree, output_dir, True)
    checkpoint = os.path.join(output_dir, "simple_baseline_r50.pth")
    torch.save(seeded_pose_net("simple_baseline", 50, "pytorch", seed=11).state_dict(),
               checkpoint)
    run = os.path.join(output_dir, "run")
    model = convert_checkpoint(checkpoint, small_config(), run, log=lambda line: None)
    config = read_run_config(run)
    config.export.representative_samples = 14
    calibration = None  # the default: crops of the (sample) validation set
    if not os.path.isdir(config.dataset.root):
        rng = np.random.default_rng(1)
        calibration = rng.normal(0, 1, (8,) + INPUT_SIZE + (3,)).astype(np.float32)
    paths = export_model(model, config, custom_keypoints(), output_dir, ("saved_model",))
    if after_saved_model is not None:
        after_saved_model(model, paths)
    paths.update(export_model(model, config, custom_keypoints(), output_dir,
                              ("tflite_fp32", "tflite_int8"), representative_crops=calibration))
    _EXPORTED.append((model, config, paths))
    return _EXPORTED[0]


def peaked_probe_model(num_joints=17, flip_pairs=(), input_size=INPUT_SIZE):
    """A stand-in pose model whose heatmaps have one clear, content-modulated peak per joint.

    heatmap_k = gaussian(centre_k) * (1 + 0.005 * tanh(content_k / 50)), where content_k is a
    fixed mix of the crop's mean colour. A random-weight network gives nearly flat heatmaps
    whose argmax jumps under sub-grey-level crop differences; this probe keeps every
    keypoint well defined while still depending on the crop. The flip test keeps one peak
    per joint: flip partners sit at mirrored centres (x -> w - x, the mirror plus the
    reference's one-pixel shift), joints without a partner on the mirror axis x = w / 2, and
    the modulation (of the mean colour) is the same for a crop and its mirror image. Centres
    are 0.3 px off the grid (on the axis: in y only), so the quarter-pixel step is clear.
    """
    h, w = input_size[0] // 4, input_size[1] // 4
    if w % 2:
        raise ValueError(f"the probe's mirror axis needs an even heatmap width, got {w}")
    rng = np.random.default_rng(3)
    centres = {k: (w / 2, rng.integers(3, h - 3) + 0.3) for k in range(num_joints)}
    for a, b in flip_pairs:
        centres[a] = (rng.integers(3, w - 3) + 0.3, centres[a][1])
        centres[b] = (w - centres[a][0], centres[a][1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    prior = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0)
                      for cx, cy in (centres[k] for k in range(num_joints))], axis=-1)
    inputs = keras.Input(input_size + (3,), name="image")
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True)(inputs)
    content = keras.layers.Dense(num_joints, name="content")(pooled)
    modulation = 1.0 + 0.005 * keras.ops.tanh(content / 50.0)
    heatmaps = keras.layers.Activation("linear", name="heatmaps")(
        modulation * keras.ops.convert_to_tensor(prior[None].astype(np.float32)))
    return keras.Model(inputs, heatmaps, name="peaked_probe")
