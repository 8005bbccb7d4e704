"""Stage `evaluate`: a trained model on the held-out test split -> metrics, tables, pictures."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import typer
from pydantic import Field

from nn.backend import DeviceError
from nn.engine import ENGINES
from nn.fast.threads import apply_thread_budget
from nn.files import Array, DataFileError, load_npz, write_together
from nn.losses import softmax_cross_entropy
from nn.metrics import confusion_matrix, macro_f1, per_class
from nn.mnist.modelfile import ModelFileError, load, predict_proba, tta_views
from nn.mnist.params import Float, Int, Params, load_params
from nn.mnist.pictures import confusion_heatmap, error_gallery, png_bytes
from stages.common import fatal_errors

Engine = Literal[ENGINES]
ERRORS_SHOWN = 32  # the most confident mistakes in errors.png


class EvaluateParams(Params):
    # test-time augmentation (nn.mnist.modelfile.predict_proba): score each image as the mean
    # of its copies moved by up to tta_shift pixels each way ((2s + 1)^2 shifts), each also
    # rotated by -tta_rotate and +tta_rotate degrees and scaled by 1 -+ tta_scale where those
    # are not 0 (3 or 9 views per shift); all 0: the image alone
    tta_shift: Annotated[Int, Field(ge=0, le=3)] = 0
    tta_rotate: Annotated[Float, Field(ge=0, le=45)] = 0.0
    tta_scale: Annotated[Float, Field(ge=0, le=0.5)] = 0.0


def evaluate(model, info, images: np.ndarray, labels: np.ndarray,
             tta: EvaluateParams = EvaluateParams()) -> dict:
    """Everything the reports need about one model on one labelled split, scored with the
    test-time augmentation of `tta`."""
    proba = predict_proba(model, images, info.normalization, tta.tta_shift, tta.tta_rotate,
                          tta.tta_scale)
    predicted = proba.argmax(axis=1)
    logits = np.log(np.maximum(proba, np.finfo(proba.dtype).tiny))
    loss, _ = softmax_cross_entropy(logits.astype(np.float64), labels)
    cm = confusion_matrix(labels, predicted, proba.shape[1])  # classes named or not
    return {
        "proba": proba, "predicted": predicted, "cm": cm,
        "metrics": {
            "accuracy": round(float((predicted == labels).mean()), 6),
            "loss": round(float(loss), 6),
            "macro_f1": round(macro_f1(cm), 6),
            "samples": int(len(labels)),
            "params": int(model.num_params()),
            "tta_views": len(tta_views(tta.tta_shift, tta.tta_rotate, tta.tta_scale)),
        },
    }


app = typer.Typer(add_completion=False)


@app.command()
def main(
    model: Annotated[Path, typer.Option(help="Trained model (.npz).")],
    data: Annotated[Path, typer.Option(help="Folder with test.npz.")],
    out: Annotated[Path, typer.Option(
        help="Folder for metrics.json, per_class.csv, confusion.*, errors.png.")],
    engine: Annotated[Engine, typer.Option(help="Which implementation runs the model.")] = "fast",
    params: Annotated[Path, typer.Option(help="Params file (its evaluate section).")] = Path("params.yaml"),
) -> None:
    import pandas as pd

    reports = ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png", "errors.png")
    with fatal_errors(f"evaluate {model}", ModelFileError, DataFileError, DeviceError, OSError,
                      outputs=tuple(out / name for name in reports),
                      dvc_stage=f"evaluate@{Path(model).stem}"):
        p = load_params(EvaluateParams, "evaluate", params)
        apply_thread_budget()  # NN_THREADS: this job's share of the cores
        net, info = load(model, engine=engine)
        k = len(info.classes) if info.classes else net.predict_proba(
            np.zeros((1, *info.input_shape), np.float32)).shape[1]
        test = load_npz(data / "test.npz", {"images": Array("uint8", ("n", None, None)),
                                            "labels": Array("iu", ("n",), 0, k - 1)})
        images, labels = test["images"], test["labels"].astype(np.int64)
        if tuple(info.input_shape) != (*images.shape[1:], 1):
            raise DataFileError(f"{model} takes {tuple(info.input_shape)} inputs, "
                             f"{data / 'test.npz'} holds {images.shape[1:]} images")
        start = time.perf_counter()
        r = evaluate(net, info, images, labels, p)
        seconds = time.perf_counter() - start
        classes = np.array(info.classes or [str(c) for c in range(k)])

        table = pd.DataFrame({"class": classes, **per_class(r["cm"])})
        wrong = np.flatnonzero(r["predicted"] != labels)
        confidence = r["proba"][wrong, r["predicted"][wrong]]
        worst = wrong[np.argsort(-confidence, kind="stable")[:ERRORS_SHOWN]]
        name = Path(model).stem

        if len(worst):
            gallery = error_gallery(images[worst], classes[labels[worst]],
                                    classes[r["predicted"][worst]],
                                    r["proba"][worst, r["predicted"][worst]])
        else:  # a perfect model still gets a picture, saying so
            from nn.mnist.pictures import labelled_grid
            gallery = labelled_grid(images[:1] * 0, ["no mistakes"], columns=1, scale=3)
        with write_together() as outputs:  # all five reports, or none
            outputs.write_bytes(out / "metrics.json",
                                (json.dumps(r["metrics"], indent=2) + "\n").encode())
            outputs.write_bytes(out / "per_class.csv",
                                table.to_csv(index=False, float_format="%.4f").encode())
            outputs.write_bytes(out / "confusion.csv", pd.DataFrame({
                "actual": classes[labels], "predicted": classes[r["predicted"]],
            }).to_csv(index=False).encode())
            outputs.write_bytes(out / "confusion.png", png_bytes(confusion_heatmap(
                r["cm"], list(classes), f"{name}: test accuracy {r['metrics']['accuracy']:.2%}")))
            outputs.write_bytes(out / "errors.png", png_bytes(gallery))
        m = r["metrics"]
        print(f"evaluate: {name}: accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f}, "
              f"macro-F1 {m['macro_f1']:.4f} on {m['samples']:,} test samples "
              f"({m['tta_views']} view{'s' * (m['tta_views'] > 1)} each, {seconds:.1f} s) -> {out}")


if __name__ == "__main__":
    app()
