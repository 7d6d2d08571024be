"""Benchmark of archive runs (not a test): throughput with 1 and 2 local Ray workers on the shared studies.

Starts a test Orthanc (tests/core/orthanc.py), stores the shared CT studies (Lung-PET-CT-Dx A0002:
2 series of 30 slices; LIDC-IDRI 0001 and 0002: 133 and 108 slices) ``--copies`` times under new
UIDs (so there are more series than workers), then calls ``services.archive.bench`` for each
worker count on a throwaway SQLite database, and prints one JSON line per count. Figures and their
load averages go to docs/archive.md::

    PYTHONPATH=$PWD python -m benchmarks.archive --copies 3 --workers 1,2 --models basic_cnn_v1,advanced_cnn_v1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid


def _copies(files: list[Path], n: int):
    """The files as ``n`` sets of new studies (new Study/Series/SOP Instance UIDs per copy), in batches."""
    for copy in range(n):
        study_map: dict[str, str] = {}
        series_map: dict[str, str] = {}
        batch = []
        for p in files:
            ds = pydicom.dcmread(p)
            if copy:
                ds.StudyInstanceUID = study_map.setdefault(str(ds.StudyInstanceUID), generate_uid())
                ds.SeriesInstanceUID = series_map.setdefault(str(ds.SeriesInstanceUID), generate_uid())
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            batch.append(ds)
            if len(batch) == 25:
                yield batch
                batch = []
        if batch:
            yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--models", default="basic_cnn_v1,advanced_cnn_v1")
    args = parser.parse_args()
    from tests.core.pacs.orthanc import TEST_PASSWORD, TEST_USER, start_orthanc

    tmp = Path(tempfile.mkdtemp(prefix="archive-bench-"))
    os.environ.update({"LUNGREVIEW_DICOMWEB_USER": TEST_USER, "LUNGREVIEW_DICOMWEB_PASSWORD": TEST_PASSWORD,
                       "LUNGREVIEW_DB_URL": f"sqlite:///{tmp / 'bench.db'}", "LUNGREVIEW_VAR_DIR": str(tmp / "var")})
    os.environ.setdefault("LUNGREVIEW_STUDY_KEY", "archive-bench")
    from core.settings import get_settings

    get_settings.cache_clear()
    from core.pacs.dicomweb import PacsClient
    from db.session import make_engine, make_session_factory
    from services.archive import ArchiveQuery, bench, connect_ray

    data = get_settings().data_dir
    files = sorted((data / "lung-pet-ct-dx" / "Lung_Dx-A0002").rglob("*.dcm")) + sorted(
        (data / "lidc-idri").rglob("*.dcm"))
    server = start_orthanc(tmp / "orthanc")
    try:
        client = PacsClient(server.dicomweb_url, TEST_USER, TEST_PASSWORD, timeout_s=30)
        for batch in _copies(files, args.copies):
            client.store(batch)
        counts = [int(w) for w in args.workers.split(",")]
        print(json.dumps({"ray": connect_ray(num_cpus=max(counts)), "instances": len(files) * args.copies,
                          "cpus": os.cpu_count()}))
        factory = make_session_factory(make_engine(get_settings().db_url))
        for n in counts:
            print(json.dumps(bench(client, factory, ArchiveQuery(), args.models.split(","), n)), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
