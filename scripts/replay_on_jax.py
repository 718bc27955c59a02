"""Replay a config's exact training stream through the pure-Keras model on the JAX backend.

For a GPU machine without TensorFlow (this project's lent GPUs have JAX and PyTorch only):
the tf.data pipeline runs here, the training runs there, the evaluation runs here again.

  # 1. here (TensorFlow): the training stream of each seed, the validation crops, the config
  python scripts/replay_on_jax.py --stage=dump --config=configs/quickstart.py \\
      --seeds=0,1,2 --out=runs/replay
  # 2. there (KERAS_BACKEND=jax, no TensorFlow): train every style x seed, save the
  #    validation heatmaps of each final model
  KERAS_BACKEND=jax python scripts/replay_on_jax.py --stage=train --out=runs/replay \\
      --styles=keras,pytorch,caffe --seeds=0,1,2 --results=runs/replay_results
  # 3. here: COCO AP, PCK@0.1 and the mean-pose baseline of each run (as ``mrpose-train``'s
  #    report computes them), as a markdown table
  python scripts/replay_on_jax.py --stage=score --out=runs/replay --results=runs/replay_results

What is the same as ``mrpose-train``: every training batch (the same people, augmentation
draws and order, from :func:`mrpose_tf.training.inputs.training_data_from_config` after the
Trainer's seeding), the model (:func:`mrpose_tf.config.model_from_config`), the loss
(:func:`mrpose_tf.losses.joints_mse` with the config's target weight and foreground weight),
the optimizer and schedule (:func:`mrpose_tf.training.make_optimizer`, PyTorch's Adam
epsilon), BatchNorm's PyTorch rule for the moving variance (:class:`TorchRuleBatchNorm`), the
number of steps, the final model's evaluation at the ground-truth boxes. What differs: the
dump stores each crop's plan (record, image -> crop matrix) and the targets' row and column
factors instead of 333 MB of crops per seed, and stage 2 warps the crops again with
``cv2.warpAffine`` from the whole decoded image (the pipeline warps a decoded window of it;
the dump counts the crop values that differ); the weights are initialised by Keras on JAX
from the same seed (other random numbers than TensorFlow's; ``--initial_weights`` takes
TensorFlow's); Adam's update is Keras' ops (the Trainer's fused kernel needs TensorFlow);
precision is float32 at 'highest' matmul precision (no TF32) whatever
``train.precision`` says. Configs the replay cannot follow are refused: flip augmentation,
pretrained or zero-initialised backbones, Keras' BatchNorm variance rule, the flip test or
detector boxes in the evaluation.

Stage 2 runs from the repository root with ``config.dataset.root`` copied beside it, and
holds every training image decoded in memory: meant for small sets such as the quickstart's.
"""
import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags


STREAM = "stream_seed{}.npz"
RESULT = "heatmaps_{}.npz"  # per style: one array per seed, "seed{S}"


def _check_replayable(config):
    """Raises ValueError naming the fields of a config the replay does not follow."""
    refused = {"augment.flip": bool(config.augment.flip),
               "model.backbone_weights": config.model.get("backbone_weights") is not None,
               "model.zero_init_residual": bool(config.model.get("zero_init_residual", False)),
               "train.unbiased_running_variance":
                   not config.train.get("unbiased_running_variance", True),
               "test.flip_test": bool(config.test.flip_test),
               "test.use_gt_boxes": not config.test.use_gt_boxes}
    fields = [name for name, bad in refused.items() if bad]
    if fields:
        raise ValueError(f"replay_on_jax cannot follow {', '.join(fields)} of this config "
                         f"(see the script's docstring); set them to the quickstart's values")


def _read(path):
    """An image as every entry point of the package reads it (EXIF orientation ignored):
    (H, W, 3) uint8 RGB. Raises FileNotFoundError naming the file."""
    from mrpose_tf.images import read_image_rgb

    image = read_image_rgb(path)
    if image is None:
        raise FileNotFoundError(f"replay_on_jax: cannot read or decode the image {path}")
    return image


# --- stage 1: dump (TensorFlow) ---------------------------------------------------------------

def dump(config, seeds, out, check_crops=200):
    """Writes the training stream of each seed, the validation crops and the config to ``out``.

    Files: ``config.json``; ``train_images.json`` (each training record's image path, relative
    to ``config.dataset.root``); ``stream_seed{S}.npz`` with per step (S steps, batch B, K
    joints): ``positions`` (S, B) int32 record positions, ``matrices`` (S, B, 2, 3) float32
    image -> crop, ``rows`` (S, B, K, w) / ``cols`` (S, B, K, h) float32 target factors
    (:func:`mrpose_tf.codec.heatmap_target_profiles`), ``weights`` (S, B, K) float32, and
    ``steps_per_epoch`` (the schedule's);
    ``val.npz``: ``images`` (N, H, W, 3) float32 preprocessed validation crops in evaluation
    order; ``dump.json``: the checks below (the crops of the first whole batches, at least
    ``check_crops`` per seed, are warped again as stage 2 warps them and compared with the
    pipeline's).

    Raises:
      ValueError: a config the replay cannot follow (see the module docstring), or a target
        that its factors do not give back bit for bit.
    """
    import keras
    import numpy as np

    from mrpose_tf.codec import heatmap_target_profiles, heatmaps_from_profiles
    from mrpose_tf.config import input_preprocessing_of, resolve_unset_fields
    from mrpose_tf.data.pipeline import build_dataset, read_split
    from mrpose_tf.data.synthetic import prepare_from_config
    from mrpose_tf.files import atomic_write_json
    from mrpose_tf.geometry import affine_points_tf
    from mrpose_tf.preprocessing import unpreprocess
    from mrpose_tf.training.inputs import training_data_from_config

    config = resolve_unset_fields(config.copy_and_resolve_references())
    _check_replayable(config)
    os.makedirs(out, exist_ok=True)
    prepare_from_config(config)
    input_size = tuple(config.model.input_size)
    convention = input_preprocessing_of(config)
    checks = {}
    images = {}
    for seed in seeds:
        seeded = config.copy_and_resolve_references()
        with seeded.unlocked():
            seeded.train.seed = int(seed)
        data = training_data_from_config(seeded)
        # The Trainer sets the global seeds before the first epoch, and tf.data's shuffle
        # seeds combine them with the pipeline's own: without this, another order.
        keras.utils.set_random_seed(int(seed))
        train_records, _ = read_split(seeded, "train")
        paths = [os.path.relpath(r.image_path, config.dataset.root) for r in train_records]
        atomic_write_json(os.path.join(out, "train_images.json"), paths)  # the same per seed
        per_epoch = data.steps_per_epoch
        total = int(config.train.max_steps) if int(config.train.max_steps) > 0 else \
            int(config.train.epochs) * per_epoch
        columns = {k: [] for k in ("positions", "matrices", "rows", "cols", "weights")}
        differing, compared, largest = 0, 0, 0
        step = epoch = 0
        while step < total:  # as the Trainer: epoch after epoch to the last step
            for batch in data.train_fn(epoch=epoch).take(min(per_epoch, total - step)):
                crop_joints = affine_points_tf(batch["joints"], batch["matrix"])
                rows, cols, weights = (t.numpy() for t in heatmap_target_profiles(
                    crop_joints, batch["visibility"], input_size, config.model.heatmap_size,
                    config.model.sigma))
                if not (np.array_equal(heatmaps_from_profiles(rows, cols),
                                       batch["heatmaps"].numpy())
                        and np.array_equal(weights, batch["target_weight"].numpy())):
                    raise ValueError(f"seed {seed} step {step}: the target factors do not give "
                                     f"the pipeline's heatmaps back")
                positions = batch["record_position"].numpy().astype(np.int32)
                matrices = batch["matrix"].numpy()
                if compared < check_crops * np.prod(input_size) * 3:
                    crops = np.round(unpreprocess(batch["image"].numpy(), convention))
                    for position, matrix, crop in zip(positions, matrices, crops):
                        path = train_records[position].image_path
                        if path not in images:
                            images[path] = _read(path)
                        again = _warp(images[path], matrix, input_size).astype(np.float32)
                        diff = np.abs(again - crop)
                        differing += int(np.count_nonzero(diff))
                        largest = max(largest, int(diff.max()))
                        compared += diff.size
                for key, value in (("positions", positions), ("matrices", matrices),
                                   ("rows", rows), ("cols", cols), ("weights", weights)):
                    columns[key].append(value)
                step += 1
            epoch += 1
        np.savez_compressed(os.path.join(out, STREAM.format(seed)), steps_per_epoch=per_epoch,
                            **{k: np.stack(v) for k, v in columns.items()})
        checks[f"seed{seed}"] = {"steps": step, "crop_values_compared": compared,
                                 "crop_values_differing": differing,
                                 "largest_crop_difference": largest}
        print(f"seed {seed}: {step} steps; re-warped crops: {differing} of {compared} values "
              f"differ (largest {largest})", flush=True)
    val_records, keypoints = read_split(config, "val")
    val = build_dataset(val_records, keypoints=keypoints, input_size=input_size,
                        heatmap_size=config.model.heatmap_size, sigma=config.model.sigma,
                        train=False, batch_size=int(config.test.batch_size),
                        input_preprocessing=convention)
    np.savez_compressed(os.path.join(out, "val.npz"),
                        images=np.concatenate([b["image"].numpy() for b in val]))
    atomic_write_json(os.path.join(out, "config.json"), config.to_dict())
    atomic_write_json(os.path.join(out, "dump.json"), checks)


def _agreement(initial, reference, other, trainable):
    """How far ``other``'s weights are from ``reference``'s after the same steps from
    ``initial`` (lists of arrays, ``model.get_weights()`` order), over the trainable ones
    (``trainable``: a bool per array; BatchNorm statistics move on another scale): the
    difference's L2 norm over that of the reference's change, and the fraction of changed
    values that both moved the same way."""
    import numpy as np

    difference = change = same = changed = 0.0
    for start, want, got, kept in zip(initial, reference, other, trainable):
        if not kept:
            continue
        moved = want - start
        difference += float(np.sum((got - want) ** 2))
        change += float(np.sum(moved ** 2))
        mask = moved != 0
        same += float(np.sum(np.sign(moved[mask]) == np.sign((got - start)[mask])))
        changed += float(mask.sum())
    return {"relative_l2": (difference / change) ** 0.5, "same_direction": same / changed}


def _trainer(config, data, workdir, jit_compile, initial=None):
    """``mrpose-train``'s Trainer (float32) of ``config``, from ``initial`` weights if given."""
    from mrpose_tf.training import Trainer, make_strategy

    trainer = Trainer(config, workdir, make_strategy("one_device"), data.steps_per_epoch,
                      "float32", jit_compile=jit_compile, log=lambda line: None)
    if initial is not None:
        trainer.model.set_weights(initial)
    return trainer


def _steps(trainer, data, steps):
    """The losses of ``trainer``'s steps over the first ``steps`` batches of epoch 0."""
    return [float(trainer.train_step(batch)) for batch in data.train_fn(epoch=0).take(int(steps))]


def reference(out, style, seed, steps):
    """``mrpose-train``'s own first ``steps`` steps (the Trainer, float32, no XLA) from the
    dump's config, to check the replay against: writes ``initial_{style}_seed{S}.npz`` (the
    initial weights, ``model.get_weights()`` order, for ``train(initial_weights=True)``),
    ``reference_{style}_seed{S}.npz`` (the validation heatmaps before (``initial``) and after
    (``trained``) the steps, and the trained weights ``arr_{i}``) and
    ``reference_{style}_seed{S}.json``: the loss of each step, and the same steps with XLA
    from the same weights (``xla``: its losses and :func:`_agreement`), which is how far two
    runs of the same function in TensorFlow drift apart."""
    import tempfile

    import numpy as np

    from mrpose_tf.config import load_config
    from mrpose_tf.training.inputs import training_data_from_config

    if int(steps) < 1:
        raise ValueError(f"--stage=reference needs --max_steps >= 1, got {steps}")
    config = load_config(out)
    with config.unlocked():
        config.model.backbone_style = style
        config.train.seed = int(seed)
    data = training_data_from_config(config)
    val_images = np.load(os.path.join(out, "val.npz"))["images"]
    batch = int(config.test.batch_size)
    with tempfile.TemporaryDirectory() as workdir:
        trainer = _trainer(config, data, os.path.join(workdir, "plain"), False)
        initial_weights = trainer.model.get_weights()
        np.savez(os.path.join(out, f"initial_{style}_seed{seed}.npz"), *initial_weights)
        initial = trainer.model.predict(val_images, batch_size=batch, verbose=0)
        losses = _steps(trainer, data, steps)
        trained = trainer.model.predict(val_images, batch_size=batch, verbose=0)
        weights = trainer.model.get_weights()
        np.savez(os.path.join(out, f"reference_{style}_seed{seed}.npz"), *weights,
                 initial=initial, trained=trained)
        xla = _trainer(config, data, os.path.join(workdir, "xla"), True, initial_weights)
        xla_losses = _steps(xla, data, steps)
        trainable = [v.trainable for v in trainer.model.weights]
        xla_agreement = _agreement(initial_weights, weights, xla.model.get_weights(), trainable)
    summary = {"style": style, "seed": int(seed), "losses": losses, "trainable": trainable,
               "xla": dict(losses=xla_losses, **xla_agreement)}
    with open(os.path.join(out, f"reference_{style}_seed{seed}.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k != "trainable"}, indent=1),
          flush=True)
    return summary


# --- stage 2: train (Keras on JAX) ------------------------------------------------------------

def _torch_rule_batch_norm():
    """The class below, defined on first use (Keras is imported after the backend is set)."""
    import keras
    import numpy as np

    class TorchRuleBatchNorm(keras.layers.BatchNormalization):
        """Keras BatchNormalization whose moving variance takes the unbiased batch variance
        (``var * n / (n - 1)``, PyTorch's ``BatchNorm2d``), in keras.ops: the rule of
        :class:`mrpose_tf.training.layers.TrainingBatchNormalization` (a TensorFlow module)."""

        def call(self, inputs, training=None, mask=None):
            if not (training and self.trainable) or mask is not None:
                return super().call(inputs, training=training, mask=mask)
            ops = keras.ops
            x = ops.cast(inputs, "float32")
            mean, variance = self._moments(x, None)
            count = float(np.prod(x.shape[:-1]))
            unbiased = variance * count / max(count - 1.0, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum
                                    + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum
                                        + unbiased * (1.0 - self.momentum))
            outputs = ops.batch_normalization(x, mean, variance, axis=self.axis,
                                              epsilon=self.epsilon, offset=self.beta,
                                              scale=self.gamma)
            return ops.cast(outputs, self.compute_dtype)

    return TorchRuleBatchNorm


def _training_model(config, seed):
    """The config's model, built after ``keras.utils.set_random_seed(seed)``, with
    :class:`TorchRuleBatchNorm` in place of every BatchNormalization (same weights)."""
    import keras

    from mrpose_tf.config import model_from_config

    keras.utils.set_random_seed(int(seed))
    model = model_from_config(config)
    batch_norm = _torch_rule_batch_norm()

    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return batch_norm.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    trained = keras.models.clone_model(model, clone_function=clone)
    trained.set_weights(model.get_weights())
    return trained


def train(out, styles, seeds, results, max_steps=-1, initial_weights=False):
    """Trains each style x seed on its dumped stream (Keras on JAX).

    Args:
      out: the dump's folder.
      styles: ``config.model.backbone_style`` values.
      seeds: seeds (strings or ints) with a dumped stream each.
      results: the output folder.
      max_steps: stop after this many steps (0: no training, the initial model's heatmaps);
        -1: the whole stream.
      initial_weights: start from the dump's ``initial_{style}_seed{S}.npz``
        (:func:`reference`: TensorFlow's initialisation) instead of Keras-on-JAX's, and write
        the final weights (``final_{style}_seed{S}.npz``) for :func:`compare`.

    Writes, after every run: ``heatmaps_{style}.npz`` (per seed ``seed{S}``: the final
    model's validation heatmaps, (N, h, w, K) float32) and ``runs.json`` (steps, seconds,
    images/s, the loss of every step).
    """
    import jax
    import keras
    import numpy as np

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"--stage=train runs on Keras' JAX backend (KERAS_BACKEND=jax), "
                           f"not {keras.backend.backend()!r}")
    jax.config.update("jax_default_matmul_precision", "highest")
    from mrpose_tf.codec import heatmaps_from_profiles
    from mrpose_tf.config import input_preprocessing_of, load_config
    from mrpose_tf.losses import joints_mse
    from mrpose_tf.preprocessing import preprocess
    from mrpose_tf.training.optimizer import make_optimizer
    from mrpose_tf.training.schedule import learning_rate_schedule

    base = load_config(out)
    with open(os.path.join(out, "train_images.json")) as f:
        paths = json.load(f)
    images = [_read(os.path.join(base.dataset.root, p)) for p in paths]
    val_images = np.load(os.path.join(out, "val.npz"))["images"]
    input_size = tuple(base.model.input_size)
    convention = input_preprocessing_of(base)
    weight_targets = bool(base.train.use_target_weight)
    foreground = float(base.train.foreground_weight)
    os.makedirs(results, exist_ok=True)
    summary = {"device": str(jax.devices()[0]), "keras": keras.__version__,
               "jax": jax.__version__, "runs": []}
    streams = {s: dict(np.load(os.path.join(out, STREAM.format(s)))) for s in seeds}
    for style in styles:
        config = base.copy_and_resolve_references()
        with config.unlocked():
            config.model.backbone_style = style
        step_fn = predict_fn = optimizer = None
        style_heatmaps = {}
        for seed in seeds:
            stream = streams[seed]
            steps = len(stream["positions"])
            steps = steps if max_steps < 0 else min(steps, max_steps)
            model = _training_model(config, seed)
            if initial_weights:
                saved = np.load(os.path.join(out, f"initial_{style}_seed{seed}.npz"))
                model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
            if step_fn is None:  # one compilation per style: the step is a pure function
                optimizer = make_optimizer(config.train, learning_rate_schedule(
                    config.train, int(stream["steps_per_epoch"])))
                optimizer.build(model.trainable_variables)
                fresh_optimizer = [v.value for v in optimizer.variables]
                step_fn, predict_fn = _jax_functions(model, optimizer, joints_mse,
                                                     weight_targets, foreground)
            # Copies: the step donates its inputs' buffers, and the next seed starts afresh.
            state = jax.tree.map(jax.numpy.copy, (
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables], fresh_optimizer))
            losses, started, compiled = [], time.perf_counter(), 0.0
            for step in range(steps):
                positions, matrices = stream["positions"][step], stream["matrices"][step]
                crops = np.stack([_warp(images[p], m, input_size)
                                  for p, m in zip(positions, matrices)])
                heatmaps = heatmaps_from_profiles(stream["rows"][step], stream["cols"][step])
                loss, *state = step_fn(*state, preprocess(crops, convention), heatmaps,
                                       stream["weights"][step])
                losses.append(loss)
                if step == 0:
                    loss.block_until_ready()
                    compiled = time.perf_counter() - started
                    after_first = time.perf_counter()
            jax.block_until_ready(state)
            seconds = time.perf_counter() - after_first if steps else 0.0
            losses = np.asarray(jax.device_get(losses), np.float64).reshape(-1)
            if not np.all(np.isfinite(losses)):
                raise FloatingPointError(f"{style} seed {seed}: loss not finite at step "
                                         f"{int(np.argmin(np.isfinite(losses)))}")
            trainable, non_trainable, _ = state
            if initial_weights:  # for the comparison with the reference's weights
                variables = model.trainable_variables + model.non_trainable_variables
                for variable, value in zip(variables, trainable + non_trainable):
                    variable.assign(value)
                np.savez(os.path.join(results, f"final_{style}_seed{seed}.npz"),
                         *model.get_weights())
            batch = int(base.test.batch_size)
            padded = np.concatenate([val_images, np.zeros(
                (-len(val_images) % batch,) + val_images.shape[1:], val_images.dtype)])
            heat = np.concatenate([np.asarray(predict_fn(trainable, non_trainable,
                                                         padded[i:i + batch]))
                                   for i in range(0, len(padded), batch)])[:len(val_images)]
            style_heatmaps[f"seed{seed}"] = heat.astype(np.float32)
            np.savez_compressed(os.path.join(results, RESULT.format(style)), **style_heatmaps)
            run = {"style": style, "seed": int(seed), "steps": steps,
                   "first_step_seconds": compiled, "train_seconds": seconds,
                   "images_per_second": max(steps - 1, 0) * int(base.train.batch_size)
                   / max(seconds, 1e-9), "losses": losses.tolist()}
            summary["runs"].append(run)
            print(f"{style} seed {seed}: {steps} steps, first step {compiled:.1f} s, then "
                  f"{run['images_per_second']:.0f} img/s; losses {losses[:1]} -> "
                  f"{losses[-1:]}", flush=True)
            with open(os.path.join(results, "runs.json"), "w") as f:
                json.dump(summary, f, indent=1)
    return summary


def _warp(image, matrix, input_size):
    """The training pipeline's crop (``cv2.warpAffine``, bilinear, zero border) of one person,
    from the whole image; (H, W, 3) uint8."""
    import cv2
    import numpy as np

    size = (int(input_size[1]), int(input_size[0]))
    return cv2.warpAffine(image, matrix.astype(np.float64), size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _jax_functions(model, optimizer, loss_fn, weight_targets, foreground):
    """(step, predict): jitted pure functions of the variable values (Keras' stateless API)."""
    import jax

    def step(trainable, non_trainable, optimizer_values, images, heatmaps, weights):
        def loss_of(trainable):
            predicted, updated = model.stateless_call(trainable, non_trainable, images,
                                                      training=True)
            loss = loss_fn(heatmaps, predicted, weights if weight_targets else None,
                           foreground)
            return loss, updated

        (loss, updated), gradients = jax.value_and_grad(loss_of, has_aux=True)(trainable)
        trainable, optimizer_values = optimizer.stateless_apply(optimizer_values, gradients,
                                                                trainable)
        return loss, trainable, updated, optimizer_values

    def predict(trainable, non_trainable, images):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    return jax.jit(step, donate_argnums=(0, 1, 2)), jax.jit(predict)


def compare(out, results, style, seed):
    """The replay in ``results`` (``train(initial_weights=True)``) against :func:`reference`:
    the validation heatmaps (largest difference over the largest magnitude), the losses and,
    after training, :func:`_agreement` of the weights, next to the reference's own XLA run.
    Returns the numbers as a dict and prints them."""
    import numpy as np

    with open(os.path.join(results, "runs.json")) as f:
        run = next(r for r in json.load(f)["runs"]
                   if r["style"] == style and r["seed"] == int(seed))
    reference_run = np.load(os.path.join(out, f"reference_{style}_seed{seed}.npz"))
    with open(os.path.join(out, f"reference_{style}_seed{seed}.json")) as f:
        summary = json.load(f)
    if run["steps"] not in (0, len(summary["losses"])):
        raise ValueError(f"the replay in {results} ran {run['steps']} steps, the reference "
                         f"{len(summary['losses'])}: rerun one of them with the other's")
    want = reference_run["trained" if run["steps"] else "initial"]
    got = np.load(os.path.join(results, RESULT.format(style)))[f"seed{seed}"]
    report = {"steps": run["steps"],
              "heatmaps": float(np.abs(got - want).max() / np.abs(want).max()),
              "losses (trainer, replay)": list(zip(summary["losses"], run["losses"])),
              "trainer with XLA": summary["xla"]}
    if run["steps"]:
        def arrays(path):  # the weights of an npz, in order (its other arrays left out)
            saved = np.load(path)
            count = sum(name.startswith("arr_") for name in saved.files)
            return [saved[f"arr_{i}"] for i in range(count)]

        report["replay"] = _agreement(
            arrays(os.path.join(out, f"initial_{style}_seed{seed}.npz")),
            arrays(os.path.join(out, f"reference_{style}_seed{seed}.npz")),
            arrays(os.path.join(results, f"final_{style}_seed{seed}.npz")),
            summary["trainable"])
    print(json.dumps(report, indent=1))
    return report


# --- stage 3: score (TensorFlow) --------------------------------------------------------------

class _Replayed:
    """A 'model' for :func:`predict_records` that hands back stored heatmaps batch by batch,
    checking that it is given the dumped validation crops in the dumped order."""

    def __init__(self, images, heatmaps):
        self.images, self.heatmaps, self.position = images, heatmaps, 0

    def __call__(self, batch):
        import numpy as np

        n = len(batch)
        if not np.array_equal(np.asarray(batch), self.images[self.position:self.position + n]):
            raise ValueError(f"validation crops {self.position}..{self.position + n} differ "
                             f"from the dump's: dump again")
        self.position += n
        return self.heatmaps[self.position - n:self.position]


def score(out, results):
    """The report's metrics of every run in ``results``; prints a markdown table."""
    import numpy as np

    from mrpose_tf.config import load_config
    from mrpose_tf.data.pipeline import read_split
    from mrpose_tf.evaluation.runner import predict_records
    from mrpose_tf.training.report import validation_metrics

    config = load_config(os.path.join(out, "config.json"))
    _check_replayable(config)
    with open(os.path.join(results, "runs.json")) as f:
        summary = json.load(f)
    val_records, keypoints = read_split(config, "val")
    train_records, _ = read_split(config, "train")
    images = np.load(os.path.join(out, "val.npz"))["images"]
    rows = []
    for run in summary["runs"]:
        heatmaps = np.load(os.path.join(results, RESULT.format(run["style"])))
        replayed = _Replayed(images, heatmaps[f"seed{run['seed']}"])
        predictions = predict_records(replayed, val_records, config, keypoints)
        if replayed.position != len(images) or len(predictions["keypoints"]) != len(val_records):
            raise ValueError(f"{run['style']} seed {run['seed']}: {replayed.position} of "
                             f"{len(images)} validation crops evaluated; dump again")
        metrics = validation_metrics(predictions, val_records, config, keypoints,
                                     train_records)
        run.update({k: metrics[k] for k in ("AP", "AP .5", "AP .75", "PCK@0.1",
                                            "mean_pose_PCK@0.1")})
        rows.append(run)
    with open(os.path.join(results, "scores.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"{summary['device']}, Keras {summary['keras']}, JAX {summary['jax']}\n")
    print("| style | seed | steps | AP | AP .5 | AP .75 | PCK@0.1 | train s | img/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['style']} | {r['seed']} | {r['steps']} | {r['AP']:.3f} | "
              f"{r['AP .5']:.3f} | {r['AP .75']:.3f} | {r['PCK@0.1']:.3f} | "
              f"{r['train_seconds']:.1f} | {r['images_per_second']:.0f} |")
    by_style = {}
    for r in rows:
        by_style.setdefault(r["style"], []).append(r["AP"])
    print("\n| style | AP mean | AP min | AP max | seeds |\n|---|---:|---:|---:|---:|")
    for style, aps in by_style.items():
        print(f"| {style} | {np.mean(aps):.3f} | {min(aps):.3f} | {max(aps):.3f} | "
              f"{len(aps)} |")
    return summary


def _define_flags():
    """The command line's flags (defined here, not on import: tests import the stages)."""
    flags.DEFINE_enum("stage", None, ["dump", "train", "score", "reference", "compare"],
                      "dump (TensorFlow), train (Keras on JAX), score (TensorFlow); reference: "
                      "mrpose-train's first --max_steps steps for one style and seed "
                      "(TensorFlow); compare: train --initial_weights's run in --results "
                      "against it.")
    config_flags.DEFINE_config_file("config", None, "dump: the experiment config file; every "
                                    "field can be overridden with --config.FIELD=VALUE.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "config.train.seed values.")
    flags.DEFINE_list("styles", ["keras", "pytorch", "caffe"], "train: config.model.backbone_style "
                      "values.")
    flags.DEFINE_string("out", "runs/replay", "The dump's folder.")
    flags.DEFINE_string("results", "runs/replay_results", "train: where the heatmaps and run "
                        "summaries go; score: where they are read.")
    flags.DEFINE_integer("max_steps", -1, "train: stop after this many steps (a smoke test); "
                         "-1: the dumped stream's length.")
    flags.DEFINE_boolean("initial_weights", False, "train: start from the weights that "
                         "--stage=reference saved (TensorFlow's initialisation).")
    flags.DEFINE_integer("check_crops", 200, "dump: crops per seed re-warped here to count the "
                         "values that differ from the pipeline's.")


def main(argv):
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.stage is None:
        raise app.UsageError("--stage is required: dump, train, score, reference or compare")
    if FLAGS.stage in ("reference", "compare") and (len(FLAGS.styles) != 1
                                                    or len(FLAGS.seeds) != 1):
        raise app.UsageError(f"--stage={FLAGS.stage} takes one --styles and one --seeds value")
    if FLAGS.stage == "dump":
        if FLAGS.config is None:
            raise app.UsageError("--stage=dump needs --config")
        dump(FLAGS.config, FLAGS.seeds, FLAGS.out, FLAGS.check_crops)
    elif FLAGS.stage == "train":
        train(FLAGS.out, FLAGS.styles, FLAGS.seeds, FLAGS.results, FLAGS.max_steps,
              FLAGS.initial_weights)
    elif FLAGS.stage == "reference":
        reference(FLAGS.out, FLAGS.styles[0], FLAGS.seeds[0], FLAGS.max_steps)
    elif FLAGS.stage == "compare":
        compare(FLAGS.out, FLAGS.results, FLAGS.styles[0], FLAGS.seeds[0])
    else:
        score(FLAGS.out, FLAGS.results)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    _define_flags()
    app.run(main)
