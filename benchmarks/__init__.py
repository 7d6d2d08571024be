"""Measurement scripts, not tests: they time and size the running system and print figures
(recorded in docs/benchmarks.md), with aims but without pass/fail.

* ``lungreview bench`` / ``python -m benchmarks.inference``: latency and throughput of the
  inference path (the measuring code is ``models.evaluation.bench``);
* ``python -m benchmarks.warm_path``: upload to heatmap and slice moves in a real browser;
* ``python -m benchmarks.memory``: the server's memory with several browser sessions;
* ``python -m benchmarks.load``: N readers at once on one server (upload to heatmap p50/p95, errors, RSS);
* ``python -m benchmarks.fuzz_report``: malformed uploads through ``core.imaging``, by outcome.

The browser and fuzz scripts use the test helpers (``tests.e2e``, ``tests.core.imaging``), so
they run from a checkout; ``benchmarks.inference`` needs only the installed project.
"""
