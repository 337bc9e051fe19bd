import logging
import os
import sys

from pipeline.cli import main

if __name__ == "__main__":  # not when the MLflow process (spawned) imports this module again
    status = main()
    # Leave without the interpreter's teardown: TensorFlow's takes about a second per stage, and by now
    # every output is written and closed, the MLflow process has exited and helpers are stopped.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
