"""Benchmarks: ``python scripts/benchmark.py SUBCOMMAND ...`` (see mrpose_tf/benchmarks)."""
from mrpose_tf.benchmarks import main

if __name__ == "__main__":
    main()
