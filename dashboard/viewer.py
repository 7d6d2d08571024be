"""The slice viewer: one reusable component for every page that shows a series with its AI result.

:func:`slice_viewer` draws, for a ``core.imaging.Series`` and a ``services.reading.Analysis``:
the per-slice score chart (click a point to go to its slice), the slider "Slice" and the button
"Go to most suspicious slice", the window presets, the slice with the lung outline and nodule
circles as a Plotly figure that can take clicks, the Grad-CAM overlay with its opacity and
class, and the slice's probabilities. It is not page-specific: nodules come in as
:class:`Circle` lists, clicks go out through a callback, widget keys carry a prefix.

Call it inside an ``st.fragment`` (the read page wraps it with its findings panel;
:func:`viewer_fragment` is the fragment for pages that show the viewer alone): slice choice,
window, opacity, heatmap class, lung outline and circles then rerun only the fragment. A slice
move computes only what the new slice needs: the slice picture (PNG), its lung mask and its
Grad-CAM overlay are made once per analysis, slice and view in caches shared by all sessions
(``dashboard.resources.shared_cache``); nothing is read from the database.

Clicks on the image: a Plotly image trace with an invisible grid of points on top, shown with
``st.plotly_chart(on_select="rerun", selection_mode="points")``, Streamlit's own selection
events (no custom component): a click selects the nearest grid point (every
:func:`grid_step` pixels, 4 on a 512-pixel slice), which is the clicked pixel to within half a
step; typing the pixel stays possible on the page.

Keys (with ``prefix``): ``slice_no``, ``goto_suspicious``, ``slice_chart``, ``window_preset``,
``gradcam_on``, ``lung_outline_on``, ``nodule_circles_all``, ``gradcam_opacity``,
``gradcam_class``, ``viewer_image``, ``slice_probabilities``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.domain import WINDOW_PRESETS, Window, WindowPreset
from core.imaging import Series, view
from dashboard.components import slice_score_figure
from dashboard.resources import gradcam_heatmap, shared_cache
from services.nodules import slice_step_mm

PRESET_LABELS: dict[str, str] = {
    WindowPreset.LUNG.value: "Lung (C -600 / W 1500)",
    WindowPreset.MEDIASTINUM.value: "Mediastinum (C 50 / W 350)",
    WindowPreset.BONE.value: "Bone (C 500 / W 2000)",
    WindowPreset.DICOM.value: "File's own",
    WindowPreset.IQ_OTHNCCD.value: "IQ-OTH/NCCD export",
}
#: Overlay PNGs, slice PNGs and lung masks kept for all sessions together (a few hundred KB each).
SHARED_PICTURES = 128
#: Height of the slice figure in CSS pixels.
FIGURE_PX = 520
#: Opacity of a nodule's circle on the neighbouring slices it spans (1 on its centre slice).
NEIGHBOUR_OPACITY = 0.4


@dataclass(frozen=True)
class Circle:
    """A nodule to draw on the slices it spans.

    Attributes:
        slice_index: 0-based slice through the centre. row, col: centre pixel (fractions allowed).
        diameter_mm: the nodule's diameter in mm (> 0).
        label: short text beside the circle ("1", "R1"), may be "".
        colour: CSS colour of the outline. dash: Plotly line dash ("solid", "dot", "dash").
    """

    slice_index: int
    row: float
    col: float
    diameter_mm: float
    label: str = ""
    colour: str = "#FFD700"
    dash: str = "solid"


@dataclass(frozen=True)
class Click:
    """A click on the slice: 0-based slice, row (y) and column (x) pixel."""

    slice_index: int
    row: int
    col: int


# ------------------------------------------------------------------------------ pure helpers
def window_options(series) -> list[str]:
    """Window presets offered for a series (the file's own only when it has one)."""
    opts = [WindowPreset.LUNG.value, WindowPreset.MEDIASTINUM.value, WindowPreset.BONE.value]
    if series.source_kind == "dicom" and series.windows:
        opts.append(WindowPreset.DICOM.value)
    opts.append(WindowPreset.IQ_OTHNCCD.value)
    return opts


def window_for(preset: str, series) -> Window:
    """The ``Window`` (centre/width in HU) of a preset; "dicom" = the series' first own window."""
    if preset == WindowPreset.DICOM.value and series.windows:
        return series.windows[0]
    return WINDOW_PRESETS[WindowPreset(preset)]


def circles_on_slice(circles: Sequence[Circle], index: int, step_mm: float | None
                     ) -> list[tuple[Circle, float, float]]:
    """The circles that show on slice ``index``: (circle, radius in mm on this slice, opacity).

    A nodule is taken as a sphere: on a slice ``dz`` mm from its centre its cross-section has
    radius ``sqrt(r^2 - dz^2)``; it shows there while ``dz < r``, at :data:`NEIGHBOUR_OPACITY`
    (1 on the centre slice). Without a slice step (pictures) only the centre slice shows it.

    Args:
        circles: the nodules. index: 0-based slice. step_mm: slice step in mm, or None.

    Returns:
        List of (circle, radius mm, opacity), in the order given.
    """
    out = []
    for c in circles:
        r = float(c.diameter_mm) / 2.0
        if r <= 0:
            continue
        k = abs(int(index) - int(c.slice_index))
        if k == 0:
            out.append((c, r, 1.0))
        elif step_mm and k * step_mm < r:
            out.append((c, float(np.sqrt(r * r - (k * step_mm) ** 2)), NEIGHBOUR_OPACITY))
    return out


def grid_step(shape: tuple[int, int]) -> int:
    """Pixels between the clickable grid points: about 128 points along the longer side."""
    return max(1, int(round(max(shape) / 128)))


def png_uri(picture: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of a uint8 (y, x) or (y, x, 3) picture (Pillow)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(picture, dtype=np.uint8)).save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def slice_figure(uri: str, shape: tuple[int, int], pixel_mm: tuple[float, float],
                 drawn: Sequence[tuple[Circle, float, float]] = (), clickable: bool = False,
                 height: int = FIGURE_PX) -> go.Figure:
    """The slice as a Plotly figure: the picture, nodule circles, and (clickable) an invisible grid.

    Args:
        uri: PNG data URI of the displayed picture (:func:`png_uri`).
        shape: (rows, columns) of the slice. pixel_mm: (row, column) spacing in mm (circles are
            circles in mm: ellipses in pixels when the spacing differs).
        drawn: (circle, radius mm, opacity) from :func:`circles_on_slice`.
        clickable: add the grid of invisible points that take clicks (trace 1).
        height: figure height in CSS pixels.

    Returns:
        ``plotly.graph_objects.Figure``: x = column, y = row (row 0 at the top), pixel centres on
        whole numbers.
    """
    rows, cols = shape
    fig = go.Figure(go.Image(source=uri, x0=0, y0=0, dx=1, dy=1, hoverinfo="skip"))
    if clickable:
        step = grid_step(shape)
        ys, xs = np.mgrid[0:rows:step, 0:cols:step]
        fig.add_trace(go.Scattergl(
            x=xs.ravel().astype(np.int16), y=ys.ravel().astype(np.int16), mode="markers", showlegend=False,
            marker={"size": max(4, step * 2), "opacity": 0}, hovertemplate="x %{x}, y %{y}<extra></extra>",
            selected={"marker": {"opacity": 0}}, unselected={"marker": {"opacity": 0}}))
    for circle, radius, opacity in drawn:
        ry, rx = radius / pixel_mm[0], radius / pixel_mm[1]
        fig.add_shape(type="circle", xref="x", yref="y", x0=circle.col - rx, x1=circle.col + rx,
                      y0=circle.row - ry, y1=circle.row + ry, opacity=opacity,
                      line={"color": circle.colour, "width": 2, "dash": circle.dash})
        if circle.label and opacity == 1.0:
            fig.add_annotation(x=circle.col + rx, y=circle.row - ry, text=circle.label, showarrow=False,
                               font={"color": circle.colour, "size": 13}, xanchor="left", yanchor="bottom")
    fig.update_xaxes(visible=False, range=[-0.5, cols - 0.5])
    fig.update_yaxes(visible=False, range=[rows - 0.5, -0.5], scaleanchor="x")
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 0, "b": 0}, dragmode=False,
                      hovermode="closest", showlegend=False)
    return fig


def click_of(selection, index: int) -> Click | None:
    """The clicked pixel of a ``st.plotly_chart`` selection state (first point), on slice ``index``."""
    try:
        points = list(selection["selection"]["points"]) if selection else []
    except (KeyError, TypeError):
        return None
    if not points or points[0].get("x") is None or points[0].get("y") is None:
        return None
    return Click(int(index), int(round(float(points[0]["y"]))), int(round(float(points[0]["x"]))))


# ------------------------------------------------------------------------------ cached pictures
def lung_mask_of(series: Series, analysis, index: int) -> np.ndarray:
    """bool (y, x) lung mask of slice ``index`` (``core.lungs.lung_mask``), once per analysis and slice."""
    from core.lungs import lung_mask

    return shared_cache("lung_masks", SHARED_PICTURES).get_or_make(
        (analysis.key, int(index)), lambda: lung_mask(series.slices[index].hu, series.spacing_mm))


def with_lung_outline(series: Series, analysis, index: int, picture: np.ndarray) -> np.ndarray:
    """The displayed view with the lung-field outline drawn on it (mask cached per slice).

    Args:
        picture: uint8 (y, x) grey view of slice ``index``.

    Returns:
        uint8 (y, x, 3) RGB view; the outline (``core.lungs.lung_outline_rgba``) replaces the grey
        where it is drawn. An empty mask (no lungs found) returns the view unchanged, as RGB.
    """
    from core.lungs import lung_outline_rgba

    outline = lung_outline_rgba(lung_mask_of(series, analysis, index), width=2)
    rgb = np.repeat(np.asarray(picture, dtype=np.uint8)[..., None], 3, axis=2)
    drawn = outline[..., 3] > 0
    rgb[drawn] = outline[drawn, :3]
    return rgb


def explanation_png(series: Series, analysis, index: int, cls: str, picture: np.ndarray,
                    alpha: float, view_key: tuple = ()) -> bytes | None:
    """PNG of the Grad-CAM overlay on the displayed view.

    The heatmap is computed once per analysis, slice and class
    (``dashboard.resources.gradcam_heatmap``); the PNG once per heatmap, opacity and ``view_key``
    (what made ``picture``: window, outline), both shared by all sessions.
    """
    from core.inference.explain import overlay, to_png

    def make() -> bytes:
        with st.spinner(f"Computing Grad-CAM for slice {index + 1}..."):
            heat = gradcam_heatmap(analysis, series, index, cls)
        return to_png(overlay(picture, heat, alpha=alpha))

    key = (analysis.key, index, cls, round(float(alpha), 3), view_key)
    return shared_cache("overlay_png", SHARED_PICTURES).get_or_make(key, make)


# ------------------------------------------------------------------------------ the component
def _apply_chart_pick(prefix: str, n: int) -> None:
    """Move to the slice clicked on the chart (selection state from the previous interaction)."""
    state = st.session_state.get(f"{prefix}slice_chart")
    try:
        points = list(state["selection"]["points"]) if state else []
    except (KeyError, TypeError):
        points = []
    pick = int(round(points[0]["x"])) if points and points[0].get("x") is not None else None
    if pick is not None and pick != st.session_state.get(f"_{prefix}last_chart_pick"):
        st.session_state[f"_{prefix}last_chart_pick"] = pick
        st.session_state[f"{prefix}slice_no"] = min(max(pick, 1), n)


def _take_click(prefix: str, index: int) -> Click | None:
    """The image click of the previous interaction, once (None when there is none or it was taken)."""
    click = click_of(st.session_state.get(f"{prefix}viewer_image"), index)
    token = None if click is None else (click.row, click.col)
    last = st.session_state.get(f"_{prefix}last_click")
    if click is None:
        st.session_state.pop(f"_{prefix}last_click", None)  # deselected: the same point may be clicked again
        return None
    if last == token:
        return None
    st.session_state[f"_{prefix}last_click"] = token
    return click


def slice_viewer(series: Series, analysis, *, threshold: float | None = None, circles: Sequence[Circle] = (),
                 all_circles: Sequence[Circle] | None = None, on_click: Callable[[Click], None] | None = None,
                 prefix: str = "", stacked: bool = False) -> int:
    """The viewer of one analysed series (module docstring); call it inside an ``st.fragment``.

    Args:
        series: ``core.imaging.Series`` (``hu`` float32 (y, x) per slice, spacing (z, y, x) mm).
        analysis: ``services.reading.Analysis`` (key, probabilities (n, k), labels, OOD flags,
            most suspicious slice, class names).
        threshold: decision threshold drawn on the chart, or None.
        circles: nodules always drawn (e.g. the chosen finding and the reader's own nodules).
        all_circles: every candidate; when given, the checkbox "Show all candidates' circles"
            draws them too.
        on_click: called with the :class:`Click` when the user clicked the image since the last
            run (the image takes clicks only when given); called before anything is drawn, so
            the caller may set other widgets' values from it.
        prefix: prefix of every widget key (two viewers on one page).
        stacked: the slice over the Grad-CAM overlay (for a narrow column beside a panel);
            default side by side.

    Returns:
        The 0-based slice shown.
    """
    n = len(series.slices)
    pos = analysis.suspicious_index
    key = f"{prefix}slice_no"
    if key not in st.session_state:
        st.session_state[key] = int(analysis.most_suspicious_index) + 1
    _apply_chart_pick(prefix, n)
    current = min(max(int(st.session_state.get(key, 1)), 1), n)
    if on_click is not None:
        click = _take_click(prefix, current - 1)
        if click is not None:
            on_click(click)
    fig = slice_score_figure(analysis.probabilities[:, pos], current=current - 1,
                             suspicious=analysis.most_suspicious_index, threshold=threshold, ood=analysis.ood,
                             score_name=analysis.class_names[pos])
    st.plotly_chart(fig, on_select="rerun", selection_mode="points", key=f"{prefix}slice_chart")
    nav1, nav2 = st.columns([4, 1])
    if n > 1:
        nav1.slider("Slice", 1, n, key=key, help="or click a point on the chart")
    nav2.button("Go to most suspicious slice", key=f"{prefix}goto_suspicious", on_click=_go_to,
                args=(key, analysis.most_suspicious_index))
    index = min(max(int(st.session_state.get(key, 1)), 1), n) - 1 if n > 1 else 0
    _show_slice(series, analysis, index, circles=circles, all_circles=all_circles,
                clickable=on_click is not None, prefix=prefix, stacked=stacked)
    return index


def _go_to(key: str, index: int) -> None:
    st.session_state[key] = int(index) + 1


def _show_slice(series: Series, analysis, index: int, *, circles: Sequence[Circle],
                all_circles: Sequence[Circle] | None, clickable: bool, prefix: str, stacked: bool) -> None:
    """One slice in the chosen window with circles, its Grad-CAM overlay and probabilities."""
    options = window_options(series)
    wkey = f"{prefix}window_preset"
    if st.session_state.get(wkey) not in options:
        st.session_state[wkey] = (WindowPreset.LUNG.value if series.source_kind == "dicom"
                                  else WindowPreset.IQ_OTHNCCD.value)
    preset = st.radio("Window", options, horizontal=True, key=wkey, format_func=lambda v: PRESET_LABELS.get(v, v))
    window = window_for(preset, series)
    sl = series.slices[index]
    g1, g2, g3 = st.columns([1, 1, 2])
    show_cam = g1.checkbox("Show Grad-CAM heatmap", value=True, key=f"{prefix}gradcam_on")
    outline = g1.checkbox("Show lung outline", value=False, key=f"{prefix}lung_outline_on",
                          help="The lung field found by the HU pipeline of core.lungs (Hu et al. 2001), drawn "
                               "over the slice; on JPG/PNG slices it follows estimated HU and is rough.")
    show_all = False
    if all_circles:
        show_all = g1.checkbox("Show all candidates' circles", value=False, key=f"{prefix}nodule_circles_all",
                               help="Every AI candidate's circle on this slice (fainter on the neighbouring "
                                    "slices a nodule spans), not only the chosen finding and your own nodules.")
    alpha = g2.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05, key=f"{prefix}gradcam_opacity")
    classes = list(analysis.class_names)
    default_cls = analysis.labels[index] if index < len(analysis.labels) and analysis.labels[index] in classes \
        else classes[analysis.suspicious_index]
    cam_class = g3.selectbox("Heatmap class", classes, index=classes.index(default_cls), key=f"{prefix}gradcam_class")

    def picture_of() -> np.ndarray:
        grey = view(sl.hu, window)
        return with_lung_outline(series, analysis, index, grey) if outline else grey

    view_key = (window.center, window.width, outline)
    pictures = shared_cache("slice_pictures", SHARED_PICTURES)
    picture = pictures.get_or_make((analysis.key, index, view_key, "array"), picture_of)
    uri = pictures.get_or_make((analysis.key, index, view_key, "png"), lambda: png_uri(picture))
    wanted = list(circles) + ([c for c in all_circles if c not in circles] if show_all and all_circles else [])
    drawn = circles_on_slice(wanted, index, slice_step_mm(series))
    pixel_mm = (float(series.spacing_mm[1] or 1.0), float(series.spacing_mm[2] or 1.0))
    if stacked:
        left, right = st.container(), st.container()
    else:
        left, right = st.columns(2)
    caption = f"Slice {index + 1} of {len(series.slices)} · {sl.source} · C {window.center:g} / W {window.width:g} HU"
    with left:
        fig = slice_figure(uri, sl.hu.shape, pixel_mm, drawn, clickable=clickable)
        if clickable:
            st.plotly_chart(fig, on_select="rerun", selection_mode="points", key=f"{prefix}viewer_image",
                            config={"displayModeBar": False})
        else:
            st.plotly_chart(fig, key=f"{prefix}viewer_image", config={"displayModeBar": False})
        st.caption(caption + (f" · {len(drawn)} nodule circle(s)" if drawn else "")
                   + (" · click the image to place a nodule" if clickable else ""))
    with right:
        cam, table = st.columns(2) if stacked else (st.container(), st.container())
        if show_cam:
            overlay_png = explanation_png(series, analysis, index, cam_class, picture, alpha, view_key=view_key)
            if overlay_png is not None:
                cam.image(overlay_png, caption=f"Grad-CAM for '{cam_class}' (opacity {alpha:.2f})", width="stretch")
        probs = pd.DataFrame({"class": classes, "probability": analysis.probabilities[index].round(3)})
        table.dataframe(probs, hide_index=True, key=f"{prefix}slice_probabilities")
        lbl = analysis.labels[index] if index < len(analysis.labels) else "?"
        flag = " · out of distribution" if bool(analysis.ood[index]) else ""
        table.caption(f"AI label of this slice: {lbl}{flag}")
    if series.hu_is_estimated:
        st.caption("HU are estimated from the picture's grey values (JPG/PNG exports carry no HU).")


@st.fragment
def viewer_fragment(series: Series, analysis, *, threshold: float | None = None, circles: Sequence[Circle] = (),
                    all_circles: Sequence[Circle] | None = None, prefix: str = "") -> None:
    """:func:`slice_viewer` alone in its own ``st.fragment`` (pages without a findings panel)."""
    slice_viewer(series, analysis, threshold=threshold, circles=circles, all_circles=all_circles, prefix=prefix)
