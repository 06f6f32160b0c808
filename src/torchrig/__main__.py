"""The ``torchrig`` command line. Every command checks its settings (every variable, torchrig.toml, the flags) and
matrix.yaml first, and contacts nothing and builds nothing from an invalid one.

The parser lives in :mod:`torchrig.cli` (one module per command group). Errors the user can act on are
:class:`~torchrig.errors.FatalError`: caught here once, printed without a traceback, and turned into the error's
exit code.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence

from torchrig.cli import build_parser
from torchrig.cli.context import settings
from torchrig.errors import FatalError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error it printed (2); a code, not an exception
        return e.code if isinstance(e.code, int) else 2
    except FatalError as e:  # a flag's type= parser that raises torchrig's own error (--platform 0)
        print(f"torchrig: error: {e}", file=sys.stderr)
        return e.return_code
    try:
        settings(args)  # every setting parsed and checked before any command contacts Docker, Slurm or a registry
        rc: int = args.func(args)
    except FatalError as e:
        print(f"torchrig: error: {e}", file=sys.stderr)
        return e.return_code
    except SystemExit as e:  # the options after ENV are parsed by the command (cli/run.py): same exit code
        return e.code if isinstance(e.code, int) else 2
    except KeyboardInterrupt:
        print("torchrig: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `torchrig ... | head`: the reader left; say nothing more, like other CLI tools
        _silence_stdout()
        return 141
    except OSError as e:  # the system refused a path or a write no command checked for: said, not a traceback
        return _os_error(e)
    except RuntimeError as e:
        if not str(e).startswith("Symlink loop"):  # pathlib's resolve() before Python 3.13
            raise
        print(f"torchrig: error: {e}: choose another path", file=sys.stderr)
        return 2
    return rc


# a path the user gave that the system cannot look up: a usage error (2); any other system error: 1
_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EILSEQ})


def _os_error(e: OSError) -> int:
    where = f"{e.filename}: " if e.filename else ""
    if e.errno in _PATH_ERRNOS:
        print(f"torchrig: error: {where}{e.strerror or e}: choose another path", file=sys.stderr)
        return 2
    print(f"torchrig: error: {where}{e.strerror or e} (a system error while working; what was already "
          "recorded is kept): fix the cause and run it again", file=sys.stderr)
    return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
