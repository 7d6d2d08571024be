"""Tests for dashboard/resources.py: shared caches, the Keras state kept between script runs, and
the background warm-up of the default model."""

from __future__ import annotations

import threading

from dashboard.resources import SharedLRU, keep_keras_state
from tests.dashboard.conftest import make_app, open_page


class TestSharedLRU:
    def test_values_are_made_once_and_the_least_recently_used_go_first(self):
        cache = SharedLRU(2)
        made = []

        def maker(v):
            def make():
                made.append(v)
                return v * 10
            return make

        assert cache.get_or_make("a", maker(1)) == 10
        assert cache.get_or_make("b", maker(2)) == 20
        assert cache.get_or_make("a", maker(99)) == 10  # held: not made again, now most recent
        cache.get_or_make("c", maker(3))  # evicts b
        assert made == [1, 2, 3] and cache.values() == [10, 30]
        assert cache.get_or_make("b", maker(4)) == 40

    def test_threads_share_one_cache(self):
        cache = SharedLRU(100)
        barrier = threading.Barrier(4)

        def work(i):
            barrier.wait()
            for k in range(50):
                cache.get_or_make(k, lambda k=k: k * k)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(cache) == 50 and sorted(cache.values()) == [k * k for k in range(50)]


class TestKerasState:
    def test_a_script_run_no_longer_clears_the_keras_session(self, app_env, monkeypatch):
        import keras
        from streamlit.runtime.scriptrunner import script_runner

        from dashboard.resources import STREAMLIT_CLEAN_UP

        calls = []
        monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: calls.append(1))
        original = STREAMLIT_CLEAN_UP
        script_runner._clean_problem_modules = original  # as a fresh server process has it
        try:
            at = make_app()
            at.run()  # the app replaces Streamlit's after-run clean-up
            assert not at.exception
            at.run()
            assert calls == []
            assert script_runner._clean_problem_modules is not original
        finally:
            script_runner._clean_problem_modules = original

    def test_streamlit_s_own_clean_up_would_have_cleared_it(self, monkeypatch):
        """The reason for keep_keras_state: Streamlit's function does call clear_session."""
        import keras
        from streamlit.runtime.scriptrunner import script_runner

        from dashboard.resources import STREAMLIT_CLEAN_UP

        calls = []
        monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: calls.append(1))
        original = STREAMLIT_CLEAN_UP
        script_runner._clean_problem_modules = original
        try:
            original()
            assert calls == [1]
            assert keep_keras_state() is True
            script_runner._clean_problem_modules()
            assert calls == [1]
        finally:
            script_runner._clean_problem_modules = original


class TestWarmUp:
    def test_the_first_page_view_loads_the_default_model_in_the_background(self, registry_env, users, monkeypatch):
        from core import settings as config
        from dashboard import resources

        monkeypatch.setenv("LUNGREVIEW_WARM_MODEL", "1")
        config.get_settings.cache_clear()
        monkeypatch.setattr(resources, "_warm_started", set())
        started = []
        real_thread = threading.Thread

        def spy(*args, **kwargs):
            t = real_thread(*args, **kwargs)
            started.append(t)
            return t

        monkeypatch.setattr(resources.threading, "Thread", spy)
        import core.registry

        loads = []
        real_load = core.registry.load_model

        def counting_load(*args, **kwargs):
            loads.append(args)
            return real_load(*args, **kwargs)

        monkeypatch.setattr(core.registry, "load_model", counting_load)
        at = open_page(make_app(users["radiologist"]), "read_study.py")
        assert not at.exception
        at.run()  # a second run starts no second warm-up
        (thread,) = [t for t in started if t.name == "lungreview-warm-model"]
        thread.join(timeout=120)
        assert not thread.is_alive()
        from core.registry import default_model_id

        assert len(loads) == 1  # the warm-up loaded the default model ...
        resources.get_predictor(default_model_id())
        assert len(loads) == 1  # ... and the first analysis finds it loaded

    def test_off_in_page_tests(self, app_env):
        from core.settings import get_settings

        assert get_settings().warm_model is False


class TestReleaseMemory:
    def test_malloc_trim_runs_on_linux(self):
        import sys

        from dashboard.resources import release_memory

        assert release_memory() is sys.platform.startswith("linux")
