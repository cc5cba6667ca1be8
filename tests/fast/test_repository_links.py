"""What Colab reads from the notebooks: the badges and the setup cells' clone name one repository (a
fork renames them all with tools/set_repository.py), only 03 asks for a GPU, the parameters are a form."""

import shutil
import sys

from support import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import set_repository  # noqa: E402


def test_every_badge_and_clone_names_one_repository():
    assert set_repository.disagreements() == []
    found = set_repository.links()
    assert len(found) == 2 * len(set_repository.NOTEBOOKS)  # a badge and a clone in each


def test_a_fork_renames_every_link_and_nothing_else(tmp_path):
    for notebook in set_repository.NOTEBOOKS:
        shutil.copy(ROOT / notebook, tmp_path / notebook)
    before = {n: (tmp_path / n).read_text() for n in set_repository.NOTEBOOKS}
    changed = set_repository.set_repository("a-teacher/salt-class", "spring", root=tmp_path)
    assert changed == list(set_repository.NOTEBOOKS)
    assert set_repository.disagreements(tmp_path) == []
    assert {repo for *_, repo, _ in set_repository.links(tmp_path)} == {"a-teacher/salt-class"}
    assert {b for *_, b in set_repository.links(tmp_path) if b} == {"spring"}
    for notebook, text in before.items():  # only the links changed: the same length of text apart from them
        old = set_repository.links(ROOT)[0][2]
        assert (tmp_path / notebook).read_text().replace("a-teacher/salt-class", old).replace(
            "/blob/spring/", "/blob/main/") == text


def test_a_wrong_name_is_refused(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="owner/name"):
        set_repository.set_repository("not a repo", root=tmp_path)


def test_only_03_asks_colab_for_a_gpu_and_every_parameters_cell_is_a_form():
    import nbformat

    for name in set_repository.NOTEBOOKS:
        notebook = nbformat.read(ROOT / name, as_version=4)
        wants_gpu = notebook.metadata.get("accelerator") == "GPU"
        assert wants_gpu == (name == "03_train.ipynb"), name  # free-tier GPU time is for training
        [parameters] = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        fields = [line for line in parameters.source.splitlines() if "#@param" in line and not line.startswith("#")]
        assert fields and all(line.split("=", 1)[1].split("#@param")[0].strip()[0] in "\"T" for line in fields), name
        assert "papermill" in parameters.source and "environment variable" in parameters.source, name
