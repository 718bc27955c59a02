"""The command-line programs (console scripts ``mrpose-*``; ``python scripts/NAME.py``).

Each module defines its absl flags at import, ``main(argv)`` and ``run()``. Heavy imports
(TensorFlow) happen inside ``main``, so ``--help`` answers at once.
"""
import sys

from absl import app, flags


def run_main(main, module_name):
    """``app.run(main)`` with ``--help`` showing ``module_name``'s docstring and flags.

    absl's short help lists the flags of the ``__main__`` module, which here is a console
    script's stub or ``scripts/NAME.py``; this lends it the program module's flags and doc.
    """
    module = sys.modules[module_name]
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    sys.modules["__main__"].__doc__ = module.__doc__
    app.run(main)
