"""Comparison passes that start from the clean pass's activations: the blocks before the first intervention
are not run again.

``sae eval`` runs each batch clean, spliced and ablated. The spliced and ablated passes differ from the clean
one only from the hook on, so the transformer blocks before it compute exactly what they computed in the clean
pass. Here the clean (main) pass records those blocks' outputs and the comparison passes replay them: each
such block's ``forward`` returns its recorded output instead of computing it, and the model's own code (masks,
rotary tables, the blocks from the hook on, the head) runs as usual. The result is the same tensors the full
pass would give (the same kernels on the same inputs), at the cost of the suffix only.

Which blocks: the model's outermost ``nn.ModuleList`` of blocks (``model.layers``, ``transformer.h``,
``encoder.layer``, …) that holds every intervention's module; blocks with a lower index than the first block
any intervention (of the main pass or of the comparison) sits in are replayed. A model that runs a block more
or less than once per forward (shared layers, as ALBERT's) is detected when recording, and its comparisons run
whole; so are interventions outside any block list (embeddings, the final norm). A model whose blocks hand state
to later blocks beside their outputs (Gemma 3n's shared keys and values) cannot be replayed either: each
comparison's first replayed pass is checked against the whole pass (``ingest/inloop.py::_compared``), and every
pass runs whole from then on if they differ or the replay fails."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

log = logging.getLogger("actlake.extract")


def block_of(model: nn.Module, module_name: str) -> tuple[str, int] | None:
    """(the outermost ModuleList of ``model`` whose child holds ``module_name``, that child's index), or None."""
    parts = module_name.split(".")
    modules = dict(model.named_modules())
    for i in range(len(parts)):
        parent = ".".join(parts[:i])
        if isinstance(modules.get(parent), nn.ModuleList) and parts[i].isdigit():
            return parent, int(parts[i])
    return None


def _name(module) -> str:
    return module if isinstance(module, str) else module[0]


def _first_changed(model: nn.Module, module) -> tuple[str, int] | None:
    """Where a comparison's intervention first changes anything, as (block list, index of the first block to
    compute): a block's own output changed is that block replayed and its output changed (the intervention's hook
    still runs on the replayed output), so the next block is the first computed."""
    name, reads_input = (module, False) if isinstance(module, str) else module
    at = block_of(model, name)
    if at is not None and name == f"{at[0]}.{at[1]}" and not reads_input:
        return at[0], at[1] + 1
    return at


class PrefixReuse:
    """Records the main pass's block outputs and replays them in comparison passes (see the module docstring).

    ``main`` are the main pass's intervention modules, ``comparisons`` each comparison's (by name), each as a
    module name or (module name, whether the intervention reads the module's input)."""

    def __init__(self, model: nn.Module, main: list, comparisons: dict[str, list]) -> None:
        self.blocks: list[nn.Module] = []
        self.upto: dict[str, int] = {}  #: comparison -> blocks [0, upto) replayed
        self._recorded: list[object | None] = []  #: the main pass's block outputs
        self._calls: list[int] = []  #: how many times each block ran in the main pass
        self.verified: set[str] = set()  #: comparisons whose replay was checked against the whole pass
        located = {name: [_first_changed(model, m) for m in mods] for name, mods in comparisons.items()}
        main_at = [block_of(model, _name(m)) for m in main]  # the recorded outputs are the main pass's own
        lists = {loc[0] for locs in [*located.values(), main_at] for loc in locs if loc is not None}
        if len(lists) != 1 or any(loc is None for locs in [*located.values(), main_at] for loc in locs):
            return  # no block list, or interventions in several or outside one: every pass runs whole
        (blocks_name,) = lists
        self.blocks = list(dict(model.named_modules())[blocks_name])
        first_main = min((i for _, i in main_at), default=len(self.blocks))
        for name, locs in located.items():
            self.upto[name] = min([first_main, *(i for _, i in locs)])

    @property
    def active(self) -> bool:
        return any(self.upto.values())

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Around the main pass: keep the outputs of the blocks some comparison replays."""
        n = max(self.upto.values(), default=0)
        if not n:
            yield
            return
        self._recorded, self._calls = [None] * n, [0] * n
        handles = []

        def keep(i: int):
            def hook(_module, _args, output):
                self._recorded[i] = output
                self._calls[i] += 1
            return hook

        try:
            handles = [self.blocks[i].register_forward_hook(keep(i)) for i in range(n)]
            yield
        finally:
            for h in handles:
                h.remove()

    def replaying(self, comparison: str):
        """Around a comparison pass: its blocks before the first intervention return what the main pass's did
        (nothing replayed when the main pass ran a block other than once)."""
        n = self.upto.get(comparison, 0)
        if not n or self._calls[:n] != [1] * n:
            if n and self._calls:
                self.disable(f"a block before the hook ran {self._calls[:n]} times in one forward")
            return nullcontext()
        return self._replay(n)

    @contextmanager
    def _replay(self, n: int) -> Iterator[None]:
        def recorded(i: int):
            out = self._recorded[i]
            if i == n - 1:
                out = _cloned_first(out)  # the one later blocks read: a fresh tensor, whatever they do to it
            return lambda *args, **kwargs: out

        patched = self.blocks[:n]
        with patched_forwards({block: recorded(i) for i, block in enumerate(patched)}):
            yield

    def disable(self, why: str) -> None:
        """Every comparison pass runs whole from now on (``why`` logged once)."""
        if self.upto:
            log.warning("comparison passes run whole from now on: %s", why)
        self.upto = {}

    def clear(self) -> None:
        """Drop the recorded outputs (after the batch's comparisons)."""
        self._recorded = [None] * len(self._recorded)


@contextmanager
def patched_forwards(forwards: dict[nn.Module, object]) -> Iterator[None]:
    """Each module's ``forward`` replaced inside the block (an instance attribute: nn.Module.__call__ calls
    self.forward), and afterwards exactly what was there before: a module's own instance ``forward`` (an
    accelerate hook's wrapper, a factory's) is put back, not deleted."""
    saved = {m: m.__dict__.get("forward") for m in forwards}
    try:
        for module, fn in forwards.items():
            module.forward = fn
        yield
    finally:
        for module, before in saved.items():
            if before is None:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = before


def _cloned_first(out):
    """``out`` with its first tensor cloned, in a new container (block outputs are tensors, tuples or
    ModelOutputs; an intervention's hook may change a ModelOutput in place)."""
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        return (out[0].clone(), *out[1:])
    if hasattr(out, "to_tuple"):
        copy = out.__class__(**out)
        key = next(iter(copy.keys()))
        copy[key] = _cloned_first(copy[key])
        return copy
    return out
