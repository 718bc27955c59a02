"""The trainer: distribution equivalence, multi-worker, resume, NaN stop, schedule, precision.

Tiny inputs (simple_baseline/resnet50, 64x64, global batch 4). Multi-device runs are
subprocesses (tests/training_worker.py) because TF's logical devices must be set before
TF starts.
"""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from mrpose_tf.training import (Trainer, TrainingDiverged, build_training_model,
                                heatmap_pck_counts, learning_rate_schedule, lr_boundaries,
                                make_strategy, read_metrics)
from mrpose_tf.training.inputs import random_examples, tensor_dataset_fn
from mrpose_tf.training.schedule import step_decay

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO_ROOT, "tests", "training_worker.py")
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
from training_worker import GLOBAL_BATCH, HEATMAP, INPUT, tiny_config  # noqa: E402

SUBPROCESS_TIMEOUT = 400


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT, **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def test_lr_schedule_drops_at_the_configured_epochs():
    config = tiny_config(learning_rate=1e-3, lr_steps=(2, 3), lr_factor=0.1)
    schedule = learning_rate_schedule(config.train, steps_per_epoch=5)
    # Hand-worked: epochs 0-1 (steps 0..9) 1e-3, epoch 2 (10..14) 1e-4, then 1e-5.
    expected = [1e-3] * 10 + [1e-4] * 5 + [1e-5] * 5
    got = [float(schedule(step)) for step in range(20)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert lr_boundaries((120, 150), 100) == [12000, 15000]
    assert float(step_decay(0.5, [], 0.1)(10 ** 6)) == 0.5  # never rescaled
    # Keras' PiecewiseConstantDecay moves on at step > b: the first dropped step is b itself.
    assert [float(step_decay(1.0, [3], 0.5)(s)) for s in (2, 3, 4)] == [1.0, 0.5, 0.5]
    for epochs in ((150, 120), (120, 120)):
        with pytest.raises(ValueError, match="increasing"):
            lr_boundaries(epochs, 10)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = tiny_config(learning_rate=2e-3, epochs=4, lr_schedule="cosine", warmup_epochs=1.0)
    schedule = learning_rate_schedule(config.train, steps_per_epoch=5)
    # Hand-worked: 5 warm-up steps 0, 0.4, 0.8, 1.2, 1.6 (x1e-3), then half a cosine period
    # over the remaining 15 steps: 1e-3 * (1 + cos(pi * (s - 5) / 15)); 0 at the run's end.
    expected = [2e-3 * s / 5 for s in range(5)] + [
        1e-3 * (1 + math.cos(math.pi * (s - 5) / 15)) for s in range(5, 21)]
    got = [float(schedule(step)) for step in range(21)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
    assert got[5] == pytest.approx(2e-3) and got[20] == pytest.approx(0.0, abs=1e-9)
    config.train.max_steps = 10  # the decay ends at max_steps when it is set
    assert float(learning_rate_schedule(config.train, 5)(10)) == pytest.approx(0.0, abs=1e-9)
    config.train.warmup_epochs = 2.0  # 10 warm-up steps leave none to decay
    with pytest.raises(ValueError, match="warm-up steps"):
        learning_rate_schedule(config.train, 5)
    config.train.lr_schedule = "linear"
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate_schedule(config.train, 5)


def test_zero_init_residual_option_of_the_training_model():
    config, strategy = tiny_config(), make_strategy("one_device")

    def gammas(model):  # the largest |gamma| of the first block's residual-closing BN per stage
        return [float(np.abs(model.get_layer(f"conv{s}_block1_3_bn").gamma.numpy()).max())
                for s in (2, 3, 4, 5)]

    assert gammas(build_training_model(config, strategy)) == [1.0] * 4
    config.model.zero_init_residual = True
    assert gammas(build_training_model(config, strategy)) == [0.0] * 4
    config.model.backbone_weights = "imagenet"  # refused before anything is downloaded
    with pytest.raises(ValueError, match="zero_init_residual.*imagenet"):
        build_training_model(config, strategy)


def test_heatmap_pck_counts_correct_and_labelled_joints():
    true = np.zeros((1, 20, 20, 4), np.float32)
    pred = np.zeros((1, 20, 20, 4), np.float32)
    true[0, 5, 5, 0], pred[0, 5, 6, 0] = 1, 1      # 1 px off: 1/20 = 0.05 -> correct
    true[0, 5, 5, 1], pred[0, 5, 10, 1] = 1, 1     # 5 px off: 0.25 -> wrong
    true[0, 9, 9, 2], pred[0, 9, 9, 2] = 1, 1      # weight 0 -> not counted
    pred[0, 3, 3, 3] = 1                            # all-zero target -> not counted
    weight = np.array([[1, 1, 0, 1]], np.float32)
    correct, counted = heatmap_pck_counts(pred, true, weight)
    assert (float(correct), float(counted)) == (1.0, 2.0)


def test_one_step_mirrored_on_two_cpus_equals_one_device(tmp_path):
    """Same global batch: same loss, BN statistics, gradients and updated weights.

    With synchronized BatchNorm (the trainer's choice under several replicas) the two
    replicas normalise with the statistics of the whole global batch, as one device does.
    Run in float64 (see tests/training_worker.py): in float32 the BN backward passes of a
    freshly initialised network amplify round-off into gradient differences (percent-level
    in ResNet-50) even between two one-device runs. Adam's first update is
    lr * sign(gradient), so the weights are compared exactly where the gradient is not ~0
    and within 2 lr elsewhere.
    """
    out = str(tmp_path / "compare.npz")
    subprocess.run([sys.executable, WORKER, "compare", out], env=_env(), check=True,
                   timeout=SUBPROCESS_TIMEOUT, capture_output=True)
    result = np.load(out)
    np.testing.assert_allclose(result["loss_two"], result["loss_one"], rtol=1e-12)
    num_weights = len([k for k in result if k.startswith("one_w")])
    # Biases before a BatchNorm have a zero gradient (round-off only): a floor on the scale.
    floor = 1e-6 * max(np.abs(result[k]).max() for k in result if k.startswith("one_m"))
    for i in range(num_weights):
        one, two = result[f"one_w{i}"], result[f"two_w{i}"]
        assert one.dtype == np.float64
        if f"one_m{i}" not in result:  # BatchNorm moving statistics
            np.testing.assert_allclose(two, one, rtol=1e-10, atol=1e-12, err_msg=f"weight {i}")
            continue
        moment_one, moment_two = result[f"one_m{i}"], result[f"two_m{i}"]
        scale = max(np.abs(moment_one).max(), floor)
        np.testing.assert_allclose(moment_two / scale, moment_one / scale, atol=1e-9,
                                   err_msg=f"gradient {i}")
        determined = np.abs(moment_one) > 1e-6 * scale
        np.testing.assert_allclose(two[determined], one[determined], rtol=1e-9, atol=1e-12,
                                   err_msg=f"weight {i}")
        assert np.abs(two - one).max() <= 2e-3 + 1e-9


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_process_multi_worker_ends_with_identical_weights(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = _env(TF_CONFIG=tf_config, WORKDIR=str(tmp_path / "run"))
        processes.append(subprocess.Popen(
            [sys.executable, WORKER, "multi_worker", str(tmp_path / f"worker{index}.npz")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    try:
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        for p in processes:
            if p.poll() is None:  # a worker whose peer never arrived ignores SIGTERM
                p.send_signal(signal.SIGKILL)
                p.wait(30)
    errors = [p.stderr.read().decode()[-2000:] for p in processes]
    assert all(p.returncode == 0 for p in processes), errors
    first, second = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert int(first["step"]) == int(second["step"]) == 2
    assert int(first["replicas"]) == 2
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-2")


@pytest.fixture(scope="module")
def one_device():
    return make_strategy("one_device")


def _weights(model):
    return [np.array(v.numpy()) for v in model.weights]


def test_resume_continues_at_saved_step_with_same_weights_then_nan_stops(tmp_path, one_device,
                                                                        small_network):
    """An interrupted run resumes mid-epoch at its checkpoint and ends where an
    uninterrupted run ends; then a NaN loss stops it without touching the checkpoints."""
    config = tiny_config(max_steps=3, checkpoint_every_steps=1, keep_checkpoints=5)
    data = tensor_dataset_fn(random_examples(3 * GLOBAL_BATCH, INPUT, HEATMAP, 17),
                             GLOBAL_BATCH, shuffle_seed=0)
    workdir = str(tmp_path / "run")
    lines = []
    uninterrupted = Trainer(config, workdir, one_device, steps_per_epoch=3, log=lines.append)
    assert uninterrupted.fit(data)["step"] == 3
    reference = _weights(uninterrupted.model)
    assert json.load(open(os.path.join(workdir, "config.json")))["train"]["max_steps"] == 3

    # Interrupt after step 2: step 3's checkpoint never got listed in the state file.
    directory = os.path.join(workdir, "checkpoints")
    tf.compat.v1.train.update_checkpoint_state(
        directory, os.path.join(directory, "ckpt-2"),
        [os.path.join(directory, f"ckpt-{i}") for i in (1, 2)])
    resumed = Trainer(config, workdir, one_device, steps_per_epoch=3, log=lines.append)
    assert resumed.state.restore_latest() == 2
    assert not np.allclose(_weights(resumed.model)[0], reference[0])
    result = resumed.fit(data)
    assert result["step"] == 3 and any("at step 2" in line for line in lines)
    for got, want in zip(_weights(resumed.model), reference):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

    examples = random_examples(3 * GLOBAL_BATCH, INPUT, HEATMAP, 17)
    examples["heatmaps"][:] = np.nan
    resumed.total_steps = 5
    with pytest.raises(TrainingDiverged, match="loss is nan at step 4"):
        resumed.fit(tensor_dataset_fn(examples, GLOBAL_BATCH))
    latest = tf.train.latest_checkpoint(directory)
    assert latest.endswith("ckpt-3")
    tf.train.Checkpoint(model=resumed.model).restore(latest).expect_partial()
    for got, want in zip(_weights(resumed.model), reference):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_mixed_bfloat16_step_gives_float32_heatmaps_and_finite_loss(tmp_path, one_device,
                                                                   small_network):
    trainer = Trainer(tiny_config(), str(tmp_path), one_device, steps_per_epoch=1,
                      precision="mixed_bfloat16", log=lambda line: None)
    convolutions = [l for l in trainer.model.layers if isinstance(l, keras.layers.Conv2D)]
    assert convolutions and all(l.compute_dtype == "bfloat16" for l in convolutions)
    examples = random_examples(GLOBAL_BATCH, INPUT, HEATMAP, 17)
    batch = next(iter(one_device.distribute_datasets_from_function(
        lambda ctx: tensor_dataset_fn(examples, GLOBAL_BATCH)(ctx))))
    loss = float(trainer.train_step(batch))
    assert np.isfinite(loss) and 0 < loss < 1
    heatmaps = trainer.model(examples["image"], training=False)
    assert heatmaps.dtype == "float32" and np.isfinite(heatmaps.numpy()).all()


@pytest.mark.skipif(not os.environ.get("MRPOSE_SLOW_TESTS"),
                    reason="two training processes (~2 min): set MRPOSE_SLOW_TESTS=1")
def test_kill_9_then_rerun_resumes_and_no_checkpoint_is_corrupt(tmp_path):
    command = [sys.executable, os.path.join(REPO_ROOT, "scripts", "kill_resume_check.py"),
               f"--workdir={tmp_path / 'run'}", "--steps=5", "--kill_after_step=2"]
    completed = subprocess.run(command, env=_env(), timeout=2 * SUBPROCESS_TIMEOUT,
                               capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "PASS" in completed.stdout


def test_epoch_iterator_is_released_on_a_background_thread():
    # A pipeline that calls Python per element, like the OpenCV warp of the training crops:
    # destroying its iterator waits for the in-flight calls, so fit hands it to a thread.
    from mrpose_tf.training.trainer import _release_in_background

    dataset = tf.data.Dataset.range(1 << 20).map(
        lambda x: tf.numpy_function(lambda v: v * 2, [x], tf.int64),
        num_parallel_calls=2).prefetch(4)
    iterator = iter(dataset)
    assert [int(next(iterator)) for _ in range(3)] == [0, 2, 4]
    alive = weakref.ref(iterator)
    holder, iterator = [iterator], None
    _release_in_background(holder)
    deadline = time.monotonic() + 60
    while alive() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive() is None, "the iterator was not released"
    assert holder == []


def test_loss_is_read_only_at_log_steps_and_saves_and_a_nan_keeps_the_last_checkpoint(
        tmp_path, one_device, monkeypatch, small_network):
    """Steps that neither log nor save leave the loss on the device; a NaN among them is
    caught at the next read, before anything is saved after it."""
    from mrpose_tf.training import trainer as trainer_module

    reads = []
    check = trainer_module._RunProgress.check_finite
    monkeypatch.setattr(trainer_module._RunProgress, "check_finite",
                        lambda run: reads.append(run.step) or check(run))
    config = tiny_config(max_steps=7, log_every_steps=3, checkpoint_every_steps=5,
                         keep_checkpoints=5)
    examples = random_examples(7 * GLOBAL_BATCH, INPUT, HEATMAP, 17)
    workdir = str(tmp_path / "run")
    trainer = Trainer(config, workdir, one_device, steps_per_epoch=100, log=lambda line: None)
    assert trainer.fit(tensor_dataset_fn(examples, GLOBAL_BATCH))["step"] == 7
    # Logs at 3, 6 and the last step 7; checkpoints at 5 and at the end (7, already read).
    assert reads == [3, 5, 6, 7, 7]
    rows = read_metrics(workdir)["train"]
    assert [row["step"] for row in rows] == [3, 6, 7]
    assert all(np.isfinite(row["loss"]) and row["loss"] > 0 for row in rows)

    examples["heatmaps"][GLOBAL_BATCH:] = np.nan  # every step after the first is NaN
    trainer.total_steps = 14
    with pytest.raises(TrainingDiverged, match=r"loss is nan in steps 8\.\.9"):
        trainer.fit(tensor_dataset_fn(examples, GLOBAL_BATCH, repeat=True))
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-7")


def test_best_checkpoint_is_never_taken_or_frozen_by_a_nan(tmp_path, one_device, small_network):
    trainer = Trainer(tiny_config(), str(tmp_path), one_device, steps_per_epoch=1,
                      log=lambda line: None)
    state = trainer.state
    assert not state.save_if_best("Mean", float("nan"))
    assert state.best_record is None
    state.best_record = {"metric": "Mean", "value": float("nan"), "step": 0}  # an older run's
    assert state.save_if_best("Mean", 50.0)
    assert not state.save_if_best("Mean", float("nan"))
    assert not state.save_if_best("Mean", 40.0) and state.save_if_best("Mean", 60.0)
    assert json.load(open(tmp_path / "best" / "best.json"))["value"] == 60.0


def test_trainer_writes_the_keypoint_set_into_the_run(tmp_path, one_device, small_network):
    from mrpose_tf.keypoints import KeypointSpec, load_keypoint_set

    spec = KeypointSpec("pair", ("left_paw", "right_paw", "tail"), ((0, 1),), ((0, 2),),
                        (0.1, 0.1, 0.2))
    config = tiny_config()
    config.model.num_joints = 3
    Trainer(config, str(tmp_path), one_device, steps_per_epoch=1, log=lambda line: None,
            keypoints=spec)
    assert load_keypoint_set(str(tmp_path)) == spec
