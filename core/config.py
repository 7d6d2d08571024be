"""Compatibility: the settings are ``core.settings``, the closed choices and shared rules ``core.domain``.

Kept only so that code written against the old module keeps importing while branches merge; new
code imports ``core.settings`` or ``core.domain`` directly. Nothing is defined here.
"""

from __future__ import annotations

from core.domain import (  # noqa: F401
    APP_VERSION,
    CLASS_NAMES,
    DISCLAIMER,
    WINDOW_PRESETS,
    Agreement,
    Finding,
    LungRads,
    NoduleDecision,
    NoduleType,
    Role,
    Window,
    WindowPreset,
)
from core.settings import (  # noqa: F401
    DEFAULT_UID_ROOT,
    REPO_ROOT,
    RUNTIMES,
    Settings,
    SettingsError,
    get_settings,
    load_settings,
)
