"""Convert a PyTorch checkpoint of the paper's code, SimpleBaseline or MMPose into a run.

  python scripts/convert_weights.py --checkpoint=mrfea2_pose_resnet_50_256x192.pth.tar \\
      --config=configs/coco/mrfeanet2_resnet50_256x192.py --workdir=runs/mrfeanet2_r50_authors

writes WORKDIR as a run directory (config.json, keypoints.json, checkpoints/ckpt-0,
conversion.json) that scripts/evaluate.py, scripts/export.py, scripts/demo.py and
mrpose_tf.Predictor.from_checkpoint take as --checkpoint=WORKDIR. The source (SimMRPose /
SimpleBaseline with or without DataParallel's 'module.', MMPose 0.x or 1.x) is recognised
from the keys and sets the input preprocessing; --style tells a pytorch-style ResNet (stride
in the 3x3 conv, the default) from a caffe-style one, which the file cannot. Needs torch
(pip install -e '.[torch]').
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mrpose_tf.cli import run_main  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Experiment config file of the network "
                                "(configs/...); every field can be overridden.")
flags.DEFINE_string("checkpoint", None, "The PyTorch file (.pth, .pth.tar, .pt).")
flags.DEFINE_string("workdir", None, "The run directory to write (new or empty).")
flags.DEFINE_enum("style", None, ["pytorch", "caffe"], "The ResNet style of the checkpoint "
                  "(default: the config's model.backbone_style if pytorch or caffe, else "
                  "pytorch).")
flags.mark_flags_as_required(["checkpoint", "config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from mrpose_tf.config import resolve_unset_fields
    from mrpose_tf.convert import ConversionError, convert_checkpoint

    try:
        convert_checkpoint(FLAGS.checkpoint, resolve_unset_fields(FLAGS.config), FLAGS.workdir,
                           FLAGS.style)
    except (ConversionError, FileExistsError, FileNotFoundError) as error:
        print(f"conversion failed: {error}", file=sys.stderr)
        sys.exit(2)


def run():
    """The console script's entry point."""
    run_main(main, __name__)


if __name__ == "__main__":
    run()
