"""Point the series at a fork: rewrite the repository its Colab badges and setup cells name.

Every notebook opens with a Colab badge (``colab.research.google.com/github/OWNER/NAME/blob/
BRANCH/<notebook>.ipynb``) and its setup cell clones ``https://github.com/OWNER/NAME`` in Colab.
A fork must name itself in all of them, or its badges open the original's notebooks and its setup
cells clone the original's code. Run from the repository root::

    python tools/set_repository.py your-name/your-fork            # the branch stays main
    python tools/set_repository.py your-name/your-fork --branch dev

It prints each file it changed; ``--check`` only says which repository the files name, and fails
if they disagree (``tests/fast/test_repository_links.py`` runs the same check).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_explore_data.ipynb", "02_build_unet.ipynb", "03_train.ipynb", "04_evaluate.ipynb")
BADGE = re.compile(r"colab\.research\.google\.com/github/([\w.-]+)/([\w.-]+)/blob/([\w./-]+?)/([\w.-]+\.ipynb)")
CLONE = re.compile(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?=[\"'\\])")
NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def links(root=ROOT) -> list[tuple[str, str, str, str]]:
    """Every (file, what, "owner/name", branch or "") the notebooks name, badges and clones alike."""
    found = []
    for notebook in NOTEBOOKS:
        text = (Path(root) / notebook).read_text()
        for owner, name, branch, target in BADGE.findall(text):
            found.append((notebook, f"badge to {target}", f"{owner}/{name}", branch))
        for owner, name in CLONE.findall(text):
            found.append((notebook, "setup cell's clone", f"{owner}/{name}", ""))
    return found


def disagreements(root=ROOT) -> list[str]:
    """What is wrong with the links: several repositories or branches named, a badge to another notebook."""
    found = links(root)
    problems = []
    if len({repo for *_, repo, _ in found}) > 1 or len({b for *_, b in found if b}) > 1:
        problems.append("the notebooks name more than one repository or branch: "
                        + "; ".join(f"{f} ({what}): {repo} {b}".strip() for f, what, repo, b in found))
    for notebook, what, _, _ in found:
        if what.startswith("badge") and what != f"badge to {notebook}":
            problems.append(f"{notebook}'s {what}: the badge must open the notebook it is in")
    for notebook in NOTEBOOKS:
        kinds = {what.split(" to ")[0] for f, what, *_ in found if f == notebook}
        if kinds != {"badge", "setup cell's clone"}:
            problems.append(f"{notebook}: expected one Colab badge and one clone URL, found {sorted(kinds)}")
    return problems


def set_repository(repo, branch="main", root=ROOT) -> list[str]:
    """Rewrite every badge and clone URL to ``repo`` ("owner/name") on ``branch``; return the files changed."""
    if not NAME.match(repo):
        raise ValueError(f"{repo!r} is not a GitHub repository name of the form owner/name")
    owner, name = repo.split("/")
    changed = []
    for notebook in NOTEBOOKS:
        path = Path(root) / notebook
        text = path.read_text()
        new = BADGE.sub(lambda m: f"colab.research.google.com/github/{owner}/{name}/blob/{branch}/{m.group(4)}", text)
        new = CLONE.sub(f"https://github.com/{owner}/{name}", new)
        if new != text:
            path.write_text(new)
            changed.append(notebook)
    return changed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", nargs="?", help="owner/name of the fork")
    parser.add_argument("--branch", default="main")
    parser.add_argument("--check", action="store_true", help="only check that the notebooks agree")
    args = parser.parse_args(argv)
    if args.check or not args.repo:
        problems = disagreements()
        repos = sorted({repo for *_, repo, _ in links()})
        print("\n".join(problems) if problems else f"every badge and clone names {repos[0]}")
        return 1 if problems else 0
    for notebook in set_repository(args.repo, args.branch):
        print(f"changed {notebook}")
    problems = disagreements()
    print("\n".join(problems) if problems else f"every badge and clone now names {args.repo}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
