import os
import sys

from serving.cli import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
# Everything is stopped and flushed by now; skip the interpreter's slow teardown of TensorFlow
# and gRPC (several seconds), so that SIGTERM -> exit is quick, as orchestrators expect.
os._exit(code)
