"""Atomic writes: a crash or a bad input never leaves a half-written output behind."""
import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pipeline.core.errors import PipelineError, os_error

# What a write meets when the disk or the filesystem refuses it, as opposed to a bug.
_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def _file_mode() -> int:
    """What open() would give a new file under the current umask (mkstemp's files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, _file_mode())  # reports and outputs readable like any other file the user writes
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in _REFUSED:
            raise
        raise PipelineError(f"cannot write {path}: {os_error(e)}: free space (or make it writable) and rerun; "
                            f"the previous {path.name}, if any, is unchanged") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
