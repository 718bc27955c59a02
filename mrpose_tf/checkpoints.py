"""A finished or running training run, loaded for inference: config, weights, keypoint set.

A run directory (written by :class:`mrpose_tf.training.Trainer`) holds ``config.json``,
``keypoints.json``, ``checkpoints/ckpt-<step>`` and ``best/ckpt-<step>``. Every consumer
(the Predictor, scripts/evaluate.py, scripts/export.py, scripts/demo.py) loads a run through
this module, so all of them build the same plain Keras model and use the same keypoint set.
"""
from __future__ import annotations

import logging
import os

from mrpose_tf.files import load_json
from mrpose_tf.keypoints import COCO, MPII, KeypointSpec, load_keypoint_set

_log = logging.getLogger(__name__)


def run_directory(path):
    """The run directory of a run directory, a checkpoint prefix or a weights file.

    ``runs/x`` -> ``runs/x``; ``runs/x/best/ckpt-10`` -> ``runs/x``; ``runs/x/model.keras`` ->
    ``runs/x``: the first of the path's directory and its parent that holds config.json
    (else the path's directory).
    """
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    for candidate in (directory, os.path.dirname(directory)):
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    return directory


def read_run_config(path):
    """The ConfigDict of a run's ``config.json`` (beside or above ``path``)."""
    import ml_collections

    config_file = os.path.join(run_directory(path), "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"no config.json beside or above checkpoint {path}; pass the "
                                f"experiment config (--config) explicitly")
    from mrpose_tf.config import resolve_unset_fields

    return resolve_unset_fields(ml_collections.ConfigDict(load_json(config_file, "run config")))


def resolve_checkpoint(path):
    """A run directory -> its checkpoint prefix (best/ first, else the latest one).

    A ``*.keras``/``*.weights.h5`` file or a checkpoint prefix (``.../ckpt-1234``) is
    returned unchanged. Raises FileNotFoundError when there is none.
    """
    import tensorflow as tf

    if os.path.isfile(path) or os.path.isfile(path + ".index"):
        return path
    if os.path.isdir(path):
        for sub in ("best", "checkpoints", ""):
            prefix = tf.train.latest_checkpoint(os.path.join(path, sub))
            if prefix:
                return prefix
        raise FileNotFoundError(f"no checkpoint in {path} (looked in best/, checkpoints/ "
                                f"and the directory itself)")
    raise FileNotFoundError(f"checkpoint not found: {path}")


def load_model_from_checkpoint(path, config=None):
    """The config's network, as plain Keras layers, with the weights of a checkpoint.

    Args:
      path: a training run directory (best/ checkpoint first, else the latest), a checkpoint
        prefix ``.../ckpt-<step>``, a ``*.weights.h5`` file or a ``*.keras`` model file.
      config: the experiment ConfigDict; default: the run's ``config.json``.

    Returns:
      (model, config). Raises ValueError naming the checkpoint and the architecture when
      the weights do not fit the config's model (e.g. a checkpoint of another architecture).
    """
    import keras
    import tensorflow as tf

    from mrpose_tf.config import model_from_config

    path = resolve_checkpoint(str(path))
    config = config if config is not None else read_run_config(path)
    if path.endswith(".keras"):
        return keras.saving.load_model(path, compile=False), config
    arch, backbone = config.model.arch, config.model.backbone
    model = model_from_config(config)
    try:
        if path.endswith(".h5"):
            model.load_weights(path)
        else:
            # A trainer checkpoint also holds the optimizer, and TensorFlow files each
            # variable under the first path that reaches it (often the optimizer's), so
            # variables are matched through the object graph, not counted by name.
            status = tf.train.Checkpoint(model=model).restore(path)
            # Every model variable must be matched (a shape mismatch raises too).
            status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, KeyError, tf.errors.OpError) as error:
        raise ValueError(
            f"checkpoint {path} does not fit the {arch}/{backbone} model with "
            f"{config.model.num_joints} joints and input {tuple(config.model.input_size)} of the "
            f"config (a checkpoint of another architecture?): {str(error)[:500]}") from None
    return model, config


def keypoint_set_from_config(config):
    """The keypoint set a config describes, for runs and exports without ``keypoints.json``.

    COCO and MPII by the dataset's name; the 'random' set (smoke runs) as unnamed joints; any
    other COCO-format set from its validation annotation file, as the reader takes it
    (:func:`mrpose_tf.data.coco.keypoint_spec_from_coco`). ``dataset.flip_pairs`` and
    ``dataset.oks_sigmas`` override either (a COCO-format file's set also
    ``dataset.category_ids`` and ``dataset.skeleton``). Never guessed from the number of
    joints.

    Raises:
      ValueError: the set cannot be told from the config (names the fields to set), or its
        K differs from ``model.num_joints``.
    """
    from mrpose_tf.data.coco import keypoint_overrides

    d = config.dataset
    overrides = keypoint_overrides(d)
    flip_pairs, sigmas = overrides["flip_pairs"], overrides["sigmas"]
    if d.name in ("coco", "mpii"):
        spec = COCO if d.name == "coco" else MPII
        spec = KeypointSpec(spec.name, spec.names,
                            tuple(map(tuple, flip_pairs)) if flip_pairs is not None
                            else spec.flip_pairs,
                            spec.skeleton, tuple(sigmas) if sigmas is not None else spec.sigmas)
    elif d.name == "random":
        spec = KeypointSpec.unnamed(config.model.num_joints, flip_pairs, "random")
    else:
        from mrpose_tf.data.coco import keypoint_spec_from_coco

        path = os.path.join(d.root, d.val_annotations)
        if not os.path.isfile(path):
            raise ValueError(
                f"the keypoint set of dataset {d.name!r} is unknown: the run has no keypoints.json "
                f"and the annotation file {path} is not there (set config.dataset.root, or "
                f"retrain to write keypoints.json)")
        spec = keypoint_spec_from_coco(load_json(path), path, **overrides)
    if spec.num_joints != int(config.model.num_joints):
        raise ValueError(f"dataset {d.name!r} has {spec.num_joints} keypoints but "
                         f"config.model.num_joints is {config.model.num_joints}")
    return spec


def run_keypoint_set(path, config):
    """The keypoint set of the run at ``path``: its ``keypoints.json``, else the config's.

    Runs written before keypoint sets were saved fall back to
    :func:`keypoint_set_from_config`, with a warning.
    """
    directory = run_directory(str(path))
    spec = load_keypoint_set(directory)
    if spec is not None:
        return spec
    _log.warning("%s has no keypoints.json (a run of an older version): taking the keypoint "
                 "set from its config", directory)
    return keypoint_set_from_config(config)
