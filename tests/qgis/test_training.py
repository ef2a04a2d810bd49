"""The training algorithm end to end on a real EnMAP tile: a model folder that the super-resolution
algorithm then uses, its card, refusals, and cancel keeping the checkpoints."""

from __future__ import annotations

import json

import pytest

from scdm_testing import ALG_ID, TRAIN_ID, RecordingFeedback, georeference


@pytest.fixture
def tiny_preset(monkeypatch):
    from engine import custom_training

    monkeypatch.setitem(custom_training.PRESETS, "cpu-quick", custom_training.Preset(8, 6, 32, "a test run"))


@pytest.fixture
def enmap_tile(shared_data):
    return shared_data / "geotiff" / "enmap_potsdam" / "enmap_potsdam_tile_128_0.tif"


def test_a_trained_model_is_used_by_the_super_resolution_algorithm(run_alg, enmap_tile, rgb_tif, tiny_preset,
                                                                  tmp_path):
    folder = tmp_path / "my-model"
    results, feedback = run_alg(TRAIN_ID, {"SCENES": [str(enmap_tile)], "CAMERA": "sentinel2", "PRESET": "cpu-quick",
                                           "OUTPUT_MODEL": str(folder)})
    assert results["OUTPUT_MODEL"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["MODEL_CARD.md", "config.json", "training_recipe.json",
                                                        "weights.safetensors"]
    assert not (tmp_path / "my-model.training").exists()
    card = (folder / "MODEL_CARD.md").read_text()
    assert "enmap_potsdam_tile_128_0.tif" in card and "sentinel2 (bands B4, B3, B2)" in card and "Time:" in card
    assert json.loads((folder / "config.json").read_text())["training"]["mean_iterations"] == 8
    assert feedback.progress_values and max(feedback.progress_values) == pytest.approx(100)
    out = tmp_path / "hsi.tif"
    run_alg(ALG_ID, {"INPUT": str(rgb_tif), "MODEL": str(folder), "OUTPUT": str(out)})
    assert georeference(out)[4] == 48


def test_fine_tuning_the_bundled_model(run_alg, enmap_tile, tiny_preset, tmp_path):
    folder = tmp_path / "tuned"
    run_alg(TRAIN_ID, {"SCENES": [str(enmap_tile)], "CAMERA": "landsat8-9", "START_FROM": "bundled model",
                       "OUTPUT_MODEL": str(folder)})
    assert "(fine-tuned)" in (folder / "MODEL_CARD.md").read_text()
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="START_FROM and START_MODEL: the model to start from"):
        run_alg(TRAIN_ID, {"SCENES": [str(enmap_tile)], "START_FROM": "model folder", "START_MODEL": str(tmp_path),
                           "OUTPUT_MODEL": str(tmp_path / "other")})


def test_refusals_name_the_parameter(run_alg, tmp_path):
    import numpy as np
    import rasterio
    from qgis.core import QgsProcessingException
    from rasterio.transform import Affine

    plain = tmp_path / "plain.tif"  # four bands, no wavelengths
    with rasterio.open(plain, "w", driver="GTiff", width=8, height=8, count=4, dtype="uint16", crs="EPSG:32633",
                       transform=Affine(30, 0, 4e5, 0, -30, 5.8e6)) as dst:
        dst.write(np.full((4, 8, 8), 500, np.uint16))
    with pytest.raises(QgsProcessingException, match="SCENES: .* has no band wavelengths"):
        run_alg(TRAIN_ID, {"SCENES": [str(plain)], "CAMERA": "sentinel2", "OUTPUT_MODEL": str(tmp_path / "m")})
    with pytest.raises(QgsProcessingException, match="CAMERA and CAMERA_RESPONSE: 'camera file' needs a CSV"):
        run_alg(TRAIN_ID, {"SCENES": [str(plain)], "CAMERA": "camera file", "OUTPUT_MODEL": str(tmp_path / "m")})
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.training").exists()


def test_cancel_keeps_the_checkpoints_and_resume_finishes(run_alg, enmap_tile, tiny_preset, monkeypatch, tmp_path):
    from engine import custom_training
    from qgis.core import QgsProcessingException

    monkeypatch.setitem(custom_training.PRESETS, "cpu-quick", custom_training.Preset(120, 6, 16, "a test run"))
    folder = tmp_path / "m"
    parameters = {"SCENES": [str(enmap_tile)], "CAMERA": "landsat8-9", "OUTPUT_MODEL": str(folder)}
    with pytest.raises(QgsProcessingException, match="Cancelled: the checkpoints are kept"):
        # 2 x (120 + 6) steps in all: 43 % is step 109 of the first mean network, after its checkpoint at 100
        run_alg(TRAIN_ID, parameters, feedback=RecordingFeedback(cancel_at_progress=43))
    assert not folder.exists()
    checkpoints = tmp_path / "m.training" / "bundle.checkpoints"
    assert (checkpoints / "mean1.json").is_file()  # written at step 100
    results, _ = run_alg(TRAIN_ID, {**parameters, "RESUME": True})
    assert (folder / "config.json").is_file() and not (tmp_path / "m.training").exists()
