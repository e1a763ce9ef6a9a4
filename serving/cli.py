"""`python -m serving`: parse tensorflow_model_server's flags, then run the server.

The flag table, the options and their checks live in `serving.options`; the server itself
(TensorFlow, grpc, uvicorn) is imported only once the command line is known to be good.
"""

from __future__ import annotations

import sys

from serving.options import FlagError, parse_flags, usage


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(argument in ("-h", "--help", "-help", "--helpfull") for argument in argv):
        print(usage())
        return 0
    try:
        options = parse_flags(argv)
    except FlagError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from common import quiet

    # TensorFlow's start-up noise is written before its logging starts: filtered, unless
    # --verbose, by importing it here, before the server (which needs it) does.
    quiet.import_tensorflow(options.verbose)
    from serving.server import run  # heavy: TensorFlow, grpc

    return run(options)
