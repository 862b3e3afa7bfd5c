"""Docs that cannot drift: the module map names every module of gradlab/."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_module_map_names_every_module():
    text = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    block = text[text.index("```\nexperiments") :]
    missing = []
    for path in sorted((ROOT / "gradlab").rglob("*.py")):
        rel = path.relative_to(ROOT / "gradlab")
        if path.name == "__init__.py" and len(rel.parts) > 1:
            folder = rel.parts[-2]
            if not re.search(rf"^\s+{re.escape(folder)}/", block, re.M):
                missing.append(f"{folder}/")
        elif not re.search(rf"(^|[\s,]){re.escape(path.name)}\b", block, re.M):
            missing.append(str(rel))
    assert not missing, f"docs/layout.md does not name: {', '.join(missing)}"


def test_the_readme_points_to_the_one_module_map():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/layout.md" in readme
    assert "  recorder/    " not in readme  # no second map to keep in step
