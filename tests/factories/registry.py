"""Tiny model registries for tests: untrained models with weights=None, registered through core.registry.

:func:`make_registry` writes ``<root>/registry`` with one entry per :class:`TinyModel` (default:
:data:`TINY_MODELS`, 64-px inputs, a few thousand parameters each) and sets the first as the
default; :func:`register` writes one entry from a model already in memory. Outputs of these
models are meaningless; they exercise the code paths, not accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.domain import CLASS_NAMES
from core.preprocessing import PreprocessSpec

#: The input of the tiny models: 64 x 64 grey, unit scaling.
TINY_SPEC = PreprocessSpec(size=64)


@dataclass(frozen=True)
class TinyModel:
    """One entry of a tiny registry: its id, ``models.architectures`` name and hyperparameters."""

    id: str
    architecture: str
    hp: Mapping[str, Any] = field(default_factory=dict)


#: ``tiny_adv`` (advanced CNN, the default) and ``tiny_basic`` (basic CNN).
TINY_MODELS: tuple[TinyModel, ...] = (
    TinyModel("tiny_adv", "advanced_cnn", {"filters": 8, "n_conv": 2}),
    TinyModel("tiny_basic", "basic_cnn", {"filters": 4, "n_conv": 2, "dense_units": 8}),
)


def tiny_card(model_id: str, architecture: str, spec: PreprocessSpec = TINY_SPEC, **fields: Any) -> Any:
    """A 3-class :class:`core.registry.ModelCard` for a tiny model; ``fields`` override card fields."""
    from core.registry import ModelCard

    values: dict[str, Any] = {
        "task": "3class",
        "class_names": CLASS_NAMES,
        "gradcam_layer": "last_conv",
        **fields,
    }
    return ModelCard(id=model_id, architecture=architecture, preprocessing=spec, **values)


def register(
    registry_dir: Path, card: Any, model: Any, history: dict | None = None, float16: bool = False
) -> Any:
    """Save ``model`` and register it under ``card`` in ``registry_dir``; returns the written card."""
    from core.registry import save_model, write_entry

    staging = Path(registry_dir).parent / f"{card.id}.staging.keras"
    staging.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, staging, float16=float16)
    try:
        return write_entry(card, staging, registry_dir=registry_dir, history=history)
    finally:
        staging.unlink(missing_ok=True)


def make_registry(
    root: Path,
    thresholds: Mapping[str, float] | None = None,
    *,
    spec: PreprocessSpec = TINY_SPEC,
    models: Sequence[TinyModel] = TINY_MODELS,
    default: str | None = None,
    history: dict | None = None,
    seed: int = 0,
    **card_fields: Any,
) -> Path:
    """A registry in ``<root>/registry`` holding ``models`` (untrained, seeded), the first as default.

    Args:
        root: an empty temporary folder.
        thresholds: the cards' decision thresholds (``{class: probability}``); None = argmax.
        spec: the models' input spec.
        models: the entries to build.
        default: the default model id; None = the first of ``models``.
        history: ``history.json`` content for every entry (None = none written).
        seed: ``keras.utils.set_random_seed`` before building.
        card_fields: further :class:`core.registry.ModelCard` fields (e.g. ``intended_use``).

    Returns:
        the registry folder.
    """
    import keras

    from core.registry import set_default_model
    from models.architectures import build_model

    keras.utils.set_random_seed(seed)
    reg = Path(root) / "registry"
    for m in models:
        card = tiny_card(m.id, m.architecture, spec, thresholds=dict(thresholds or {}), **card_fields)
        register(reg, card, build_model(m.architecture, spec, **dict(m.hp)), history=history)
    set_default_model(default or models[0].id, reg)
    return reg
