"""Stage `synthesize`: MNIST-100 pairs (28x56, labels 00-99) from the MNIST splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from pydantic import Field

from nn.files import Array, DataFileError, load_npz, write_together
from nn.mnist.mnist100 import synthesize
from nn.mnist.params import Int, Params, load_params
from nn.mnist.pictures import labelled_grid, png_bytes
from stages.common import fatal_errors

SPLITS = ("train", "dev", "test")
# An MNIST split as the prepare stage writes it: (n, 28, 28) digits, labels 0..9.
MNIST_SPLIT = {"images": Array("uint8", ("n", 28, 28)), "labels": Array("iu", ("n",), 0, 9)}


class Mnist100Params(Params):
    train_size: Annotated[Int, Field(ge=1)]
    dev_size: Annotated[Int, Field(ge=1)]
    test_size: Annotated[Int, Field(ge=1)]
    seed: Annotated[Int, Field(ge=0)]
    sample_grid: Annotated[Int, Field(ge=1, le=40)]


app = typer.Typer(add_completion=False)


@app.command()
def main(
    mnist: Annotated[Path, typer.Option(help="Folder with the MNIST train/dev/test .npz splits.")],
    out: Annotated[Path, typer.Option(help="Folder for the MNIST-100 train/dev/test .npz splits.")],
    samples: Annotated[Path, typer.Option(help="PNG grid of example pairs.")],
    params: Annotated[Path, typer.Option(help="Params file.")] = Path("params.yaml"),
) -> None:
    with fatal_errors("synthesize", DataFileError, OSError,
                      outputs=(*(out / f"{s}.npz" for s in SPLITS), samples)):
        p = load_params(Mnist100Params, "mnist100", params)
        sizes = {"train": p.train_size, "dev": p.dev_size, "test": p.test_size}
        # Every split is made before any is written, and all files are committed together, so
        # an error or Ctrl-C never leaves new train/dev splits beside an old test split.
        with write_together() as outputs:
            for i, split in enumerate(SPLITS):
                src = load_npz(mnist / f"{split}.npz", MNIST_SPLIT)
                # One stream per split, so changing one size leaves the others' bytes alone.
                rng = np.random.default_rng([p.seed, i])
                data = synthesize(src["images"], src["labels"], sizes[split], rng)
                outputs.save_npz(out / f"{split}.npz", **data)
                print(f"synthesize: {split}: {sizes[split]:,} pairs from {len(src['labels']):,} "
                      f"MNIST {split} digits -> {out / f'{split}.npz'}")
                if split == "test":
                    k = min(p.sample_grid ** 2, len(data["labels"]))
                    grid = labelled_grid(data["images"][:k],
                                         [f"{label:02d}" for label in data["labels"][:k]],
                                         columns=p.sample_grid)
                    outputs.write_bytes(samples, png_bytes(grid))
                    print(f"synthesize: {k} examples -> {samples}")

if __name__ == "__main__":
    app()
