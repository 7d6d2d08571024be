"""Speed benchmark of the inference path on this machine (the command line is ``lungreview bench``,
``benchmarks/inference.py``).

Measured in one run, on the TCIA study under the data directory (Lung-PET-CT-Dx, 2 x 30 slices of
512 x 512):

- single-slice latency, p50 and p95 over ``--repeats`` runs after warm-up, in milliseconds:
  ``decode`` (one DICOM file to HU, :func:`core.imaging.read_paths`), ``preprocess``
  (:func:`core.preprocessing.preprocess_with_geometry`), ``predict``
  (:meth:`core.inference.Predictor.predict`, one slice), ``predict_gradcam`` (one pass giving
  probabilities and the heatmaps, scaled and mapped back onto the slice), and ``naive_predict``:
  the seed projects' way, ``model.predict`` on one image at a time;
- series throughput: slices per second from the files on disk to probabilities
  (``read_paths`` + :meth:`core.inference.Predictor.analyse_series`, OOD guard included) over the
  60-slice study, best and median of ``--series-repeats`` runs;
- ratios: naive / predict, predict_gradcam / predict; and whether each floor of the model is met:
  :data:`DEFAULT_MODEL_FLOORS` for the default model, :data:`FLOORS` (ResNet-50's) for the others.

The load average (``os.getloadavg``) before and after is reported: other jobs on the shared cores
slow every number down. ``--untrained resnet50`` benchmarks an untrained 224-px ResNet-50
(``keras.applications.ResNet50(weights=None)``, the backbone of ``models.architectures``'
``resnet50``; speed does not depend on the weights) when no trained entry exists. Measured
results are in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Speed targets of the ResNet-50 model: one slice within 30 ms, at least
#: 4x the naive ``model.predict`` path, Grad-CAM at most 3x a prediction, 35 slices/s for a study.
FLOORS = {
    "predict_p50_ms_max": 30.0,
    "naive_over_predict_min": 4.0,
    "gradcam_over_predict_max": 3.0,
    "series_slices_per_s_min": 35.0,
}
#: Speed targets of the default model (``basic_cnn_v1``, 128 px): one
#: 512 x 512 DICOM file to HU and one slice's preprocessing each under 2 ms, Grad-CAM (with the
#: heatmap mapped back onto the slice) at most 3x a prediction, 100 slices/s for the study from
#: the files to the probabilities.
DEFAULT_MODEL_FLOORS = {
    "decode_p50_ms_max": 2.0,
    "preprocess_p50_ms_max": 2.0,
    "gradcam_over_predict_max": 3.0,
    "series_slices_per_s_min": 100.0,
}
#: Which floors apply to which model: the default model's, else (ResNet-50 and any other) :data:`FLOORS`.
FLOORS_BY_MODEL = {"basic_cnn_v1": DEFAULT_MODEL_FLOORS}


def floors_for(model_id: str) -> dict[str, float]:
    """The speed floors a model is checked against (:data:`FLOORS_BY_MODEL`, else :data:`FLOORS`)."""
    return dict(FLOORS_BY_MODEL.get(model_id, FLOORS))


def meets(floors: dict[str, float], result: dict[str, Any]) -> dict[str, bool]:
    """Which of ``floors`` a :func:`run` result meets: one entry per floor, named without its
    ``_max``/``_min`` suffix (``predict_p50``, ``naive_ratio``, ``gradcam_ratio``,
    ``series_throughput``, ``decode_p50``, ``preprocess_p50``).

    Raises:
        KeyError: a floor this function does not know.
    """
    single, ratios = result["single_slice"], result["ratios"]
    measured = {
        "predict_p50_ms_max": ("predict_p50", single["predict"]["p50_ms"]),
        "decode_p50_ms_max": ("decode_p50", single["decode"]["p50_ms"]),
        "preprocess_p50_ms_max": ("preprocess_p50", single["preprocess"]["p50_ms"]),
        "naive_over_predict_min": ("naive_ratio", ratios["naive_over_predict"]),
        "gradcam_over_predict_max": ("gradcam_ratio", ratios["gradcam_over_predict"]),
        "series_slices_per_s_min": ("series_throughput", result["series"]["slices_per_s_median"]),
    }
    out = {}
    for key, limit in floors.items():
        name, value = measured[key]
        out[name] = value <= limit if key.endswith("_max") else value >= limit
    return out


def _timed(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> dict[str, float]:
    """p50/p95/mean wall time of ``fn`` in milliseconds over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    arr = np.asarray(times)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "mean_ms": round(float(arr.mean()), 2),
        "n": repeats,
    }


def untrained_resnet50() -> Any:
    """A :class:`core.registry.LoadedModel` wrapping an untrained 224-px ResNet-50 (benchmark only).

    ``keras.applications.ResNet50(weights=None)`` with a 3-class softmax head: the same layers and
    Grad-CAM layer (``conv5_block3_out``) as the ``resnet50`` architecture of training, without
    its dropout (a no-op at inference), so it runs at the same speed.
    """
    import keras

    from core.domain import CLASS_NAMES
    from core.preprocessing import PreprocessSpec
    from core.registry import LoadedModel, ModelCard

    spec = PreprocessSpec(size=224, channels=3, scaling="resnet50")
    model = keras.applications.ResNet50(
        weights=None, input_shape=spec.input_shape, classes=len(CLASS_NAMES), classifier_activation="softmax"
    )
    card = ModelCard(
        id="resnet50_untrained",
        architecture="resnet50",
        task="3class",
        class_names=CLASS_NAMES,
        preprocessing=spec,
        gradcam_layer="conv5_block3_out",
    )
    return LoadedModel(card=card, model=model)


def _openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.get_version().split("-")[0]


def run(
    loaded: Any,
    tcia_dir: str | Path,
    repeats: int = 30,
    series_repeats: int = 5,
    naive_repeats: int = 15,
    runtime: str | None = None,
) -> dict[str, Any]:
    """Run every measurement of the module docstring.

    Args:
        loaded: :class:`core.registry.LoadedModel`.
        tcia_dir: the ``lung-pet-ct-dx`` folder (DICOM study).
        repeats: timed runs per single-slice measurement.
        series_repeats: timed runs of the 60-slice series.
        naive_repeats: timed runs of the naive ``model.predict`` path (slow).
        runtime: ``Predictor`` runtime (``auto``, ``openvino``, ``tensorflow``); None = settings.

    Returns:
        JSON-able dict of the measurements, ratios, floors and machine state.

    Raises:
        FileNotFoundError: no DICOM file under ``tcia_dir``.
        core.inference.InferenceError: ``runtime="openvino"`` and OpenVINO cannot run the model.
    """
    from core.imaging import read_paths
    from core.inference import Predictor
    from core.preprocessing import preprocess_with_geometry

    load_before = os.getloadavg()
    files = sorted(Path(tcia_dir).rglob("*.dcm"))
    if not files:
        raise FileNotFoundError(f"no DICOM files under {tcia_dir}; set LUNGREVIEW_DATA_DIR")
    predictor = Predictor(loaded, runtime=runtime)
    spec = predictor.spec
    one = files[len(files) // 2]
    series = read_paths([one]).series[0]
    hu = series.slices[0].hu
    x, geos = preprocess_with_geometry(hu, spec)

    def predict_gradcam() -> None:
        predictor.explain_prepared(x, geos[0])

    out: dict[str, Any] = {
        "model_id": loaded.card.id,
        "architecture": loaded.card.architecture,
        "runtime": predictor.runtime,
        "runtime_note": predictor.runtime_note,
        "batch": predictor.batch,
    }
    single: dict[str, Any] = {}
    single["decode"] = _timed(lambda: read_paths([one]), repeats)
    single["preprocess"] = _timed(lambda: preprocess_with_geometry(hu, spec), repeats)
    single["predict"] = _timed(lambda: predictor.predict(x), repeats, warmup=5)
    single["predict_gradcam"] = _timed(predict_gradcam, repeats, warmup=5)
    model = loaded.model
    single["naive_predict"] = _timed(lambda: model.predict(x, verbose=0), naive_repeats, warmup=2)
    out["single_slice"] = single

    study = read_paths([tcia_dir])
    n_slices = sum(len(s.slices) for s in study.series)
    for s in study.series:  # warm-up of the batch shapes
        predictor.analyse_series(s)
    runs = []
    for _ in range(series_repeats):
        t0 = time.perf_counter()
        res = read_paths([tcia_dir])
        for s in res.series:
            predictor.analyse_series(s)
        runs.append(time.perf_counter() - t0)
    # the ceiling: the model alone on the study's preprocessed slices, in the Predictor's batches
    x_all = np.concatenate([predictor.preprocess([s.hu for s in ser.slices])[0] for ser in study.series])
    model_runs = []
    for _ in range(series_repeats):
        t0 = time.perf_counter()
        predictor.predict(x_all)
        model_runs.append(time.perf_counter() - t0)
    out["series"] = {
        "slices": n_slices,
        "seconds_median": round(float(np.median(runs)), 3),
        "slices_per_s_median": round(n_slices / float(np.median(runs)), 1),
        "slices_per_s_best": round(n_slices / float(min(runs)), 1),
        "model_only_slices_per_s_median": round(n_slices / float(np.median(model_runs)), 1),
        "runs": series_repeats,
    }
    p50 = single["predict"]["p50_ms"]
    out["ratios"] = {
        "naive_over_predict": round(single["naive_predict"]["p50_ms"] / p50, 2),
        "gradcam_over_predict": round(single["predict_gradcam"]["p50_ms"] / p50, 2),
    }
    out["floors"] = floors_for(loaded.card.id)
    out["meets_floors"] = meets(out["floors"], out)
    import tensorflow as tf

    out["machine"] = {
        "cpu_count": os.cpu_count(),
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
        "tensorflow": tf.__version__,
        "openvino": _openvino_version(),
        "python": platform.python_version(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    return out
