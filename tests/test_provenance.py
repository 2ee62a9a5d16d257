"""genlab.provenance: which checkouts count as dirty (a table row must be reproducible from its commit)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from genlab.provenance import git_commit


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_records_and_results_written_by_runs_are_not_dirt_but_code_is(tmp_path: Path) -> None:
    (tmp_path / "experiments" / "tables").mkdir(parents=True)
    files = {"genlab.py": "x = 1\n", "experiments/tables/t.jsonl": "{}\n", "experiments/RESULTS.md": "# R\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = git(tmp_path, "rev-parse", "--short=10", "HEAD")
    assert git_commit(tmp_path) == (head, False)
    # genlab.table appends a record and renders a section: the code that runs is still HEAD's.
    (tmp_path / "experiments/tables/t.jsonl").write_text("{}\n{}\n")
    (tmp_path / "experiments/RESULTS.md").write_text("# R\nrow\n")
    assert git_commit(tmp_path) == git_commit(tmp_path / "experiments") == (head, False)
    (tmp_path / "genlab.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == git_commit(tmp_path / "experiments") == (head, True)  # the whole checkout counts
