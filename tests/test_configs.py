"""Paper configs: one per experiment, generated from one recipe, loadable by absl flags."""
import os
import subprocess
import sys

import pytest

from mrpose_tf.config import all_experiments, config_name, paper_config
from scripts.make_configs import render
from tests.conftest import REPO_ROOT


def test_every_paper_experiment_has_an_up_to_date_config_file():
    experiments = all_experiments()
    assert len(experiments) == 2 * 2 * 5 * 3  # datasets x input sizes x archs x backbones
    for exp in experiments:
        path = os.path.join(REPO_ROOT, "configs", config_name(*exp) + ".py")
        with open(path, encoding="utf-8") as f:
            assert f.read() == render(*exp), f"{path} is stale: run scripts/make_configs.py"


_PRINT_CONFIG = """
from absl import app, flags
from ml_collections import config_flags
config_flags.DEFINE_config_file("config")
def main(_):
    c = flags.FLAGS.config
    print(c.model.arch, c.model.backbone, c.train.batch_size, c.model.backbone_weights)
app.run(main)
"""


def test_config_file_path_loads_and_flags_override_fields():
    path = os.path.join("configs", "coco", "mrfeanet2_resnet50_256x192.py")
    out = subprocess.run(
        [sys.executable, "-c", _PRINT_CONFIG, f"--config={path}",
         "--config.train.batch_size=16", "--config.model.backbone_weights=None"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["mrfeanet2", "resnet50", "16", "None"]


@pytest.mark.parametrize("dataset, size, heatmap, lr_steps, epochs, sf, rf, k", [
    ("coco", (256, 192), (64, 48), (120, 150), 170, 0.3, 40.0, 17),
    ("coco", (384, 288), (96, 72), (120, 150), 170, 0.3, 40.0, 17),
    ("mpii", (256, 256), (64, 64), (90, 120), 140, 0.25, 30.0, 16),
    ("mpii", (384, 384), (96, 96), (90, 120), 140, 0.25, 30.0, 16),
])
def test_recipe_follows_the_paper(dataset, size, heatmap, lr_steps, epochs, sf, rf, k):
    c = paper_config(dataset, "mrfeanet1", "resnet101", size)
    assert tuple(c.model.input_size) == size and tuple(c.model.heatmap_size) == heatmap
    assert tuple(c.train.lr_steps) == lr_steps and c.train.epochs == epochs
    assert c.train.optimizer == "adam" and c.train.learning_rate == 1e-3
    assert c.train.lr_factor == 0.1 and c.train.batch_size == 64
    assert c.augment.scale_factor == sf and c.augment.rotation_factor == rf
    assert c.augment.rotation_prob == 0.6 and c.augment.flip_prob == 0.5
    assert c.model.num_joints == k and c.model.sigma == 2.0
    assert c.train.foreground_weight == 0.0  # the paper's plain JointsMSE
    assert c.test.flip_test and c.test.oks_thre == 0.9 and c.test.in_vis_thre == 0.2


def test_unknown_names_in_paper_config_list_the_choices():
    with pytest.raises(ValueError, match="mrfeanet2"):
        paper_config("coco", "mrfeanet3", "resnet50", (256, 192))
    with pytest.raises(ValueError, match="mpii"):
        paper_config("lsp", "mrfeanet1", "resnet50", (256, 192))
    with pytest.raises(ValueError, match="256, 192"):
        paper_config("coco", "mrfeanet1", "resnet50", (256, 256))
