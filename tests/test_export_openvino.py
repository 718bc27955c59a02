"""The OpenVINO export and its runner (export/openvino_infer.py), and the bfloat16 SavedModel."""
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from mrpose_tf.evaluation.coco import oks_iou
from mrpose_tf.geometry import box_to_center_scale, person_area
from mrpose_tf.keypoints import COCO
from mrpose_tf.predictor import Predictor, crop_person
from mrpose_tf.preprocessing import preprocess
from tests.conftest import REPO_ROOT, SHARED_DATA
from tests.export_fixtures import (BLOCKED_RUNNER, INPUT_SIZE, BackgroundRun,
                                   coco_sample_people, custom_keypoints, exported_small_model)

# Shares the session's exported model: keep these tests on the export tests' xdist worker.
pytestmark = pytest.mark.xdist_group("export")

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(
    not HAS_OPENVINO, reason="openvino is not installed (pip install mrpose_tf[openvino], or "
                             "the test extra)")
RUNNER = os.path.join(REPO_ROOT, "export", "openvino_infer.py")
# The runner's image: the COCO sample image with the most people.
RUNNER_IMAGE = 3


def _runner_command(model_xml, image_path, boxes, out_json):
    """The runner's command line, in a process where TensorFlow cannot be imported."""
    command = [sys.executable, "-c", BLOCKED_RUNNER, RUNNER, "--model", model_xml,
               "--image", image_path, "--json", out_json, "--precision", "f32"]
    return command + [arg for box in boxes for arg in ("--boxes", ",".join(map(str, box)))]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, config, paths, runner): the session's model and its exports, plus an OpenVINO IR
    and a bfloat16 SavedModel; runner: (the runner's subprocess on the IR, started while the
    bfloat16 export traces, its JSON output path), None without openvino or the sample data."""
    from mrpose_tf.export import export_model

    model, config, paths = exported_small_model()
    output_dir = str(tmp_path_factory.mktemp("openvino_export"))
    paths = dict(paths)
    runner = None
    if HAS_OPENVINO:
        paths.update(export_model(model, config, custom_keypoints(), output_dir, ("openvino",)))
    if HAS_OPENVINO and os.path.isdir(os.path.join(SHARED_DATA, "coco_sample")):
        _, image_path, boxes = coco_sample_people()[RUNNER_IMAGE]
        out_json = os.path.join(output_dir, "runner.json")
        runner = (BackgroundRun(_runner_command(paths["openvino"], image_path, boxes, out_json)),
                  out_json)
    paths.update(export_model(model, config, custom_keypoints(), output_dir,
                              ("saved_model_bf16",)))
    return model, config, paths, runner


def _sample_crops(input_preprocessing, people=None):
    """(N, H, W, 3) float32 preprocessed crops of the COCO sample people (first ``people``)."""
    crops = []
    for image, _, boxes in coco_sample_people():
        centers, scales = box_to_center_scale(boxes, INPUT_SIZE[1] / INPUT_SIZE[0])
        crops += [crop_person(image, c, s, INPUT_SIZE) for c, s in zip(centers, scales)]
    return np.asarray(preprocess(np.stack(crops[:people]), input_preprocessing))


@needs_openvino
def test_openvino_fp32_heatmaps_equal_keras_on_coco_sample_crops(exported, coco_sample_dir):
    import openvino as ov

    from mrpose_tf.export.openvino import compile_openvino, run_openvino

    model, config, paths, _ = exported
    ir = ov.Core().read_model(paths["openvino"])
    assert [p.get_any_name() for p in ir.inputs] == ["image"]
    assert [p.get_any_name() for p in ir.outputs] == ["heatmaps"]
    assert str(ir.inputs[0].get_partial_shape()) == f"[?,{INPUT_SIZE[0]},{INPUT_SIZE[1]},3]"
    # The sub-pixel form (plain convolutions and a depth-to-space) in place of the transposed
    # convolutions.
    types = {op.get_type_name() for op in ir.get_ops()}
    assert "ConvolutionBackpropData" not in types and "DepthToSpace" in types
    # Float32 weights: no f16 constants (ov.save_model's default would compress them).
    assert not any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16
                   for op in ir.get_ops())
    crops = _sample_crops(config.model.input_preprocessing)
    assert len(crops) == 14
    expected = model.predict_on_batch(crops)
    got = run_openvino(compile_openvino(paths["openvino"], precision="f32"), crops)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4 * (expected.max() - expected.min())


@needs_openvino
def test_openvino_folder_carries_the_keypoint_set_and_export_info(exported):
    from mrpose_tf.keypoints import load_keypoint_set

    _, _, paths, _ = exported
    folder = os.path.dirname(paths["openvino"])
    assert sorted(os.listdir(folder)) == ["export_info.json", "keypoints.json", "model.bin",
                                          "model.xml"]
    assert load_keypoint_set(folder) == custom_keypoints()
    with open(os.path.join(folder, "export_info.json")) as f:
        info = json.load(f)
    assert info["input_size"] == list(INPUT_SIZE) and info["input_preprocessing"] == "torch_bgr"


@needs_openvino
def test_openvino_runner_without_tensorflow_matches_saved_model_keypoints(exported,
                                                                         coco_sample_dir):
    from mrpose_tf.export.openvino import compile_openvino, run_openvino

    model, config, paths, (runner, out_json) = exported
    image, _, boxes = coco_sample_people()[RUNNER_IMAGE]
    loaded = tf.saved_model.load(paths["saved_model"])
    reference = loaded.signatures["keypoints"](image=tf.constant(image), boxes=tf.constant(boxes))
    runner.stdout  # waits; raises with the runner's stderr if it failed
    with open(out_json) as f:
        result = json.load(f)
    keypoints = np.asarray(result["keypoints"])
    assert keypoints.shape == (len(boxes), 17, 2) and len(boxes) >= 5
    assert np.abs(keypoints - reference["keypoints"].numpy()).max() <= 0.5
    # The runner's own pipeline is the Predictor's on the same IR (OpenCV crops both), with
    # the export's keypoint set for the flip test.
    compiled = compile_openvino(paths["openvino"], precision="f32")
    predictor = Predictor(lambda crops: run_openvino(compiled, crops), INPUT_SIZE,
                          custom_keypoints(), input_preprocessing=config.model.input_preprocessing)
    expected, expected_scores = predictor(image, boxes)
    np.testing.assert_allclose(keypoints, expected, atol=1e-3)
    np.testing.assert_allclose(result["scores"], expected_scores, rtol=1e-3, atol=1e-6)


def _graph_dtypes(concrete_function, op_type):
    """The dtypes (attr T) of every ``op_type`` node in a concrete function and its callees."""
    graph_def = concrete_function.graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return {tf.dtypes.as_dtype(n.attr["T"].type) for n in nodes if n.op == op_type}


def test_saved_model_bf16_computes_in_bfloat16_with_float32_ends(exported, coco_sample_dir):
    model, config, paths, _ = exported
    loaded = tf.saved_model.load(paths["saved_model_bf16"])
    signature = loaded.signatures["heatmaps_preprocessed"]
    assert _graph_dtypes(signature, "Conv2D") == {tf.bfloat16}
    assert signature.structured_input_signature[1]["image"].dtype == tf.float32
    assert signature.structured_outputs["heatmaps"].dtype == tf.float32
    with open(os.path.join(paths["saved_model_bf16"], "assets.extra", "export_info.json")) as f:
        assert json.load(f)["compute_dtype"] == "bfloat16"
    crops = _sample_crops(config.model.input_preprocessing, people=4)
    expected = model.predict_on_batch(crops)
    error = np.abs(signature(image=tf.constant(crops))["heatmaps"].numpy() - expected).max()
    # bfloat16 keeps 8 bits of mantissa: far from float32's rounding, within a few percent.
    assert 1e-3 < error / (expected.max() - expected.min()) < 0.05


def test_saved_model_bf16_keypoints_match_float32_on_coco_sample_people(exported,
                                                                        coco_sample_dir):
    # Mean OKS of the bfloat16 keypoints against the float32 SavedModel's (the reference).
    _, _, paths, _ = exported
    fp32 = tf.saved_model.load(paths["saved_model"]).signatures["keypoints"]
    bf16 = tf.saved_model.load(paths["saved_model_bf16"]).signatures["keypoints"]
    oks = []
    for image, _, boxes in coco_sample_people()[2:]:
        inputs = dict(image=tf.constant(image), boxes=tf.constant(boxes))
        reference, got = fp32(**inputs), bf16(**inputs)
        assert got["keypoints"].dtype == tf.float32 and got["scores"].dtype == tf.float32
        _, scales = box_to_center_scale(boxes, INPUT_SIZE[1] / INPUT_SIZE[0])
        for a, b, scale in zip(reference["keypoints"].numpy(), got["keypoints"].numpy(),
                               scales):
            area = float(person_area(scale))
            with_scores = [np.concatenate([k, np.ones((17, 1))], axis=1) for k in (a, b)]
            oks.append(oks_iou(with_scores[0], with_scores[1][None], area, [area],
                               custom_keypoints().sigmas)[0])
    print(f"bfloat16 against float32: mean OKS {np.mean(oks):.4f} over {len(oks)} people")
    # This random-weight network's heatmaps have several near-equal peaks (the top two 5% of
    # the range apart on average), so bfloat16 rounding moves some argmaxes far (0.95
    # measured here); a trained network's single clear peaks are the 0.99 case.
    assert len(oks) == 10 and np.mean(oks) >= 0.9 and np.median(oks) >= 0.99


def test_compare_bf16_fp32_is_one_for_identical_models(exported, coco_sample_dir):
    from mrpose_tf.export import compare_bf16_fp32

    _, config, paths, _ = exported
    same = compare_bf16_fp32(paths["saved_model"], paths["saved_model"], config,
                             custom_keypoints(), max_people=3)
    assert same["people"] == 3 and same["mean_oks"] == pytest.approx(1.0)
    assert same["ap_fp32"] == same["ap_bf16"] is not None
    # The bfloat16 SavedModel moves them, a little (the bound of the test above).
    moved = compare_bf16_fp32(paths["saved_model"], paths["saved_model_bf16"], config,
                              custom_keypoints(), max_people=3)
    assert moved["people"] == 3 and 0.9 <= moved["mean_oks"] < 1.0


def test_openvino_export_without_openvino_names_the_extra(monkeypatch, tmp_path):
    from mrpose_tf.export import export_model
    from mrpose_tf.export.openvino import require_openvino

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(ImportError, match=r"pip install mrpose_tf\[openvino\]"):
        require_openvino()
    model, config, _ = exported_small_model()
    with pytest.raises(ImportError, match=r"mrpose_tf\[openvino\]"):
        export_model(model, config, COCO, str(tmp_path), ("saved_model", "openvino"))
    assert os.listdir(tmp_path) == []  # checked before any other format is written
