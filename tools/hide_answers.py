"""Keep the answers out of sight in the committed notebooks: the solution cells are saved without outputs.

A solution's output is its answer, and JupyterLab, Colab and GitHub all show a cell's output even
when its code is collapsed. So ``make notebooks`` runs this after copying the refreshed notebooks:
every code cell tagged ``solution`` loses its outputs (nbval still runs those cells, so a broken
solution still fails ``make test``); a reader who runs the cell sees its answer. The questionnaires'
answers are ``<details>`` blocks, closed until clicked, in all three. Run from the repository root::

    python tools/hide_answers.py           # clears them in the four notebooks, prints what changed
    python tools/hide_answers.py --check   # fails if any solution cell has an output

``tests/fast/test_notebook_answers.py`` runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_explore_data.ipynb", "02_build_unet.ipynb", "03_train.ipynb", "04_evaluate.ipynb")


def solution_cells(notebook: dict) -> list[dict]:
    """The code cells tagged ``solution``."""
    return [cell for cell in notebook["cells"]
            if cell["cell_type"] == "code" and "solution" in cell.get("metadata", {}).get("tags", [])]


def shown_answers(root=ROOT) -> list[str]:
    """``"<notebook>: <title>"`` for every solution cell that has an output."""
    found = []
    for name in NOTEBOOKS:
        for cell in solution_cells(json.loads((Path(root) / name).read_text())):
            if cell.get("outputs"):
                found.append(f"{name}: {''.join(cell['source']).splitlines()[0]}")
    return found


def hide_answers(root=ROOT) -> list[str]:
    """Clear the solution cells' outputs in place; return the notebooks that changed."""
    changed = []
    for name in NOTEBOOKS:
        path = Path(root) / name
        notebook = json.loads(path.read_text())
        cells = [cell for cell in solution_cells(notebook) if cell.get("outputs") or cell.get("execution_count")]
        for cell in cells:
            cell["outputs"], cell["execution_count"] = [], None
        if cells:
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
            changed.append(name)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only fail if a solution cell has an output")
    args = parser.parse_args(argv)
    if args.check:
        shown = shown_answers()
        for line in shown:
            print(f"an answer is showing: {line}")
        return 1 if shown else 0
    for name in hide_answers():
        print(f"cleared the solutions' outputs in {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
