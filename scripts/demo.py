"""``python scripts/demo.py`` = ``mrpose-demo`` (see mrpose_tf/cli/demo.py)."""
from mrpose_tf.cli.demo import run

if __name__ == "__main__":
    run()
