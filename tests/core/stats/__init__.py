"""Tests of core.stats."""
