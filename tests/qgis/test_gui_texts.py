"""The words a GIS user reads in the dialog and the Toolbox: help that names settings by the labels the
dialog shows, tooltips that say what a setting changes in the result and what it costs, a Toolbox path
without repetition, and a Model field that holds no install path (so that history, batch files and
graphical models work on another machine)."""

from __future__ import annotations

import re

import pytest

from scdm_testing import ALG_ID, DEFAULT_MODEL, EVAL_ID, FAST, REPO_ROOT, TRAIN_ID

# Words of machine learning or of our own benchmarks that a tooltip must not lean on.
JARGON = ("multiscale", "local network", "houston", "network evaluation", "anchor band", "p_t", "icmg")
# Parameter ids that are also plain words in a sentence.
PLAIN_WORDS = {"RGB"}


def _algorithm(alg_id):
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().algorithmById(alg_id)


def _help_texts(alg):
    return [("help", alg.shortHelpString())] + [(p.name(), p.help()) for p in alg.parameterDefinitions()]


@pytest.mark.parametrize("alg_id", [ALG_ID, EVAL_ID, TRAIN_ID])
def test_help_names_settings_by_their_dialog_labels_not_their_ids(scdm_plugin, alg_id):
    alg = _algorithm(alg_id)
    ids = {p.name() for p in alg.parameterDefinitions()} - PLAIN_WORDS
    for where, text in _help_texts(alg):
        named = sorted(i for i in ids if re.search(rf"\b{i}\b", text))
        assert not named, f"{alg_id} {where} names {named} by id"
    labels = [p.description() for p in alg.parameterDefinitions()]
    for mentioned in re.findall(r"<i>([A-Z][^<]*)</i>", alg.shortHelpString()):
        if mentioned != "Spectral super-resolution":
            assert any(mentioned in label for label in labels), f"'{mentioned}' is no label of {alg_id}"


@pytest.mark.parametrize("alg_id", [ALG_ID, EVAL_ID, TRAIN_ID])
def test_tooltips_and_labels_speak_without_jargon(scdm_plugin, alg_id):
    alg = _algorithm(alg_id)
    texts = [text for _, text in _help_texts(alg)] + [p.description() for p in alg.parameterDefinitions()]
    for text in texts:
        found = [word for word in JARGON if word in text.lower()]
        assert not found, f"{found} in: {text}"


def test_every_setting_has_a_tooltip_that_says_what_it_changes(scdm_plugin):
    alg = _algorithm(ALG_ID)
    silent = [p.name() for p in alg.parameterDefinitions()
              if not p.isDestination() and p.name() != "INPUT" and not p.help().strip()]
    assert silent == []


def test_the_toolbox_path_names_each_algorithm_once(scdm_plugin):
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("scdm")
    for alg in provider.algorithms():
        assert alg.group() == "" and alg.groupId() == ""
        assert provider.name() not in alg.displayName()
    assert sorted(alg.displayName() for alg in provider.algorithms()) == [
        "Evaluate spectral super-resolution", "Spectral super-resolution", "Train spectral super-resolution model"]


@pytest.mark.parametrize("alg_id", [ALG_ID, EVAL_ID])
def test_band_labels_do_not_repeat_what_the_selector_shows(scdm_plugin, alg_id):
    definition = _algorithm(alg_id).parameterDefinition
    assert [definition(name).description() for name in ("RED", "GREEN", "BLUE")] == [
        "Red band", "Green band", "Blue band"]


@pytest.mark.parametrize("alg_id", [ALG_ID, EVAL_ID])
def test_no_install_path_reaches_history_batch_files_or_models(scdm_plugin, alg_id):
    """The dialog fills every parameter from its default; the Python command it saves in the history
    (and batch files and models alike) must not carry where the plugin is installed."""
    from qgis.core import QgsProcessingContext

    alg = _algorithm(alg_id)
    assert alg.parameterDefinition("MODEL").defaultValue() in (None, "")
    parameters = {p.name(): p.defaultValue() for p in alg.parameterDefinitions()}
    given = {"INPUT", "REFERENCE", "OUTPUT", "REPORT"} & set(parameters)
    parameters.update({name: "/data/x.tif" for name in given})
    command = alg.asPythonCommand(parameters, QgsProcessingContext())
    assert "processing.run" in command
    assert str(REPO_ROOT) not in command and "scdm-default" not in command
    for _, text in _help_texts(alg):
        assert str(REPO_ROOT) not in text


@pytest.mark.parametrize("model", ["", None])
def test_an_empty_model_runs_the_bundled_model(run_alg, rgb_tif, tmp_path, model):
    parameters = {"INPUT": str(rgb_tif), "OUTPUT": str(tmp_path / "out.tif"), "DEVICE": "cpu",
                  "STEPS": FAST["STEPS"]}
    if model is not None:
        parameters["MODEL"] = model
    _, feedback = run_alg(ALG_ID, parameters)
    assert f"from {DEFAULT_MODEL}" in feedback.log
    assert (tmp_path / "out.tif").is_file()
