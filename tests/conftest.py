import importlib.util
import os

import pytest

from tests import stand_in

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO_ROOT, "..", "shared", "data")


def load_kit():
    """export/tflite_infer.py (the deployment kit, not a package module) as a module."""
    spec = importlib.util.spec_from_file_location(
        "tflite_infer", os.path.join(REPO_ROOT, "export", "tflite_infer.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_data_path(*parts):
    """Path under ../shared/data, or skip the test when the sample data is absent."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"real sample data not found at {path} (../shared/data beside the repo)")
    return path


@pytest.fixture
def coco_sample_dir():
    return shared_data_path("coco_sample")


@pytest.fixture
def mpii_sample_dir():
    return shared_data_path("mpii_sample")


@pytest.fixture
def small_network(monkeypatch):
    """SimpleBaseline's head over a two-layer stand-in for the ResNet (build_model's backbone),
    for tests of the plumbing around a network; MRPOSE_TEST_RESNET=1 keeps the ResNet-50."""
    if stand_in.use_stand_in():
        monkeypatch.setattr("mrpose_tf.models.build_backbone", stand_in.stand_in_backbone)
