"""Merge grid results JSONs that started as copies of one file (parallel launchers on one machine).

    python experiments/merge_results.py results/ppl/scaling.json copy_a.json copy_b.json

Cells: a finished cell replaces a missing or failed one; a failed cell is added only where the
target has none. Calls: those not already in the target (by start time and command) are appended.
"""

import json
import sys
from pathlib import Path


def merge(target: dict, other: dict) -> None:
    for name, cell in other["cells"].items():
        mine = target["cells"].get(name)
        if mine is None or ("error" in mine and "error" not in cell):
            target["cells"][name] = cell
    known = {(c["started"], c["command"]) for c in target.get("calls", [])}
    target.setdefault("calls", []).extend(c for c in other.get("calls", []) if (c["started"], c["command"]) not in known)


def main(paths: list[str]) -> None:
    target_path = Path(paths[0])
    target = json.loads(target_path.read_text())
    for path in paths[1:]:
        merge(target, json.loads(Path(path).read_text()))
    target_path.write_text(json.dumps(target, indent=2))
    print(f"{target_path}: {len(target['cells'])} cells, {len(target['calls'])} calls")


if __name__ == "__main__":
    main(sys.argv[1:])
