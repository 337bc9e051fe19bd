"""The one exception type a user sees: a one-line message naming the problem and the fix."""
import errno


class PipelineError(Exception):
    """Bad input or an unreachable resource. The command line prints it as one line and exits 1."""


def os_error(e: OSError) -> str:
    """An OS error as a user needs it: "ENOSPC: No space left on device"."""
    return f"{errno.errorcode.get(e.errno, 'error')}: {e.strerror or e}"
