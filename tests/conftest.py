"""Shared fixtures: paths to the real data in ../shared, and isolated settings per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.settings import load_settings

SHARED_DATASETS = Path(
    os.environ.get("LUNGREVIEW_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
)


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The shared datasets folder (LUNGREVIEW_DATA_DIR or ../shared/datasets); must exist."""
    assert SHARED_DATASETS.is_dir(), f"shared datasets not found at {SHARED_DATASETS}"
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def iq_dir(datasets_dir: Path) -> Path:
    """The IQ-OTH/NCCD class-folder copy."""
    path = datasets_dir / "iq-othnccd"
    assert path.is_dir(), f"IQ-OTH/NCCD not found at {path}"
    return path


@pytest.fixture(scope="session")
def tcia_dir(datasets_dir: Path) -> Path:
    """The Lung-PET-CT-Dx study of patient Lung_Dx-A0002 (DICOM + Annotation)."""
    path = datasets_dir / "lung-pet-ct-dx"
    assert path.is_dir(), f"Lung-PET-CT-Dx sample not found at {path}"
    return path


@pytest.fixture(scope="session", autouse=True)
def _var_outside_the_repository(tmp_path_factory):
    """Keep what tests write (OpenVINO caches, study key, databases) out of the repository's var/."""
    if os.environ.get("LUNGREVIEW_VAR_DIR"):
        yield
        return
    from core import settings as config

    os.environ["LUNGREVIEW_VAR_DIR"] = str(tmp_path_factory.mktemp("var"))
    config.get_settings.cache_clear()
    yield
    os.environ.pop("LUNGREVIEW_VAR_DIR", None)
    config.get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Put pytest's ``__main__`` back after each test.

    Streamlit's script runner (AppTest included) installs the page script as ``sys.modules["__main__"]``
    and leaves it there. A later test that starts processes with multiprocessing's "spawn" would
    then make every child run ``dashboard/app.py`` as ``__mp_main__`` (TensorFlow and all; the
    figures are in docs/testing.md).
    """
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None and sys.modules.get("__main__") is not main:
        sys.modules["__main__"] = main


@pytest.fixture()
def isolated_settings(tmp_path, monkeypatch):
    """Settings with the database and var/ in a temporary folder (registry and data unchanged)."""
    var = tmp_path / "var"
    monkeypatch.setenv("LUNGREVIEW_VAR_DIR", str(var))
    monkeypatch.setenv("LUNGREVIEW_DB_URL", f"sqlite:///{var / 'test.db'}")
    monkeypatch.setenv("LUNGREVIEW_STUDY_KEY", "test-secret")
    from core import settings as config

    config.get_settings.cache_clear()
    yield load_settings()
    config.get_settings.cache_clear()
