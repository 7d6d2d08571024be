"""``lungreview <subcommand> [options]``: one command for every LungReview command-line tool.

Each subcommand is the ``main(argv)`` of a module, named in :data:`COMMANDS` as a
``"module:function"`` string and imported only when that subcommand runs (``importlib``), so
``lungreview --help`` is instant and this module imports no layer of the project: it sits above
``core``, ``services`` and ``models`` as their common front door, and import-linter's contracts
see no edge from it. ``python -m <module>`` runs the same functions.

Why a top-level module and not ``services/cli.py``: the training and evaluation tools live in
``models``, which the services must not import (``models`` is offline work); a dispatcher inside
any one layer would either break that rule or hide it behind strings. At the top, it breaks nothing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

#: subcommand -> ("module:function", one line of help). The function takes argv and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("core.inference.predict:main", "per-slice probabilities (CSV) and heatmaps for DICOM/ZIP/JPG/PNG"),
    "imaging": ("core.imaging:main", "de-identified summary of each series in files or folders (JSON)"),
    "ood": ("core.inference.ood:main", "false-positive and detection rates of the out-of-distribution rules"),
    "nodules": ("core.nodules:main", "the nodule detector on a CT series: a table, --json or a contact sheet"),
    "datasets": ("models.data:main", "pseudo-patient groups and the split manifest of a class-folder dataset"),
    "train": ("models.train:main", "train a registry entry (basic_cnn, advanced_cnn, resnet50)"),
    "transfer": ("models.transfer:main", "MobileNetV2 transfer learning with temperature scaling"),
    "tune": ("models.tune:main", "KerasTuner search on the validation split"),
    "evaluate": ("models.evaluation.evaluate:main", "metrics of a model on its test split (evaluation.json)"),
    "localization": ("models.evaluation.localization:main", "Grad-CAM mass inside the TCIA tumour boxes"),
    "lung-check": ("models.evaluation.lung_check:main", "lung-field masks against the lesion outlines"),
    "bench": ("benchmarks.inference:main", "latency and throughput of the inference path"),
    "pilot-report": ("services.pilot_report:main", "reader-study pilot report (HTML) and CSV of every read"),
    "mrmc": ("core.stats.mrmc_cli:main", "multi-reader multi-case analysis of a reader study"),
    "archive": ("services.archive:main", "score a PACS archive with every chosen model on Ray (run, resume, status)"),
}


class CommandUnavailable(RuntimeError):
    """A subcommand whose module is not part of this installation."""


def resolve(name: str) -> Callable[[Sequence[str] | None], int]:
    """The function of subcommand ``name``, imported now.

    Raises:
        KeyError: no such subcommand.
        CommandUnavailable: its module is not installed in this build (the message says which).
    """
    target, _ = COMMANDS[name]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CommandUnavailable(f"'lungreview {name}' is not available in this build ({module_name} is "
                                     "missing); update LungReview") from exc
        raise
    return getattr(module, attr)


def parser() -> argparse.ArgumentParser:
    """The top-level parser: the subcommands and their one-line help (nothing imported)."""
    p = argparse.ArgumentParser(
        prog="lungreview", description="LungReview's command-line tools (research use, not a medical device).",
        epilog="'lungreview SUBCOMMAND --help' shows the options of each subcommand.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


def version() -> str:
    """LungReview's version (``core.__version__``, the one place it is written)."""
    return importlib.import_module("core").__version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lungreview SUBCOMMAND [options]``; returns the subcommand's exit code (2 for usage errors)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        parser().print_help()
        return 0 if args else 2
    if args[0] == "--version":
        print(f"lungreview {version()}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        parser().error(f"unknown subcommand {name!r}; choose one of {', '.join(COMMANDS)}")
    try:
        function = resolve(name)
    except CommandUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = function(rest)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
