"""``python scripts/train.py`` = ``mrpose-train`` (see mrpose_tf/cli/train.py)."""
from mrpose_tf.cli.train import run

if __name__ == "__main__":
    run()
