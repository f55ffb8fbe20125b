"""Every environment variable the settings read is documented in the README's table."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_settings_table_lists_every_environment_variable():
    settings_source = (ROOT / "project" / "settings.py").read_text()
    read = set(re.findall(r'env_(?:str|bool|number|list)\(\s*"([A-Z_]+)"', settings_source))
    read |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z_]+)"', settings_source))
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.MULTILINE))
    assert read, "no settings found: the pattern is out of date"
    assert read - documented == set(), "settings missing from the README table"
    assert documented - read == set(), "README documents settings that do not exist"


def test_readme_starts_with_the_two_commands():
    first_lines = (ROOT / "README.md").read_text().splitlines()[:6]
    assert any(line.startswith("make run") for line in first_lines)
    assert any(line.startswith("make test") for line in first_lines)
