"""scripts/replay_on_jax.py: the dumped training stream gives back the pipeline's batches, the
replay's BatchNorm is the trainer's rule, the scoring equals the direct evaluation, and the
training helpers the replay imports load without TensorFlow."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

from scripts import replay_on_jax as replay


@pytest.fixture(scope="module")
def dumped(tmp_path_factory):
    """The quickstart shrunk (8 training images, batch 4, 3 steps), dumped for seed 1."""
    import mrpose_tf

    tmp = tmp_path_factory.mktemp("replay")
    config = mrpose_tf.load_config(
        os.path.join(REPO_ROOT, "configs", "quickstart.py"),
        {"dataset.root": str(tmp / "synthetic"), "dataset.synthetic.num_train": 8,
         "dataset.synthetic.num_val": 3, "train.batch_size": 4, "train.max_steps": 3,
         "test.batch_size": 4})
    out = str(tmp / "dump")
    replay.dump(config, ["1"], out, check_crops=12)
    return config, out


def test_the_dumped_stream_gives_back_the_batches_mrpose_train_trains_on(dumped, tmp_path,
                                                                       small_network,
                                                                       monkeypatch):
    """The batches the Trainer's train_step receives in a real ``mrpose_tf.train`` run of the
    same config (recorded), against the dump: positions, targets rebuilt from their factors
    and weights exactly, the crops re-warped as stage 2 warps them to a few values."""
    import mrpose_tf
    from mrpose_tf.codec import heatmaps_from_profiles
    from mrpose_tf.data.pipeline import read_split
    from mrpose_tf.preprocessing import preprocess
    from mrpose_tf.training.trainer import Trainer

    config, out = dumped
    seeded = config.copy_and_resolve_references()
    with seeded.unlocked():
        seeded.train.seed = 1
        seeded.train.strategy = "one_device"
        seeded.train.precision = "float32"
        seeded.finish.update(evaluate=False, export_formats="", demo_images=0)
    recorded, train_step = [], Trainer.train_step

    def recording_step(self, batch):
        recorded.append({k: np.asarray(batch[k]) for k in
                         ("record_position", "heatmaps", "target_weight", "image")})
        return train_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", recording_step)
    mrpose_tf.train(seeded, str(tmp_path / "run"), evaluate=False, log=lambda line: None)
    stream = np.load(os.path.join(out, replay.STREAM.format(1)))
    assert len(recorded) == 3 and stream["positions"].shape == (3, 4)
    records, _ = read_split(seeded, "train")
    differing = total = 0
    for step, batch in enumerate(recorded):
        np.testing.assert_array_equal(stream["positions"][step], batch["record_position"])
        np.testing.assert_array_equal(
            heatmaps_from_profiles(stream["rows"][step], stream["cols"][step]), batch["heatmaps"])
        np.testing.assert_array_equal(stream["weights"][step], batch["target_weight"])
        for position, matrix, image in zip(stream["positions"][step], stream["matrices"][step],
                                           batch["image"]):
            crop = preprocess(replay._warp(replay._read(records[position].image_path), matrix,
                                           config.model.input_size),
                              config.model.input_preprocessing)
            differing += int(np.count_nonzero(np.abs(crop - image) > 1e-3))
            total += crop.size
    # The pipeline warps a decoded window, the replay the whole image: OpenCV's fixed-point
    # coordinates then differ by a rounding step at a few pixels.
    assert differing <= 1e-3 * total
    with open(os.path.join(out, "dump.json")) as f:
        checks = json.load(f)["seed1"]
    assert checks["steps"] == 3
    assert checks["crop_values_differing"] <= 1e-3 * checks["crop_values_compared"]


def test_scoring_replayed_heatmaps_equals_evaluating_the_model(dumped, tmp_path, small_network):
    """Stage 3 on a model's heatmaps of the dumped validation crops: the same metrics as the
    report's evaluation of that model (mrpose_tf.training.report.validation_metrics)."""
    import keras

    from mrpose_tf.config import model_from_config
    from mrpose_tf.data.pipeline import read_split
    from mrpose_tf.evaluation.runner import predict_records
    from mrpose_tf.training.report import validation_metrics

    config, out = dumped
    keras.utils.set_random_seed(3)
    model = model_from_config(config)
    images = np.load(os.path.join(out, "val.npz"))["images"]
    heatmaps = model.predict_on_batch(images)
    results = tmp_path / "results"
    results.mkdir()
    np.savez_compressed(results / replay.RESULT.format("pytorch"), seed0=heatmaps)
    (results / "runs.json").write_text(json.dumps({
        "device": "test", "keras": keras.__version__, "jax": "-", "runs": [
            {"style": "pytorch", "seed": 0, "steps": 3, "train_seconds": 1.0,
             "images_per_second": 12.0}]}))
    scored = replay.score(out, str(results))["runs"][0]
    val_records, keypoints = read_split(config, "val")
    direct = validation_metrics(predict_records(model, val_records, config, keypoints),
                                val_records, config, keypoints)
    for key in ("AP", "AP .5", "PCK@0.1", "mean_pose_PCK@0.1"):
        assert scored[key] == pytest.approx(direct[key], abs=1e-12)
    with pytest.raises(ValueError, match="differ from the dump"):
        replay._Replayed(images + 1.0, heatmaps)(images[:2])


@pytest.mark.parametrize("fused", [False, True])
def test_the_replays_batch_norm_is_the_trainers_pytorch_rule(fused):
    """TorchRuleBatchNorm (keras.ops) against the trainer's TrainingBatchNormalization and a
    numpy hand computation of PyTorch's update: running var += 0.1 * (unbiased var - running
    var)."""
    from mrpose_tf.training.layers import TrainingBatchNormalization

    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 3, 2, 5)).astype(np.float32)
    ours = replay._torch_rule_batch_norm()(momentum=0.9, epsilon=1e-5)
    trainers = TrainingBatchNormalization(unbiased_running_variance=True, fused=fused,
                                          momentum=0.9, epsilon=1e-5)
    y_ours, y_trainers = ours(x, training=True), trainers(x, training=True)
    np.testing.assert_allclose(y_ours, y_trainers, atol=1e-5)
    flat = x.reshape(-1, 5).astype(np.float64)
    np.testing.assert_allclose(ours.moving_mean.numpy(), 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), 0.9 + 0.1 * flat.var(0, ddof=1),
                               rtol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), trainers.moving_variance.numpy(),
                               rtol=1e-6)


def test_the_training_helpers_the_replay_uses_import_without_tensorflow():
    """Stage 2 runs where TensorFlow is not installed: its imports, with TensorFlow blocked
    (Keras on its torch backend here, as torch is in the test extra and JAX is not)."""
    code = """
import sys
sys.modules['tensorflow'] = None  # as if not installed: importing it raises
import ml_collections
from mrpose_tf.codec import heatmaps_from_profiles
from mrpose_tf.config import input_preprocessing_of, load_config, model_from_config
from mrpose_tf.losses import joints_mse
from mrpose_tf.preprocessing import preprocess
from mrpose_tf.training.optimizer import Adam, make_optimizer
from mrpose_tf.training.schedule import learning_rate_schedule
train = ml_collections.ConfigDict(dict(optimizer='adam', learning_rate=1e-3, lr_steps=(2,),
                                       lr_factor=0.1, epochs=3))
optimizer = make_optimizer(train, learning_rate_schedule(train, 5))
print(type(optimizer).__name__, f"{float(optimizer.learning_rate):.6g}", sys.modules['tensorflow'])
"""
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=REPO_ROOT)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=REPO_ROOT, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["Adam", "0.001", "None"]
