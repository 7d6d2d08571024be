"""Process entry points for the reliability tests (importable, so multiprocessing 'spawn' can run them)."""

from __future__ import annotations

import os
import time


def write_reviews(url: str, study_id: int, inference_id: int, reader_id: int, n: int, start_event) -> dict:
    """Write ``n`` reviews, each in its own transaction, into the database at ``url`` (any backend).

    Returns:
        {"ok": reviews committed, "errors": one "Type: message" per failed transaction,
        "seconds": wall seconds of the n transactions, "slowest_s": the longest transaction in
        seconds (waiting for the write lock included), "pid": the process id}.
    """
    from db import repository as repo
    from db.session import make_engine, make_session_factory

    engine = make_engine(url)  # also exercises concurrent "migrate on start"
    factory = make_session_factory(engine)
    start_event.wait()
    ok, errors, slowest = 0, [], 0.0
    t0 = time.perf_counter()
    for i in range(n):
        t_start = time.perf_counter()
        try:
            with factory.begin() as s:
                repo.add_review(s, study_id=study_id, inference_id=inference_id, reader=reader_id,
                                finding=("normal", "benign", "malignant")[i % 3], agreement="agree",
                                confidence=1 + i % 5, seconds_to_decision=float(i))
            ok += 1
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the test
            errors.append(f"{type(exc).__name__}: {exc}")
        slowest = max(slowest, time.perf_counter() - t_start)
    seconds = time.perf_counter() - t0
    engine.dispose()
    return {"ok": ok, "errors": errors, "seconds": seconds, "slowest_s": slowest, "pid": os.getpid()}


def write_until_killed(url: str, study_id: int, inference_id: int, reader_id: int, ledger: str) -> None:
    """Write reviews into the database at ``url`` forever; after each commit append the review id
    to the file ``ledger`` and fsync it."""
    from db import repository as repo
    from db.session import make_engine, make_session_factory

    factory = make_session_factory(make_engine(url, migrate=False))
    fd = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    i = 0
    while True:
        with factory.begin() as s:
            review = repo.add_review(s, study_id=study_id, inference_id=inference_id, reader=reader_id,
                                     finding="benign", agreement="partly", confidence=3,
                                     comment="x" * (i % 2000), seconds_to_decision=1.0)
            review_id = review.id
        os.write(fd, f"{review_id}\n".encode())
        os.fsync(fd)
        i += 1
