"""Lesion annotations of public chest CT collections: LIDC-IDRI nodule outlines and
Lung-PET-CT-Dx tumour boxes, as plain dataclasses keyed by the slice's SOPInstanceUID.

- LIDC-IDRI ("LidcReadMessage" XML, namespace ``http://www.nih.gov``; Armato et al., Med. Phys.
  38:915-931, 2011): one ``readingSession`` per radiologist; each ``unblindedReadNodule`` has
  ``characteristics`` (``malignancy`` 1-5) and one ``roi`` per slice (``imageSOP_UID``,
  ``imageZposition``, ``inclusion``, ``edgeMap`` points ``xCoord``/``yCoord`` in pixel
  columns/rows). Nodules under 3 mm carry no characteristics and a single point.
- Lung-PET-CT-Dx (TCIA, doi:10.7937/TCIA.2020.NNC20461): one Pascal-VOC-like XML per slice,
  named ``<SOPInstanceUID>.xml``, with ``object/name`` (the class) and ``bndbox``
  ``xmin, ymin, xmax, ymax`` in pixels.

Parsing uses the standard library's ``xml.etree.ElementTree`` on local files the user chose.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from skimage.draw import polygon as _polygon

_NS = "{http://www.nih.gov}"


class AnnotationError(ValueError):
    """An annotation file that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class Roi:
    """One outline of a nodule on one slice.

    Attributes:
        sop_instance_uid: SOPInstanceUID of the slice.
        z_mm: ``imageZposition`` (mm), or None.
        inclusion: True when the outline is the nodule (False: an excluded hole).
        points: int (n, 2) array of ``(x, y)`` = (column, row) pixel coordinates.
    """

    sop_instance_uid: str
    z_mm: float | None
    inclusion: bool
    points: np.ndarray = field(repr=False)

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Pixels of the outline and its interior: bool ``shape`` (rows, columns).

        The polygon through the edge points is filled (scikit-image ``draw.polygon``) and the
        edge points themselves are set, so a one-point roi gives one pixel.
        """
        out = np.zeros(shape, dtype=bool)
        xs, ys = self.points[:, 0], self.points[:, 1]
        if len(xs) >= 3:
            rr, cc = _polygon(ys, xs, shape=shape)
            out[rr, cc] = True
        ok = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
        out[ys[ok], xs[ok]] = True
        return out


@dataclass(frozen=True)
class Nodule:
    """One reader's mark of one nodule (LIDC ``unblindedReadNodule``).

    Attributes:
        reader: index of the reading session (0-based) in the file.
        nodule_id: the reader's ``noduleID``.
        malignancy: the reader's malignancy rating 1-5, or None (nodules under 3 mm).
        rois: the outlines, one per slice (several when holes are excluded).
    """

    reader: int
    nodule_id: str
    malignancy: int | None
    rois: tuple[Roi, ...]

    @property
    def at_least_3mm(self) -> bool:
        """True when the reader outlined it (nodules of 3 mm or more; LIDC reading protocol)."""
        return self.malignancy is not None or any(len(r.points) > 1 for r in self.rois)

    @property
    def slice_uids(self) -> set[str]:
        """SOPInstanceUIDs of the slices the nodule is outlined on."""
        return {r.sop_instance_uid for r in self.rois}


@dataclass(frozen=True)
class Box:
    """A rectangular lesion mark on one slice (Lung-PET-CT-Dx).

    Attributes:
        sop_instance_uid: SOPInstanceUID of the slice (the XML file's name).
        label: the object class (Lung-PET-CT-Dx: "A" adenocarcinoma, "B" small-cell, "E" large-cell,
            "G" squamous-cell carcinoma).
        x0, y0, x1, y1: pixel columns/rows, inclusive as in Pascal VOC.
    """

    sop_instance_uid: str
    label: str
    x0: int
    y0: int
    x1: int
    y1: int

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The box's pixels: bool ``shape`` (rows, columns), clipped to the image."""
        out = np.zeros(shape, dtype=bool)
        out[max(0, self.y0) : max(0, self.y1 + 1), max(0, self.x0) : max(0, self.x1 + 1)] = True
        return out


def _parse(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except FileNotFoundError as exc:
        raise AnnotationError(f"{path}: no such annotation file") from exc
    except ET.ParseError as exc:
        raise AnnotationError(f"{path}: not well-formed XML ({exc}); check the file is complete") from exc


def _text(el: ET.Element | None) -> str | None:
    return None if el is None or el.text is None else el.text.strip()


def read_lidc_xml(path: str | Path) -> list[Nodule]:
    """Read every reader's nodule marks (``unblindedReadNodule``) of an LIDC-IDRI XML file.

    ``nonNodule`` marks are ignored.

    Args:
        path: the ``NNN.xml`` beside the series' DICOM files.

    Returns:
        list of :class:`Nodule` (one per reader and nodule), in file order.

    Raises:
        AnnotationError: the file is missing, not XML, not a LidcReadMessage, or a roi lacks its
            slice UID or holds a non-integer coordinate.
    """
    path = Path(path)
    root = _parse(path)
    if not root.tag.endswith("LidcReadMessage"):
        raise AnnotationError(f"{path}: expected an LIDC LidcReadMessage XML, found <{root.tag}>")
    ns = _NS if root.tag.startswith(_NS) else ""
    out: list[Nodule] = []
    for reader, session in enumerate(root.iter(f"{ns}readingSession")):
        for nod in session.iter(f"{ns}unblindedReadNodule"):
            mal = _text(nod.find(f"{ns}characteristics/{ns}malignancy"))
            rois = []
            for roi in nod.iter(f"{ns}roi"):
                uid = _text(roi.find(f"{ns}imageSOP_UID"))
                if not uid:
                    raise AnnotationError(
                        f"{path}: a roi of {_text(nod.find(f'{ns}noduleID'))} has no imageSOP_UID"
                    )
                z = _text(roi.find(f"{ns}imageZposition"))
                try:
                    pts = np.array(
                        [
                            (int(_text(e.find(f"{ns}xCoord")) or ""), int(_text(e.find(f"{ns}yCoord")) or ""))
                            for e in roi.iter(f"{ns}edgeMap")
                        ],
                        dtype=np.int64,
                    ).reshape(-1, 2)
                    zf = float(z) if z else None
                except ValueError as exc:
                    raise AnnotationError(
                        f"{path}: a roi on slice {uid} has a non-numeric coordinate"
                    ) from exc
                incl = (_text(roi.find(f"{ns}inclusion")) or "TRUE").upper() == "TRUE"
                rois.append(Roi(uid, zf, incl, pts))
            out.append(
                Nodule(
                    reader=reader,
                    nodule_id=_text(nod.find(f"{ns}noduleID")) or "",
                    malignancy=int(mal) if mal and mal.isdigit() else None,
                    rois=tuple(rois),
                )
            )
    return out


def read_voc_box(path: str | Path) -> list[Box]:
    """Read the boxes of one Lung-PET-CT-Dx annotation XML (Pascal VOC-like).

    Args:
        path: ``<SOPInstanceUID>.xml``; the file name (without ``.xml``) is the slice's UID.

    Returns:
        list of :class:`Box`, one per ``object``.

    Raises:
        AnnotationError: missing file, not XML, not an ``annotation`` root, or a box with a
            missing or non-integer coordinate.
    """
    path = Path(path)
    root = _parse(path)
    if root.tag != "annotation":
        raise AnnotationError(f"{path}: expected a Pascal VOC <annotation>, found <{root.tag}>")
    uid = path.name[: -len(".xml")] if path.name.endswith(".xml") else path.stem
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        try:
            vals = [int(float(_text(bb.find(k)) or "")) for k in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[union-attr]
        except (ValueError, AttributeError) as exc:
            raise AnnotationError(f"{path}: an object's bndbox lacks xmin/ymin/xmax/ymax integers") from exc
        boxes.append(Box(uid, _text(obj.find("name")) or "", *vals))
    return boxes


def read_voc_folder(folder: str | Path) -> dict[str, list[Box]]:
    """All ``*.xml`` box files of a folder, by SOPInstanceUID.

    Raises:
        AnnotationError: as :func:`read_voc_box`, or the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: not a folder of annotation XML files")
    out: dict[str, list[Box]] = {}
    for f in sorted(folder.glob("*.xml")):
        for b in read_voc_box(f):
            out.setdefault(b.sop_instance_uid, []).append(b)
    return out


def lidc_suspicious(nodules: list[Nodule], min_malignancy: int = 3) -> list[Nodule]:
    """The marks that make a slice a lesion slice under the rule used here: a nodule of 3 mm or
    more (outlined) rated malignancy ``min_malignancy`` or more by the reader who marked it
    ("by any reader": every reader's own marks count).

    Returns:
        the qualifying subset of ``nodules``, in order.
    """
    return [
        n for n in nodules if n.at_least_3mm and n.malignancy is not None and n.malignancy >= min_malignancy
    ]


def lesion_masks(
    uids: list[str],
    shape: tuple[int, int],
    nodules: list[Nodule] | None = None,
    boxes: dict[str, list[Box]] | None = None,
) -> np.ndarray:
    """Union of the lesion outlines/boxes per slice of a series.

    Args:
        uids: the series' SOPInstanceUIDs in slice order (z).
        shape: (rows, columns) of a slice.
        nodules: LIDC marks to draw (included outlines only; exclusions are subtracted).
        boxes: Lung-PET-CT-Dx boxes by UID.

    Returns:
        bool (z, rows, columns); marks on slices not in ``uids`` are ignored.
    """
    index = {u: i for i, u in enumerate(uids)}
    out = np.zeros((len(uids), *shape), dtype=bool)
    excl = np.zeros_like(out)
    for n in nodules or []:
        for r in n.rois:
            if r.sop_instance_uid in index:
                target = out if r.inclusion else excl
                target[index[r.sop_instance_uid]] |= r.mask(shape)
    for uid, bs in (boxes or {}).items():
        if uid in index:
            for b in bs:
                out[index[uid]] |= b.mask(shape)
    return out & ~excl
