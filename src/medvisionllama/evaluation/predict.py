"""``mvl predict``: segment NIfTI images with a trained checkpoint.

Each image is preprocessed exactly as the run's training data (the checkpoint records the input
size, the kind of normalisation (CT/MRI) and the channel count), predicted (sliding windows when
the preprocessed volume is not the model's input size), mapped back to the input's own grid and
saved as a uint8 label NIfTI with the input's affine and shape:

    mvl predict --checkpoint run/checkpoint_best.pt --input img.nii.gz --output seg.nii.gz
    mvl predict --checkpoint run/checkpoint_best.pt --input images/ --output segs/

Nothing of the user's is overwritten: an output file that exists is refused (unless
``--overwrite``), as is an output that is an input or lies inside the input folder; every input is
read and checked before any output is written, and the outputs are published together once all
predictions are made, so a folder with one bad file writes nothing. The frozen LLM layer is found
by the content hash the checkpoint records (``runtime.locate_llm_layer``), so a checkpoint
predicts from any folder; ``--llm-layer FILE`` names the layer file when it has moved.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

import numpy as np
import torch

from medvisionllama.checkpoint import load_checkpoint
from medvisionllama.data.io import make_nifti, nifti_to_gz_bytes
from medvisionllama.data.preprocess import preprocess_image, restore_to_original
from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_path
from medvisionllama.runtime import load_run_model, predict_logits, resolve_device

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _case_name(path: Path) -> str:
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def _pairs(input_path: Path, output: Path) -> list[tuple[Path, Path]]:
    """(input file, output file) pairs: one file -> one file, a folder -> a folder."""
    if input_path.is_dir():
        files = sorted(p for p in input_path.iterdir() if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))
        if not files:
            raise InputError(f"{input_path}: folder holds no .nii.gz or .nii files")
        if output.exists() and not output.is_dir():
            raise InputError(f"{output}: input is a folder, so the output must be a folder")
        return [(f, output / f"{_case_name(f)}.nii.gz") for f in files]
    if not input_path.is_file():
        raise InputError(f"{input_path}: no such file or folder")
    if output.is_dir() or not output.name.endswith(NIFTI_SUFFIXES):
        output = output / f"{_case_name(input_path)}.nii.gz"
    return [(input_path, output)]


def check_output_apart(input_path: Path, output: Path, pairs: list[tuple[Path, Path]]) -> None:
    """Refuse an output that is the input or lies inside it (after resolving ``..``, relative
    spellings and symlinks), and any output file that is one of the input files.

    Raises:
        InputError: one line naming both paths; checked before anything is written.
    """
    source, destination = input_path.resolve(), output.resolve()
    if destination == source or destination.is_relative_to(source):
        raise InputError(
            f"--output {output} is {'the input' if destination == source else 'inside the input'} {input_path}: "
            "predictions would overwrite or mix with the images; choose an output outside the input"
        )
    inputs = {src.resolve(): src for src, _ in pairs}
    written: dict[Path, Path] = {}
    for src, dst in pairs:
        if dst.resolve() in inputs:
            raise InputError(f"--output {output}: would write {dst}, which is the input image {inputs[dst.resolve()]}")
        if dst.resolve() in written:
            raise InputError(f"--output {output}: {written[dst.resolve()]} and {src} would both be written to {dst}")
        written[dst.resolve()] = src


def check_not_existing(pairs: list[tuple[Path, Path]], overwrite: bool) -> None:
    """Refuse output files that exist (the user's, perhaps their ground truth), unless ``overwrite``.

    Raises:
        InputError: naming the first such file and how many there are; checked before anything
            is read or written.
    """
    if overwrite:
        return
    existing = [dst for _, dst in pairs if dst.exists() or dst.is_symlink()]
    if existing:
        more = f" (and {len(existing) - 1} more output file(s))" if len(existing) > 1 else ""
        raise InputError(f"--output: {existing[0]} exists{more}; nothing was written. Choose another output, "
                         "or pass --overwrite to replace it")


def predict_files(
    *,
    checkpoint: str | Path,
    input: str | Path,  # noqa: A002 - mirrors the --input flag
    output: str | Path,
    device: str = "auto",
    llm_layer: str | Path | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Segment one NIfTI file or every NIfTI file of a folder; returns the written label files.

    ``llm_layer``: the layer file of the frozen LLM block when it is not where the checkpoint
    recorded it (it must carry the content hash the checkpoint records). ``overwrite``: replace
    output files that exist (default: refuse them).

    Order: the outputs are checked (apart from the inputs, not existing), the checkpoint and the
    layer are read and verified, every input is read and checked, then every prediction is made
    into a temporary file and all are renamed into place at the end; any error before that leaves
    no output file.
    """
    input_path, output_path = Path(input), Path(output)
    pairs = _pairs(input_path, output_path)
    check_output_apart(input_path, output_path, pairs)
    check_not_existing(pairs, overwrite)
    ckpt = load_checkpoint(checkpoint)
    data = ckpt["data"]
    dev = resolve_device(device)
    model, config = load_run_model(ckpt, dev, llm_layer=llm_layer, checkpoint_path=checkpoint)
    roi = tuple(int(v) for v in config.img_size)
    preprocess = dict(size=data["size"], kind=data["kind"], num_channels=int(data["num_channels"]))
    for src, _ in pairs:  # every input checked before any output exists (read again below: memory)
        preprocess_image(src, **preprocess)
    created = sorted({a for _, dst in pairs for a in [dst.parent, *dst.parent.parents] if not a.exists()},
                     key=lambda a: len(a.parts), reverse=True)  # folders this call makes, deepest first
    written = []
    try:
        with contextlib.ExitStack() as publish:  # each temporary file renamed into place on success
            for src, dst in pairs:
                image, meta = preprocess_image(src, **preprocess)
                with torch.no_grad():
                    logits = predict_logits(model, torch.from_numpy(image)[None], roi, dev)  # (1, K, X, Y, Z)
                pred = logits[0].argmax(0).numpy().astype(np.uint8)
                label = restore_to_original(pred, meta)  # (X, Y, Z) of the input
                img = make_nifti(label, np.asarray(meta["original_affine"], dtype=float))
                tmp = publish.enter_context(atomic_path(dst))
                tmp.write_bytes(nifti_to_gz_bytes(img) if dst.name.endswith(".gz") else img.to_bytes())
                log.info("%s -> %s (%s)", src, dst, "x".join(str(d) for d in label.shape))
                written.append(dst)
    except BaseException:
        for folder in created:  # the output folders made for this call, left empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mvl predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint_best.pt (or checkpoint_last.pt)")
    p.add_argument("--input", required=True, help="a NIfTI image, or a folder of them")
    p.add_argument(
        "--output", required=True,
        help="label NIfTI to write, or a folder (for a folder input); never the input or inside it; "
             "an existing output file is refused unless --overwrite",
    )
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--llm-layer", "--llm-weights", dest="llm_layer", default=None, metavar="FILE",
        help="the run's LLM layer file (results/llm/*.safetensors) when it is not where the checkpoint "
             "recorded it; it must carry the content hash the checkpoint records",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    predict_files(
        checkpoint=args.checkpoint, input=args.input, output=args.output, device=args.device,
        llm_layer=args.llm_layer, overwrite=args.overwrite,
    )
    return 0
