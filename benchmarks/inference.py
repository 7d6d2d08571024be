"""Latency and throughput of the inference path on this machine: ``lungreview bench [--model ID] [--json]``.

Measures with ``models.evaluation.bench.run`` (what is measured, and the aims each model is held
to, are documented there); prints one line to stderr and the JSON to stdout. Figures of past runs
are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from models.evaluation import bench


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    from core.settings import RUNTIMES

    parser = argparse.ArgumentParser(prog="lungreview bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="registry model id (default: the default model)")
    parser.add_argument(
        "--untrained", choices=["resnet50"], default=None, help="benchmark an untrained model"
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per single-slice measurement")
    parser.add_argument("--series-repeats", type=int, default=5, help="timed runs of the 60-slice study")
    parser.add_argument(
        "--runtime", choices=RUNTIMES, default=None, help="default: LUNGREVIEW_RUNTIME"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)

    from core.registry import RegistryError, load_model
    from core.settings import get_settings

    if args.untrained:
        loaded = bench.untrained_resnet50()
    else:
        try:
            loaded = load_model(args.model)
        except RegistryError as exc:
            print(f"error: {exc} (or use --untrained resnet50)", file=sys.stderr)
            return 2
    from core.inference import InferenceError

    try:
        result = bench.run(loaded, get_settings().tcia_dir, args.repeats, args.series_repeats, runtime=args.runtime)
    except (InferenceError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        s = result["single_slice"]
        print(
            f"{result['model_id']}: decode p50 {s['decode']['p50_ms']} ms, preprocess p50 "
            f"{s['preprocess']['p50_ms']} ms, predict p50 {s['predict']['p50_ms']} ms, +Grad-CAM "
            f"{s['predict_gradcam']['p50_ms']} ms, naive {s['naive_predict']['p50_ms']} ms, series "
            f"{result['series']['slices_per_s_median']} slices/s (model alone "
            f"{result['series']['model_only_slices_per_s_median']}), runtime {result['runtime']}, "
            f"load {result['machine']['load_avg_before']}; floors met: {result['meets_floors']}",
            file=sys.stderr,
        )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
