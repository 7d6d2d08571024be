"""Smoke test of the MRMC benchmark script (its timings go to docs/mrmc.md, never into asserts)."""

from __future__ import annotations

from core.stats import bench_mrmc, mrmc


def test_simulated_study_is_analysable():
    truth, marks = bench_mrmc.simulate(n_readers=3, n_normal=10, n_abnormal=10, seed=1)
    data = mrmc.froc_data(truth, marks)
    assert (len(data.readers), len(data.treatments), len(data.normal_cases), len(data.abnormal_cases)) == (3, 2, 10, 10)
    assert set(truth.loc[truth["lesion"] > 0].groupby("case").size()) <= {1, 2, 3}


def test_main_prints_each_part(capsys):
    assert bench_mrmc.main(["--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "10 readers x 200 cases x 2 treatments" in out
    for part in ("check tables", "wAFROC + jackknife", "sample-size grid", "load average"):
        assert part in out
