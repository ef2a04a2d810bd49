"""`qgis_process run scdm:spectralsuperresolution ... CLUSTER=local:2`: the algorithm on a local Dask
cluster of two worker processes, from the command line.

The workers are Python processes, so the result is bit for bit what `python -m engine infer` writes.
(QGIS's own process computes torch's float32 products with other rounding than a Python process:
without a cluster, qgis_process and `python -m engine infer` differ by up to ~5e-7 of the value,
most likely another BLAS resolving torch's calls inside the qgis_process binary.)
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import rasterio

from scdm_testing import ALG_ID, FAST, REPO_ROOT, leftovers, run_qgis_process

pytestmark = pytest.mark.qgis_process


def read(path):
    with rasterio.open(path) as dataset:
        return dataset.read()


def test_cluster_local_2_from_the_command_line(qgis_process_profile, rgb_tif, tiny_bundle, tmp_path):
    arguments = [f"INPUT={rgb_tif}", f"MODEL={tiny_bundle}", *(f"{key}={value}" for key, value in FAST.items())]
    cluster, engine_cli = tmp_path / "cluster.tif", tmp_path / "cli.tif"
    result = run_qgis_process(["run", ALG_ID, "--", *arguments, f"OUTPUT={cluster}", "CLUSTER=local:2"],
                              qgis_process_profile)
    assert "Dask cluster local:2: 2 worker(s)" in result.stdout, result.stdout
    subprocess.run([sys.executable, "-m", "engine", "infer", str(rgb_tif), str(engine_cli), "--model", str(tiny_bundle),
                    "--steps", str(FAST["STEPS"]), "--tile", str(FAST["TILE_SIZE"]), "--overlap", str(FAST["OVERLAP"]),
                    "--device", "cpu", "--quiet"], cwd=REPO_ROOT, check=True, capture_output=True)
    np.testing.assert_array_equal(read(cluster), read(engine_cli))
    assert leftovers(tmp_path, "cluster") == ["cluster.qml", "cluster.tif"]
