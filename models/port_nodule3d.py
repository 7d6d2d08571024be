"""Port the LUNA16 3-D nodule network (Keras 1.2 / Theano HDF5) to Keras 3 and register it.

Source: ``<weights>/luna16_nodule3d_v29_keras1.h5`` (``LUNGREVIEW_WEIGHTS_DIR``), the nodule model
``model_LUNA_64_v29_14.h5`` of Daniel Hammack's second-placed Kaggle Data Science Bowl 2017
solution (repository ``dhammack/DSB2017``, commit 5f92467); provenance, licence and format in the
weights folder's README.

The file holds the graph as JSON (attribute ``model_config``, Keras 1 functional ``Model``) and one
weight group per layer (``model_weights/<layer>/<layer>_W`` ...). Keras 3 cannot read it, so the
graph is rebuilt layer by layer, channels last, and the weights are copied with h5py:

* ``Convolution3D`` (Theano, ``dim_ordering="th"``): kernel (out, in, k1, k2, k3) ->
  (k1, k2, k3, in, out), with the three spatial axes reversed: Theano's ``conv3d`` is a true
  convolution (the kernel is flipped, ``filter_flip=True``), TensorFlow's a cross-correlation
  (:func:`theano_kernel_to_keras`). ``border_mode="same"`` -> ``padding="same"``.
* ``BatchNormalization`` (mode 0): weights gamma, beta, running_mean, running_std; Keras 1 keeps
  the running **variance** under the name ``running_std`` (Theano backend: it normalises with
  ``sqrt(running_std + epsilon)``), so it goes to ``moving_variance`` unchanged; ``axis=1``
  (channels first) becomes ``-1``.
* ``Merge(mode="concat", concat_axis=1)`` -> ``Concatenate(axis=-1)`` with the inputs in the same
  order, so the next convolution's input channels keep their indices.
* ``LeakyReLU(alpha)`` -> ``LeakyReLU(negative_slope=alpha)``; pooling layers keep pool size and
  strides; ``Dense`` kernels are (in, out) in both; Dropout / Gaussian noise layers (none in v29)
  would be identities at inference and are skipped.

The input keeps the source's axis order: Hammack's training cubes were transposed to (x, y, z)
before channels (``np.transpose(voxel, (2, 1, 0))`` on SimpleITK's (z, y, x) arrays), so the
Keras 3 input is (x, y, z, 1); ``core.nodules.volume.cube_batch`` builds it. The input's spatial
size is left open (None) so that the convolutional trunk can also run over a whole lung region;
the heads expect the 64 mm cube of the card's volume spec.

Layer names (so that tests and Grad-CAM can address them): ``conv1`` ... ``conv5`` with
``conv<i>_bn`` and ``conv<i>_act``; ``pool<i>_max``, ``pool<i>_avg`` (the average-pooled input
path) and ``pool<i>_concat``; ``global_max`` and ``global_max_bn``; per head ``<h>_dense``,
``<h>_dense_bn``, ``<h>_dense_act`` and the output ``o_<h>`` (h in d, lob, spic, mal, fp).

Run ``python -m models.port_nodule3d`` (``--help``); it writes ``models/registry/nodule3d_luna16_v1/``
through :func:`core.registry.write_entry`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from core.config import REPO_ROOT, get_settings
from core.datasets import file_sha256

SOURCE_FILE = "luna16_nodule3d_v29_keras1.h5"
#: sha256 of the source file as the weights README states it.
SOURCE_SHA256 = "8f7069b138fb8bbb0a5a2f83ba2f0de9e30644d1372fe36fdec1603ec09ffd17"
MODEL_ID = "nodule3d_luna16_v1"
#: Weights of the network (README of the weights folder; BN moving statistics included).
N_WEIGHTS = 331_559
#: Output heads in the source's order.
OUTPUTS = ("o_d", "o_lob", "o_spic", "o_mal", "o_fp")
#: Classes of ``o_fp`` (Hammack's generator: nodule, LUNA16 candidate that is no nodule, random cube).
FP_CLASSES = ("nodule", "cad_false_positive", "tissue")


class PortError(Exception):
    """The source file is not the Keras 1 network this converter knows; the message says why."""


@dataclass(frozen=True)
class Keras1Layer:
    """One layer of the Keras 1 graph: class, source name, config, input layer names, weights."""

    class_name: str
    name: str
    config: dict[str, Any]
    inputs: tuple[str, ...]
    weights: tuple[np.ndarray, ...]


def read_keras1(path: str | Path) -> tuple[list[Keras1Layer], list[str], list[str]]:
    """Read a Keras 1 functional model HDF5 without Keras.

    Args:
        path: the ``.h5`` file (attributes ``model_config``, ``keras_version`` 1.x; group
            ``model_weights`` with one group per layer and its ``weight_names``).

    Returns:
        (layers in the file's order, input layer names, output layer names). Weight arrays are
        float32 as stored (Theano layout).

    Raises:
        PortError: not an HDF5 Keras 1 functional model (no ``model_config``, another Keras
            major version, a layer without its weight group).
    """
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise PortError(f"{path} is not a readable HDF5 file ({exc})") from exc
    with h5:
        if "model_config" not in h5.attrs:
            raise PortError(f"{path} has no model_config attribute: not a whole Keras model file")
        version = h5.attrs.get("keras_version", b"")
        version = version.decode() if isinstance(version, bytes) else str(version)
        if not version.startswith("1."):
            raise PortError(f"{path} was written by Keras {version or '?'}; this converter reads Keras 1.x")
        config = json.loads(h5.attrs["model_config"])
        if config.get("class_name") != "Model":
            raise PortError(f"{path} holds a {config.get('class_name')}, not a functional Model")
        group = h5["model_weights"] if "model_weights" in h5 else h5
        layers = []
        for spec in config["config"]["layers"]:
            name = spec["name"]
            nodes = spec.get("inbound_nodes") or []
            if len(nodes) > 1:
                raise PortError(f"layer {name} is shared ({len(nodes)} inbound nodes); not supported")
            inputs = tuple(n[0] for n in nodes[0]) if nodes else ()
            weights: tuple[np.ndarray, ...] = ()
            if name in group:
                wnames = [w.decode() if isinstance(w, bytes) else str(w) for w in group[name].attrs["weight_names"]]
                weights = tuple(np.asarray(group[name][w][()], dtype=np.float32) for w in wnames)
            layers.append(Keras1Layer(spec["class_name"], name, spec["config"], inputs, weights))
        ins = [n[0] for n in config["config"]["input_layers"]]
        outs = [n[0] for n in config["config"]["output_layers"]]
    return layers, ins, outs


def theano_kernel_to_keras(kernel: np.ndarray, flip: bool = True) -> np.ndarray:
    """A Theano ``Convolution3D`` kernel as a Keras 3 (TensorFlow) ``Conv3D`` kernel.

    Args:
        kernel: float (out, in, k1, k2, k3), Keras 1 ``dim_ordering="th"`` layout.
        flip: reverse the three spatial axes (True for a port: Theano convolves, TensorFlow
            cross-correlates; False only to show in tests that it matters).

    Returns:
        float32 (k1, k2, k3, in, out), C-contiguous.

    Raises:
        ValueError: ``kernel`` is not 5-D.
    """
    k = np.asarray(kernel, dtype=np.float32)
    if k.ndim != 5:
        raise ValueError(f"expected a 5-D (out, in, k1, k2, k3) kernel, got shape {k.shape}")
    if flip:
        k = k[:, :, ::-1, ::-1, ::-1]
    return np.ascontiguousarray(k.transpose(2, 3, 4, 1, 0))


def _layer_names(layers: list[Keras1Layer], outputs: list[str]) -> dict[str, str]:
    """Keras 3 names for the source layers (scheme in the module docstring)."""
    consumers: dict[str, list[str]] = {}
    for layer in layers:
        for src in layer.inputs:
            consumers.setdefault(src, []).append(layer.name)
    by_name = {la.name: la for la in layers}
    names: dict[str, str] = {}
    # heads: walk back from each output to the global pooling
    for out in outputs:
        head = out[2:] if out.startswith("o_") else out
        names[out] = out
        cur = by_name[out].inputs[0]
        chain = []
        # the head's own layers: each used only by the next one (the shared trunk feeds all heads)
        while len(consumers.get(cur, [])) == 1 and len(by_name[cur].inputs) == 1:
            chain.append(cur)
            cur = by_name[cur].inputs[0]
        suffix = {"Dense": "dense", "BatchNormalization": "dense_bn", "LeakyReLU": "dense_act"}
        for name in chain:
            cls = by_name[name].class_name
            if cls not in suffix:
                raise PortError(f"unexpected {cls} layer {name} in the head of {out}")
            names[name] = f"{head}_{suffix[cls]}"
    # trunk: numbered in graph order
    counters = {"conv": 0, "pool": 0}
    for layer in layers:
        if layer.name in names:
            continue
        cls = layer.class_name
        if cls == "InputLayer":
            names[layer.name] = "cube"
        elif cls == "Convolution3D":
            counters["conv"] += 1
            names[layer.name] = f"conv{counters['conv']}"
        elif cls in ("BatchNormalization", "LeakyReLU"):
            src = names[layer.inputs[0]]
            base = src.rsplit("_", 1)[0] if src.endswith(("_bn", "_act")) else src
            names[layer.name] = f"{base}_{'bn' if cls == 'BatchNormalization' else 'act'}"
        elif cls == "MaxPooling3D":
            counters["pool"] += 1
            names[layer.name] = f"pool{counters['pool']}_max"
        elif cls == "AveragePooling3D":
            names[layer.name] = f"pool{counters['pool'] or 1}_avg"
        elif cls == "Merge":
            names[layer.name] = f"pool{counters['pool']}_concat"
        elif cls in ("GlobalMaxPooling3D", "GlobalAveragePooling3D"):
            names[layer.name] = "global_max" if cls == "GlobalMaxPooling3D" else "global_avg"
        else:
            names[layer.name] = layer.name
    # the average-pooled input path is created before its max-pool partner in some graphs:
    # name each avg pool after the concat that uses it
    for layer in layers:
        if layer.class_name == "Merge":
            for src in layer.inputs:
                if by_name[src].class_name == "AveragePooling3D":
                    names[src] = names[layer.name].replace("_concat", "_avg")
    if len(set(names.values())) != len(names):
        raise PortError("the layer naming scheme gave two layers one name; the graph is not the v29 network")
    return names


_SKIPPED = ("Dropout", "GaussianDropout", "GaussianNoise")


def build_keras3(layers: list[Keras1Layer], inputs: list[str], outputs: list[str], flip: bool = True) -> Any:
    """Rebuild the Keras 1 graph in Keras 3 (channels last) and copy its weights.

    Args:
        layers, inputs, outputs: from :func:`read_keras1`.
        flip: passed to :func:`theano_kernel_to_keras` (False only in tests).

    Returns:
        an uncompiled ``keras.Model``: input float32 (b, x, y, z, 1) (spatial size open),
        outputs in the source's order (for v29: ``o_d`` (b, 1), ``o_lob``, ``o_spic``, ``o_mal``
        (b, 1), ``o_fp`` (b, 3)).

    Raises:
        PortError: a layer class or setting this converter does not translate (e.g. channels-last
            source, strided convolutions, a Merge mode other than concat), or weights of the
            wrong shape.
    """
    import keras

    names = _layer_names(layers, outputs)
    tensors: dict[str, Any] = {}
    assignments: list[tuple[Any, list[np.ndarray]]] = []
    for la in layers:
        c, cls = la.config, la.class_name
        new = names[la.name]
        if c.get("dim_ordering", "th") != "th":
            raise PortError(f"{la.name}: dim_ordering {c.get('dim_ordering')!r}; expected Theano 'th'")
        if cls == "InputLayer":
            shape = c["batch_input_shape"]
            if len(shape) != 5 or shape[1] != 1:
                raise PortError(f"input {la.name} has shape {shape}; expected (None, 1, d, h, w)")
            tensors[la.name] = keras.Input(shape=(None, None, None, 1), name=new, dtype="float32")
            continue
        args = [tensors[s] for s in la.inputs]
        if cls in _SKIPPED:
            tensors[la.name] = args[0]
            continue
        if cls == "Convolution3D":
            if tuple(c.get("subsample", (1, 1, 1))) != (1, 1, 1) or c.get("border_mode") != "same":
                raise PortError(f"{la.name}: only stride 1 'same' convolutions are translated")
            kernel = (c["kernel_dim1"], c["kernel_dim2"], c["kernel_dim3"])
            layer = keras.layers.Conv3D(
                c["nb_filter"], kernel, padding="same", use_bias=c.get("bias", True),
                activation=None if c["activation"] == "linear" else c["activation"], name=new,
            )
            out = layer(args[0])
            w = [theano_kernel_to_keras(la.weights[0], flip=flip), *la.weights[1:]]
        elif cls == "BatchNormalization":
            if c.get("mode", 0) != 0:
                raise PortError(f"{la.name}: BatchNormalization mode {c.get('mode')} is not translated")
            layer = keras.layers.BatchNormalization(axis=-1, epsilon=c["epsilon"], momentum=c["momentum"], name=new)
            out = layer(args[0])
            gamma, beta, mean, var = la.weights  # Keras 1 'running_std' holds the variance
            w = [gamma, beta, mean, var]
        elif cls == "LeakyReLU":
            layer = keras.layers.LeakyReLU(negative_slope=c["alpha"], name=new)
            out, w = layer(args[0]), []
        elif cls in ("MaxPooling3D", "AveragePooling3D"):
            if c.get("border_mode", "valid") != "valid":
                raise PortError(f"{la.name}: only 'valid' pooling is translated")
            pool = keras.layers.MaxPooling3D if cls == "MaxPooling3D" else keras.layers.AveragePooling3D
            layer = pool(pool_size=tuple(c["pool_size"]), strides=tuple(c["strides"]), padding="valid", name=new)
            out, w = layer(args[0]), []
        elif cls == "Merge":
            if c.get("mode") != "concat" or c.get("concat_axis") not in (1, -1):
                raise PortError(f"{la.name}: only channel concatenation merges are translated")
            layer = keras.layers.Concatenate(axis=-1, name=new)
            out, w = layer(args), []
        elif cls in ("GlobalMaxPooling3D", "GlobalAveragePooling3D"):
            pool = keras.layers.GlobalMaxPooling3D if cls == "GlobalMaxPooling3D" else keras.layers.GlobalAveragePooling3D
            layer = pool(name=new)
            out, w = layer(args[0]), []
        elif cls == "Dense":
            layer = keras.layers.Dense(
                c["output_dim"], use_bias=c.get("bias", True),
                activation=None if c["activation"] == "linear" else c["activation"], name=new,
            )
            out, w = layer(args[0]), list(la.weights)
        else:
            raise PortError(f"layer class {cls} ({la.name}) is not translated")
        tensors[la.name] = out
        if w:
            assignments.append((layer, w))
    model = keras.Model(inputs=[tensors[n] for n in inputs], outputs=[tensors[n] for n in outputs],
                        name="nodule3d_luna16_v29")
    for layer, w in assignments:
        expected = [tuple(v.shape) for v in layer.weights]
        if expected != [tuple(a.shape) for a in w]:
            raise PortError(f"{layer.name}: weight shapes {[a.shape for a in w]} do not fit {expected}")
        layer.set_weights(w)
    return model


def port(source: str | Path, flip: bool = True) -> Any:
    """:func:`read_keras1` then :func:`build_keras3`: the Keras 3 model of a Keras 1 file.

    Raises:
        PortError: see both functions.
    """
    layers, ins, outs = read_keras1(source)
    return build_keras3(layers, ins, outs, flip=flip)


def card_for(source: Path, source_sha256: str, n_weights: int) -> Any:
    """The registry card of the ported network (sha256 and size are filled by ``write_entry``).

    Returns:
        ``core.registry.ModelCard`` with ``kind="nodule_detector"``, the volume spec of
        ``core.nodules.volume.LUNA16_SPEC``, provenance, training data, licence note and limitations.
    """
    from core.nodules.volume import LUNA16_SPEC
    from core.registry import DETECTION_TASK, ModelCard, git_commit

    try:
        rel = source.resolve().relative_to(REPO_ROOT.parent.resolve())
        shown = f"../{rel.as_posix()}"
    except ValueError:
        shown = source.name
    return ModelCard(
        id=MODEL_ID,
        kind="nodule_detector",
        architecture="nodule3d",
        task=DETECTION_TASK,
        class_names=FP_CLASSES,
        preprocessing=None,
        volume_preprocessing=LUNA16_SPEC.to_dict(),
        gradcam_layer="conv5_act",
        thresholds={},
        training={
            "source_file": shown,
            "source_sha256": source_sha256,
            "source": (
                "Daniel Hammack's nodule model of the Kaggle Data Science Bowl 2017 (second place), file "
                "'scoring_code/nodule models/model_LUNA_64_v29_14.h5' of the public repository "
                "dhammack/DSB2017 (commit 5f92467, 2018-09-29); technical report dsb_2017_daniel_hammack.pdf "
                "in that repository"
            ),
            "source_format": "Keras 1.2 HDF5, Theano backend, channels first",
            "port": (
                "models/port_nodule3d.py: graph rebuilt in Keras 3 channels last; Conv3D kernels transposed "
                "(out, in, d, h, w) -> (d, h, w, in, out) with the three spatial axes reversed (Theano "
                "convolves, TensorFlow cross-correlates); BatchNormalization running_std (a variance) -> "
                "moving_variance"
            ),
            "parameters": n_weights,
            "dataset": (
                "LUNA16 (888 LIDC-IDRI CT scans, slice thickness <= 2.5 mm; Setio et al., Med. Image Anal. "
                "42:1-13, 2017) with the LIDC readers' nodule ratings (LIDC-IDRI, doi:10.7937/K9/TCIA.2015."
                "LO9QL9SX, CC BY 3.0; Armato et al., Med. Phys. 38:915-931, 2011)"
            ),
            "training_targets": (
                "64 mm cubes at 1 mm, nodule anywhere in the cube (random offset up to 32 x (1 - d / 64) mm "
                "per axis), LUNA16 candidates that are not nodules, and random cubes; outputs: diameter (mm), "
                "lobulation, spiculation and malignancy (reader rating / 5), and nodule / CAD false positive "
                "/ tissue"
            ),
            "shared_studies_in_training": (
                "LIDC-IDRI-0001 and LIDC-IDRI-0002 are LUNA16 scans and were most probably in this network's "
                "training data: figures on them are a check of the port and the pipeline, not a validation"
            ),
            "licence": (
                "the source repository carries no licence file; Kaggle's open-source winner licence requires "
                "winning teams to license their solution under an OSI-approved licence (MIT) and the team's "
                "other half (juliandewit/kaggle_ndsb2017) is MIT: treated as MIT with this provenance. "
                "Training data LUNA16 / LIDC-IDRI, CC BY 3.0"
            ),
            "git_commit": git_commit(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        intended_use=(
            "Research and teaching only: proposes lung nodule candidates (centre, diameter, nodule probability, "
            "LIDC-style malignancy, lobulation and spiculation) on a chest CT volume for a qualified radiologist "
            "to check in LungReview. Not a medical device; must not be used for diagnosis or treatment decisions."
        ),
        limitations=[
            "Trained on LUNA16 only (LIDC-IDRI scans, slices <= 2.5 mm); thicker slices, other scanners, "
            "contrast-enhanced or low-dose protocols outside LUNA16 may lower its sensitivity.",
            "The shared LIDC-IDRI studies were most probably in its training data; the shared Lung-PET-CT-Dx "
            "study (8 mm slices) is far outside its training range. Three studies are a check, not a validation.",
            "Malignancy, lobulation and spiculation imitate the LIDC readers' ratings, which are suspicion, "
            "not pathology.",
            "It sees one 64 mm cube at a time: masses larger than the cube are only partly seen.",
            "Not a diagnostic device: every output is a suggestion for a qualified radiologist to check.",
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: port the Keras 1 file and write the registry entry.

    Returns:
        0 on success, 2 when the source is missing or not the expected network.
    """
    parser = argparse.ArgumentParser(
        prog="python -m models.port_nodule3d",
        description="Port the LUNA16 3-D nodule network (Keras 1 / Theano) to Keras 3 and register it.",
    )
    parser.add_argument("--source", type=Path, default=None,
                        help=f"the Keras 1 file (default: LUNGREVIEW_WEIGHTS_DIR/{SOURCE_FILE})")
    parser.add_argument("--registry", type=Path, default=None, help="registry folder (default: settings)")
    args = parser.parse_args(argv)
    source = args.source or get_settings().weights_dir / SOURCE_FILE
    if not source.is_file():
        print(f"error: {source} not found; set LUNGREVIEW_WEIGHTS_DIR to the folder holding {SOURCE_FILE}",
              file=sys.stderr)
        return 2
    digest = file_sha256(source)
    if digest != SOURCE_SHA256:
        print(f"warning: {source} has sha256 {digest}, not the documented {SOURCE_SHA256}", file=sys.stderr)
    try:
        model = port(source)
    except PortError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = int(model.count_params())
    if n != N_WEIGHTS:
        print(f"error: the port has {n} weights, not {N_WEIGHTS}; refusing to register it", file=sys.stderr)
        return 2
    from core.registry import save_model, write_entry

    card = card_for(source, digest, n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        save_model(model, path)
        final = write_entry(card, path, registry_dir=args.registry)
    print(f"registered {final.id}: {n} weights, sha256 {final.sha256[:12]}..., {final.size_bytes} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
