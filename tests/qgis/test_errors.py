"""Bad inputs fail with clear QgsProcessingExceptions (the engine's message, in QGIS's words) and
leave no output file. An engine error about a setting starts with the QGIS parameter that sets it."""

from __future__ import annotations

import re
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
    assert message.startswith("the RED, GREEN and BLUE band parameters: ")
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
    assert f"model bundle {missing} does not exist" in message and message.startswith("MODEL: ")


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
    assert message.startswith("OVERLAP: overlap 12 must lie between 0 and half the tile (8)")


def test_cuda_requested_without_a_gpu(fails, rgb_tif, tiny_bundle, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    message = fails({"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(tmp_path / "o.tif"),
                     **FAST, "DEVICE": "cuda"})
    assert message.startswith("DEVICE: ") and "no CUDA GPU" in message and "use cpu or auto" in message
    assert "--device" not in message


def test_uncertainty_needs_two_samples(fails, rgb_tif, tiny_bundle, tmp_path):
    message = fails({"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(tmp_path / "o.tif"),
                     "UNCERTAINTY_OUTPUT": str(tmp_path / "u.tif"), **FAST})
    assert "SAMPLES" in message
    assert message.startswith("SAMPLES: an uncertainty output needs at least two samples")


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


# ----------------------------------------------------------------------------------------------
# engine setting -> QGIS parameter (``SETTING_PARAMETERS``; issue 12: no string surgery)

# What the issue asks each engine setting to be shown as: the QGIS parameter names its words hold.
EXPECTED_NAMES = {
    "tile": {"TILE_SIZE"}, "overlap": {"OVERLAP"}, "device": {"DEVICE"}, "samples": {"SAMPLES"},
    "model": {"MODEL"}, "steps": {"STEPS"}, "guidance": {"GUIDANCE"}, "seed": {"SEED"}, "sampler": {"SAMPLER"},
    "pdt": {"PDT_STAGE1", "PDT_STAGE2"}, "output": {"OUTPUT"}, "stage1_output": {"STAGE1_OUTPUT"},
    "uncertainty_output": {"UNCERTAINTY_OUTPUT"}, "bands": {"RED", "GREEN", "BLUE"}, "input": {"INPUT"},
    "expected_band_count": {"REFERENCE"}, "radiometry": {"RADIOMETRY"}, "cluster": {"CLUSTER"},
    "consistency": {"CONSISTENCY", "CAMERA_RESPONSE"}, "band_set": {"OUTPUT_BANDS", "OUTPUT_RESPONSE"},
    "output_type": {"OUTPUT_TYPE"}, "overviews": {"OVERVIEWS"},
}


def _parameter_names(words: str) -> set:
    return set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", words))


def _algorithm_tables():
    from scdm.scdm_plugin.algorithms import evaluate, inference

    return {ALG_ID: inference.SETTING_PARAMETERS, EVAL_ID: evaluate.SETTING_PARAMETERS}


def test_the_table_names_each_setting_by_its_qgis_parameters(scdm_plugin):
    from qgis.core import QgsApplication

    tables = _algorithm_tables()
    shared = tables[ALG_ID]
    assert {setting: _parameter_names(words) for setting, words in shared.items()} == EXPECTED_NAMES
    assert shared["bands"] == "the RED, GREEN and BLUE band parameters"
    assert tables[EVAL_ID] == {**shared, "input": "RGB", "output": "ESTIMATE_OUTPUT"}
    defined = {p.name() for alg_id in tables
               for p in QgsApplication.processingRegistry().algorithmById(alg_id).parameterDefinitions()}
    for words in (*shared.values(), *tables[EVAL_ID].values()):
        assert _parameter_names(words) <= defined, words


def _raising(error):
    def engine_function():
        raise error

    return engine_function


@pytest.mark.parametrize("alg_id", [ALG_ID, EVAL_ID])
def test_every_error_about_a_setting_starts_with_its_qgis_parameter(scdm_plugin, alg_id):
    """Each setting of the table, raised by the engine as ``InputError(parameter=setting)``, comes out
    of the bridge with the algorithm's words for it in front and no command-line flag."""
    from qgis.core import QgsProcessingException

    from scdm.scdm_plugin import engine_bridge as bridge

    eng = bridge.load_engine()
    table = _algorithm_tables()[alg_id]

    def shown(error) -> str:
        with pytest.raises(QgsProcessingException) as raised:
            bridge.call_engine(eng, None, table, _raising(error))
        return str(raised.value)

    for setting, words in table.items():
        message = shown(eng.errors.InputError(f"{setting} 7 is refused: use 8", parameter=setting))
        assert message == f"{words}: {setting} 7 is refused: use 8" and "--" not in message
    assert shown(eng.errors.BundleError("truncated")) == "MODEL: truncated"  # a bundle error is about MODEL
    assert shown(eng.errors.InputError("no valid pixel")) == "no valid pixel"  # about no setting: as is


def test_every_setting_an_algorithm_sets_is_named_by_its_own_parameters(scdm_plugin, run_alg, rgb_tif, tmp_path,
                                                                        monkeypatch):
    """The settings each algorithm hands the engine all have an entry, naming parameters of that algorithm
    (the evaluation algorithm reads its input from RGB, not INPUT)."""
    from qgis.core import QgsApplication, QgsProcessingException

    from scdm.scdm_plugin import engine_bridge as bridge

    calls = []

    def record(eng, feedback, fields, parameter_names, *progress_range):
        calls.append((fields, parameter_names))
        raise QgsProcessingException("recorded")  # the algorithm stops here: nothing was written to report on

    monkeypatch.setattr(bridge, "run_inference", record)  # nothing runs: the settings are what is checked
    for alg_id, parameters in (
            (ALG_ID, {"INPUT": str(rgb_tif), "OUTPUT": str(tmp_path / "o.tif"), "SAMPLES": 2,
                      "STAGE1_OUTPUT": str(tmp_path / "s.tif"), "UNCERTAINTY_OUTPUT": str(tmp_path / "u.tif")}),
            (EVAL_ID, {"REFERENCE": str(rgb_tif), "RGB": str(rgb_tif), "REPORT": str(tmp_path / "r.html"),
                       "ESTIMATE_OUTPUT": str(tmp_path / "e.tif")})):
        with pytest.raises(QgsProcessingException, match="recorded"):
            run_alg(alg_id, parameters)
    tables = _algorithm_tables()
    assert len(calls) == 2
    for alg_id, (fields, table) in zip((ALG_ID, EVAL_ID), calls):
        assert table is tables[alg_id]
        assert set(fields) <= set(table), set(fields) - set(table)
        alg = QgsApplication.processingRegistry().algorithmById(alg_id)
        defined = {p.name() for p in alg.parameterDefinitions()}
        for setting in fields:
            assert _parameter_names(table[setting]) <= defined, (alg_id, setting, table[setting])
