"""Subprocess side of tests/test_training.py (TF's devices must be set before TF starts).

  python tests/training_worker.py compare OUT.npz        one step on one device and on
                                                         2 mirrored logical CPUs
  python tests/training_worker.py multi_worker OUT.npz   (TF_CONFIG set) 2 steps, weights out

Both train SimpleBaseline's head over tests/stand_in.py's backbone (distribution does not
depend on the backbone's depth); MRPOSE_TEST_RESNET=1 runs them on the ResNet-50.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import mrpose_tf.training.trainer as trainer_module  # noqa: E402
from mrpose_tf.config import base_config  # noqa: E402
from mrpose_tf.training import Trainer, make_strategy  # noqa: E402
from mrpose_tf.training.inputs import random_examples, tensor_dataset_fn  # noqa: E402
from tests import stand_in  # noqa: E402

INPUT, HEATMAP, GLOBAL_BATCH = (64, 64), (16, 16), 4


def tiny_config(**train):
    config = base_config()
    config.model.input_size, config.model.heatmap_size = INPUT, HEATMAP
    config.model.backbone_weights = None
    config.train.update(dict(batch_size=GLOBAL_BATCH, log_every_steps=100,
                             checkpoint_every_steps=1000), **train)
    return config


def _float64_joints_mse(heatmaps_true, heatmaps_pred, target_weight=None, foreground_weight=0):
    """joints_mse (which computes in float32 for mixed precision) in float64."""
    diff = keras.ops.cast(heatmaps_pred, "float64") - keras.ops.cast(heatmaps_true, "float64")
    diff = diff * keras.ops.cast(target_weight, "float64")[:, None, None, :]
    return 0.5 * keras.ops.mean(keras.ops.square(diff))


def one_step_weights(strategy, workdir):
    """One step in float64: at a fresh initialisation the BatchNorm backward passes amplify
    float32 round-off (in ResNet-50 a different summation order alone moves some gradients
    by ~10%), which would hide a real difference; float64 exposes one down to ~1e-12."""
    trainer_module.joints_mse = _float64_joints_mse
    trainer = Trainer(tiny_config(), workdir, strategy, steps_per_epoch=1, precision="float64",
                      log=lambda line: None)
    # The trainer synchronizes BatchNorm under several replicas; do it on one device too so
    # that both use the same (one-pass) variance formula and only the distribution differs.
    for layer in trainer.model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
    examples = random_examples(GLOBAL_BATCH, INPUT, HEATMAP, 17)
    data = tensor_dataset_fn({k: v.astype(np.float64) for k, v in examples.items()},
                             GLOBAL_BATCH)
    batch = next(iter(strategy.distribute_datasets_from_function(lambda ctx: data(ctx, 0))))
    loss = float(trainer.train_step(batch))
    weights = {f"w{i}": np.array(v.numpy()) for i, v in enumerate(trainer.model.weights)}
    # Adam's first moments after one step are 0.1 x the all-reduced gradients.
    trainable = {id(v): i for i, v in enumerate(trainer.model.weights)}
    for variable, moment in zip(trainer.model.trainable_variables,
                                trainer.optimizer._momentums):
        weights[f"m{trainable[id(variable)]}"] = np.array(moment.numpy())
    weights.update({f"trainable{i}": np.array(id(v) in {id(t) for t in
                    trainer.model.trainable_variables}) for i, v in
                    enumerate(trainer.model.weights)})
    return loss, weights


def compare(out):
    stand_in.install()
    mirrored = make_strategy("mirrored", cpu_devices=2)
    assert mirrored.num_replicas_in_sync == 2, mirrored.extended.worker_devices
    one = make_strategy("one_device")
    loss_one, weights_one = one_step_weights(one, out + ".one")
    loss_two, weights_two = one_step_weights(mirrored, out + ".two")
    np.savez(out, loss_one=loss_one, loss_two=loss_two,
             **{f"one_{k}": v for k, v in weights_one.items()},
             **{f"two_{k}": v for k, v in weights_two.items()})


def multi_worker(out):
    stand_in.install()
    strategy = make_strategy("multi_worker")
    config = tiny_config(max_steps=2)
    trainer = Trainer(config, os.environ["WORKDIR"], strategy, steps_per_epoch=2,
                      log=lambda line: None)
    data = random_examples(GLOBAL_BATCH * 2, INPUT, HEATMAP, 17)
    result = trainer.fit(tensor_dataset_fn(data, GLOBAL_BATCH, shuffle_seed=0))
    np.savez(out, step=result["step"], replicas=strategy.num_replicas_in_sync,
             **{f"w{i}": v.numpy() for i, v in enumerate(trainer.model.weights)})


if __name__ == "__main__":
    {"compare": compare, "multi_worker": multi_worker}[sys.argv[1]](sys.argv[2])
    # The results are on disk. Skip the interpreter's teardown: under a loaded CPU the
    # collective-ops threads of a multi-worker run have once aborted there ("terminate
    # called ... exception not rethrown") after a successful run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
