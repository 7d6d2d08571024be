"""Tests for dashboard/viewer.py's pure parts: which circles show on a slice (sphere cross-sections),
the clickable grid, the figure, and reading a click from Plotly's selection state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dashboard.viewer import (
    NEIGHBOUR_OPACITY,
    Circle,
    Click,
    circles_on_slice,
    click_of,
    grid_step,
    png_uri,
    slice_figure,
)


class TestCirclesOnSlice:
    def test_a_sphere_shows_on_its_slice_and_fainter_as_a_smaller_circle_on_the_slices_it_spans(self):
        c = Circle(10, 50, 60, 10.0)  # radius 5 mm
        assert circles_on_slice([c], 10, 2.5) == [(c, 5.0, 1.0)]
        ((got, r, alpha),) = circles_on_slice([c], 11, 2.5)
        assert got is c and alpha == NEIGHBOUR_OPACITY and math.isclose(r, math.sqrt(25 - 2.5**2))
        assert circles_on_slice([c], 12, 2.5) == []  # 5 mm away: the sphere ends there
        assert circles_on_slice([c], 8, 2.5) == []

    def test_without_a_slice_step_only_the_centre_slice_shows_it(self):
        c = Circle(3, 1, 1, 30.0)
        assert circles_on_slice([c], 4, None) == [] and len(circles_on_slice([c], 3, None)) == 1


class TestFigure:
    def test_grid_and_circles_in_pixel_coordinates(self):
        uri = png_uri(np.zeros((512, 512), np.uint8))
        assert uri.startswith("data:image/png;base64,")
        c = Circle(0, 100, 200, 7.0, label="1")
        fig = slice_figure(uri, (512, 512), (0.7, 0.5), circles_on_slice([c], 0, 1.0), clickable=True)
        assert grid_step((512, 512)) == 4 and len(fig.data) == 2
        assert len(np.asarray(fig.data[1].x)) == 128 * 128
        (shape,) = fig.layout.shapes
        assert (shape.x0, shape.x1) == pytest.approx((200 - 3.5 / 0.5, 200 + 3.5 / 0.5))
        assert (shape.y0, shape.y1) == pytest.approx((100 - 3.5 / 0.7, 100 + 3.5 / 0.7))
        assert tuple(fig.layout.yaxis.range) == (511.5, -0.5)  # row 0 at the top
        assert len(slice_figure(uri, (512, 512), (0.7, 0.7)).data) == 1  # not clickable: no grid

    def test_a_click_is_read_from_the_selection_state(self):
        state = {"selection": {"points": [{"x": 40, "y": 64, "curve_number": 1}], "box": [], "lasso": []}}
        assert click_of(state, 12) == Click(12, 64, 40)
        assert click_of({"selection": {"points": []}}, 12) is None and click_of(None, 0) is None
