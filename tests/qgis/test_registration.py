"""The plugin loads like QGIS loads it and registers the provider and both algorithms, with the
parameters, defaults, flags and help the issue asks for."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import textwrap

import pytest

from scdm_testing import ALG_ID, EVAL_ID, REPO_ROOT

ADVANCED = {"CONSISTENCY", "CAMERA_RESPONSE", "STEPS", "GUIDANCE", "PDT_STAGE1", "PDT_STAGE2", "SEED", "TILE_SIZE",
            "OVERLAP", "DEVICE", "SAMPLES", "CLUSTER", "OUTPUT_RESPONSE", "OUTPUT_TYPE", "OVERVIEWS", "STAGE1_OUTPUT",
            "UNCERTAINTY_OUTPUT"}


def test_metadata_has_the_fields_qgis_and_the_plugin_repository_need():
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                "homepage", "tracker", "repository", "tags", "icon", "hasProcessingProvider"):
        assert general.get(key, "").strip(), f"metadata.txt lacks {key}"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert (REPO_ROOT / general["icon"]).is_file()


def test_provider_and_its_three_algorithms_are_registered(scdm_plugin):
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("scdm")
    assert provider is not None and provider.isActive()
    assert {alg.id() for alg in provider.algorithms()} == {ALG_ID, EVAL_ID, "scdm:trainspectralsuperresolution"}
    assert registry.algorithmById(ALG_ID).displayName() == "Spectral super-resolution"
    assert registry.algorithmById(EVAL_ID).displayName() == "Evaluate spectral super-resolution"
    assert not provider.icon().isNull()
    assert provider.supportedOutputRasterLayerExtensions() == ["tif"]


def test_parameters_defaults_and_advanced_flags(scdm_plugin):
    from qgis.core import QgsApplication, QgsProcessingAlgorithm, QgsProcessingParameterDefinition

    alg = QgsApplication.processingRegistry().algorithmById(ALG_ID)
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names == ["INPUT", "RED", "GREEN", "BLUE", "RADIOMETRY", "CONSISTENCY", "CAMERA_RESPONSE", "MODEL",
                     "SAMPLER", "STEPS", "GUIDANCE", "PDT_STAGE1", "PDT_STAGE2", "SEED", "TILE_SIZE", "OVERLAP",
                     "DEVICE", "SAMPLES", "CLUSTER", "OUTPUT_BANDS", "OUTPUT_RESPONSE", "OUTPUT_TYPE", "OVERVIEWS", "OUTPUT",
                     "STAGE1_OUTPUT",
                     "UNCERTAINTY_OUTPUT"]
    definition = alg.parameterDefinition
    assert definition("OUTPUT_BANDS").options() == ["model", "sentinel2", "landsat8-9", "response file"]
    assert definition("OUTPUT_BANDS").defaultValue() == "model"
    assert definition("OUTPUT_TYPE").options() == ["float32", "float16", "uint16", "int16"]
    assert definition("OUTPUT_TYPE").defaultValue() == "float32" and definition("OVERVIEWS").defaultValue() is True
    assert [definition(b).defaultValue() for b in ("RED", "GREEN", "BLUE")] == [1, 2, 3]
    assert all(definition(b).parentLayerParameterName() == "INPUT" for b in ("RED", "GREEN", "BLUE"))
    assert definition("MODEL").defaultValue() in (None, ""), "empty: the bundled model, found at run time"
    assert definition("SAMPLER").defaultValue() == 0
    options = [o.lower() for o in definition("SAMPLER").options()]
    assert "default" in options[0] and "ddim" in options[1] and "dpm-solver" in options[2] and "ddpm" in options[3]
    # The first option names the bundled model's own sampler, read from its config.json.
    from engine.diffusion.sampler_catalog import label

    config = json.loads((REPO_ROOT / "resources" / "models" / "scdm-default" / "config.json").read_text())
    bundled = label(config["sampler"]["name"], config["sampler"]["steps"], config["schedule"]["timesteps"])
    assert f"bundled model: {bundled.lower()})" in options[0]
    assert definition("TILE_SIZE").defaultValue() is None and definition("TILE_SIZE").flags() & \
        QgsProcessingParameterDefinition.Flag.FlagOptional
    assert definition("DEVICE").options() == ["auto", "cpu", "cuda"]
    assert definition("DEVICE").defaultValue() == "auto"
    assert definition("RADIOMETRY").options() == ["auto", "linear", "srgb"]
    assert definition("RADIOMETRY").defaultValue() == "auto"
    advanced = {p.name() for p in alg.parameterDefinitions()
                if p.flags() & QgsProcessingParameterDefinition.Flag.FlagAdvanced}
    assert advanced == ADVANCED
    assert not definition("STAGE1_OUTPUT").createByDefault()
    assert not definition("UNCERTAINTY_OUTPUT").createByDefault()
    # Runs in a background thread, can be cancelled, supports batch and the modeler.
    flags = alg.flags()
    assert not flags & QgsProcessingAlgorithm.Flag.FlagNoThreading
    assert flags & QgsProcessingAlgorithm.Flag.FlagCanCancel
    assert flags & QgsProcessingAlgorithm.Flag.FlagSupportsBatch
    assert not flags & QgsProcessingAlgorithm.Flag.FlagHideFromModeler


def test_help_says_what_it_does_the_output_units_and_what_time_depends_on(scdm_plugin):
    from qgis.core import QgsApplication

    text = QgsApplication.processingRegistry().algorithmById(ALG_ID).shortHelpString().lower()
    assert "hyperspectral" in text and "rgb" in text
    assert "units" in text and "same units as the input rgb" in text
    assert "nanometres" in text
    assert "time" in text and "steps" in text and "pixels" in text and "gpu" in text
    evaluate = QgsApplication.processingRegistry().algorithmById(EVAL_ID)
    assert {"RMSE", "MPSNR", "MSSIM", "SAM"} <= {o.name() for o in evaluate.outputDefinitions()}
    assert "report" in evaluate.shortHelpString().lower()


def test_plugin_modules_import_neither_torch_nor_the_engine():
    """A fresh interpreter where torch cannot be imported still loads the plugin and registers it; of
    the engine it imports only the torch-free sampler catalogue and settings (the parameters' ranges,
    ``LIMITS``) with the modules they need, relative to the plugin package."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # `import torch` now raises ImportError
        from qgis.core import QgsApplication
        app = QgsApplication([], False)
        app.initQgis()
        sys.path.insert(0, {str(REPO_ROOT.parent)!r})
        import importlib.util
        spec = importlib.util.spec_from_file_location("scdm", {str(REPO_ROOT / "__init__.py")!r},
                                                      submodule_search_locations=[{str(REPO_ROOT)!r}])
        scdm = importlib.util.module_from_spec(spec)
        sys.modules["scdm"] = scdm
        spec.loader.exec_module(scdm)
        plugin = scdm.classFactory(None)
        plugin.initProcessing()
        registry = QgsApplication.processingRegistry()
        assert registry.algorithmById("{ALG_ID}") is not None
        loaded = sorted(m for m in sys.modules if m == "engine" or m.startswith(("engine.", "scdm.engine")) or
                        (m.startswith("torch") and sys.modules[m] is not None))
        print("LOADED", loaded)
        plugin.unload()
        app.exitQgis()
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("LOADED ['scdm.engine', 'scdm.engine.band_sets', 'scdm.engine.diffusion', "
            "'scdm.engine.diffusion.sampler_catalog', "
            "'scdm.engine.errors', 'scdm.engine.radiometry', 'scdm.engine.settings']") in result.stdout, result.stdout


@pytest.mark.parametrize("alg_id", [ALG_ID, EVAL_ID])
def test_algorithms_can_be_created_for_batch_and_modeler(scdm_plugin, alg_id):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
    assert alg is not None and alg.id() == alg_id
    clone = alg.create()
    assert clone.parameterDefinitions() and clone.id() == alg_id


def test_unload_and_init_gui_remove_and_restore_the_provider(scdm_plugin):
    """What desktop QGIS does when the plugin is switched off and on (initGui registers the provider)."""
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    scdm_plugin.unload()
    assert registry.providerById("scdm") is None
    scdm_plugin.initGui()
    scdm_plugin.initGui()  # twice is harmless
    assert registry.providerById("scdm") is not None
    assert registry.algorithmById(ALG_ID) is not None
