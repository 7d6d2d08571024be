"""Size limits every reader of :mod:`core.imaging` checks before it decodes anything.

The per-image limit is ``get_settings().max_pixels`` (``LUNGREVIEW_MAX_PIXELS``); the per-upload limit
``get_settings().max_upload_pixels`` (``LUNGREVIEW_MAX_UPLOAD_PIXELS``) bounds the decoded pixels of all
files of one upload together, so that many small compressed files cannot add up to gigabytes of HU
(a ZIP of PNGs of zeros, an RLE multi-frame object). A :class:`PixelBudget` is made per upload and every
decoder reserves its pixels from it, from the header's size, before decoding; a file that then fails
to decode gives its reservation back (:meth:`PixelBudget.tentative`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from core.imaging.errors import ImageTooLargeError
from core.settings import get_settings

__all__ = ["PixelBudget"]


@dataclass
class PixelBudget:
    """Decoded pixels left to one upload.

    Attributes:
        limit: the most decoded samples (pixels x samples per pixel x frames) the upload may hold;
            default ``get_settings().max_upload_pixels``.
        used: samples reserved so far.
    """

    limit: int = field(default_factory=lambda: get_settings().max_upload_pixels)
    used: int = 0

    def reserve(self, name: str, rows: int, cols: int, frames: int = 1, samples: int = 1) -> None:
        """Check one image's size and reserve its pixels, before it is decoded.

        Args:
            name: the file's label, for the message.
            rows, cols: the image size in pixels (both > 0).
            frames: frames in the file (> 0). samples: samples per pixel (1 grey, 3 colour, 4 RGBA).

        Raises:
            ImageTooLargeError: one frame has more than ``max_pixels`` pixels, or the upload would
                exceed :attr:`limit` decoded samples. Nothing is reserved then.
        """
        settings = get_settings()
        if rows * cols > settings.max_pixels:
            raise ImageTooLargeError(
                f"‘{name}’ has {cols} x {rows} = {rows * cols:,} pixels per image, more than the limit of "
                f"{settings.max_pixels:,} (LUNGREVIEW_MAX_PIXELS); reduce the image size before uploading."
            )
        need = rows * cols * frames * max(samples, 1)
        if self.used + need > self.limit:
            what = f"{frames} frames of {cols} x {rows} pixels" if frames > 1 else f"{cols} x {rows} pixels"
            raise ImageTooLargeError(
                f"‘{name}’ ({what}) would bring this upload to {self.used + need:,} decoded pixels, more than "
                f"the limit of {self.limit:,} for one upload (LUNGREVIEW_MAX_UPLOAD_PIXELS); it was not "
                "decoded. Upload fewer images at a time, e.g. one series."
            )
        self.used += need

    @contextlib.contextmanager
    def tentative(self) -> Iterator[None]:
        """Reservations made inside the block are kept only if it ends without an exception.

        A file whose pixel data turns out to be undecodable after its pixels were reserved gives
        them back, so that one bad file cannot use up the budget of the good files after it.
        """
        mark = self.used
        try:
            yield
        except BaseException:
            self.used = mark
            raise
