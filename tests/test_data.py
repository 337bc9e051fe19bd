"""Download and prepare: real files, a real local HTTP server, and every kind of bad input,
the bad input through the commands themselves (one line, non-zero exit, nothing written)."""
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from pipeline.core import data
from pipeline.stages import download, prepare
from conftest import ROOT, assert_one_line_error, cli, closed_port_url


@pytest.fixture(scope="module")
def good_bytes(raw_file):
    return raw_file.read_bytes()


@pytest.fixture(scope="module")
def server(good_bytes):
    """A loopback HTTP server with a good file, an HTML error page (status 200) and a 404."""
    pages = {"/airfoil.dat": good_bytes, "/error.dat": b"<!DOCTYPE html><html><body>Access denied</body></html>"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            if body is not None:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def fetch(url, sha1, dest, mirror=None):
    return download.download(url, sha1, dest, mirror=mirror, timeout=2, retries=1, backoff=0.01)


def test_download_over_http_verifies_and_writes(server, params, tmp_path, good_bytes):
    dest = tmp_path / "raw" / "airfoil.dat"
    assert fetch(f"{server}/airfoil.dat", params.data.sha1, dest) == f"{server}/airfoil.dat"
    assert hashlib.sha1(dest.read_bytes()).hexdigest() == params.data.sha1
    assert [p.name for p in dest.parent.iterdir()] == ["airfoil.dat"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask  # as readable as any file the user writes


def test_mirror_is_tried_first_and_url_is_the_fallback(server, params, tmp_path):
    dest = tmp_path / "airfoil.dat"
    assert fetch(closed_port_url(), params.data.sha1, dest, mirror=f"{server}/airfoil.dat") == f"{server}/airfoil.dat"
    dest.unlink()
    assert fetch(f"{server}/airfoil.dat", params.data.sha1, dest, mirror=str(tmp_path / "missing.dat")) \
        == f"{server}/airfoil.dat"


def project_with(tmp_path, url=None, sha1=None):
    """A project folder whose params.yaml downloads from `url` (one quick retry) and expects `sha1`."""
    text = (ROOT / "params.yaml").read_text().replace("retries: 3 ", "retries: 1 ")
    if url:
        text = text.replace("https://d2l-data.s3-accelerate.amazonaws.com/airfoil_self_noise.dat", url)
    if sha1:
        text = text.replace("76e5be1548fd8222e5074cf0faae75edff8cf93f", sha1)
    (tmp_path / "params.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize("path, sha1, mirror, expected", [
    ("/airfoil.dat", "f" * 40, None, ["SHA-1 mismatch: expected ffff"]),
    ("/error.dat", None, None, ["returned an HTML/XML page"]),
    ("/gone.dat", None, None, ["HTTP 404"]),
    (None, None, None, ["unreachable after 2 attempts", "offline? set AIRFOIL_MIRROR"]),
    (None, None, "bad.dat", ["bad.dat: SHA-1 mismatch", "unreachable after 2 attempts"]),
])
def test_download_command_rejects_bad_sources_in_one_line_and_writes_nothing(server, tmp_path, path, sha1, mirror,
                                                                             expected):
    url = f"{server}{path}" if path else closed_port_url()
    root = project_with(tmp_path, url, sha1)
    (root / "bad.dat").write_bytes(b"not the file")
    result = cli("download", cwd=root, AIRFOIL_MIRROR=mirror or "")
    assert_one_line_error(result, url, *expected)
    assert not (root / "data").exists()


def test_prepare_standardizes_and_finds_the_floor(raw_file, tmp_path, params):
    stats = prepare.prepare(raw_file, tmp_path, 1500, params.data.sha1)
    ds = data.load_prepared(tmp_path)
    table = np.genfromtxt(raw_file, delimiter="\t")  # the book's parser, as an independent check
    assert ds.features.shape == (1500, 5) and ds.target.shape == (1500,) and ds.features.dtype == np.float32
    expected = (table - table.mean(axis=0)) / table.std(axis=0)
    np.testing.assert_allclose(ds.features, expected[:1500, :5], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ds.target, expected[:1500, 5], rtol=1e-6, atol=1e-6)
    assert stats["rows_in_file"] == 1503 and stats["rows"] == 1500
    # The floor is the minimum: perturbing the solution in any direction raises the loss.
    floor = stats["least_squares"]
    theta = np.array(floor["w"] + [floor["b"]])
    xs = np.concatenate([ds.features, np.ones((1500, 1))], axis=1).astype(np.float64)
    loss = lambda t: 0.5 * np.mean((xs @ t - ds.target) ** 2)
    assert loss(theta) == pytest.approx(floor["loss"], rel=1e-9)
    for direction in np.eye(6):
        assert loss(theta + 1e-3 * direction) > floor["loss"] and loss(theta - 1e-3 * direction) > floor["loss"]


def _bad_files(good: bytes) -> dict:
    lines = good.split(b"\r\n")
    replace = lambda i, line: b"\r\n".join(lines[:i] + [line] + lines[i + 1:])
    return {
        "empty": (b"", "is empty"),
        "truncated": (b"\r\n".join(lines[:1000]), "has 1000 rows, fewer than data.n_rows = 1500"),
        "cut mid-line": (b"\r\n".join(lines[:6] + [lines[6][:10]]), "line 7: expected 6 tab-separated columns, found 3"),
        "wrong column count": (replace(6, b"800\t0\t0.3048\t71.3"), "line 7: expected 6 tab-separated columns, found 4"),
        "non-numeric": (replace(9, b"800\t0\tabc\t71.3\t0.00266337\t126.201"), "line 10, column 3 (chord length): 'abc'"),
        "NaN cell": (replace(2, b"800\tnan\t0.3048\t71.3\t0.00266337\t126.201"), "line 3, column 2 (angle of attack)"),
        "HTML page": (b"<html><body>502 Bad Gateway</body></html>", "line 1: expected 6"),
    }


@pytest.mark.parametrize("case", ["empty", "truncated", "cut mid-line", "wrong column count", "non-numeric",
                                  "NaN cell", "HTML page"])
def test_prepare_command_rejects_bad_files_naming_line_and_column(case, good_bytes, tmp_path):
    content, expected = _bad_files(good_bytes)[case]
    root = project_with(tmp_path, sha1=hashlib.sha1(content).hexdigest())  # past the checksum, to the parser
    (root / "data/raw").mkdir(parents=True)
    (root / "data/raw/airfoil_self_noise.dat").write_bytes(content)
    assert_one_line_error(cli("prepare", cwd=root), expected)
    assert not (root / "data/prepared").exists()


def test_prepare_refuses_an_edited_raw_file_that_still_parses(good_bytes, tmp_path, params):
    """One digit flipped in a number: the file parses, so only the checksum can tell."""
    lines = good_bytes.split(b"\r\n")
    digit = lines[4].index(b"3")
    lines[4] = lines[4][:digit] + b"4" + lines[4][digit + 1:]
    edited = b"\r\n".join(lines)
    prepare.parse_airfoil(edited)  # still a valid airfoil table
    root = project_with(tmp_path)
    (root / "data/raw").mkdir(parents=True)
    raw = root / "data/raw/airfoil_self_noise.dat"
    raw.write_bytes(edited)
    assert_one_line_error(cli("prepare", cwd=root), str(raw.relative_to(root)), "SHA-1 mismatch",
                          f"expected {params.data.sha1}", f"found {hashlib.sha1(edited).hexdigest()}",
                          "rerun `dvc repro download`")
    assert not (root / "data/prepared").exists()


def test_data_knobs_through_the_commands(server, raw_file, tmp_path):
    """data.url, data.timeout_s, data.retries and data.n_rows at non-default values, through
    `download` and `prepare` as DVC runs them."""
    import yaml
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(url=f"{server}/airfoil.dat", timeout_s=5, retries=0, n_rows=1200)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    fetched = cli("download", cwd=tmp_path, AIRFOIL_MIRROR="")
    assert fetched.returncode == 0 and f"from {server}/airfoil.dat" in fetched.stdout, fetched.stderr
    prepared = cli("prepare", cwd=tmp_path)
    assert prepared.returncode == 0 and prepared.stdout.startswith("prepared 1200 of 1503 rows"), prepared.stderr
    assert data.load_prepared(tmp_path / "data/prepared").features.shape == (1200, 5)
