"""Dataset functions the trainer distributes: ``fn(input_context, epoch) -> tf.data.Dataset``.

Each returns per-replica batches of dicts {'image', 'heatmaps', 'target_weight'}, sharded by
``input_context.input_pipeline_id`` and shuffled with a seed that depends on the epoch, so
that a resumed epoch replays the same order.
"""
import os

import numpy as np
import tensorflow as tf

from mrpose_tf.keypoints import KeypointSpec, unpaired_sided_names


def per_replica_batch_size(input_context, global_batch):
    """The per-replica batch of ``global_batch`` (1 replica without an input context)."""
    if input_context is None:
        return global_batch
    return input_context.get_per_replica_batch_size(global_batch)


def tensor_dataset_fn(arrays, global_batch, shuffle_seed=None, repeat=False):
    """A dataset function over in-memory arrays (tests, benchmarks, small sets).

    Args:
      arrays: dict of equal-length numpy arrays ('image', 'heatmaps', 'target_weight', ...).
      global_batch: the global batch size.
      shuffle_seed: None keeps the order; an int shuffles every epoch with
        ``shuffle_seed + epoch``.
      repeat: repeat forever (for a fixed number of steps on a small set).

    Returns:
      ``fn(input_context=None, epoch=0) -> tf.data.Dataset`` of per-replica batches; with n
      input pipelines (workers), pipeline p takes examples p, p + n, p + 2n, ...
    """
    def dataset_fn(input_context=None, epoch=0):
        dataset = tf.data.Dataset.from_tensor_slices(arrays)
        if shuffle_seed is not None:
            count = len(next(iter(arrays.values())))
            dataset = dataset.shuffle(count, seed=int(shuffle_seed) + int(epoch),
                                      reshuffle_each_iteration=False)
        if repeat:
            dataset = dataset.repeat()
        if input_context is not None and input_context.num_input_pipelines > 1:
            dataset = dataset.shard(input_context.num_input_pipelines,
                                    input_context.input_pipeline_id)
        batch = per_replica_batch_size(input_context, global_batch)
        return dataset.batch(batch, drop_remainder=True).prefetch(2)
    return dataset_fn


def random_examples(count, input_size, heatmap_size, num_joints, seed=0):
    """Random preprocessed images with one Gaussian per joint (benchmarks and tests).

    Args:
      count: number of examples.
      input_size, heatmap_size: (height, width).
      num_joints: K.
      seed: numpy seed.

    Returns:
      dict: 'image' (count, H, W, 3) float32 in roughly the caffe-preprocessed range,
      'heatmaps' (count, h, w, K) float32 sigma-2 Gaussians, 'target_weight' (count, K) ones.
    """
    rng = np.random.default_rng(seed)
    height, width = heatmap_size
    images = rng.uniform(-120, 130, (count, *input_size, 3)).astype(np.float32)
    centers = rng.uniform([0, 0], [width - 1, height - 1], (count, num_joints, 2))
    v, u = np.mgrid[0:height, 0:width]
    squared = ((u[None, :, :, None] - centers[:, None, None, :, 0]) ** 2
               + (v[None, :, :, None] - centers[:, None, None, :, 1]) ** 2)
    heatmaps = np.exp(-squared / (2 * 2.0 ** 2)).astype(np.float32)
    weights = np.ones((count, num_joints), np.float32)
    return {"image": images, "heatmaps": heatmaps, "target_weight": weights}


class TrainingData:
    """The datasets of a config, as the trainer consumes them.

    Attributes:
      train_fn: ``fn(input_context, epoch)`` -> per-replica training batches (infinite).
      val_fn: ``fn(input_context)`` -> validation batches on ground-truth boxes, or None
        (fewer people than a test batch, or a TFDS validation build of detector boxes).
      steps_per_epoch: global batches per epoch (training people // global batch).
      val_records: validation records (the config's test boxes) for the paper's evaluation,
        or None (the 'random' set).
      keypoints: the keypoint set (for the 'random' set: unnamed joints, the config's
        ``dataset.flip_pairs`` or none).
    """

    def __init__(self, train_fn, val_fn, steps_per_epoch, val_records=None, keypoints=None):
        self.train_fn = train_fn
        self.val_fn = val_fn
        self.steps_per_epoch = steps_per_epoch
        self.val_records = val_records
        self.keypoints = keypoints


RANDOM_STEPS_PER_EPOCH = 4


def _random_data(config):
    global_batch = int(config.train.batch_size)
    sizes = (tuple(config.model.input_size), tuple(config.model.heatmap_size),
             int(config.model.num_joints))
    train = random_examples(global_batch * RANDOM_STEPS_PER_EPOCH, *sizes,
                            seed=int(config.train.seed))
    val = random_examples(global_batch, *sizes, seed=int(config.train.seed) + 1)
    keypoints = KeypointSpec.unnamed(sizes[2], config.dataset.get("flip_pairs"), "random")
    return TrainingData(tensor_dataset_fn(train, global_batch, int(config.train.seed), True),
                        tensor_dataset_fn(val, global_batch), RANDOM_STEPS_PER_EPOCH,
                        keypoints=keypoints)


def check_training_keypoints(config, keypoints, source):
    """The checks made before the model is built, with the fix in the message.

    Args:
      config: the run config (model.num_joints, dataset.flip_pairs, augment.flip/flip_prob).
      keypoints: the training set's :class:`KeypointSpec`.
      source: where the set comes from (the annotation file), for messages.

    Raises:
      ValueError: the set's K is not ``model.num_joints`` (the heatmaps would not fit the
        targets); or flip augmentation is on, ``dataset.flip_pairs`` is unset and keypoints
        whose names look sided ('lefteye') are in no derived pair: a flipped crop would keep
        the left label on the mirrored limb.
    """
    k = keypoints.num_joints
    if k != int(config.model.num_joints):
        raise ValueError(f"config.model.num_joints is {config.model.num_joints} but {source} has "
                         f"K={k} keypoints ({', '.join(keypoints.names[:6])}"
                         f"{' ...' if k > 6 else ''}): set --config.model.num_joints={k}")
    flipping = bool(config.augment.get("flip", True)) and \
        float(config.augment.get("flip_prob", 0.5)) > 0
    if flipping and config.dataset.get("flip_pairs") is None:
        unpaired = unpaired_sided_names(keypoints.names, keypoints.flip_pairs)
        if unpaired:
            raise ValueError(
                f"{source}: keypoints {unpaired[:6]} look left/right-sided but no flip pair "
                f"was derived for them (names pair as 'left_x'/'right_x', 'xL'/'xR', ...): "
                f"set config.dataset.flip_pairs to the (left, right) index pairs, () for none, "
                f"or turn off flip augmentation (config.augment.flip=False)")


def training_data_from_config(config):
    """The training and validation data of ``config.dataset``.

    ``dataset.name == 'random'`` gives in-memory random examples
    (:data:`RANDOM_STEPS_PER_EPOCH` global batches per epoch; smoke tests and benchmarks);
    every other name reads records with :func:`mrpose_tf.data.pipeline.read_split` once
    (from the annotation files, or from the TFDS builds of ``dataset.tfds_name``, whose
    images then stream from their shards) and builds the augmented pipeline per epoch with
    seed ``train.seed + epoch``. The training set's keypoints are checked against the config
    first (:func:`check_training_keypoints`), before any model is built.

    Args:
      config: an experiment ConfigDict.

    Returns:
      :class:`TrainingData`.

    Raises:
      ValueError: see :func:`check_training_keypoints`; fewer training people than a batch.
    """
    if config.dataset.name == "random":
        return _random_data(config)
    from mrpose_tf.config import input_preprocessing_of
    from mrpose_tf.data.pipeline import build_dataset, read_split

    train_records, keypoints = read_split(config, "train")
    d = config.dataset
    source = (f"TFDS build {d.tfds_name}_train" if d.tfds_name
              else os.path.join(d.root, d.train_annotations))
    check_training_keypoints(config, keypoints, source)
    global_batch = int(config.train.batch_size)
    steps_per_epoch = len(train_records) // global_batch
    if steps_per_epoch < 1:
        raise ValueError(f"{config.dataset.name}: {len(train_records)} training people in "
                         f"{source} are fewer than one batch of {global_batch}")
    val_records, _ = read_split(config, "val")
    val_gt_records = val_records  # the validation loss and PCK need labelled joints
    if not config.test.use_gt_boxes and config.test.detections:
        val_gt_records = None
        if not config.dataset.tfds_name:  # a TFDS build holds one kind of box per split
            gt_config = config.copy_and_resolve_references()
            with gt_config.unlocked():
                gt_config.test.use_gt_boxes = True
            val_gt_records, _ = read_split(gt_config, "val")
    common = dict(keypoints=keypoints, input_size=tuple(config.model.input_size),
                  heatmap_size=tuple(config.model.heatmap_size), sigma=float(config.model.sigma),
                  input_preprocessing=input_preprocessing_of(config))
    checked = []

    def train_fn(input_context=None, epoch=0):
        dataset = build_dataset(
            train_records, train=True, batch_size=global_batch,
            augment=config.augment.to_dict(), seed=int(config.train.seed) + int(epoch),
            shuffle_buffer=int(config.train.shuffle_buffer), input_context=input_context,
            repeat=True, check_files=not checked,
            decode_once_per_image=bool(config.train.get("decode_once_per_image", True)),
            **common)
        checked.append(True)
        return dataset

    def val_fn(input_context=None):
        return build_dataset(val_gt_records, train=False, batch_size=int(config.test.batch_size),
                             input_context=input_context, drop_remainder=True,
                             check_files=False, **common)

    has_val = val_gt_records is not None and len(val_gt_records) >= config.test.batch_size
    return TrainingData(train_fn, val_fn if has_val else None, steps_per_epoch, val_records,
                        keypoints)
