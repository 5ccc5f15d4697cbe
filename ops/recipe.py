"""A recipe (recipes/<name>.yaml: `section.key: value` overrides of params.yaml)
as `dvc exp run` arguments: `-S key=value ...` on one line, no value holding a space.

    python ops/recipe.py recipes/dcgan.yaml      # -S train.arch=dcgan ...

`make exp RECIPE=dcgan` runs it as a named experiment; `bench/seeds.py
--recipe` and `bench/gpu_check.py` read the same file.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def overrides(path: str | Path) -> list[str]:
    """`key=value` strings, values in YAML flow style (what `dvc exp run -S` parses)."""
    path = Path(path)
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not doc:
        raise SystemExit(f"{path}: expected a mapping of `section.key: value` overrides")
    flat: dict = {}

    def walk(key, value):  # a mapping sets its leaves, as params.yaml nests them
        if isinstance(value, dict):
            for sub, v in value.items():
                walk(f"{key}.{sub}", v)
        else:
            flat[key] = value

    for key, value in doc.items():
        if not isinstance(key, str) or "." not in key:
            raise SystemExit(f"{path}: {key!r}: keys are dotted params names such as train.steps")
        walk(key, value)
    out = []
    for key, value in flat.items():
        if isinstance(value, list):
            text = json.dumps(value, separators=(",", ":"))
        else:
            text = yaml.safe_dump(value).splitlines()[0]
        item = f"{key}={text}"
        if " " in item:
            raise SystemExit(f"{path}: {key}: a value with a space cannot travel as one -S argument")
        out.append(item)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python ops/recipe.py recipes/<name>.yaml")
    print(" ".join(f"-S {item}" for item in overrides(sys.argv[1])))
