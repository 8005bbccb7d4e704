"""Stage `prepare`: MNIST IDX files -> train / dev / test `.npz` splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from pydantic import Field

from nn.files import write_together
from nn.mnist.idx import IdxError
from nn.mnist.params import Int, Params, ParamsError, load_params
from nn.mnist.sources import load_split
from nn.mnist.split import stratified_split
from stages.common import fatal_errors


class PrepareParams(Params):
    dev_size: Annotated[Int, Field(ge=1)]
    seed: Annotated[Int, Field(ge=0)]


app = typer.Typer(add_completion=False)


@app.command()
def main(
    raw: Annotated[Path, typer.Option(help="Folder with the four MNIST IDX files.")],
    out: Annotated[Path, typer.Option(help="Folder for train.npz, dev.npz, test.npz.")],
    params: Annotated[Path, typer.Option(help="Params file.")] = Path("params.yaml"),
) -> None:
    with fatal_errors("prepare", IdxError, OSError,
                      outputs=tuple(out / f"{s}.npz" for s in ("train", "dev", "test"))):
        p = load_params(PrepareParams, "prepare", params)
        images, labels = load_split(raw, "train")
        if p.dev_size >= len(labels):
            raise ParamsError(f"prepare.dev_size: {p.dev_size:,} must be less than the "
                              f"{len(labels):,} training images in {raw}")
        train, dev = stratified_split(labels, p.dev_size, np.random.default_rng(p.seed))
        test_images, test_labels = load_split(raw, "test")
        splits = {
            # `index`: the digit's position in the canonical MNIST file it came from.
            "train": (images[train], labels[train], train),
            "dev": (images[dev], labels[dev], dev),
            "test": (test_images, test_labels, np.arange(len(test_labels))),
        }
        with write_together() as outputs:  # the three splits, or none of them
            for name, (x, y, index) in splits.items():
                outputs.save_npz(out / f"{name}.npz", images=x, labels=y,
                                 index=index.astype(np.int32))
                print(f"prepare: {name}: {len(y):,} images -> {out / f'{name}.npz'}")


if __name__ == "__main__":
    app()
