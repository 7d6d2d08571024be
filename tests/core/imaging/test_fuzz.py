"""Property-based fuzzing of the upload entry point ``core.imaging.read_uploads``.

Inputs come from the seeded generators of ``tests/core/imaging/fuzz_inputs.py`` (truncations, bit flips, header
field and VR mutations, pixel data shorter or longer than declared, damaged/nested/traversal ZIPs,
decompression-bomb and 16-bit/palette pictures, mixed good and bad files, duplicates), driven by
hypothesis with ``derandomize=True`` so that CI runs the same 2,000 cases every time; the denial-of-
service inputs (``fuzz_inputs.HEAVY``) run once each. Every case must give a ReadResult or a typed
ImagingError, plain messages, 2-D finite float32 slices, good files still read, duplicates counted once,
and stay under 10 s and 2 GiB of traced memory. Run alone with ``pytest -m fuzz``.
"""

from __future__ import annotations

import logging
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.imaging.fuzz_inputs import HEAVY, generate, heavy_case, run_case

pytestmark = pytest.mark.fuzz


@pytest.fixture(autouse=True)
def _quiet(isolated_settings):
    """Fixed settings; pydicom's warnings and decoder error logs are expected here by the thousand."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


@settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(rng=st.randoms(use_true_random=False), index=st.integers(0, 10_000))
def test_malformed_uploads_give_typed_outcomes_plain_messages_and_clean_slices(rng, index):
    case = generate(rng, index)
    outcome = run_case(case)
    assert outcome.findings == [], f"{case.kind}: {outcome.findings} ({[n for n, _ in case.items]})"


@pytest.mark.parametrize("name", HEAVY)
def test_denial_of_service_inputs_are_refused_within_bounds_and_the_good_file_is_read(name):
    case = heavy_case(name)
    outcome = run_case(case)
    assert outcome.findings == [], f"{name}: {outcome.findings}, {outcome.seconds:.1f} s, {outcome.peak_bytes >> 20} MiB"
    assert outcome.kind == "read-with-problems"  # the bomb is a problem, the good slice is read
