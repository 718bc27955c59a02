"""Quickstart: a small pose network trained from scratch on the synthetic figures, on a CPU.

  python scripts/train.py --config=configs/quickstart.py --workdir=runs/quickstart

renders the synthetic set into data/synthetic_quickstart (once), trains for about ten
minutes on two CPU cores, then evaluates (COCO AP on the validation split, ground-truth
boxes; PCK@0.1 and the mean-pose baseline), exports (SavedModel, TFLite fp32 and int8) and
draws WORKDIR/demo.png. Every choice below trades fidelity to the paper for learning fast
from random weights; the paper configs (configs/coco, configs/mpii) keep the paper's recipe.
"""
import ml_collections

from mrpose_tf.config import base_config, use_synthetic_dataset


def get_config():
    c = base_config()

    # Rendered by scripts/train.py when absent (mrpose_tf.data.synthetic.prepare_from_config):
    # 'easy' figures (distinct left/right limb colours, plain backgrounds), ~2 people each.
    use_synthetic_dataset(c, "data/synthetic_quickstart",
                          num_train=1500, num_val=100, difficulty="easy")

    # The cheapest network of the paper at an eighth of its input area, no ImageNet weights
    # (none can be downloaded here): heatmaps of 24 x 16. A larger input learns less in the
    # same minutes from random weights.
    c.model.arch = "simple_baseline"
    c.model.backbone = "resnet50"
    # torchvision's ResNet (stride in the 3x3 conv, no conv biases): ahead of the keras and
    # caffe layouts at every seed of this recipe replayed on a GPU, and at seed 0 under
    # mrpose-train (docs/learning_proof.md, "Backbone styles").
    c.model.backbone_style = "pytorch"
    c.model.backbone_weights = None
    c.model.input_size = (96, 64)
    c.model.heatmap_size = (24, 16)
    c.model.sigma = 2.0

    # In 'easy' figures the colours tell left from right (warm = the person's left). A
    # mirrored crop keeps the colours but swaps the labels, so flipping (in training and in
    # the flip test) would teach and average contradictory left/right cues: both are off.
    # No rotation and little scaling: the validation crops are upright, and a ten-minute
    # run has no time to learn invariances it is never tested on.
    c.augment.flip = False
    c.augment.scale_factor = 0.15
    c.augment.rotation_factor = 0.0
    c.augment.rotation_prob = 0.0

    # bfloat16 where the CPU computes it natively (AVX512_BF16, AMX) and on GPUs, ~1.3x faster
    # there; float32 elsewhere, where bfloat16 is emulated.
    c.train.precision = "auto"
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    # ~94 steps/epoch; the x0.1 drop after epoch 5 (step 470) brings the jump in AP.
    c.train.epochs = 6
    c.train.lr_steps = (5,)
    # Training aid: weight the foreground pixels up so that the network leaves the all-zero
    # heatmap plateau within minutes instead of tens of minutes.
    c.train.foreground_weight = 10.0
    c.train.max_minutes = 12.5           # a safety budget on slower machines
    c.train.eval_every_epochs = 2        # the learning curve (AP) in metrics.json
    c.train.log_every_steps = 10
    c.train.checkpoint_every_steps = 100
    c.train.keep_checkpoints = 1

    c.test.use_gt_boxes = True           # AP of the keypoints, not of a detector
    c.test.flip_test = False             # see augment.flip above
    c.test.detections = ""
    c.test.batch_size = 64

    c.export.representative_samples = 64
    c.finish = ml_collections.ConfigDict(dict(
        evaluate=True, export_formats="saved_model,tflite_fp32,tflite_int8", demo_images=6))
    return c
