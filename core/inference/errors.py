"""The error of the inference package."""

from __future__ import annotations


class InferenceError(Exception):
    """A model cannot be applied to this input; the message says what is wrong and what to do."""
