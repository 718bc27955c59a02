"""``python -m mrpose_tf.benchmarks SUBCOMMAND ...``."""
from mrpose_tf.benchmarks import main

main()
