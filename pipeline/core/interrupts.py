"""Interrupts deferred over the few steps that must not be cut in half."""
import signal
import threading
from contextlib import contextmanager


@contextmanager
def interrupts_deferred():
    """Hold SIGINT and SIGTERM (raised as KeyboardInterrupt, see cli) until the block is done.
    Python runs signal handlers in the main thread, so swapping the handler is enough here, where
    blocking the signal would not be: TensorFlow's own threads would still receive it."""
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield
        return
    received = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:  # deliver it now, to whoever handled it before: an enclosing deferral holds it on
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler != signal.SIG_IGN:
                raise KeyboardInterrupt
