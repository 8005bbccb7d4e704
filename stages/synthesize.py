"""Stage `synthesize`: MNIST-100 pairs (28x56, labels 00-99) from the MNIST splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

from nn.files import load_npz, save_npz, write_bytes
from nn.mnist.mnist100 import synthesize
from nn.mnist.pictures import labelled_grid, png_bytes
from stages.common import fatal_errors, load_params, range_

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Mnist100Params:
    train_size: int = range_(1)
    dev_size: int = range_(1)
    test_size: int = range_(1)
    seed: int = range_(0)
    sample_grid: int = range_(1, 40)

app = typer.Typer(add_completion=False)


@app.command()
def main(
    mnist: Path = typer.Option(..., help="Folder with the MNIST train/dev/test .npz splits."),
    out: Path = typer.Option(..., help="Folder for the MNIST-100 train/dev/test .npz splits."),
    samples: Path = typer.Option(..., help="PNG grid of example pairs."),
    params: Path = typer.Option(Path("params.yaml"), help="Params file."),
) -> None:
    with fatal_errors("synthesize", OSError, ValueError):
        p = load_params(Mnist100Params, "mnist100", params)
        sizes = {"train": p.train_size, "dev": p.dev_size, "test": p.test_size}
        for i, split in enumerate(SPLITS):
            src = load_npz(mnist / f"{split}.npz", ("images", "labels"))
            # One independent stream per split, so changing one size leaves the others' bytes alone.
            rng = np.random.default_rng([p.seed, i])
            data = synthesize(src["images"], src["labels"], sizes[split], rng)
            save_npz(out / f"{split}.npz", **data)
            print(f"synthesize: {split}: {sizes[split]:,} pairs from {len(src['labels']):,} "
                  f"MNIST {split} digits -> {out / f'{split}.npz'}")
            if split == "test":
                k = min(p.sample_grid ** 2, len(data["labels"]))
                grid = labelled_grid(data["images"][:k],
                                     [f"{label:02d}" for label in data["labels"][:k]],
                                     columns=p.sample_grid)
                write_bytes(samples, png_bytes(grid))
                print(f"synthesize: {k} examples -> {samples}")


if __name__ == "__main__":
    app()
