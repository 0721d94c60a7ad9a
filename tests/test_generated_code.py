"""gen/ is exactly what `make gen` writes from proto/ (CI fails if stale)."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def test_gen_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    subprocess.run(
        ["make", "--no-print-directory", "gen", f"GEN_DIR={out}", "STAMP="],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    committed = ROOT / "gen" / "observe"
    fresh = out / "observe"
    stale: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        stale.extend(f"{prefix}{n}" for n in cmp.left_only + cmp.right_only + cmp.diff_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(str(committed), str(fresh), ignore=["__pycache__"]), "")
    assert not stale, f"gen/ is stale ({stale}): run 'make gen' and commit it"
