"""A student sees no answer before trying: solutions are committed without outputs, questionnaires hide theirs."""

import json
import re
import sys

from support import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import hide_answers  # noqa: E402


def test_no_solution_shows_its_answer_in_the_committed_notebooks():
    assert hide_answers.shown_answers() == [], "run `python tools/hide_answers.py` (make notebooks does)"


def test_hiding_clears_outputs_and_nothing_else(tmp_path):
    for name in hide_answers.NOTEBOOKS:
        notebook = json.loads((ROOT / name).read_text())
        for cell in hide_answers.solution_cells(notebook):
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["the answer\n"]}]
        (tmp_path / name).write_text(json.dumps(notebook))
    assert len(hide_answers.shown_answers(tmp_path)) >= 12
    assert hide_answers.hide_answers(tmp_path) == list(hide_answers.NOTEBOOKS)
    assert hide_answers.shown_answers(tmp_path) == []
    for name in hide_answers.NOTEBOOKS:
        before, after = json.loads((ROOT / name).read_text()), json.loads((tmp_path / name).read_text())
        assert [c["source"] for c in before["cells"]] == [c["source"] for c in after["cells"]]


def test_every_notebook_ends_with_a_questionnaire_of_hidden_answers_then_exercises():
    for name in hide_answers.NOTEBOOKS:
        cells = json.loads((ROOT / name).read_text())["cells"]
        titles = [c["source"][0].strip() for c in cells if c["cell_type"] == "markdown" and c["source"]]
        assert "## Questionnaire" in titles and "## Exercises" in titles, name
        assert titles.index("## Questionnaire") < titles.index("## Exercises"), name
        quiz = "".join(next(c["source"] for c in cells if c["source"] and c["source"][0].startswith("## Questionnaire")))
        questions = re.findall(r"^\s*\d+\. ", quiz, re.M)
        answers = re.findall(r"<details><summary>Answer</summary>\n\n.+?\n\n\s*</details>", quiz, re.S)
        assert len(questions) >= 8 and len(answers) == len(questions), (name, len(questions), len(answers))
