"""Where the measurement commands find the development data by default: ../shared/data beside the
repository (scenes, camera responses, the EnMAP mosaic). The plugin never reads these paths."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HOUSTON_SCENE = SHARED_DATA / "scenes" / "houston2018_casi48.npz"
NIKON_SRF = SHARED_DATA / "srf" / "camera_nikon5100_npl.csv"
