"""The model registry: one folder per model, the single source of truth for every consumer.

Layout (``registry_dir`` = ``get_settings().registry_dir`` unless given)::

    <registry>/default.json            {"default": "<model id>"}
    <registry>/<id>/model.keras        Keras 3 archive (weights possibly stored as float16, below)
    <registry>/<id>/card.json          ModelCard.to_dict(): id, architecture, preprocessing, ...
    <registry>/<id>/evaluation.json    models.evaluate output (written by the evaluation step)
    <registry>/<id>/history.json       per-epoch training history
    <registry>/<id>/split.csv          copy of the split manifest the model was trained on

Integrity: the card records the sha256 of ``model.keras``; :func:`load_model` checks it BEFORE
deserialising (a tampered or truncated file is refused with :class:`ModelIntegrityError`), then
loads with ``keras.saving.load_model(..., safe_mode=True, compile=False)`` (no lambda code).

Size: a ResNet-50 in float32 is ~95 MB, over the 50 MiB per-file budget. :func:`save_model`
with ``float16=True`` rewrites the multi-dimensional weight datasets (convolution and dense
kernels, >99 % of the bytes) inside the archive's ``model.weights.h5`` as IEEE float16, keeping
1-D tensors (biases, batch-norm scale/offset/moving statistics) in float32. Keras casts each
stored array to the variable's dtype (float32) when it assigns it on load, so the loaded model
computes in float32; the rounding error of the kernels (relative 2**-11) is measured by the
trainer and recorded in the card (``training.weights_storage``).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.config import REPO_ROOT, get_settings
from core.datasets import file_sha256
from core.preprocessing import PreprocessSpec

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
EVALUATION_FILE = "evaluation.json"
HISTORY_FILE = "history.json"
SPLIT_FILE = "split.csv"
DEFAULT_FILE = "default.json"
TASKS = ("3class", "binary")
#: What a registry entry is. ``slice_classifier``: a 2-D model that scores one CT slice at a time
#: (its ``preprocessing`` is a :class:`PreprocessSpec`); ``nodule_detector``: a 3-D model that
#: scores cubes of a CT volume (its ``volume_preprocessing`` is read by ``core.nodules``).
KINDS = ("slice_classifier", "nodule_detector")
#: The ``task`` of a nodule detector's card.
DETECTION_TASK = "nodule_detection"


class RegistryError(Exception):
    """The registry cannot give what was asked; the message says what is wrong and what to do."""


class ModelNotFoundError(RegistryError):
    """No registry entry (or no default) for the requested model id."""


class ModelIntegrityError(RegistryError):
    """The model file's sha256 differs from the one in its card (tampered, truncated, replaced)."""


@dataclass(frozen=True)
class ModelCard:
    """Everything a consumer needs to use a registered model correctly (``card.json``).

    Attributes:
        id: registry id, also the folder name (e.g. ``"basic_cnn_v1"``).
        architecture: ``"basic_cnn"``, ``"advanced_cnn"``, ``"resnet50"``, ... (slice
            classifiers) or ``"nodule3d"`` (the LUNA16 nodule detector).
        task: ``"3class"`` (normal, benign, malignant) or ``"binary"`` (malignant vs the rest);
            :data:`DETECTION_TASK` for a nodule detector.
        class_names: output order of the softmax (3-class: normal, benign, malignant; nodule
            detector: the classes of its ``o_fp`` output).
        preprocessing: the :class:`PreprocessSpec` the model was trained with (None for a
            nodule detector, which has ``volume_preprocessing`` instead).
        gradcam_layer: name of the layer Grad-CAM reads.
        thresholds: ``{class name: probability}`` for :func:`core.decision.decide`, chosen on the
            validation split.
        model_file: file name inside the entry (``"model.keras"``).
        sha256: hex sha256 of the model file.
        training: provenance (dataset, split manifest + sha256, starting weights, epochs, seconds,
            seed, hyperparameters, git commit, date, validation metrics, weights storage).
        intended_use: what the model is for (and not for).
        limitations: known limitations, one sentence each.
        size_bytes: size of the model file in bytes.
        kind: one of :data:`KINDS`; cards written before kinds existed are slice classifiers.
        volume_preprocessing: a nodule detector's volume spec as a dict (voxel size, cube size,
            HU scaling; ``core.nodules.VolumeSpec.from_dict`` reads it); empty for slice classifiers.
    """

    id: str
    architecture: str
    task: str
    class_names: tuple[str, ...]
    preprocessing: PreprocessSpec | None
    gradcam_layer: str
    thresholds: dict[str, float] = field(default_factory=dict)
    model_file: str = MODEL_FILE
    sha256: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    intended_use: str = ""
    limitations: list[str] = field(default_factory=list)
    size_bytes: int = 0
    kind: str = "slice_classifier"
    volume_preprocessing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``preprocessing`` as its own dict or None, ``class_names`` as a list)."""
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict() if self.preprocessing is not None else None
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from ``card.json`` content.

        Raises:
            RegistryError: a required field is missing or a value is invalid (an unknown kind; a
                slice classifier without ``preprocessing`` or with an unknown task; a nodule
                detector without ``volume_preprocessing``).
        """
        try:
            known = set(cls.__dataclass_fields__)
            d = {k: v for k, v in data.items() if k in known}
            kind = str(data.get("kind", "slice_classifier"))
            if kind == "slice_classifier" or data.get("preprocessing") is not None:
                d["preprocessing"] = PreprocessSpec.from_dict(data["preprocessing"])
            else:
                d["preprocessing"] = None
            d["volume_preprocessing"] = dict(data.get("volume_preprocessing") or {})
            d["class_names"] = tuple(data["class_names"])
            d["thresholds"] = {str(k): float(v) for k, v in dict(data.get("thresholds", {})).items()}
            card = cls(**d)
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(
                f"model card is incomplete or invalid ({exc}); re-create the entry with models.train"
            ) from exc
        if card.kind not in KINDS:
            raise RegistryError(f"model card {card.id!r} has unknown kind {card.kind!r}; expected one of {KINDS}")
        if card.kind == "slice_classifier" and card.task not in TASKS:
            raise RegistryError(
                f"model card {card.id!r} has unknown task {card.task!r}; expected one of {TASKS}"
            )
        if card.kind == "nodule_detector" and not card.volume_preprocessing:
            raise RegistryError(
                f"nodule detector card {card.id!r} has no volume_preprocessing; re-create it with "
                "python -m models.port_nodule3d"
            )
        return card


@dataclass
class LoadedModel:
    """A registry card with its deserialised Keras model (``model``: float32 (b, H, W, C) -> (b, k))."""

    card: ModelCard
    model: Any

    @property
    def spec(self) -> PreprocessSpec:
        """The preprocessing spec the model expects (slice classifiers only).

        Raises:
            RegistryError: the entry is a nodule detector (no slice preprocessing).
        """
        if self.card.preprocessing is None:
            raise RegistryError(
                f"{self.card.id!r} is a {self.card.kind}, not a slice classifier; use core.nodules for it"
            )
        return self.card.preprocessing


def _registry(registry_dir: str | Path | None) -> Path:
    return Path(registry_dir) if registry_dir is not None else get_settings().registry_dir


def git_commit() -> str | None:
    """The repository's current commit (40 hex digits) for provenance, or None outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def entry_dir(model_id: str, registry_dir: str | Path | None = None) -> Path:
    """Folder of a registry entry, ``<registry>/<model_id>`` (not checked for existence).

    Raises:
        RegistryError: the id is empty or contains a path separator.
    """
    if not model_id or "/" in model_id or "\\" in model_id or model_id in (".", ".."):
        raise RegistryError(f"invalid model id {model_id!r}: use letters, digits, '_' and '-'")
    return _registry(registry_dir) / model_id


def list_cards(registry_dir: str | Path | None = None, kind: str | None = "slice_classifier") -> list[ModelCard]:
    """The model cards of one kind in the registry, sorted by id (folders without ``card.json`` are
    skipped).

    Args:
        registry_dir: registry folder; None = settings.
        kind: ``"slice_classifier"`` (the default, so that model pickers, evaluations and
            benchmarks written for slice classifiers never receive the nodule detector),
            ``"nodule_detector"``, or None for every entry.

    Raises:
        RegistryError: a ``card.json`` is not valid JSON or misses fields, or ``kind`` is unknown.
    """
    if kind is not None and kind not in KINDS:
        raise RegistryError(f"unknown model kind {kind!r}; expected one of {KINDS} or None")
    root = _registry(registry_dir)
    if not root.is_dir():
        return []
    cards = []
    for card_path in sorted(root.glob(f"*/{CARD_FILE}")):
        card = _read_card(card_path)
        if kind is None or card.kind == kind:
            cards.append(card)
    return cards


def _read_card(path: Path) -> ModelCard:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"cannot read model card {path} ({exc}); restore it from git") from exc
    return ModelCard.from_dict(data)


def default_model_id(registry_dir: str | Path | None = None) -> str:
    """The id in ``<registry>/default.json`` (``{"default": id}``).

    Raises:
        ModelNotFoundError: no default is set (run models.train, then set default.json).
    """
    path = _registry(registry_dir) / DEFAULT_FILE
    try:
        model_id = json.loads(path.read_text(encoding="utf-8"))["default"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelNotFoundError(
            f"no default model set ({path} missing or invalid); train a model with python -m models.train "
            'and write {"default": "<id>"} there'
        ) from exc
    return str(model_id)


def set_default_model(model_id: str, registry_dir: str | Path | None = None) -> Path:
    """Write ``<registry>/default.json`` = ``{"default": model_id}``.

    Raises:
        ModelNotFoundError: the entry has no card.
        RegistryError: the entry is not a slice classifier (the default is what the slice
            pickers and the analysis run; the nodule detector is found by kind).
    """
    card = get_card(model_id, registry_dir)
    if card.kind != "slice_classifier":
        raise RegistryError(f"{model_id!r} is a {card.kind}; the default model must be a slice classifier")
    path = _registry(registry_dir) / DEFAULT_FILE
    path.write_text(json.dumps({"default": model_id}, indent=2) + "\n", encoding="utf-8")
    return path


def get_card(model_id: str | None = None, registry_dir: str | Path | None = None) -> ModelCard:
    """The card of ``model_id`` (None = the default model).

    Raises:
        ModelNotFoundError: no such entry.
        RegistryError: the card is invalid.
    """
    model_id = model_id or default_model_id(registry_dir)
    path = entry_dir(model_id, registry_dir) / CARD_FILE
    if not path.is_file():
        known = [c.id for c in list_cards(registry_dir, kind=None)]
        raise ModelNotFoundError(
            f"no model {model_id!r} in the registry {_registry(registry_dir)}; available: {known}"
        )
    return _read_card(path)


def verify(card: ModelCard, registry_dir: str | Path | None = None) -> Path:
    """Check that the model file exists and its sha256 matches the card; return its path.

    Raises:
        ModelNotFoundError: the model file is missing.
        ModelIntegrityError: the sha256 differs from the card's.
    """
    path = entry_dir(card.id, registry_dir) / card.model_file
    if not path.is_file():
        raise ModelNotFoundError(f"model file {path} is missing; restore it from git or retrain {card.id}")
    actual = file_sha256(path)
    if actual != card.sha256:
        raise ModelIntegrityError(
            f"model file {path} does not match its card (sha256 {actual[:12]}... instead of "
            f"{card.sha256[:12]}...): it was changed or damaged after registration. It was not loaded; "
            "restore the file from git or retrain the model"
        )
    return path


def load_model(model_id: str | None = None, registry_dir: str | Path | None = None) -> LoadedModel:
    """Load a registered model after checking its sha256.

    Args:
        model_id: registry id; None = the default model.
        registry_dir: registry folder; None = settings.

    Returns:
        :class:`LoadedModel` with the card and an uncompiled Keras model (float32 weights).

    Raises:
        ModelNotFoundError, ModelIntegrityError: see :func:`get_card` / :func:`verify`.
        RegistryError: Keras cannot read the file.
    """
    card = get_card(model_id, registry_dir)
    path = verify(card, registry_dir)
    import keras  # deferred: importing TensorFlow costs seconds

    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for unreadable archives
        raise RegistryError(f"Keras could not load {path} ({exc}); retrain {card.id}") from exc
    return LoadedModel(card=card, model=model)


def _read_json(model_id: str, name: str, registry_dir: str | Path | None) -> dict | None:
    path = entry_dir(model_id, registry_dir) / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path} is not valid JSON ({exc}); regenerate it") from exc


def read_evaluation(model_id: str, registry_dir: str | Path | None = None) -> dict | None:
    """``evaluation.json`` of an entry (output of models.evaluate), or None if not written yet.

    Raises:
        RegistryError: the file exists but is not valid JSON.
    """
    return _read_json(model_id, EVALUATION_FILE, registry_dir)


def write_evaluation(model_id: str, report: dict[str, Any], registry_dir: str | Path | None = None) -> Path:
    """Write ``<registry>/<model_id>/evaluation.json`` (strict JSON: NaN refused) and return its path.

    Raises:
        ModelNotFoundError: the entry has no card.
        ValueError: ``report`` holds NaN or infinity (``json.dumps(allow_nan=False)``).
    """
    get_card(model_id, registry_dir)
    path = entry_dir(model_id, registry_dir) / EVALUATION_FILE
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def read_history(model_id: str, registry_dir: str | Path | None = None) -> dict | None:
    """``history.json`` of an entry (per-epoch loss/metrics lists), or None.

    Raises:
        RegistryError: the file exists but is not valid JSON.
    """
    return _read_json(model_id, HISTORY_FILE, registry_dir)


def _weights_to_float16(archive: Path) -> dict[str, int]:
    """Rewrite multi-dimensional float32 datasets of ``model.weights.h5`` in a .keras zip as float16."""
    import h5py
    import numpy as np

    with zipfile.ZipFile(archive) as zin:
        members = {info.filename: zin.read(info.filename) for info in zin.infolist()}
    if "model.weights.h5" not in members:
        raise RegistryError(f"{archive} has no model.weights.h5; it is not a Keras 3 archive")
    converted = kept = 0
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.h5", Path(tmp) / "out.h5"
        src.write_bytes(members["model.weights.h5"])
        with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:

            def copy(name: str, obj: Any) -> None:
                nonlocal converted, kept
                if isinstance(obj, h5py.Group):
                    g = fout.require_group(name)
                    g.attrs.update(dict(obj.attrs))
                elif isinstance(obj, h5py.Dataset):
                    data = obj[()]
                    if isinstance(data, np.ndarray) and data.dtype == np.float32 and data.ndim >= 2:
                        data = data.astype(np.float16)
                        converted += data.size
                    elif isinstance(data, np.ndarray):
                        kept += data.size
                    ds = fout.create_dataset(name, data=data)
                    ds.attrs.update(dict(obj.attrs))

            fout.attrs.update(dict(fin.attrs))
            fin.visititems(copy)
        members["model.weights.h5"] = dst.read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for name, data in members.items():
            zout.writestr(name, data)
    archive.write_bytes(buf.getvalue())
    return {"float16_values": converted, "float32_values": kept}


def save_model(model: Any, path: str | Path, float16: bool = False) -> dict[str, Any]:
    """Save a Keras model as a ``.keras`` archive, optionally with float16 weight storage.

    Args:
        model: a built Keras model.
        path: target file (``.keras``).
        float16: store kernels (ndim >= 2) as float16 (see the module docstring).

    The optimizer state is never saved (an uncompiled clone is written); load with
    ``compile=False``.

    Returns:
        ``{"dtype": "float32"|"float16 kernels, float32 vectors", "float16_values": n, ...}``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if getattr(model, "optimizer", None) is not None:
        # A compiled model's archive also holds the optimizer state (Adam: two more copies of
        # every weight); a shipped model needs none of it, so save an uncompiled clone.
        import keras

        clean = keras.Model.from_config(model.get_config())  # uncompiled (clone_model compiles)
        clean.set_weights(model.get_weights())
        model = clean
    model.save(path)
    if not float16:
        return {"dtype": "float32"}
    counts = _weights_to_float16(path)
    return {"dtype": "float16 kernels, float32 vectors", **counts}


def write_entry(
    card: ModelCard,
    model_path: str | Path,
    registry_dir: str | Path | None = None,
    history: dict | None = None,
    split_manifest: str | Path | None = None,
) -> ModelCard:
    """Create or replace ``<registry>/<card.id>/`` from a saved model file.

    The model file is copied in; ``sha256`` and ``size_bytes`` are filled from the copy; the card,
    the history and a copy of the split manifest are written beside it.

    Returns:
        the card as written (with sha256 and size).

    Raises:
        RegistryError: the model file does not exist.
    """
    src = Path(model_path)
    if not src.is_file():
        raise RegistryError(f"model file {src} not found; nothing to register")
    folder = entry_dir(card.id, registry_dir)
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / card.model_file
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    if split_manifest is not None and Path(split_manifest).resolve() != (folder / SPLIT_FILE).resolve():
        shutil.copyfile(split_manifest, folder / SPLIT_FILE)
    if history is not None:
        (folder / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
    d = card.to_dict()
    d["sha256"] = file_sha256(dst)
    d["size_bytes"] = dst.stat().st_size
    final = ModelCard.from_dict(d)
    _write_card(folder, final)
    return final


def _write_card(folder: Path, card: ModelCard) -> None:
    (folder / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")


def update_card(card: ModelCard, registry_dir: str | Path | None = None) -> ModelCard:
    """Rewrite ``card.json`` of an existing entry (e.g. new thresholds); the model file is untouched.

    The new card must describe the same model file as the stored one (same ``model_file``,
    ``sha256`` and ``size_bytes``): only what is said about the model may change here; a new
    model file goes through :func:`write_entry`.

    Returns:
        the card as written (read back through :meth:`ModelCard.from_dict`).

    Raises:
        ModelNotFoundError: the entry has no card.
        RegistryError: the card names another model file, sha256 or size than the stored card.
    """
    stored = get_card(card.id, registry_dir)
    if (card.model_file, card.sha256, card.size_bytes) != (stored.model_file, stored.sha256, stored.size_bytes):
        raise RegistryError(
            f"card for {card.id!r} names another model file than the registered one "
            f"({card.model_file}, sha256 {card.sha256[:12]}...); register a new model file with write_entry"
        )
    final = ModelCard.from_dict(card.to_dict())
    _write_card(entry_dir(card.id, registry_dir), final)
    return final


# ------------------------------------------------------------------------------ DICOM check
DICOM_CHECK_FILE = "dicom_check.json"


def write_dicom_check(model_id: str, report: dict, registry_dir: str | Path | None = None) -> Path:
    """Write ``dicom_check.json`` (output of ``models.evaluate --dicom``) beside ``evaluation.json``.

    Args:
        model_id: an existing registry entry.
        report: JSON-serialisable dict.

    Returns:
        the written path.

    Raises:
        ModelNotFoundError: no such entry folder; RegistryError: an invalid id.
    """
    path = entry_dir(model_id, registry_dir) / DICOM_CHECK_FILE
    if not path.parent.is_dir():
        raise ModelNotFoundError(f"no registry entry {model_id!r}; train or register it first")
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_dicom_check(model_id: str, registry_dir: str | Path | None = None) -> dict | None:
    """``dicom_check.json`` of an entry, or None if not written yet.

    Raises:
        RegistryError: the file exists but is not valid JSON.
    """
    return _read_json(model_id, DICOM_CHECK_FILE, registry_dir)
