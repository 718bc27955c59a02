"""``python scripts/export.py`` = ``mrpose-export`` (see mrpose_tf/cli/export.py)."""
from mrpose_tf.cli.export import run

if __name__ == "__main__":
    run()
