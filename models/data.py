"""Class-folder CT slice datasets: catalogue, pseudo-patient groups, leak-free splits.

IQ-OTH/NCCD (doi:10.17632/bhmdr45bh2) ships slices, not patients: there are no patient ids, file
numbers within a class run in acquisition order, and byte-identical and near-identical files
exist, some across classes (see ``../shared/datasets/iq-othnccd/README.md``). A random split by
image leaks neighbouring and duplicate slices into the test set. This module therefore

1. catalogues the files (:func:`catalogue`),
2. groups them into pseudo-patients (:func:`group_patients`): runs of consecutive numbers whose
   neighbours look alike, merged (connected components) with their exact and near duplicates across the
   whole dataset, classes included,
3. splits by group, stratified by the group's label (:func:`split_by_group`), and writes the split
   manifest that every model card references (:func:`write_manifest`, :func:`read_manifest`).

Grouping constants (calibrated on the 903-slice copy with ``python -m models.data --calibrate``;
the distributions are printed there and summarised in the constants' comments):

* neighbour test: Pearson correlation of 48x48 grey thumbnails of the WHOLE exported picture
  (canvas, body outline and scanner table) of two slices that are consecutive in number order
  within a class; a new pseudo-patient starts below :data:`NEIGHBOUR_MIN_CORRELATION` or when
  the file numbers jump by more than :data:`MAX_NUMBER_GAP`. The whole picture is used, not the
  body crop: the released slices are sampled several mm apart, so the anatomy inside the body
  changes between neighbours (body-cropped thumbnails gave a unimodal, uninformative
  distribution), while the patient's position on the table and the table itself stay fixed
  within one series and change between patients.
* near duplicates: 64-bit difference hash (dHash, Krawetz 2013, "Kind of like that",
  hackerfactor.com) of the 32x32 body-cropped thumbnail (:func:`core.preprocessing.preprocess`,
  so differently sized exports of one slice match) at Hamming distance
  <= :data:`NEAR_DUPLICATE_MAX_HAMMING`, confirmed by a thumbnail correlation
  >= :data:`NEAR_DUPLICATE_MIN_CORRELATION` (dHash alone at 8x9 pixels matches different
  patients' slices at the same level: on this data, a third of the distance-4 pairs correlate
  below 0.5), across all files and classes.

Command line: ``python -m models.data [--data DIR] [--seed N] [--out FILE] [--calibrate]``.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from core.domain import WINDOW_PRESETS, Finding, WindowPreset
from core.preprocessing import PreprocessSpec, preprocess
from core.registry import file_sha256  # noqa: F401 - also the manifests' hash for train and evaluate
from core.settings import get_settings
from core.windowing import apply_window, hu_from_picture

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MANIFEST_COLUMNS = ("path", "label", "number", "sha256", "width", "height", "group", "split")
SPLITS = ("train", "val", "test")

#: Whole-picture thumbnails of slices of one series correlate highly (most consecutive pairs
#: > 0.7); at a patient boundary they mostly fall to 0.1-0.5 (checked by eye on a montage of
#: Normal 1-60: every visible patient change scored < 0.47, every within-patient pair > 0.7).
#: Calibrated with --calibrate (histogram of consecutive pairs has its valley near 0.6).
NEIGHBOUR_MIN_CORRELATION = 0.60
#: A jump in file numbers larger than this starts a new run (withheld slices or another patient).
MAX_NUMBER_GAP = 3
#: dHash Hamming distance (of 64 bits) at or below which two slices count as near duplicates.
NEAR_DUPLICATE_MAX_HAMMING = 6
#: Body-cropped thumbnail correlation a dHash match must also reach to count as a near duplicate
#: (exact duplicates: 1.0; re-exported / resized copies of one slice: > 0.95).
NEAR_DUPLICATE_MIN_CORRELATION = 0.95
#: Side of the whole-picture thumbnail used by the neighbour test (pixels).
CANVAS_THUMB_SIZE = 48
#: Thumbnail used for both tests (pixels, square).
THUMB_SIZE = 32

_FOLDER_LABELS = {
    "normal": Finding.NORMAL,
    "benign": Finding.BENIGN,
    "bengin": Finding.BENIGN,  # the IQ-OTH/NCCD folder's own spelling
    "malignant": Finding.MALIGNANT,
}
_NUMBER_RE = re.compile(r"\((\d+)\)\s*$|(\d+)$")


class DatasetError(ValueError):
    """The dataset folder or manifest is not usable; the message says what to fix."""


def _label_of_folder(name: str) -> Finding | None:
    """Finding for a class folder name ("Bengin cases", "Normal cases", "malignant", ...)."""
    key = name.lower().strip()
    key = re.sub(r"\s*cases?$", "", key)
    return _FOLDER_LABELS.get(key)


def _number_of(stem: str) -> int | None:
    """The slice number in ``"<Class> case (N)"`` or a trailing number; None otherwise."""
    m = _NUMBER_RE.search(stem.strip())
    if not m:
        return None
    return int(m.group(1) or m.group(2))


def catalogue(root: str | Path) -> pd.DataFrame:
    """List every slice picture under a class-folder dataset.

    Two layouts are understood: IQ-OTH/NCCD (``Bengin cases/``, ``Malignant cases/``,
    ``Normal cases/`` with files ``<Class> case (N).jpg``) and plain ``normal/``, ``benign/``,
    ``malignant/`` folders with any file names. Other folders are ignored. JPG/JPEG/PNG only.

    Args:
        root: the dataset folder.

    Returns:
        DataFrame, one row per picture, sorted by label then number then path, columns
        ``path`` (str, POSIX, relative to ``root``), ``label`` (str, a :class:`Finding` value),
        ``number`` (nullable Int64: N of ``(N)`` or a trailing number in the stem, else <NA>),
        ``sha256`` (hex of the file bytes), ``width``, ``height`` (int, pixels).
        ``df.attrs["root"]`` holds the absolute root.

    Raises:
        DatasetError: ``root`` is not a folder, has no class folder, or a picture cannot be read.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; pass --data with the class-folder dataset")
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = _label_of_folder(folder.name)
        if label is None:
            continue
        for f in sorted(folder.rglob("*")):
            if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            data = f.read_bytes()
            try:
                with Image.open(f) as im:
                    width, height = im.size
            except Exception as exc:  # PIL raises several types for broken files
                raise DatasetError(f"{f} is not a readable picture ({exc}); remove or replace it") from exc
            rows.append(
                {
                    "path": f.relative_to(root).as_posix(),
                    "label": label.value,
                    "number": _number_of(f.stem),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "width": int(width),
                    "height": int(height),
                }
            )
    if not rows:
        raise DatasetError(
            f"no class folders with pictures in {root}; expected normal/benign/malignant folders "
            "(or the IQ-OTH/NCCD 'Normal cases', 'Bengin cases', 'Malignant cases')"
        )
    df = pd.DataFrame(rows)
    df["number"] = df["number"].astype("Int64")
    order = {c: i for i, c in enumerate(f.value for f in Finding)}
    df["_o"] = df["label"].map(order)
    df = df.sort_values(["_o", "number", "path"], na_position="last").drop(columns="_o")
    df = df.reset_index(drop=True)
    df.attrs["root"] = str(root.resolve())
    return df


def load_hu(root: str | Path, paths: Iterable[str]) -> list[np.ndarray]:
    """Read pictures and estimate HU with the IQ-OTH/NCCD export window.

    Uses :func:`core.windowing.hu_from_picture` with ``WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]``,
    the same path ``core.imaging`` takes for uploaded JPG/PNG, so training and the dashboard agree.

    Args:
        root: dataset folder.
        paths: file paths relative to ``root`` (the ``path`` column).

    Returns:
        list of float32 (y, x) arrays in estimated HU, one per path, in order.

    Raises:
        DatasetError: a file is missing or unreadable.
    """
    root = Path(root)
    window = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]
    out = []
    for p in paths:
        f = root / p
        try:
            with Image.open(f) as im:
                pixels = np.asarray(im.convert("L") if im.mode not in ("L", "RGB", "RGBA") else im)
        except FileNotFoundError as exc:
            raise DatasetError(f"{f} is listed in the manifest but missing; check --data") from exc
        except Exception as exc:
            raise DatasetError(f"{f} is not a readable picture ({exc})") from exc
        out.append(hu_from_picture(pixels, window))
    return out


class Thumbnails(NamedTuple):
    """Similarity features of a set of slices (rows aligned with the catalogue)."""

    #: float32 (n, THUMB_SIZE, THUMB_SIZE) in [0, 1]: body-cropped, via core.preprocessing.preprocess.
    cropped: np.ndarray
    #: float32 (n, CANVAS_THUMB_SIZE, CANVAS_THUMB_SIZE) in [0, 1]: the whole windowed picture.
    canvas: np.ndarray


def thumbnails(root: str | Path, paths: Sequence[str]) -> Thumbnails:
    """Small grey thumbnails of each slice, for the neighbour and duplicate tests.

    Args:
        root: dataset folder.
        paths: relative paths.

    Returns:
        :class:`Thumbnails`: ``cropped`` float32 (n, 32, 32) made with
        :func:`core.preprocessing.preprocess` (IQ-OTH/NCCD window, body crop, square pad,
        bilinear resize) and ``canvas`` float32 (n, 48, 48), the whole windowed picture
        resized bilinearly (aspect ratio not kept), both in [0, 1].

    Raises:
        DatasetError: a file is missing or unreadable.
    """
    spec = PreprocessSpec(size=THUMB_SIZE, channels=1, scaling="unit")
    cropped = np.zeros((len(paths), THUMB_SIZE, THUMB_SIZE), dtype=np.float32)
    canvas = np.zeros((len(paths), CANVAS_THUMB_SIZE, CANVAS_THUMB_SIZE), dtype=np.float32)
    for i, hu in enumerate(load_hu(root, paths)):
        cropped[i] = preprocess(hu, spec)[0, ..., 0]
        unit = apply_window(hu, spec.window)
        small = Image.fromarray(unit, mode="F").resize((CANVAS_THUMB_SIZE,) * 2, Image.Resampling.BILINEAR)
        canvas[i] = np.asarray(small, dtype=np.float32)
    return Thumbnails(cropped=cropped, canvas=canvas)


def dhash_bits(thumbs: np.ndarray) -> np.ndarray:
    """64-bit difference hashes (dHash, Krawetz 2013) of thumbnails.

    Args:
        thumbs: float (n, y, x) grey images.

    Returns:
        bool (n, 64): per image, the 8x9 bilinear resize compared left-to-right along each row.
    """
    out = np.zeros((len(thumbs), 64), dtype=bool)
    for i, t in enumerate(thumbs):
        small = np.asarray(
            Image.fromarray(np.asarray(t, np.float32), mode="F").resize((9, 8), Image.Resampling.BILINEAR)
        )
        out[i] = (small[:, 1:] > small[:, :-1]).ravel()
    return out


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else (1.0 if np.allclose(a, b) else 0.0)


def neighbour_correlations(df: pd.DataFrame, thumbs: np.ndarray) -> pd.DataFrame:
    """Correlation of each slice with the previous one of its class in number order.

    Args:
        df: catalogue (rows aligned with ``thumbs``).
        thumbs: float32 (n, s, s) thumbnails (``thumbnails(...).canvas``).

    Returns:
        DataFrame (index = row of the later slice): ``prev`` (row), ``gap`` (number difference,
        <NA> if a number is missing), ``corr`` (Pearson correlation, -1..1).
    """
    rows = []
    for _, part in df.groupby("label", sort=False):
        part = part.sort_values(["number", "path"], na_position="last")
        idx = list(part.index)
        nums = list(part["number"])
        for k in range(1, len(idx)):
            gap = nums[k] - nums[k - 1] if pd.notna(nums[k]) and pd.notna(nums[k - 1]) else pd.NA
            rows.append(
                {
                    "row": idx[k],
                    "prev": idx[k - 1],
                    "gap": gap,
                    "corr": _correlation(thumbs[idx[k]], thumbs[idx[k - 1]]),
                }
            )
    return pd.DataFrame(rows, columns=["row", "prev", "gap", "corr"]).set_index("row")


def near_duplicate_pairs(
    cropped: np.ndarray,
    max_hamming: int = NEAR_DUPLICATE_MAX_HAMMING,
    min_correlation: float = NEAR_DUPLICATE_MIN_CORRELATION,
) -> np.ndarray:
    """All pairs (i < j) of near-duplicate slices, across every file given.

    A pair is a near duplicate when the dHash Hamming distance (:func:`dhash_bits`) is at most
    ``max_hamming`` AND the Pearson correlation of the thumbnails is at least ``min_correlation``.

    Args:
        cropped: float (n, s, s) body-cropped thumbnails (``thumbnails(...).cropped``).
        max_hamming: largest dHash distance (bits of 64).
        min_correlation: smallest thumbnail correlation (-1..1).

    Returns:
        int (m, 2) array of row pairs.
    """
    if len(cropped) < 2:
        return np.zeros((0, 2), dtype=int)
    b = dhash_bits(cropped).astype(np.int16)
    dist = b @ (1 - b).T + (1 - b) @ b.T  # Hamming distance matrix (n, n)
    flat = cropped.reshape(len(cropped), -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1)
    norm[norm == 0] = 1.0
    flat /= norm[:, None]
    corr = flat @ flat.T
    i, j = np.nonzero(np.triu((dist <= max_hamming) & (corr >= min_correlation), k=1))
    return np.stack([i, j], axis=1)


def group_patients(
    df: pd.DataFrame,
    root: str | Path | None = None,
    *,
    min_correlation: float = NEIGHBOUR_MIN_CORRELATION,
    max_gap: int = MAX_NUMBER_GAP,
    max_hamming: int = NEAR_DUPLICATE_MAX_HAMMING,
    thumbs: Thumbnails | None = None,
) -> pd.DataFrame:
    """Group slices into pseudo-patients (no patient ids exist in IQ-OTH/NCCD).

    Within each class, slices are walked in number order; a new run starts when the number jumps
    by more than ``max_gap`` (or is missing) or the thumbnail correlation with the previous slice
    is below ``min_correlation`` (whole-picture thumbnails). Runs are then merged (the connected
    components of the graph of all links, ``scipy.sparse.csgraph.connected_components``) with
    every exact duplicate (same sha256) and near duplicate (:func:`near_duplicate_pairs`) anywhere
    in the dataset,
    across classes too, so no duplicate can end up in two splits.

    Args:
        df: output of :func:`catalogue` (uses ``path``, ``label``, ``number``, ``sha256``).
        root: dataset folder; default ``df.attrs["root"]``.
        min_correlation, max_gap, max_hamming: see the module constants (calibrated defaults).
        thumbs: precomputed :class:`Thumbnails` (else read from ``root``).

    Returns:
        a copy of ``df`` with ``group`` (str, e.g. ``"g017"``, numbered in row order) and
        ``group_label`` (the majority label of the group; ties go to the more severe finding).

    Raises:
        DatasetError: no root is known.
    """
    df = df.reset_index(drop=True).copy()
    root = root if root is not None else df.attrs.get("root")
    if thumbs is None:
        if root is None:
            raise DatasetError(
                "group_patients needs the dataset folder: pass root= or use catalogue()'s output"
            )
        thumbs = thumbnails(root, list(df["path"]))
    edges: list[tuple[int, int]] = []
    nb = neighbour_correlations(df, thumbs.canvas)
    for row, r in nb.iterrows():
        if pd.notna(r["gap"]) and int(r["gap"]) <= max_gap and r["corr"] >= min_correlation:
            edges.append((int(row), int(r["prev"])))
    for _, part in df.groupby("sha256"):
        idx = list(part.index)
        edges.extend((idx[0], k) for k in idx[1:])
    edges.extend((int(i), int(j)) for i, j in near_duplicate_pairs(thumbs.cropped, max_hamming))
    n = len(df)
    pairs = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, roots = connected_components(graph, directed=False)
    names: dict[int, str] = {}
    for r in roots:
        if r not in names:
            names[r] = f"g{len(names):03d}"
    df["group"] = [names[r] for r in roots]
    severity = {f.value: i for i, f in enumerate(Finding)}

    def majority(labels: pd.Series) -> str:
        counts = labels.value_counts()
        best = counts[counts == counts.max()].index
        return max(best, key=lambda s: severity.get(s, -1))

    df["group_label"] = df.groupby("group")["label"].transform(majority)
    return df


def split_by_group(
    df: pd.DataFrame, seed: int = 42, fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
) -> pd.DataFrame:
    """Assign whole groups to train/val/test, stratified by the group's label.

    Per group label, groups are shuffled with ``seed``; val and test first get one group each
    (so every split holds every class, benign included), then each remaining group goes to the
    split furthest below its target share of that label's slices.

    Args:
        df: output of :func:`group_patients` (``group``; ``group_label`` is derived if absent).
        seed: random seed (numpy ``default_rng``); same seed, same split.
        fractions: target slice fractions for train, val, test (sum 1).

    Returns:
        a copy of ``df`` with ``split`` in {"train", "val", "test"}.

    Raises:
        DatasetError: no ``group`` column, bad fractions, or a class with fewer than 3 groups.
    """
    if "group" not in df.columns:
        raise DatasetError("split_by_group needs the 'group' column: run group_patients first")
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr <= 0).any() or abs(fr.sum() - 1) > 1e-6:
        raise DatasetError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    df = df.copy()
    if "group_label" not in df.columns:
        df["group_label"] = df.groupby("group")["label"].transform(lambda s: s.value_counts().idxmax())
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(df["group_label"].unique()):
        sizes = df[df["group_label"] == label].groupby("group").size().sort_index()
        groups = list(sizes.index)
        if len(groups) < 3:
            raise DatasetError(f"class {label!r} has only {len(groups)} group(s); every split needs one")
        order = [groups[k] for k in rng.permutation(len(groups))]
        total = float(sizes.sum())
        counts = {s: 0.0 for s in SPLITS}
        for g, s in zip(order[:2], ("val", "test"), strict=True):
            assignment[g] = s
            counts[s] += sizes[g]
        for g in order[2:]:
            deficit = {s: fr[k] - counts[s] / total for k, s in enumerate(SPLITS)}
            s = max(SPLITS, key=lambda name: deficit[name])
            assignment[g] = s
            counts[s] += sizes[g]
    df["split"] = df["group"].map(assignment)
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> str:
    """Write the split manifest CSV (columns :data:`MANIFEST_COLUMNS`, in that order).

    Args:
        df: output of :func:`split_by_group`.
        path: CSV file to write (parents created).

    Returns:
        sha256 hex of the written file (record it in the model card).

    Raises:
        DatasetError: a manifest column is missing.
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(
            f"manifest columns missing: {missing}; run catalogue, group_patients, split_by_group"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.loc[:, list(MANIFEST_COLUMNS)].to_csv(path, index=False, lineterminator="\n")
    return file_sha256(path)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a split manifest written by :func:`write_manifest`.

    Returns:
        DataFrame with :data:`MANIFEST_COLUMNS` (``number`` nullable Int64).

    Raises:
        DatasetError: the file is missing or lacks a column or has an unknown split.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"split manifest {path} not found; create it with python -m models.data --out {path}"
        )
    df = pd.read_csv(path, dtype={"path": str, "label": str, "sha256": str, "group": str, "split": str})
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"{path} is not a split manifest (missing columns {missing})")
    bad = set(df["split"]) - set(SPLITS)
    if bad:
        raise DatasetError(f"{path} has unknown split names {sorted(bad)}; expected {SPLITS}")
    df["number"] = df["number"].astype("Int64")
    return df


def default_manifest_path(seed: int = 42) -> Path:
    """``<registry>/splits/iqothnccd_seed<seed>.csv`` (registry from settings)."""
    return get_settings().registry_dir / "splits" / f"iqothnccd_seed{seed}.csv"


def build_split(root: str | Path, seed: int = 42) -> pd.DataFrame:
    """catalogue -> group_patients -> split_by_group for a dataset folder (see each function)."""
    return split_by_group(group_patients(catalogue(root), root), seed=seed)


def balance_table(df: pd.DataFrame) -> pd.DataFrame:
    """Slices and groups per split and label (rows: split; columns: slices_<label>, groups_<label>)."""
    slices = df.pivot_table(index="split", columns="label", values="path", aggfunc="count", fill_value=0)
    groups = df.pivot_table(index="split", columns="label", values="group", aggfunc="nunique", fill_value=0)
    out = pd.concat([slices.add_prefix("slices_"), groups.add_prefix("groups_")], axis=1)
    out["slices"] = slices.sum(axis=1)
    out["groups"] = df.groupby("split")["group"].nunique()
    return out.reindex([s for s in SPLITS if s in out.index])


def _calibrate(df: pd.DataFrame, thumbs: Thumbnails) -> None:
    for name, arr in (("whole-picture", thumbs.canvas), ("body-cropped", thumbs.cropped)):
        nb = neighbour_correlations(df, arr)
        consecutive = nb[nb["gap"].fillna(99).astype(int) <= MAX_NUMBER_GAP]["corr"]
        print(f"{name} thumbnail correlation of consecutive numbers (histogram):")
        hist, edges = np.histogram(consecutive, bins=np.linspace(-0.2, 1.0, 25))
        for h, e in zip(hist, edges, strict=False):
            print(f"  {e:5.2f} {h:4d} " + "#" * min(int(h), 80))
    b = dhash_bits(thumbs.cropped).astype(np.int16)
    dist = b @ (1 - b).T + (1 - b) @ b.T
    np.fill_diagonal(dist, 99)
    nearest = dist.min(axis=1)
    print("nearest-other dHash distance per slice (bits): count")
    for d in range(0, 11):
        print(f"  {d:2d} {(nearest == d).sum():4d}")
    pairs = near_duplicate_pairs(thumbs.cropped)
    cross = sum(df.at[int(i), "label"] != df.at[int(j), "label"] for i, j in pairs)
    print(f"near-duplicate pairs: {len(pairs)} ({cross} across classes)")
    print(f"files with an exact duplicate: {int(df.duplicated('sha256', keep=False).sum())}")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build the split and print group count and class balance per split."""
    ap = argparse.ArgumentParser(prog="python -m models.data", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=None, help="class-folder dataset (default: settings' IQ-OTH/NCCD)"
    )
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=None, help="manifest CSV to write (default: do not write)")
    ap.add_argument("--calibrate", action="store_true", help="print the similarity distributions")
    args = ap.parse_args(argv)
    root = args.data or get_settings().iq_othnccd_dir
    try:
        df = catalogue(root)
        thumbs = thumbnails(root, list(df["path"]))
        if args.calibrate:
            _calibrate(df, thumbs)
        df = split_by_group(group_patients(df, root, thumbs=thumbs), seed=args.seed)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_groups = df["group"].nunique()
    mixed = int((df.groupby("group")["label"].nunique() > 1).sum())
    print(f"{len(df)} slices, {n_groups} pseudo-patient groups ({mixed} with mixed labels)")
    print(df.groupby("label")["group"].nunique().rename("groups per label").to_string())
    print(balance_table(df).to_string())
    if args.out:
        sha = write_manifest(df, args.out)
        print(f"wrote {args.out} sha256={sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
