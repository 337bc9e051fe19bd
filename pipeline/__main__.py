import faulthandler

# Before the heavy imports: a crash in native code (TensorFlow, XLA, a library's loader) then leaves
# every thread's Python stack in the stage's log, in this process and in the MLflow process it spawns.
faulthandler.enable()

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":  # not when the MLflow process (spawned) imports this module again
    try:
        status = main()
    except BrokenPipeError:  # the reader left (`... | head`): as `cat` does, stop quietly, not with a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    # Leave without the interpreter's teardown: TensorFlow's takes about a second per stage, and by now
    # every output is written and closed, the MLflow process has exited and helpers are stopped.
    logging.shutdown()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    sys.stderr.flush()
    os._exit(status)
