"""Prints the README's architecture table: parameters and FLOPs, measured on the built models.

    python scripts/model_table.py [--backbone=resnet50] [--input_size=256,192] [--num_joints=17]
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import app, flags  # noqa: E402

import mrpose_tf  # noqa: E402
from mrpose_tf.models import ARCHITECTURES, head_trainable_params  # noqa: E402
from mrpose_tf.models.complexity import count_flops, count_params  # noqa: E402

FIGURES = {"simple_baseline": "Fig. 2", "mrheatnet1": "Fig. 3a", "mrheatnet2": "Fig. 3b",
           "mrfeanet1": "Fig. 4a", "mrfeanet2": "Fig. 4b"}


flags.DEFINE_enum("backbone", "resnet50", ["resnet50", "resnet101", "resnet152"],
                  "ResNet depth.")
flags.DEFINE_list("input_size", ["256", "192"], "HEIGHT,WIDTH of the input crop in pixels.")
flags.DEFINE_integer("num_joints", 17, "Keypoints K (heatmap channels).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    size = tuple(int(v) for v in FLAGS.input_size)
    print(f"| arch | paper | params (total) | params (head, trainable) | GFLOPs "
          f"({FLAGS.backbone}, {size[0]}x{size[1]}, K={FLAGS.num_joints}) |")
    print("|---|---|---:|---:|---:|")
    for arch in ARCHITECTURES:
        keras.backend.clear_session()
        model = mrpose_tf.build_model(arch, FLAGS.backbone, FLAGS.num_joints, size)
        print(f"| `{arch}` | {FIGURES[arch]} | {count_params(model) / 1e6:.2f} M | "
              f"{head_trainable_params(model):,} | {count_flops(model) / 1e9:.2f} |")


if __name__ == "__main__":
    app.run(main)
