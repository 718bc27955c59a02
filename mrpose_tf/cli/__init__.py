"""The command-line programs (console scripts ``mrpose-*``; ``python scripts/NAME.py``).

Each module defines its absl flags at import (on absl's global FLAGS, so a process imports
one of them; the library functions they call are the reusable part), ``main(argv)`` and
``run()``. Heavy imports (TensorFlow) happen inside ``main``, so ``--help`` answers at once.
"""
import sys

from absl import app, flags

HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull")


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


def parse_flags(fv, prog, header, argv):
    """Parses ``argv`` (without the program) into the private FlagValues ``fv``.

    For programs that must not define flags on absl's global FLAGS (library modules run
    with ``python -m``, the benchmark subcommands): ``--help`` prints ``header`` and the
    flags and exits 0; a bad flag or a stray argument exits 2 with the message on stderr.
    """
    if any(arg in HELP_FLAGS for arg in argv):
        print(f"{header}\n\nflags:\n{fv.get_help()}")
        sys.exit(0)
    try:
        rest = fv([prog] + list(argv))
    except flags.Error as error:
        print(f"{prog}: {error}", file=sys.stderr)
        sys.exit(2)
    if len(rest) > 1:
        print(f"{prog}: unexpected arguments {rest[1:]}", file=sys.stderr)
        sys.exit(2)
    return fv
