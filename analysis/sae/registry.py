"""SAE architectures by name. Each file under ``saes/`` declares its options dataclass and its loss terms and
registers both here (as SAELens' ``registry.py`` does); ``saes/__init__.py`` lists the files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from analysis.common.options import merged_options
from shards.errors import ActlakeError
from shards.registry import Registry


class SaeConfigError(ActlakeError, ValueError):
    """The SAE cannot be built as asked."""


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its SAE class and its options dataclass (the source of its CLI flags)."""

    name: str
    sae_class: type
    options: type
    aliases: tuple[str, ...] = ()

    @property
    def k_sparse(self) -> bool:
        return bool(getattr(self.sae_class, "k_sparse", False))

    def options_from(self, values) -> object:
        """This architecture's options, taken by name from ``values`` (the run's merged options)."""
        return self.options(**{f.name: getattr(values, f.name) for f in dataclasses.fields(self.options)})


#: names are looked up case-insensitively (``--arch TopK``), aliases too (``relu``)
ARCHITECTURES: Registry[Architecture] = Registry("SAE architecture", SaeConfigError, casefold=True)
register, get_architecture = ARCHITECTURES.register, ARCHITECTURES.lookup


def create_sae(arch: str, d_in: int, d_sae: int, k: int | None = None, seed: int = 0, options=None):
    """Build an SAE by architecture name (``options``: the architecture's options, default its defaults).

    Example::

        sae = create_sae("topk", d_in=384, d_sae=6144, k=32)
    """
    a = get_architecture(arch)
    if a.k_sparse:
        if not k or k <= 0:
            raise SaeConfigError(f"architecture {a.name!r} needs k > 0 (active latents per row)")
        if k > d_sae:
            raise SaeConfigError(f"k={k} is larger than the SAE's width d_sae={d_sae}; lower --k or raise --expansion")
    return a.sae_class(d_in, d_sae, k, seed, options if options is not None else a.options())


def merged_options_class(module: str = "analysis.sae.config") -> type:
    """One dataclass holding every registered architecture's options (each field once): the run's
    ``--l1-coeff``, ``--bandwidth``, ... flags. Same-named fields of two architectures share a base class."""
    return merged_options("SaeOptions", (a.options for a in ARCHITECTURES.values()),
                          "Options of the SAE architectures (each flag names the architectures it applies to).", module)
