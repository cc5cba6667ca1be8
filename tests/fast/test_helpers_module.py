"""helpers.py holds what the notebooks teach, in their order, each piece tagged with where it is taught."""

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(ROOT.glob("0[1-4]_*.ipynb"))
ENTRY_POINTS = {"train_unet"}
"""Called by no notebook on purpose: 03_train runs the two stages cell by cell, the benchmark and
``benchmarks/train_full.py`` in this one call (and a test checks the two train the same weights)."""


def top_level(tree):
    return {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def test_every_function_of_helpers_is_reached_from_a_notebook_and_tagged_with_where():
    source = (ROOT / "helpers.py").read_text()
    tree = ast.parse(source)
    defined = top_level(tree)
    called = set(ENTRY_POINTS)
    for notebook in NOTEBOOKS:
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] == "code":
                called |= set(re.findall(r"helpers\.(\w+)", "".join(cell["source"])))
    at_import = [node.id for statement in tree.body if not isinstance(statement, (ast.FunctionDef, ast.ClassDef))
                 for node in ast.walk(statement) if isinstance(node, ast.Name)]  # run when helpers is imported
    reached, todo = set(), [name for name in (*called, *at_import) if name in defined]
    while todo:  # what those call, directly or through each other (default arguments included)
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo += [node.id for node in ast.walk(defined[name]) if isinstance(node, ast.Name) and node.id in defined]
    unused = sorted(name for name in defined if name not in reached and not name.startswith("_"))
    assert not unused, f"helpers.py defines what no notebook uses (move it to benchmarks/ or data_sources.py): {unused}"
    lines = source.splitlines()
    for name, node in defined.items():
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        tag = lines[first - 2]
        if not name.startswith("_"):
            assert tag.startswith("# ") and re.search(r"0[1-4]_\w+|[Ee]very notebook|two stages", tag), \
                f"helpers.{name} (line {node.lineno}) has no '# <notebook>, *<section>*' line above it"
    assert len(lines) < 1500, f"helpers.py has {len(lines)} lines: it holds what the notebooks teach (under 1,500)"


def test_the_notebooks_import_helpers_only():
    for notebook in NOTEBOOKS:
        code = "".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code")
        assert not re.search(r"^\s*(import|from)\s+(data_sources|kernel_logs|run_files|figures|lever_models|recipes)\b", code, re.M), notebook.name
