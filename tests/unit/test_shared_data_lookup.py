"""tests/shared_data.py finds the shared reference data from any clone: $ACTLAKE_SHARED_DATA first, then beside
the repository, then beside the current directory, and the CI machines' folder only last."""

from __future__ import annotations

import pytest

from tests import shared_data


def test_the_variable_comes_first_and_the_ci_folder_last(tmp_path, monkeypatch):
    named = tmp_path / "mine"
    (named / "net2brain78").mkdir(parents=True)
    monkeypatch.setenv(shared_data.VARIABLE, str(named))
    monkeypatch.setattr(shared_data, "ROOT", tmp_path / "clones" / "repo")  # a clone away from the CI folder
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    looked = shared_data.candidates()
    beside_repo = str(tmp_path / "clones" / "shared" / "data")
    beside_cwd = [str(p / "shared" / "data") for p in (work.resolve(), work.resolve().parent)]
    assert looked[0] == str(named) and looked[-1] == shared_data.CI_FALLBACK
    assert looked.index(beside_repo) < looked.index(beside_cwd[0]) < looked.index(beside_cwd[1])
    assert len(looked) == len(set(looked))
    assert shared_data.shared_data() == named


def test_data_beside_the_current_directory_is_found_before_the_ci_folder(tmp_path, monkeypatch):
    data = tmp_path / "x" / "shared" / "data"
    (data / "net2brain78").mkdir(parents=True)
    (tmp_path / "x" / "clone" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.delenv(shared_data.VARIABLE, raising=False)
    monkeypatch.setattr(shared_data, "ROOT", tmp_path / "elsewhere" / "repo")
    monkeypatch.chdir(tmp_path / "x" / "clone" / "sub")
    assert shared_data.shared_data() == data.resolve()
    monkeypatch.chdir(tmp_path / "elsewhere")  # nothing beside this one: the variable is the way, and the error says so
    monkeypatch.setattr(shared_data, "CI_FALLBACK", str(tmp_path / "no-ci-here"))
    with pytest.raises(FileNotFoundError, match="export ACTLAKE_SHARED_DATA=") as exc:
        shared_data.shared_data()
    assert str(tmp_path / "no-ci-here") in str(exc.value)
