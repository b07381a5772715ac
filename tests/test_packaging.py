from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_the_configs(tmp_path):
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH (make test installs it)")
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path), str(REPO)], check=True, capture_output=True
    )
    (wheel,) = tmp_path.glob("mtnas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"mtnas/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")}
    assert "mtnas/conf/config.yaml" in shipped
    assert shipped <= names, sorted(shipped - names)
    assert "mtnas/cli.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "mtnas = mtnas.cli:main" in text and "mtnas-data = mtnas.data.cli:main" in text
