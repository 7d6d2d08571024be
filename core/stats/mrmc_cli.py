"""lungreview-mrmc: Obuchowski-Rockette-Hillis analysis of a reader study from CSV files.

ROC reads:   lungreview-mrmc READS.csv                 (reader,treatment,case,truth,rating)
FROC marks:  lungreview-mrmc --truth TRUTH.csv MARKS.csv   (case,lesion,weight / reader,treatment,case,lesion,rating)

Prints a table of the figures of merit (empirical ROC AUC, or wAFROC for FROC marks), the test
that all treatments are equal with random readers and random cases (F, ndf, Hillis' ddf, p), the
fixed-reader test, each pairwise difference with its 95 % interval, and one plain sentence;
``--json`` prints one JSON object instead (keys f, ndf, ddf, p, foms, differences, ...).
``--sample-size`` adds the power of the next study (3-15 readers x 50-500 cases) and the
smallest design with 80 % power. Bad input: one line per bad row on stderr, exit code 2, nothing
on stdout. Layouts and formulas: core/stats/mrmc.py and docs/mrmc.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.stats import mrmc, mrmc_io, sample_size

#: Exit code for input that cannot be analysed (argparse uses 2 for usage errors too).
EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lungreview-mrmc", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0],
        epilog="ROC:  lungreview-mrmc READS.csv\nFROC: lungreview-mrmc --truth TRUTH.csv MARKS.csv\n"
               "Exit codes: 0 done, 2 bad input or usage (the reasons on stderr).")
    p.add_argument("data", metavar="READS_OR_MARKS.csv",
                   help="ROC reads (reader,treatment,case,truth,rating), or FROC marks with --truth")
    p.add_argument("--truth", metavar="TRUTH.csv", help="FROC truth (case,lesion,weight): analyse MARKS as FROC")
    p.add_argument("--fom", choices=("wafroc", "roc"), default="wafroc",
                   help="FROC figure of merit: wafroc (default) or roc (highest mark per case, ROC AUC)")
    p.add_argument("--order", metavar="T1,T2,...",
                   help="treatment order; each difference is earlier minus later (default: sorted), "
                        "e.g. --order aided,unaided")
    p.add_argument("--alpha", type=float, default=0.05, help="test level (default 0.05: 95 %% intervals)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--sample-size", action="store_true",
                   help="add the power grid (3-15 readers x 50-500 cases) and the smallest design with 80 %% power")
    p.add_argument("--effect", type=float, default=None,
                   help="effect size for --sample-size (default: the observed first difference)")
    return p


def _analyse(args: argparse.Namespace) -> mrmc.MrmcResult:
    order = [t.strip() for t in args.order.split(",")] if args.order else None
    if not 0 < args.alpha < 1:
        raise mrmc.MrmcError(f"--alpha must lie between 0 and 1, got {args.alpha}.")
    if args.truth:
        truth = mrmc_io.read_truth(args.truth)
        marks = mrmc_io.read_marks(args.data)
        fom = mrmc.WAFROC if args.fom == "wafroc" else mrmc.ROC_AUC
        return mrmc.analyse_froc(truth, marks, fom=fom, treatment_order=order, alpha=args.alpha)
    return mrmc.analyse_roc(mrmc_io.read_reads(args.data), treatment_order=order, alpha=args.alpha)


def _f(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if np.isfinite(x) else "n/a"


def _p(x: float) -> str:
    """'p = 0.0517', 'p = 0.00012', 'p < 0.0001' or 'p n/a'."""
    if not np.isfinite(x):
        return "p n/a"
    if x < 1e-4:
        return "p < 0.0001"
    return f"p = {x:.2g}" if x < 1e-3 else f"p = {x:.4f}"


def render(result: mrmc.MrmcResult, sentence: str, size: sample_size.SampleSize | None = None) -> str:
    """The plain-text report of the command line.

    Args:
        result: the analysis; sentence: :func:`core.stats.mrmc.plain_sentence`; size: optional sample size.

    Returns:
        Text, lines separated by "\\n", ending with a newline.
    """
    r = result
    lines = [f"MRMC analysis of {r.fom_name}: {len(r.readers)} readers, {r.n_cases} cases "
             f"({r.n_normal} without and {r.n_abnormal} with disease), {len(r.treatments)} treatments.", ""]
    table = pd.DataFrame(r.foms, index=pd.Index(r.treatments, name="treatment"),
                         columns=pd.Index([f"reader {x}" for x in r.readers]))
    table["mean"] = r.treatment_means
    lines += [f"Figures of merit ({r.fom_name}), treatment x reader:",
              table.to_string(float_format=lambda x: f"{x:.4f}"), ""]
    pct = round(100 * (1 - r.alpha))
    t = r.random
    lines.append("Random readers and random cases (Obuchowski-Rockette, Hillis 2007 ddf):")
    lines.append(f"  F = {_f(t.f)}, ndf = {t.ndf}, ddf = {_f(t.ddf, 2)}, {_p(t.p)}")
    for d in r.differences:
        lines.append(f"  {d.treatments[0]} minus {d.treatments[1]}: {_f(d.estimate)}, {pct} % CI "
                     f"{_f(d.ci95[0])} to {_f(d.ci95[1])}, {_p(d.p)}")
    fx = r.fixed
    lines.append("Fixed readers, random cases (results for these readers only):")
    lines.append(f"  chi-square = {_f(fx.chisq)}, df = {fx.df}, {_p(fx.p)}")
    for d in r.fixed_differences:
        lines.append(f"  {d.treatments[0]} minus {d.treatments[1]}: {_f(d.estimate)}, {pct} % CI "
                     f"{_f(d.ci95[0])} to {_f(d.ci95[1])}, {_p(d.p)}")
    c = r.components
    lines.append(f"Variance components: Var {c.var:.6g}, Cov1 {c.cov1:.6g}, Cov2 {c.cov2:.6g}, Cov3 {c.cov3:.6g}, "
                 f"Var(T:R) {c.var_tr:.6g}; MS(T) {c.ms_t:.6g}, MS(T:R) {c.ms_tr:.6g}")
    lines += [f"  note: {n}" for n in r.notes]
    if size is not None:
        lines += ["", f"Power of the next study (random readers and cases, effect {size.effect:.4f}, "
                      f"alpha {size.alpha}):",
                  size.table().to_string(float_format=lambda x: f"{x:.2f}"),
                  "Cases needed for power > {:.0%}: {}".format(
                      size.target, ", ".join(f"{j} readers {k if k > 0 else f'> {sample_size.MAX_CASES}'}"
                                             for j, k in zip(size.readers, size.cases_needed, strict=True))),
                  f"Smallest design (fewest reads): {size.smallest[0]} readers x {size.smallest[1]} cases"
                  if size.smallest else "No design up to the case limit reaches the target power."]
    lines += ["", sentence]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; see the module docstring. Returns the exit code (0, or 2 for bad input)."""
    args = _parser().parse_args(argv)
    try:
        result = _analyse(args)
        size = sample_size.from_result(result, effect=args.effect, alpha=args.alpha) if args.sample_size else None
    except mrmc.BadRowsError as e:
        where = args.truth if e.table == "truth" else args.data
        for line in e.problems:
            print(f"{where}: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except mrmc.MrmcError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sentence = mrmc.plain_sentence(result)
    if args.json:
        out = result.to_dict()
        out["sentence"] = sentence
        if size is not None:
            out["sample_size"] = size.to_dict()
        text = json.dumps(out, indent=2, allow_nan=False) + "\n"
    else:
        text = render(result, sentence, size)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
