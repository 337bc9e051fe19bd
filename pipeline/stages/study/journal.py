"""The journal file every study shares, kept whole through torn writes and full disks.

Optuna's JournalFileBackend appends one JSON record per line. A power cut, a kill mid-write or a
full disk can leave a last line without its newline; Optuna skips such a line when it reads, but
its next append lands on the end of it and makes a line no reader can parse, which would make
every study in the file unreadable. So before any write the torn tail is cut back to the last
whole record (the removed bytes kept beside the journal), and a failed append is truncated back
to where it began. Both happen under the journal's lock. A corrupt record in the middle is not
ours to guess at: it is refused in one line, and the file is left as it is.
"""
import json
import logging
import os
import time
from pathlib import Path

import optuna

from pipeline.core.errors import PipelineError, os_error

log = logging.getLogger(__name__)


class Journal(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file with two guarantees of ours: no torn tail is ever appended to, and an
    append that fails (ENOSPC, EFBIG) leaves no half-written record behind."""

    def __init__(self, path: Path, lock):
        super().__init__(str(path), lock_obj=lock)
        self.path, self._lock_obj = Path(path), lock
        self._locked(lambda: repair_tail(self.path))
        check_records(self.path)

    def _locked(self, action):
        try:  # acquire inside: an interrupt during or right after it still releases
            self._lock_obj.acquire()
            return action()
        finally:
            self._lock_obj.release()

    def append_logs(self, logs: list) -> None:
        data = ("\n".join(json.dumps(entry, separators=(",", ":")) for entry in logs) + "\n").encode()

        def append():
            repair_tail(self.path)  # another process may have been killed mid-write since we last looked
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)  # unbuffered: a failed write is not retried on close
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as e:
                os.ftruncate(fd, start)  # no half-written record: the file ends where it did
                raise PipelineError(f"cannot write the Optuna journal {self.path}: {os_error(e)}: "
                                    f"free space and rerun (finished trials are kept)") from None
            finally:
                os.close(fd)
        self._locked(append)


def repair_tail(path: Path) -> int:
    """Cut a last line without a newline back to the last whole record; keep the removed bytes in
    `<journal>.torn-<time>` beside it and warn once. Returns the number of bytes removed. The
    caller holds the journal's lock."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        cut = _last_newline_end(f, size)
        f.seek(cut)
        torn = f.read()
        kept = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        kept.write_bytes(torn)
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s ended in a torn record (%d bytes, from an interrupted write); cut back to the last "
                "whole record, the removed bytes kept in %s", path, len(torn), kept)
    return len(torn)


def _last_newline_end(f, size: int) -> int:
    """The offset just past the last newline of the file (0 if it has none)."""
    block, end = 1 << 16, size
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        found = f.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def check_records(path: Path) -> None:
    """Refuse a journal whose records do not all parse, naming the first bad one."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                return  # a write in progress (or a torn tail, cut under the lock before any write)
            try:
                json.loads(line)
            except ValueError:
                raise PipelineError(
                    f"{path}: record {number} is corrupt (not one JSON line), so its studies cannot be read; "
                    f"nothing was written. Keep the {number - 1} readable records with "
                    f"`head -n {number - 1} {path} > {path}.readable`, check them with "
                    f"`optuna studies --storage {path}.readable --storage-class JournalFileBackend`, "
                    f"then move that file into place") from None
