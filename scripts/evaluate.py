"""``python scripts/evaluate.py`` = ``mrpose-evaluate`` (see mrpose_tf/cli/evaluate.py)."""
from mrpose_tf.cli.evaluate import run

if __name__ == "__main__":
    run()
