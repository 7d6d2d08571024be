"""benchmarks.inference: the command line of the inference benchmark."""

from __future__ import annotations

from benchmarks import inference


def test_cli_reports_a_missing_model_without_traceback(isolated_settings, capsys):
    assert inference.main(["--model", "no_such_model", "--json"]) == 2
    err = capsys.readouterr().err
    assert "no_such_model" in err and "Traceback" not in err
