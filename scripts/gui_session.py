"""A session in the real QGIS desktop, run inside it by ``qgis --code`` (started by scripts/qgis_gui.py):
add an RGB layer, open the Spectral super-resolution dialog on it, take a screenshot of the dialog,
run it as a user does (its Run button's action), wait for the output layer, check its name and its
renderer against the engine's display choice, zoom to it and take a screenshot of the main window.

Reads its settings from the JSON file named by SCDM_GUI_SESSION: ``input`` (an RGB raster),
``parameters`` (further algorithm parameters), ``out_dir`` (screenshots and ``session.json``) and
``timeout_s``. Writes ``session.json`` (what it saw and checked, and the failures) and leaves QGIS with
exit status 0 when every check passed, 1 when one failed, 3 on a timeout.
"""

import json
import os
import time
import traceback
from pathlib import Path

import processing
from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QEventLoop, QTimer
from qgis.PyQt.QtWidgets import QApplication, QDockWidget, QTextEdit
from qgis.utils import iface

ALGORITHM = "scdm:spectralsuperresolution"
SETTINGS = json.loads(Path(os.environ["SCDM_GUI_SESSION"]).read_text(encoding="utf-8"))
OUT = Path(SETTINGS["out_dir"])
REPORT = {"failures": [], "messages": [], "seconds": {}}


def finish(status: int) -> None:
    """Write what the session saw and leave at once (QGIS's own shutdown adds nothing to check)."""
    REPORT["status"] = status
    (OUT / "session.json").write_text(json.dumps(REPORT, indent=2), encoding="utf-8")
    os._exit(status)


def wait(milliseconds: int) -> None:
    loop = QEventLoop()
    QTimer.singleShot(milliseconds, loop.quit)
    loop.exec()


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds:.0f} s for {what}")
        wait(100)


def check(condition: bool, failure: str) -> None:
    if not condition:
        REPORT["failures"].append(failure)


def screenshot(widget, name: str) -> None:
    """The widget as it is on the (virtual) screen, through QScreen.grabWindow."""
    QApplication.processEvents()
    image = widget.screen().grabWindow(widget.winId())
    image.save(str(OUT / name))
    REPORT.setdefault("screenshots", []).append({"file": name, "width": image.width(), "height": image.height()})


def open_dialog(rgb_layer):
    dialog = processing.createAlgorithmDialog(ALGORITHM, {"INPUT": rgb_layer.id(), **SETTINGS["parameters"]})
    dialog.resize(880, 760)
    dialog.show()
    wait(500)
    screenshot(dialog, "dialog.png")
    return dialog


def run_dialog(dialog) -> dict:
    """Press Run, as a user does, and wait for the algorithm and the loading of its layers."""
    finished = []
    dialog.algorithmFinished.connect(lambda ok, results: finished.append((ok, dict(results))))
    started = time.monotonic()
    dialog.runAlgorithm()
    wait_until(lambda: finished, SETTINGS["timeout_s"], "the algorithm to finish")
    REPORT["seconds"]["run"] = round(time.monotonic() - started, 1)
    ok, results = finished[0]
    REPORT["log"] = dialog.findChild(QTextEdit, "txtLog").toPlainText()
    check(ok, "the algorithm failed (see log)")
    return results


def check_output_layer(rgb_layer, results: dict):
    from scdm.scdm_plugin import engine_bridge

    expected_name = f"{rgb_layer.name()} hyperspectral"
    layers = QgsProject.instance().mapLayersByName(expected_name)
    REPORT["layers"] = sorted(layer.name() for layer in QgsProject.instance().mapLayers().values())
    check(len(layers) == 1, f"no single layer named '{expected_name}'")
    if len(layers) != 1:
        return None
    layer = layers[0]
    renderer = layer.renderer()
    display = engine_bridge.load_engine().read_display(results["OUTPUT"])
    REPORT["layer"] = {"name": layer.name(), "renderer": renderer.type(), "bands": layer.bandCount(),
                       "rgb_bands": [renderer.redBand(), renderer.greenBand(), renderer.blueBand()],
                       "expected_rgb_bands": list(display.composite.bands), "composite": display.composite.name}
    check(renderer.type() == "multibandcolor", f"renderer {renderer.type()}, not multibandcolor")
    check(REPORT["layer"]["rgb_bands"] == REPORT["layer"]["expected_rgb_bands"], "renderer bands differ")
    return layer


def show_on_map(layer) -> None:
    canvas = iface.mapCanvas()
    canvas.setExtent(layer.extent())
    canvas.refresh()
    wait(300)
    wait_until(lambda: not canvas.isDrawing(), 60, "the map to be drawn")
    wait(300)
    screenshot(iface.mainWindow(), "map.png")


def session() -> None:
    started = time.monotonic()
    window = iface.mainWindow()
    # Xvfb has no window manager to maximise the window: give it the whole virtual screen, and the map
    # the room of the file browser.
    window.setGeometry(window.screen().geometry())
    for dock in window.findChildren(QDockWidget):
        if dock.objectName() == "Browser":
            dock.hide()
    rgb_layer = iface.addRasterLayer(SETTINGS["input"], Path(SETTINGS["input"]).stem)
    check(rgb_layer is not None and rgb_layer.isValid(), "the RGB raster did not load")
    dialog = open_dialog(rgb_layer)
    results = run_dialog(dialog)
    layer = check_output_layer(rgb_layer, results)
    if dialog.isVisible():
        dialog.close()
    if layer is not None:
        # The RGB layer stays in the project (as for a user) but is hidden below the result.
        rgb_node = QgsProject.instance().layerTreeRoot().findLayer(rgb_layer.id())
        rgb_node.setItemVisibilityChecked(False)
        rgb_node.setExpanded(False)
        show_on_map(layer)
    REPORT["seconds"]["session"] = round(time.monotonic() - started, 1)


def main() -> None:
    try:
        QgsApplication.messageLog().messageReceived.connect(
            lambda message, tag, level: REPORT["messages"].append(f"{tag}: {message}"))
        session()
    except Exception:
        REPORT["failures"].append(traceback.format_exc())
    finish(1 if REPORT["failures"] else 0)


def on_timeout() -> None:
    REPORT["failures"].append(f"the session took longer than {SETTINGS['timeout_s']} s")
    finish(3)


QTimer.singleShot(int(SETTINGS["timeout_s"] * 1000) + 60000, on_timeout)
# Run from QGIS's own event loop, which starts after this file has been executed.
QTimer.singleShot(0, main)
