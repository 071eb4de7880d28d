"""The tutorial notebooks in notebooks/: committed without outputs, openable, with a FAST switch, writing only
under OUT, and wired into `make test` (which executes them with `pytest --nbmake`, FAST on).

These checks read the notebooks; they do not execute them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest


REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
FAST_VAR = "DDPMLAB_NOTEBOOK_FAST"
# Names of the sampling path (ddpmlab.sample / samplers): kept to few cells so that a change of that API
# touches few places.
SAMPLING_NAMES = {"load_run", "sample", "record_trajectory", "with_sample_settings", "guidance_sweep",
                  "sample_ddpm", "sample_in_parts", "write_samples", "write_reverse_process"}
MOST_SAMPLING_CELLS = 2


def _read(path: Path):
    return nbformat.read(str(path), as_version=4)


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_five_numbered_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) == 5, names
    assert [n[:3] for n in names] == ["01-", "02-", "03-", "04-", "05-"], names


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def notebook(request):
    return request.param, _read(request.param)


def test_valid_and_runs_on_the_python3_kernel(notebook):
    path, nb = notebook
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name


def test_outputs_stripped(notebook):
    path, nb = notebook
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs; clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
        # what an executed notebook leaves in cell metadata (timings, collapsed/scrolled state)
        leftover = set(cell.metadata) & {"execution", "ExecuteTime", "collapsed", "scrolled"}
        assert not leftover, f"{path.name} cell {i} keeps run metadata {sorted(leftover)}; delete it (nbstripout does)"
    assert "widgets" not in nb.metadata, f"{path.name} keeps widget state"


def test_first_cell_says_how_to_open_it(notebook):
    path, nb = notebook
    first = nb.cells[0]
    assert first.cell_type == "markdown", path.name
    assert first.source.startswith("# "), f"{path.name}: the first cell should start with the title"
    assert "pip install ddpmlab[notebooks]" in first.source, path.name
    assert "jupyter lab notebooks/" in first.source, path.name


def test_fast_flag_at_the_top_read_from_the_environment(notebook):
    path, nb = notebook
    first_code = ast.parse(_code(nb)[0])
    assigned = [n for n in first_code.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "FAST" for t in n.targets)]
    assert assigned, f"{path.name}: the first code cell must set FAST"
    assert FAST_VAR in ast.unparse(assigned[0].value), f"{path.name}: FAST must come from ${FAST_VAR}"
    # the default (variable unset) is the full notebook
    assert ast.unparse(assigned[0].value).endswith("== '1'"), ast.unparse(assigned[0].value)
    uses = sum(len(re.findall(r"\bFAST\b", src)) for src in _code(nb))
    assert uses >= 3, f"{path.name}: FAST is set but barely used ({uses} mentions)"


def test_code_cells_are_plain_python(notebook):
    path, nb = notebook
    for i, src in enumerate(_code(nb)):
        for line in src.splitlines():
            assert not line.lstrip().startswith(("%", "!")), f"{path.name} cell {i}: no magics or shell lines"
        ast.parse(src, filename=f"{path.name} cell {i}")


def test_uses_only_the_public_api(notebook):
    path, nb = notebook
    for i, src in enumerate(_code(nb)):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ddpmlab"):
                assert not any(part.startswith("_") for part in node.module.split(".")), (path.name, node.module)
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} cell {i} imports private {private} from {node.module}"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                pytest.fail(f"{path.name} cell {i} uses the private attribute .{node.attr}")


def test_sampling_calls_stay_in_few_cells(notebook):
    path, nb = notebook
    cells = []
    for i, src in enumerate(_code(nb)):
        called = {n.func.id for n in ast.walk(ast.parse(src))
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        if called & SAMPLING_NAMES:
            cells.append(i)
    assert 1 <= len(cells) <= MOST_SAMPLING_CELLS, f"{path.name}: sampling API called in code cells {cells}"


def test_files_are_written_under_out(notebook):
    """Every file name in the code is joined onto a folder (OUT / "x.png"), and OUT is a temporary folder
    or runs/notebooks/...: nothing lands next to the notebook or in the tracked tree."""
    path, nb = notebook
    settings = _code(nb)[0]
    assert "tempfile.mkdtemp" in settings and '"runs" / "notebooks"' in settings, path.name
    for i, src in enumerate(_code(nb)):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    re.fullmatch(r"[\w.-]+\.(png|gif|npz|toml|pt|csv|safetensors)", node.value):
                assert f'/ "{node.value}"' in src, \
                    f"{path.name} cell {i}: {node.value!r} is not joined onto OUT"
    assert re.search(r"^if FAST:.*\n\s+shutil\.rmtree\(OUT", _code(nb)[-1], re.M), \
        f"{path.name}: the last cell should remove a FAST run's scratch folder"


def test_states_the_fixes(notebook):
    path, nb = notebook
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source]
    assert any(h.startswith("## What ddpmlab fixes") for h in headings), f"{path.name}: {headings}"


def test_make_test_executes_the_notebooks_with_fast_on():
    makefile = (REPO / "Makefile").read_text()
    target = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert target, "Makefile has no test target"
    recipe = target.group(1)
    assert re.search(rf"{FAST_VAR}=1 \S*python -m pytest --nbmake notebooks/", recipe), recipe


def test_readme_lists_every_notebook():
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Notebooks\n", 1)
    assert len(section) == 2, "README.md has no '## Notebooks' section"
    body = section[1].split("\n## ", 1)[0]
    for p in NOTEBOOKS:
        assert f"notebooks/{p.name}" in body, f"README's Notebooks section does not list {p.name}"
    assert FAST_VAR in body and "jupyter lab notebooks/" in body
