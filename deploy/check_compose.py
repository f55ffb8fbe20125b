"""``make lint``'s check of the compose files against the Compose Specification's schema.

``python deploy/check_compose.py BASE [OVERRIDE ...]`` validates each file on its own and
the merge of the base with each override, as podman-compose (pinned in requirements-dev.txt)
merges them. The schema is the one check-jsonschema ships (``vendor.compose-spec``, with its
licence, at the version pinned in requirements-dev.txt). Overrides may use the Compose
``!reset`` and ``!override`` tags, which a plain YAML reader refuses: on its own, a file is
read with each tagged value as it is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import podman_compose
import yaml

SCHEMA = "vendor.compose-spec"


class _TaggedLoader(yaml.SafeLoader):
    """Reads ``!reset VALUE`` and ``!override VALUE`` as VALUE."""


def _untagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


for _tag in ("!reset", "!override"):
    _TaggedLoader.add_constructor(_tag, _untagged)


def documents(paths: list[Path]) -> dict[str, Any]:
    """Each file as written, and the base merged with each override."""
    found: dict[str, Any] = {}
    for path in paths:
        found[str(path)] = yaml.load(path.read_text(), _TaggedLoader)  # noqa: S506 - SafeLoader's
    base = podman_compose.normalize(podman_compose.load_yaml_or_die(str(paths[0]), paths[0].open()))
    for override in paths[1:]:
        layer = podman_compose.load_yaml_or_die(str(override), override.open())
        merged = podman_compose.rec_merge({}, base, podman_compose.normalize(layer))
        found[f"{paths[0]} + {override}"] = merged
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for index, (name, document) in enumerate(documents([Path(a) for a in argv]).items()):
            target = Path(tmp) / f"{index}.json"
            target.write_text(json.dumps(document))
            files.append((name, target))
        failed = 0
        for name, target in files:
            result = subprocess.run(
                [sys.executable, "-m", "check_jsonschema", "--builtin-schema", SCHEMA, str(target)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            print(f"{name}: {result.stdout.strip()} {result.stderr.strip()}".strip())
            failed |= result.returncode
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
