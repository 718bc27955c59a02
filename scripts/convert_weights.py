"""``python scripts/convert_weights.py`` = ``mrpose-convert`` (see mrpose_tf/cli/convert.py)."""
from mrpose_tf.cli.convert import run

if __name__ == "__main__":
    run()
