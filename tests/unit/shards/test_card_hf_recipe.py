"""The dataset card's Hugging Face ``datasets`` recipe, run as the card prints it with the real ``datasets``
library: it gives every hook as an array of the hook's dtype and shape, bit for bit what actlake's reader returns
(``load_dataset`` alone gives ``fixed_size_binary`` bytes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

import shards
from tests.helpers import HOOKS, unit_columns, write_dataset

PLACEHOLDER = '"<this folder or Hub repo>"'


def _card_recipe(folder: Path) -> str:
    """The python block of the card's "Hugging Face `datasets`" section, naming ``folder`` for its placeholder."""
    text = (folder / "README.md").read_text()
    section = text[text.index("**Hugging Face `datasets`**"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert PLACEHOLDER in block
    return block.replace(PLACEHOLDER, json.dumps(str(folder)))


def _run_recipe(folder: Path, tmp_path: Path, monkeypatch) -> datasets.Dataset:
    # datasets' cache of the converted files in this test's folder, not the user's ~/.cache
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    namespace: dict = {}
    exec(compile(_card_recipe(folder), str(folder / "README.md"), "exec"), namespace)  # noqa: S102 - the card's code
    return namespace["d"]


def _same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_the_cards_recipe_gives_every_dtype_as_the_readers_arrays(tmp_path, monkeypatch):
    hooks = {**HOOKS, "ids": {"shape": [2, 2], "dtype": "int32"}}  # float16, bfloat16, float32 and int32
    folder = tmp_path / "ds"
    write_dataset(str(folder), units=3, rows=7, hooks=hooks)
    with shards.create_dataset(str(folder), hooks, {"label": "string", "score": "float64"}, mode="append") as w:
        w.write_unit(1, unit_columns(1, 4, hooks, seed=9))  # replaced: the card names the latest files only
    ds = shards.open_dataset(str(folder))
    raw = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "raw-cache"))
    assert raw.features["resid.0"].dtype == "fixed_size_binary[32]"  # what the recipe has to decode
    assert isinstance(raw.with_format("torch")[0]["resid.0"], bytes)
    d = _run_recipe(folder, tmp_path, monkeypatch)
    rows = d[:]
    assert len(d) == ds.num_rows == 18
    for hook in hooks:
        want = ds.to_numpy(hook)  # bfloat16 as exact float32, the others in their stored dtype
        _same_bits(rows[hook], want)
        _same_bits(d[5][hook], want[5])
        assert not np.array_equal(want[0], want[1])  # rows really differ: an order mix-up would show
    batch = next(iter(torch.utils.data.DataLoader(d, batch_size=4)))
    assert batch["resid.1"].dtype == torch.float32 and tuple(batch["resid.1"].shape) == (4, 4, 3)
    taken = ds.take(range(4), ["resid.1"], dtype=None)["resid.1"].float()  # the reader's own bfloat16, widened
    assert torch.equal(batch["resid.1"], taken)


@pytest.mark.parametrize("encodings", [("list", "list"), ("list", "binary")])
def test_the_recipe_reads_list_encoded_hooks_too(tmp_path, monkeypatch, encodings):
    hooks = {"a": {"shape": [3, 2], "dtype": "bfloat16", "encoding": encodings[0]},
             "b": {"shape": [5], "dtype": "float16", "encoding": encodings[1]}}
    folder = tmp_path / "ds"
    ds = write_dataset(str(folder), units=2, rows=6, hooks=hooks)
    d = _run_recipe(folder, tmp_path, monkeypatch)
    rows = d[:]
    for hook in hooks:
        _same_bits(rows[hook], ds.to_numpy(hook))
