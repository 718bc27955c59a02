"""Prints the README's architecture table: parameters and FLOPs, measured on the built models.

    python scripts/model_table.py [--backbone=resnet50] [--input_size=256,192] [--num_joints=17]
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import mrpose_tf  # noqa: E402
from mrpose_tf.models import ARCHITECTURES, head_trainable_params  # noqa: E402
from mrpose_tf.models.complexity import count_flops, count_params  # noqa: E402

FIGURES = {"simple_baseline": "Fig. 2", "mrheatnet1": "Fig. 3a", "mrheatnet2": "Fig. 3b",
           "mrfeanet1": "Fig. 4a", "mrfeanet2": "Fig. 4b"}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--input_size", default="256,192")
    parser.add_argument("--num_joints", type=int, default=17)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.input_size.split(","))
    print(f"| arch | paper | params (total) | params (head, trainable) | GFLOPs "
          f"({args.backbone}, {size[0]}x{size[1]}, K={args.num_joints}) |")
    print("|---|---|---:|---:|---:|")
    for arch in ARCHITECTURES:
        keras.backend.clear_session()
        model = mrpose_tf.build_model(arch, args.backbone, args.num_joints, size)
        print(f"| `{arch}` | {FIGURES[arch]} | {count_params(model) / 1e6:.2f} M | "
              f"{head_trainable_params(model):,} | {count_flops(model) / 1e9:.2f} |")


if __name__ == "__main__":
    main()
