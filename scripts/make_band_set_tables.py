"""Write the sensor response tables the plugin ships (resources/srf/*.csv) from the EnMAP-Box response
GeoJSON files of the shared data (../shared/data/srf): Sentinel-2A MSI (ESA's published responses) and
Landsat 8/9 OLI (USGS's). One row per nm, one column per band, the band named by its first word and
its name ("B4 Red"). Run from the repository root: ``python scripts/make_band_set_tables.py``."""

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOURCES = {"sentinel2a_msi": "Sentinel-2A MSI spectral responses (ESA, S2-SRF COPE-GSEG-EOPG-TN-15-0007)",
           "landsat_oli": "Landsat 8 OLI relative spectral responses (USGS/NASA)"}


# The GeoJSON names Landsat's bands without their numbers; OLI numbers them 1 (coastal) to 9 (cirrus).
OLI_NUMBERS = {"Blue": "B2", "Green": "B3", "Red": "B4", "NIR": "B5", "SWIR 1": "B6", "SWIR 2": "B7"}


def band_label(name: str) -> str:
    """'B4 - Red (649-680 Nanometers)' -> 'B4 Red'; 'Shortwave Infrared (SWIR) 1 (1550-1750 Nanometers)'
    -> 'B6 SWIR 1' (Landsat's number added)."""
    label = name.replace("–", "-").rsplit(" (", 1)[0].replace(" - ", " ")
    label = label.replace("Near Infrared (NIR)", "NIR").replace("Shortwave Infrared (SWIR)", "SWIR")
    label = " ".join(label.split())
    return f"{OLI_NUMBERS[label]} {label}" if label in OLI_NUMBERS else label


def write_table(geojson: Path, out: Path, source: str) -> None:
    features = json.loads(geojson.read_text())["features"]
    grid = np.arange(300, 2601)
    names = [band_label(f["properties"]["name"]) for f in features]
    curves = [np.interp(grid, f["properties"]["response"]["x"], f["properties"]["response"]["y"], left=0, right=0)
              for f in features]
    table = np.column_stack([grid] + curves)
    used = table[:, 1:].max(axis=1) > 0
    first, last = np.flatnonzero(used)[[0, -1]]
    lines = [f"# {source}, from {geojson.name} (EnMAP-Box format), resampled to 1 nm",
             "# wavelength_nm," + ",".join(names)]
    lines += [",".join([f"{row[0]:.0f}"] + [f"{v:.5g}" for v in row[1:]]) for row in table[first - 1:last + 2]]
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}: {len(names)} bands, {grid[first - 1]}-{grid[last + 1]} nm")


def main(srf_dir: Path = REPO.parent / "shared" / "data" / "srf") -> None:
    target = REPO / "resources" / "srf"
    target.mkdir(parents=True, exist_ok=True)
    for stem, source in SOURCES.items():
        write_table(srf_dir / f"{stem}.geojson", target / f"{stem}.csv", source)


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:]))
