"""The `nn` command: classify images of handwritten digits with a saved model.

Imports stay light at module level (typer, stdlib) so that `nn --help` and a one-image
prediction start fast; NumPy, Pillow and the model code are imported when needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # joins wrapped docstring lines into paragraphs
    help="From-scratch NumPy neural networks on MNIST and MNIST-100.",
)

EXIT_SOME_FAILED = 1  # some images could not be predicted; the others were
EXIT_MODEL = 2  # the model could not be used; nothing was predicted


@app.callback()
def main() -> None:
    """From-scratch NumPy neural networks on MNIST and MNIST-100."""
    # A callback keeps the commands subcommands (`nn predict ...`, `nn serve`, `nn tune`).


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _reason(e: OSError) -> str:
    from nn.files import os_reason

    return os_reason(e)


def _input_png_path(show_input: Path, index: int, count: int) -> Path:
    """Where image `index` (0-based) of `count` writes its network input: PATH, or PATH-1, PATH-2, ..."""
    if count == 1:
        return show_input
    return show_input.with_name(f"{show_input.stem}-{index + 1}{show_input.suffix}")


def _write_inputs(show_input: Path, results: list[dict]) -> bool:
    """Save each preprocessed input as a PNG; False (and a message) if any could not be written."""
    from PIL import Image

    from nn.files import write_bytes
    from nn.mnist.pictures import png_bytes

    ok = True
    for i, r in enumerate(results):
        if "input" not in r:
            continue
        png = _input_png_path(show_input, i, len(results))
        try:
            write_bytes(png, png_bytes(Image.fromarray(r["input"], mode="L")))  # never half-written
        except OSError as e:
            _fail(f"{png}: cannot write ({_reason(e)})")
            ok = False
    return ok


def _format_text(file: str, top: list[tuple[str, float]], warning: str | None = None) -> str:
    label, p = top[0]
    ranked = ", ".join(f"{lab} {q:.3f}" for lab, q in top)
    return f"{file}: {label} (p={p:.3f})  top-{len(top)}: {ranked}" + \
        (f"  warning: {warning}" if warning else "")


DEFAULT_MODEL = Path("models/cnn.npz")  # the two-digit CNN the pipeline trains
IMAGES_HELP = "Image files (PNG, JPEG, ...: anything Pillow reads); - reads one from stdin."
SHOW_INPUT_HELP = (
    "Write the exact array the network sees as a PNG; with several images, "
    "PATH-1.png, PATH-2.png, ... (1-based, in argument order). Existing files are not "
    "overwritten without --force."
)


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help=IMAGES_HELP, metavar="IMAGE", show_default=False)],
    model: Annotated[Path, typer.Option("--model", "-m", help="Saved model (.npz).")] = DEFAULT_MODEL,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="How many ranked labels to show.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list, one object per image.")] = False,
    show_input: Annotated[
        Path | None, typer.Option("--show-input", help=SHOW_INPUT_HELP, show_default=False)
    ] = None,
    engine: Annotated[
        Literal["fast", "reference"], typer.Option(help="Which implementation runs the model.")
    ] = "fast",
    force: Annotated[bool, typer.Option("--force", help="Let --show-input overwrite existing files.")] = False,
) -> None:
    """Predict the digit (MLP, 28x28) or two-digit number (CNN, 28x56) in each image.

    Each image is preprocessed as MNIST was made: grayscale, inverted if dark-on-light,
    cropped to its ink, scaled into 20x20 and centred by mass in 28x28 (per digit).

    Exit status: 0 all predicted, 1 some images failed (the others are still printed) or
    --show-input would overwrite a file, 2 the model could not be loaded.
    """
    import io
    import sys

    from nn.mnist.classify import load_classifier, prediction_json, rank
    from nn.mnist.modelfile import ModelFileError
    from nn.mnist.preprocess import ImageError, preprocess

    if show_input is not None and not force:  # before any work: the user's files are safe
        taken = [p for i in range(len(images))
                 if (p := _input_png_path(show_input, i, len(images))).exists()]
        if taken:
            _fail(f"{taken[0]}: exists; --show-input does not overwrite files without --force")
            raise typer.Exit(EXIT_SOME_FAILED)
    stdin = sys.stdin.buffer.read() if any(str(p) == "-" for p in images) else b""

    try:
        classifier = load_classifier(model, engine=engine)
    except ModelFileError as e:
        _fail(str(e))
        raise typer.Exit(EXIT_MODEL) from None

    results: list[dict] = []  # per image, in argument order: {"file", "error"} or {"file", "input"}
    for path in images:
        notes: list[str] = []
        try:
            source = io.BytesIO(stdin) if str(path) == "-" else path
            results.append({"file": str(path), "input": preprocess(source, classifier.width, notes),
                            "warning": "; ".join(notes) or None})
        except ImageError as e:
            results.append({"file": str(path), "error": str(e)})
        except OSError as e:  # missing file, a directory, unreadable permissions
            results.append({"file": str(path), "error": _reason(e)})

    good = [r for r in results if "input" in r]
    if good:
        import numpy as np

        for r, top in zip(good, rank(classifier, np.stack([r["input"] for r in good]), top_k)):
            r["top"] = top

    for r in results:
        if "error" in r:
            _fail(f"{r['file']}: {r['error']}")
    write_failed = show_input is not None and not _write_inputs(show_input, results)
    if as_json:
        out = [
            {"file": r["file"], "error": r["error"]}
            if "error" in r
            else {"file": r["file"], **prediction_json(r["top"]),
                  **({"warning": r["warning"]} if r["warning"] else {})}
            for r in results
        ]
        # one object per line: valid JSON for a parser, readable and greppable for a person
        typer.echo("[\n" + ",\n".join(json.dumps(o) for o in out) + "\n]")
    else:
        for r in results:
            if "error" not in r:
                typer.echo(_format_text(r["file"], r["top"], r["warning"]))
    if write_failed or any("error" in r for r in results):
        raise typer.Exit(EXIT_SOME_FAILED)


def _picture_format(path: Path) -> str:
    """The format Pillow writes for `path`'s extension ("PNG", "JPEG", ...); typer.Exit(1), with
    one line, for one it cannot write."""
    from PIL import Image

    found = Image.registered_extensions().get(path.suffix.lower())
    if found is None or found not in Image.SAVE:
        writable = sorted({ext for ext, f in Image.registered_extensions().items()
                           if f in ("PNG", "JPEG", "WEBP", "BMP", "TIFF") and f in Image.SAVE})
        _fail(f"{path}: cannot write a picture as {path.suffix or 'a name without an extension'!r} "
              f"(give one of {', '.join(writable)})")
        raise typer.Exit(1)
    return found


@app.command()
def explain(
    image: Annotated[Path, typer.Argument(help="An image file, as for `nn predict`; - reads it "
                                                "from stdin.", show_default=False)],
    model: Annotated[Path, typer.Option("--model", "-m", help="Saved model (.npz).")] = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option("--out", "-o", help="The sheet to write, in the format of "
                                      "its extension (.png, .jpg, .webp, ...).")] = Path("explain.png"),
    force: Annotated[bool, typer.Option("--force", help="Let --out overwrite an existing file.")] = False,
    backward: Annotated[bool, typer.Option("--backward", help="Draw the gradients of a label's loss instead.")] = False,
    label: Annotated[str | None, typer.Option("--label", help="With --backward: the label whose loss flows "
                                               "back (default: the top class).", show_default=False)] = None,
) -> None:
    """Draw what every layer computes on one image, and which pixels decided it, as one picture.

    The sheet shows the input, its saliency (the gradient of the top class's score), each
    layer's maps or bars, and the probabilities. With --backward, each layer's gradient of the
    loss of --label instead, and its weights' gradients. Exit status 1 if the image cannot be
    read, the label is not a class or the sheet cannot be written (an existing --out without
    --force, an extension that is not a picture format), 2 if the model cannot be loaded.
    """
    import io
    import sys

    from nn.files import write_bytes
    from nn.mnist.explain.sheet import LabelError, explain_file
    from nn.mnist.modelfile import ModelFileError
    from nn.mnist.preprocess import ImageError

    if label is not None and not backward:
        _fail("--label needs --backward")
        raise typer.Exit(1)
    form = _picture_format(out)  # before any work: the user's files are safe
    if out.exists() and not force:
        _fail(f"{out}: exists; --out does not overwrite files without --force")
        raise typer.Exit(1)
    stdin = str(image) == "-"
    try:
        source = io.BytesIO(sys.stdin.buffer.read()) if stdin else image
        picture, top, p = explain_file(source, model, backward, label,
                                       name="stdin" if stdin else None)
    except ModelFileError as e:
        _fail(str(e))
        raise typer.Exit(EXIT_MODEL) from None
    except LabelError as e:
        _fail(str(e))
        raise typer.Exit(1) from None
    except ImageError as e:
        _fail(f"{image}: {e}")
        raise typer.Exit(1) from None
    except OSError as e:  # missing file, a directory, unreadable permissions
        _fail(f"{image}: {_reason(e)}")
        raise typer.Exit(1) from None
    data = io.BytesIO()
    picture.save(data, format=form)
    try:
        write_bytes(out, data.getvalue())
    except OSError as e:
        _fail(f"{out}: cannot write ({_reason(e)})")
        raise typer.Exit(1) from None
    typer.echo(f"{image}: {top} (p={p:.3f})  sheet: {out} ({picture.width}x{picture.height})")


SERVE_HOST_HELP = "Address to listen on; 0.0.0.0 makes the demo reachable from other machines."


@app.command()
def serve(
    host: Annotated[str, typer.Option(help=SERVE_HOST_HELP)] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8000,
    mlp: Annotated[Path, typer.Option(help="One-digit model (28x28).")] = Path("models/mlp.npz"),
    cnn: Annotated[Path, typer.Option(help="Two-digit model (28x56).")] = Path("models/cnn.npz"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not log each request.")] = False,
    engine: Annotated[
        Literal["fast", "reference"], typer.Option(help="Which implementation runs the models.")
    ] = "fast",
    watch_data: Annotated[Path, typer.Option(help="The training view's data (train.npz, dev.npz, "
                                             "test.npz); off if there is no train.npz.")] = Path("data/mnist100"),
    watch_steps: Annotated[int, typer.Option(min=1, max=100_000, help="Training steps of a run in the "
                                             "training view.")] = 600,
    params: Annotated[Path, typer.Option(help="Params file: the training view trains its cnn section.")] = Path("params.yaml"),
) -> None:
    """Serve a web page to draw a digit or a two-digit number and see the networks read it.

    Loads both models once, then answers until Ctrl-C. Exit status 2 if a model cannot be
    loaded, 1 if the address cannot be bound. The training view ("watch it learn") trains the
    params' cnn section on --watch-data, one run at a time; without the data or with bad
    params it is off, and says why in one line.
    """
    from nn.mnist import serve as web
    from nn.mnist.modelfile import ModelFileError
    from nn.mnist.params import ParamsError, load_params
    from nn.mnist.training import TrainParams
    from nn.mnist.watch import Watch

    try:
        models = web.load_models({"mlp": mlp, "cnn": cnn}, engine=engine)
    except ModelFileError as e:
        _fail(str(e))
        raise typer.Exit(EXIT_MODEL) from None
    watch, off = None, None
    if not (watch_data / "train.npz").is_file():
        off = f"no {watch_data / 'train.npz'}"
    else:
        try:
            watch = Watch(watch_data, load_params(TrainParams, "cnn", params), steps=watch_steps)
        except ParamsError as e:
            off = str(e)
    try:
        server = web.Server((host, port), models, quiet=quiet, watch=watch)
    except OSError as e:
        _fail(f"cannot listen on {host}:{port} ({_reason(e)})")
        raise typer.Exit(1) from None
    if not web.is_loopback(host):
        typer.echo(f"warning: listening on {host}, not only this machine: anyone who can reach it "
                   "can use the demo", err=True)
    typer.echo(f"nn serve: {server.url}  (Ctrl-C to stop)")
    if off:
        typer.echo(f"nn serve: the training view is off: {off}", err=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


MODEL_HELP = "Model name: its params.yaml section (mlp, cnn)."
PARAMS_HELP = "Params file."
EXIT_TUNE = 1  # bad params, storage or study, a worker died, or the search stopped itself
EXIT_TRIALS_FAILED = 3  # the search ran, and some of this run's trials failed


@app.command("lr-find")
def lr_find(
    model: Annotated[str, typer.Argument(help=MODEL_HELP, show_default=False)],
    steps: Annotated[int, typer.Option(min=2, help="Training steps (batches) of the test.")] = 300,
    min_lr: Annotated[float, typer.Option(min=0, help="First learning rate.")] = 1e-6,
    max_lr: Annotated[float, typer.Option(min=0, help="Last learning rate.")] = 1.0,
    data: Annotated[Path | None, typer.Option(
        help="Folder with train.npz; default data/<dataset of MODEL in dvc.yaml>.",
        show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="Folder for MODEL.csv and MODEL.png.")] = Path("reports/lr-find"),
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
) -> None:
    """Learning-rate range test (Smith 2017): train a fresh MODEL for a few hundred steps while
    the rate rises exponentially from --min-lr to --max-lr; write the smoothed loss against the
    rate (MODEL.csv for `dvc plots`, MODEL.png) and print a suggested rate and its rule.

    Seeded from the model's params; stops early when the loss explodes.
    """
    import pandas as pd

    from nn.files import check_writable, write_together
    from nn.mnist.charts import xy_chart
    from nn.mnist.pictures import png_bytes
    from nn.lrfind import lr_range_test, suggest
    from nn.mnist.modelfile import normalize
    from nn.mnist.params import ParamsError, dataset_of, load_params
    from nn.mnist.training import TrainParams, load_split, start_run, subset

    csv, png = out / f"{model}.csv", out / f"{model}.png"
    try:
        check_writable(csv, png)  # before the range test, not after it
        data = data or Path("data") / dataset_of(model, Path("dvc.yaml"))
        p = load_params(TrainParams, model, params)
        x, y = subset(*load_split(data, "train"), p.train_size, p.seed)
        # set up as the train stage sets up (network, optimiser, augmentation), on the CPU
        run = start_run(p, model, x, source=data / "train.npz")
        records = lr_range_test(run.net, run.optimizer, normalize(x, run.normalization), y,
                                rng=run.rng, min_lr=min_lr, max_lr=max_lr, steps=steps,
                                batch_size=p.batch_size, augment=run.augment)
        lr, rule = suggest(records)
        table = pd.DataFrame(records)
        chart = xy_chart([("smoothed loss", table["lr"], table["smoothed"])], log_x=True,
                         mark_x=lr, x_label="learning rate", y_label="training loss (smoothed)",
                         title=f"nn lr-find {model}: {len(table)} steps, suggested lr {lr:.2g}")
        with write_together() as outputs:  # both files, or neither
            outputs.write_bytes(csv, table.to_csv(index=False, float_format="%.6g").encode())
            outputs.write_bytes(png, png_bytes(chart))
    except (ParamsError, OSError, ValueError) as e:
        _fail(str(e))
        raise typer.Exit(EXIT_TUNE) from None
    stopped = "" if len(table) == steps else f", stopped at step {len(table)}: the loss exploded"
    typer.echo(f"lr-find: {model}: {len(table)} steps from {min_lr:g} to {table['lr'].iloc[-1]:.3g}"
               f"{stopped} -> {csv}, {png}")
    typer.echo(f"lr-find: suggested lr {lr:.2g}: {rule}")


@app.command()
def tune(
    model: Annotated[str, typer.Argument(help=MODEL_HELP, show_default=False)],
    trials: Annotated[int | None, typer.Option(min=1, help="Trials the study should hold, failed "
                                               "ones not counted (default: tune.MODEL.trials).",
                                               show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes on this machine, "
                                                "each with cores / N threads (default: "
                                                "tune.MODEL.workers).", show_default=False)] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL, e.g. postgresql://user@"
                                                "host/db to share a study between machines "
                                                "(default: sqlite:///.nn-tune/studies.db).",
                                                show_default=False)] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: tune-MODEL).",
                                              show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Sampler seed; give each machine its "
                                             "own (default: tune.MODEL.seed).", show_default=False)] = None,
    retrain: Annotated[bool, typer.Option(help="Then train the best trial's params at the full "
                                               "budget and score it on dev and test.")] = False,
    experiments: Annotated[bool, typer.Option("--exp/--no-exp", help="Save each trial as a DVC "
                                              "experiment.")] = True,
    heartbeat: Annotated[float, typer.Option(help="Seconds between a running trial's heartbeats; "
                                             "one silent for 3 is failed.")] = 10.0,
    data: Annotated[Path | None, typer.Option(
        help="Folder with train.npz, dev.npz (and test.npz for --retrain); default "
             "data/DATASET, MODEL's in dvc.yaml.", show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="Folder for MODEL.csv, MODEL-history.png and "
                                           "MODEL-importance.png.")] = Path("reports/tune"),
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
) -> None:
    """Optuna search (TPE, median pruning on each epoch's dev accuracy) over MODEL's params,
    ranked by dev accuracy; every trial a DVC experiment (`dvc exp show`).

    The space, trials, workers, seed and per-trial budget are in params.yaml under tune.MODEL.
    The study is kept in --storage: Ctrl-C, then the same command, goes on where it stopped;
    the same command on other machines with a shared --storage joins the study.

    Exit status: 0 done, 1 bad params, storage or study, a worker died, or the search stopped
    (3 trials failed in a row), 3 done but some trials of this run failed, 130 Ctrl-C.
    """
    from nn.fast.threads import thread_count
    from nn.files import DataFileError
    from nn.mnist.params import ParamsError, dataset_of
    from nn.mnist.tune import TuneError, check_experiments, make_job
    from nn.mnist.tune import tune as run

    try:
        data = data or Path("data") / dataset_of(model, Path("dvc.yaml"))
        job, settings, tree = make_job(model, params, data, storage=storage, study=study,
                                       trials=trials, seed=seed, heartbeat=heartbeat,
                                       experiments=experiments)
        if experiments:
            check_experiments()
        r = run(job, settings, tree, workers=workers or settings.workers, cores=thread_count(),
                out=out, retrain_best=retrain, echo=typer.echo)
    except (ParamsError, TuneError, DataFileError, OSError) as e:
        _fail(str(e))
        raise typer.Exit(EXIT_TUNE) from None
    except KeyboardInterrupt:
        _fail("interrupted; the study is kept: the same command goes on")
        raise typer.Exit(130) from None
    table = r["table"]
    ranked = table[table["state"] == "complete"].sort_values("dev_acc", ascending=False)
    typer.echo(ranked.head(5).drop(columns=["error"]).to_string(
        index=False, float_format=lambda v: f"{v:.4g}"))
    best = r["best"]
    typer.echo(f"tune: best trial {best.number}: dev {best.value:.4f}; "
               f"`dvc exp show`, `dvc exp diff {job.study}-{best.number:03d}`"
               if experiments else f"tune: best trial {best.number}: dev {best.value:.4f}")
    if r["final"]:
        f = r["final"]

        def pct(v):
            return "-" if v is None else f"{100 * v:.2f} %"
        typer.echo(f"tune: retrained: dev {pct(f['dev_acc'])}, test {pct(f['test_acc'])} "
                   f"(defaults: dev {pct(f.get('default_dev_acc'))}, "
                   f"test {pct(f.get('default_test_acc'))})")
    count, first = r["failed"]
    if count:
        _fail(f"{count} trial(s) of this run failed (not counted, replaced); the first, {first}")
        raise typer.Exit(EXIT_TRIALS_FAILED)


EXIT_REMOTE = 1  # the transfer failed (one line says why); what did arrive is checked out
EXIT_REPORT = 1  # the change report cannot be made (one line says why)


@app.command()
def pull(
    run_cache: Annotated[bool, typer.Option(help="Also the run-cache's entries: `dvc repro --pull` "
                                                 "restores runs made elsewhere instead of rerunning "
                                                 "them.")] = False,
) -> None:
    """Fetch the outputs dvc.lock names from the default DVC remote and check them out.

    A failure is one line naming the remote and the problem (endpoint unreachable, keys
    refused, bucket missing, outputs missing), exit 1; what did arrive is checked out.
    """
    from nn.mnist.remote import RemoteError
    from nn.mnist.remote import pull as run

    try:
        typer.echo(run(Path.cwd(), run_cache=run_cache))
    except RemoteError as e:
        _fail(str(e))
        raise typer.Exit(EXIT_REMOTE) from None


@app.command()
def push(
    run_cache: Annotated[bool, typer.Option(help="Also the run-cache, so that other clones "
                                                 "restore these runs instead of rerunning them.")] = False,
) -> None:
    """Push the outputs dvc.lock names to the default DVC remote; a failure is one line, exit 1."""
    from nn.mnist.remote import RemoteError
    from nn.mnist.remote import push as run

    try:
        typer.echo(run(Path.cwd(), run_cache=run_cache))
    except RemoteError as e:
        _fail(str(e))
        raise typer.Exit(EXIT_REMOTE) from None


@app.command("change-report")
def change_report(
    base: Annotated[str, typer.Option(help="The git revision to compare with.")] = "main",
    out: Annotated[Path, typer.Option(help="Folder for README.md, its pictures, plots/.")] = Path(
        "change-report"),
    top: Annotated[int, typer.Option(min=1, help="Classes listed per model.")] = 5,
) -> None:
    """What the workspace's results changed against BASE, as Markdown for a pull request.

    OUT/README.md: `dvc params diff` and `dvc metrics diff` against BASE, the classes whose F1
    moved most, each model's accuracy curves (BASE and change in one chart) and its confusion
    matrices side by side; OUT/plots/index.html: `dvc plots diff BASE`.
    """
    from nn.mnist.change import ChangeReportError
    from nn.mnist.change import change_report as run

    try:
        typer.echo(f"change-report: {run(Path.cwd(), base, out, top)}")
    except ChangeReportError as e:
        _fail(f"change-report: {e}")
        raise typer.Exit(EXIT_REPORT) from None


def run() -> None:
    """The `nn` command (pyproject's script): `app`, with a bug said to be one in one line
    (or its traceback with NN_DEBUG=1), never dressed as bad input (nn.mnist.errors)."""
    from nn.mnist.errors import debugging, unexpected

    try:
        app()
    except Exception as e:  # each command turns its expected errors into one line and an exit
        if debugging():
            raise
        raise unexpected("nn", e) from None


if __name__ == "__main__":
    run()
