"""The one exception type a user sees: a one-line message naming the problem and the fix."""


class PipelineError(Exception):
    """Bad input or an unreachable resource. The command line prints it as one line and exits 1."""
