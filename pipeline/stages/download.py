"""`download` stage: fetch the airfoil file, verify its SHA-1, write it atomically.

Sources are tried in order: the offline mirror (AIRFOIL_MIRROR, a path or URL) if given, then
the URL from params.yaml. Nothing is written unless the bytes match the expected checksum.
"""
import hashlib
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from pipeline.core import fileio
from pipeline.core.errors import PipelineError

MIRROR_ENV = "AIRFOIL_MIRROR"


class SourceError(Exception):
    """One source failed; `network` marks failures that retrying or a mirror could fix."""

    def __init__(self, message: str, network: bool = False):
        super().__init__(message)
        self.network = network


def _is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https", "file")


def _fetch_url(url: str, timeout: float, retries: int, backoff: float) -> bytes:
    last = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            if e.code < 500:  # 404 and friends will not fix themselves
                raise SourceError(f"HTTP {e.code} {e.reason}") from None
            last = f"HTTP {e.code} {e.reason}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            last = str(getattr(e, "reason", e))
    raise SourceError(f"unreachable after {retries + 1} attempts ({last})", network=True)


def _fetch(source: str, timeout: float, retries: int, backoff: float) -> bytes:
    if _is_url(source):
        return _fetch_url(source, timeout, retries, backoff)
    try:
        return Path(source).read_bytes()
    except OSError as e:
        raise SourceError(f"cannot read ({e.strerror})") from None


def _verify(data: bytes, sha1: str) -> None:
    head = data[:512].lstrip().lower()
    if head.startswith(b"<"):  # an error page served with status 200
        raise SourceError("returned an HTML/XML page, not the data file")
    if not data:
        raise SourceError("returned an empty file")
    actual = hashlib.sha1(data).hexdigest()
    if actual != sha1.lower():
        raise SourceError(f"SHA-1 mismatch: expected {sha1}, got {actual}")


def download(
    url: str,
    sha1: str,
    dest: Path,
    *,
    mirror: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
) -> str:
    """Write the verified file to dest and return the source it came from."""
    sources = [s for s in (mirror, url) if s]
    failures, offline = [], False
    for source in sources:
        try:
            data = _fetch(source, timeout, retries, backoff)
            _verify(data, sha1)
        except SourceError as e:
            failures.append(f"{source}: {e}")
            offline = offline or e.network
            continue
        fileio.write_bytes(Path(dest), data)
        return source
    hint = ""
    if offline and not mirror:
        hint = f"; offline? set {MIRROR_ENV} to a local copy (path or URL) of the file"
    raise PipelineError("download failed: " + "; ".join(failures) + hint)
