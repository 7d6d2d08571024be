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

    @staticmethod
    def _counting_events(monkeypatch):
        """Make the cache's per-key events (and no other) count the threads waiting on them;
        returns a function that blocks until ``n`` threads wait (False after 30 s)."""
        import types

        import dashboard.resources as resources

        seen = threading.Condition()
        waiting = [0]

        class Event(threading.Event):
            def wait(self, timeout=None):
                with seen:
                    waiting[0] += 1
                    seen.notify_all()
                return super().wait(timeout)

        monkeypatch.setattr(resources, "threading", types.SimpleNamespace(Lock=threading.Lock, Event=Event))

        def until_waiting(n: int) -> bool:
            with seen:
                return seen.wait_for(lambda: waiting[0] >= n, timeout=30)

        return until_waiting

    def test_threads_asking_for_one_key_at_once_make_it_once(self, monkeypatch):
        until_waiting = self._counting_events(monkeypatch)
        cache = SharedLRU(10)
        started, release = threading.Event(), threading.Event()
        made, got = [], []

        def make():
            made.append(1)
            started.set()
            release.wait(30)
            return "heatmap"

        first = threading.Thread(target=lambda: got.append(cache.get_or_make("k", make)))
        first.start()
        assert started.wait(30)
        others = [threading.Thread(target=lambda: got.append(cache.get_or_make("k", make))) for _ in range(3)]
        for t in others:
            t.start()
        assert until_waiting(3), "the other threads did not wait for the first one's value"
        release.set()
        for t in [first, *others]:
            t.join(30)
        assert made == [1] and got == ["heatmap"] * 4 and len(cache) == 1

    def test_when_the_maker_fails_a_waiting_thread_makes_the_value(self, monkeypatch):
        until_waiting = self._counting_events(monkeypatch)
        cache = SharedLRU(10)
        started, release = threading.Event(), threading.Event()
        errors, got = [], []

        def failing():
            started.set()
            release.wait(30)
            raise RuntimeError("model gone")

        def first():
            try:
                cache.get_or_make("k", failing)
            except RuntimeError as exc:
                errors.append(str(exc))

        a = threading.Thread(target=first)
        a.start()
        assert started.wait(30)
        b = threading.Thread(target=lambda: got.append(cache.get_or_make("k", lambda: "made by b")))
        b.start()
        assert until_waiting(1)
        release.set()
        a.join(30)
        b.join(30)
        assert errors == ["model gone"] and got == ["made by b"] and cache.values() == ["made by b"]


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

    def test_the_c_library_is_looked_up_once_not_on_every_call(self, monkeypatch):
        """``ctypes.util.find_library`` runs ``ldconfig -p`` in a subprocess (a fork of the server)."""
        import subprocess
        import sys

        from dashboard.resources import release_memory

        release_memory()  # may look it up here

        def no_subprocess(*args, **kwargs):
            raise AssertionError(f"release_memory started a subprocess: {args[:1]}")

        monkeypatch.setattr(subprocess, "Popen", no_subprocess)
        assert release_memory() is sys.platform.startswith("linux")
