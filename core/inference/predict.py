"""Batch scoring from the command line: one CSV row per slice.

Usage::

    python -m core.inference.predict [--model ID] [--window PRESET] [--heatmaps DIR] [--out FILE.csv] INPUT...

An INPUT is a DICOM file, a folder, a ZIP, a JPG or a PNG (read with :func:`core.imaging.read_paths`,
each input on its own so one bad input does not stop the others). Every slice gets a row with
the columns of :data:`COLUMNS`; a file that cannot be read gets a row with only ``source`` and
``error`` filled. One summary line per series goes to stderr; a tqdm progress bar shows the slices
scored. ``--window`` overrides the model card's window for DICOM series (pictures carry their
export window and always use the card's); ``dicom`` uses each series' own first window.
``--heatmaps DIR`` writes a Grad-CAM overlay PNG per slice (heatmap of the slice's label over
the windowed slice).

Exit code: 0 when at least one slice was scored, 1 when nothing was, 2 when the model cannot be
loaded or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from core.domain import WINDOW_PRESETS, Window, WindowPreset

#: CSV columns, in order; ``p_<class>`` columns follow the model's class names.
BASE_COLUMNS = (
    "source",
    "series",
    "series_key",
    "instance_number",
    "sop_instance_uid",
    "slice_index",
    "model_id",
)
TAIL_COLUMNS = ("label", "ood", "ood_reasons", "series_label", "series_score", "heatmap", "error")


def columns(class_names: Sequence[str]) -> list[str]:
    """The CSV header for a model with these class names."""
    return [*BASE_COLUMNS, *(f"p_{c}" for c in class_names), *TAIL_COLUMNS]


def _window_for(series: Any, preset: str | None) -> Window | None:
    """The window override for one series (None = the card's)."""
    if preset is None or series.hu_is_estimated:
        return None
    if preset == WindowPreset.DICOM:
        return series.windows[0] if series.windows else None
    return WINDOW_PRESETS[WindowPreset(preset)]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "slice"


def score_inputs(
    predictor: Any,
    inputs: Sequence[str | Path],
    out: TextIO,
    window: str | None = None,
    heatmaps: str | Path | None = None,
    log: TextIO | None = None,
    progress: bool = True,
) -> int:
    """Score every slice of every input and write CSV rows to ``out``.

    Args:
        predictor: a :class:`core.inference.Predictor`.
        inputs: paths of DICOM files, folders, ZIPs, JPGs or PNGs.
        out: text stream for the CSV (header first).
        window: a :class:`core.domain.WindowPreset` value overriding the card's window for DICOM.
        heatmaps: folder for Grad-CAM overlay PNGs (created), or None.
        log: stream for the per-series summary lines and problems (default stderr).
        progress: show a tqdm progress bar on stderr.

    Returns:
        number of slices scored.
    """
    from tqdm import tqdm

    from core.imaging import ImagingError, read_paths, view
    from core.inference.explain import overlay, to_png

    log = log or sys.stderr
    writer = csv.DictWriter(out, fieldnames=columns(predictor.class_names), extrasaction="ignore")
    writer.writeheader()
    heat_dir = Path(heatmaps) if heatmaps is not None else None
    if heat_dir is not None:
        heat_dir.mkdir(parents=True, exist_ok=True)
    scored = 0
    bar = tqdm(total=0, unit="slice", disable=not progress, file=sys.stderr)
    series_no = 0
    for item in inputs:
        name = str(item)
        try:
            if not Path(item).exists():
                raise FileNotFoundError(f"‘{name}’ does not exist; check the path")
            result = read_paths([item])
        except (ImagingError, OSError) as exc:
            writer.writerow({"source": Path(name).name, "error": str(exc)})
            print(f"{name}: not scored: {exc}", file=log)
            continue
        for problem in result.problems:
            writer.writerow({"source": problem.name, "error": problem.message})
            print(f"{problem.name}: not scored: {problem.message}", file=log)
        for series in result.series:
            series_no += 1
            n = len(series.slices)
            bar.total += n
            bar.refresh()
            win = _window_for(series, window)
            try:
                res = predictor.analyse_series(series, window=win)
            except Exception as exc:  # one bad series must not end the run
                writer.writerow(
                    {"source": series.slices[0].source, "series": series.description, "error": str(exc)}
                )
                print(f"{series.description}: not scored: {exc}", file=log)
                continue
            for i, sl in enumerate(series.slices):
                row: dict[str, Any] = {
                    "source": sl.source,
                    "series": series.description,
                    "series_key": series.series_key,
                    "instance_number": "" if sl.instance_number is None else sl.instance_number,
                    "sop_instance_uid": sl.sop_instance_uid or "",
                    "slice_index": i,
                    "model_id": res.model_id,
                    "label": res.labels[i],
                    "ood": bool(res.ood[i]),
                    "ood_reasons": res.ood_reasons[i],
                    "series_label": res.series_label,
                    "series_score": f"{res.series_score:.6f}",
                    "heatmap": "",
                    "error": "",
                }
                for j, c in enumerate(predictor.class_names):
                    row[f"p_{c}"] = f"{float(res.probabilities[i, j]):.6f}"
                if heat_dir is not None:
                    ex = predictor.explain_hu(sl.hu, res.labels[i], win, i)
                    used = win or predictor.spec.window
                    png = heat_dir / f"{series_no:02d}_{i:04d}_{_safe_name(Path(sl.source).stem)}.png"
                    png.write_bytes(to_png(overlay(view(sl.hu, used), ex.heatmap)))
                    row["heatmap"] = str(png)
                writer.writerow(row)
                bar.update(1)
            scored += n
            top = res.most_suspicious_index
            inst = series.slices[top].instance_number
            n_ood = int(res.ood.sum())
            print(
                f"{series.description}: {n} slice{'s' if n != 1 else ''}, series label {res.series_label} "
                f"({res.suspicious_class} score {res.series_score:.3f}), most suspicious slice {top}"
                f"{f' (instance {inst})' if inst is not None else ''}, OOD {n_ood}/{n}"
                f"{': ' + '; '.join(dict.fromkeys(r for r in res.ood_reasons if r)) if n_ood else ''}",
                file=log,
            )
    bar.close()
    return scored


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m core.inference.predict",
        description="Score CT slices with a registered model; one CSV row per slice. Research use only.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM file, folder, ZIP, JPG or PNG")
    parser.add_argument("--model", default=None, help="registry model id (default: the registry's default)")
    parser.add_argument(
        "--window",
        choices=[p.value for p in WindowPreset],
        default=None,
        help="window for DICOM input (default: the model card's)",
    )
    parser.add_argument("--heatmaps", default=None, metavar="DIR", help="write Grad-CAM overlay PNGs here")
    parser.add_argument("--out", default=None, metavar="FILE.csv", help="CSV file (default: standard output)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    from core.inference import InferenceError, Predictor
    from core.registry import RegistryError, load_model

    try:
        predictor = Predictor(load_model(args.model))
    except (RegistryError, InferenceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as fh:
            n = score_inputs(
                predictor, args.inputs, fh, args.window, args.heatmaps, progress=not args.no_progress
            )
    else:
        n = score_inputs(
            predictor, args.inputs, sys.stdout, args.window, args.heatmaps, progress=not args.no_progress
        )
    print(
        f"{n} slice{'s' if n != 1 else ''} scored with {predictor.card.id} ({predictor.runtime_note})",
        file=sys.stderr,
    )
    return 0 if n > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
