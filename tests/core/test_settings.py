"""core.settings: the documented configuration table matches the settings class; values are checked
and relative paths resolved against the repository root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.settings import REPO_ROOT, Settings, SettingsError, env_name, load_settings

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
#: Documented variables that are deliberately not settings (see core.settings' docstring).
NOT_SETTINGS = {"LUNGREVIEW_DICOMWEB_USER", "LUNGREVIEW_DICOMWEB_PASSWORD"}


def documented() -> dict[str, str]:
    """Variable -> default cell of every markdown table whose header is ``| variable | default | ...``."""
    out: dict[str, str] = {}
    for path in DOCS:
        in_table = False
        for line in path.read_text(encoding="utf-8").splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
            if cells[:2] == ["variable", "default"]:
                in_table = True
                continue
            if not cells:
                in_table = False
                continue
            if in_table and not set(cells[0]) <= {"-", " "}:
                for name in re.findall(r"`(LUNGREVIEW_[A-Z0-9_]+)`", cells[0]):
                    assert name not in out, f"{name} is documented twice ({path.name})"
                    out[name] = cells[1]
    return out


def rendered(default) -> str:
    """How a default is written in the table."""
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, Path):
        return default.as_posix()
    return str(default)


class TestDocumentedTable:
    def test_every_setting_and_only_settings_are_documented(self):
        docs = documented()
        fields = {env_name(f) for f in Settings.model_fields}
        assert set(docs) - NOT_SETTINGS == fields

    @pytest.mark.parametrize("field", sorted(Settings.model_fields))
    def test_the_documented_default_is_the_class_default(self, field):
        default = Settings.model_fields[field].default
        cell = documented()[env_name(field)]
        if default is None:  # described in words, never as a value
            assert not re.fullmatch(r"`[^`]*`", cell), cell
        else:
            assert cell == f"`{rendered(default)}`"


class TestLoading:
    def test_relative_paths_resolve_against_the_repository(self, monkeypatch, tmp_path):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("LUNGREVIEW_VAR_DIR", "var-test")
        s = load_settings()
        assert s.var_dir == REPO_ROOT / "var-test" and s.db_url == f"sqlite:///{REPO_ROOT / 'var-test' / 'lungreview.db'}"

    def test_empty_means_default_and_values_are_normalised(self, monkeypatch):
        for name, value in {"MAX_UPLOAD_MB": "", "RUNTIME": " OpenVINO ", "DICOMWEB_URL": "  ",
                            "WARM_MODEL": "0", "UID_ROOT": "1.2.3"}.items():
            monkeypatch.setenv(f"LUNGREVIEW_{name}", value)
        s = load_settings()
        assert (s.max_upload_mb, s.runtime, s.dicomweb_url, s.warm_model, s.uid_root) == (
            500, "openvino", None, False, "1.2.3.")

    def test_a_bad_value_names_its_variable(self, monkeypatch):
        monkeypatch.setenv("LUNGREVIEW_STORE_MAX_MB", "-1")
        monkeypatch.setenv("LUNGREVIEW_SESSION_IDLE_MIN", "half an hour")
        with pytest.raises(SettingsError) as err:
            load_settings()
        assert "LUNGREVIEW_STORE_MAX_MB: Input should be greater than 0 (got '-1')" in str(err.value)
        assert "LUNGREVIEW_SESSION_IDLE_MIN: Input should be a valid integer" in str(err.value)

    def test_the_study_key_comes_from_the_environment_or_one_file(self, monkeypatch, tmp_path):
        monkeypatch.setenv("LUNGREVIEW_VAR_DIR", str(tmp_path))
        monkeypatch.delenv("LUNGREVIEW_STUDY_KEY", raising=False)
        first = load_settings().study_key_secret()
        assert first == load_settings().study_key_secret() == (tmp_path / "study_key.secret").read_bytes()
        monkeypatch.setenv("LUNGREVIEW_STUDY_KEY", "s3cret")
        s = load_settings()
        assert s.study_key_secret() == b"s3cret" and "s3cret" not in repr(s)
