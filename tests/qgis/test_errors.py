"""Bad inputs fail with clear QgsProcessingExceptions (the engine's message, in QGIS's words) and
leave no output file."""

from __future__ import annotations

import sys

import pytest

from scdm_testing import ALG_ID, EVAL_ID, FAST, leftovers


@pytest.fixture
def fails(run_alg, tmp_path):
    """Run the algorithm, expect a QgsProcessingException; return its message (with the feedback's errors)."""
    from qgis.core import QgsProcessingException

    def run(parameters, alg_id=ALG_ID):
        with pytest.raises(QgsProcessingException) as raised:
            run_alg(alg_id, parameters)
        return str(raised.value)

    return run


def test_one_band_raster(fails, one_band_tif, tiny_bundle, tmp_path):
    out = tmp_path / "out.tif"
    message = fails({"INPUT": str(one_band_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(out), **FAST})
    assert "has 1 band" in message and "three bands" in message
    assert leftovers(tmp_path, "out") == []


def test_band_out_of_range(fails, rgb_tif, tiny_bundle, tmp_path):
    out = tmp_path / "out.tif"
    message = fails({"INPUT": str(rgb_tif), "BLUE": 5, "MODEL": str(tiny_bundle), "OUTPUT": str(out), **FAST})
    assert "5" in message and "band" in message.lower()
    assert leftovers(tmp_path, "out") == []


def test_corrupt_model(fails, rgb_tif, tiny_bundle, tmp_path):
    corrupt = tmp_path / "corrupt_bundle"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((tiny_bundle / "config.json").read_text())
    weights = (tiny_bundle / "weights.safetensors").read_bytes()
    (corrupt / "weights.safetensors").write_bytes(weights[: len(weights) // 3])  # truncated
    out = tmp_path / "out.tif"
    message = fails({"INPUT": str(rgb_tif), "MODEL": str(corrupt), "OUTPUT": str(out), **FAST})
    assert "weights.safetensors cannot be read" in message and "copy the bundle again" in message
    assert leftovers(tmp_path, "out") == []


def test_model_folder_that_is_not_a_bundle(fails, rgb_tif, tmp_path):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    message = fails({"INPUT": str(rgb_tif), "MODEL": str(garbage), "OUTPUT": str(tmp_path / "o.tif"), **FAST})
    assert "not valid JSON" in message


def test_missing_model_folder(fails, rgb_tif, tmp_path):
    missing = tmp_path / "no_such_model"
    message = fails({"INPUT": str(rgb_tif), "MODEL": str(missing), "OUTPUT": str(tmp_path / "o.tif"), **FAST})
    assert f"model bundle {missing} does not exist" in message


def test_missing_bundled_model_names_the_fix(scdm_plugin, rgb_tif, tmp_path, monkeypatch):
    """MODEL left out means the bundled model; if its folder is missing, the message says how to fix it.
    (The plugin's bundled-model path is pointed at a missing folder for this test.)"""
    import processing
    from qgis.core import QgsProcessingException

    from scdm.scdm_plugin import engine_bridge

    missing = tmp_path / "resources" / "models" / "scdm-default"
    monkeypatch.setattr(engine_bridge, "DEFAULT_MODEL", missing)
    with pytest.raises(QgsProcessingException) as raised:
        processing.run(ALG_ID, {"INPUT": str(rgb_tif), "OUTPUT": str(tmp_path / "o.tif"), **FAST})
    message = str(raised.value)
    assert f"the bundled model is missing: {missing} does not exist" in message
    assert "Reinstall the plugin zip" in message and "set MODEL" in message


@pytest.mark.parametrize("where", ["parent_is_a_file", "missing_folder"])
def test_unwritable_output(fails, rgb_tif, tiny_bundle, tmp_path, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "out.tif" if where == "parent_is_a_file" else tmp_path / "missing" / "out.tif"
    message = fails({"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(out), **FAST})
    assert str(out.parent) in message
    assert "not a folder" in message or "does not exist" in message


def test_overlap_too_large_names_the_qgis_parameter(fails, rgb_tif, tiny_bundle, tmp_path):
    message = fails({"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(tmp_path / "o.tif"),
                     **FAST, "OVERLAP": 12})
    assert "OVERLAP" in message and "--overlap" not in message


def test_cuda_requested_without_a_gpu(fails, rgb_tif, tiny_bundle, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    message = fails({"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(tmp_path / "o.tif"),
                     **FAST, "DEVICE": "cuda"})
    assert "no CUDA GPU" in message and "DEVICE cpu" in message


def test_uncertainty_needs_two_samples(fails, rgb_tif, tiny_bundle, tmp_path):
    message = fails({"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(tmp_path / "o.tif"),
                     "UNCERTAINTY_OUTPUT": str(tmp_path / "u.tif"), **FAST})
    assert "SAMPLES" in message


def test_missing_torch_names_the_install_command(fails, rgb_tif, tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    message = fails({"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(tmp_path / "o.tif"), **FAST})
    assert "torch" in message and " -m pip install " in message
    assert "requirements.txt" in message
    assert not (tmp_path / "o.tif").exists()


def test_evaluate_needs_exactly_one_of_estimate_and_rgb(fails, rgb_tif, tmp_path):
    message = fails({"REFERENCE": str(rgb_tif), "REPORT": str(tmp_path / "r.html")}, EVAL_ID)
    assert "either ESTIMATE" in message and "neither" in message
    message = fails({"REFERENCE": str(rgb_tif), "ESTIMATE": str(rgb_tif), "RGB": str(rgb_tif),
                     "REPORT": str(tmp_path / "r.html")}, EVAL_ID)
    assert "both" in message


def test_evaluate_with_a_model_of_another_band_count(fails, rgb_tif, tiny_bundle, enmap_reference, tmp_path):
    message = fails({"REFERENCE": str(enmap_reference), "RGB": str(rgb_tif), "MODEL": str(tiny_bundle), **FAST,
                     "REPORT": str(tmp_path / "r.html")}, EVAL_ID)
    assert "produces 48 bands but 224 were expected" in message


def test_evaluate_bad_exclude_list(fails, enmap_reference, tmp_path):
    message = fails({"REFERENCE": str(enmap_reference), "ESTIMATE": str(enmap_reference),
                     "EXCLUDE_BANDS": "1,x", "REPORT": str(tmp_path / "r.html")}, EVAL_ID)
    assert "EXCLUDE_BANDS" in message and "'x'" in message
