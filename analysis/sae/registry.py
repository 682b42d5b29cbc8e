"""SAE architectures by name (one file each under ``saes/``)."""

from __future__ import annotations

import difflib

from analysis.sae.base import SparseAutoencoder
from analysis.sae.saes.batchtopk import BatchTopKSAE
from analysis.sae.saes.jumprelu import JumpReLUSAE
from analysis.sae.saes.matryoshka import MatryoshkaSAE
from analysis.sae.saes.mp import MatchingPursuitSAE
from analysis.sae.saes.relu import ReluSAE
from analysis.sae.saes.topk import TopKSAE
from shards.errors import ActlakeError

ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {
    "relu": ReluSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "jumprelu": JumpReLUSAE,
    "matryoshka": MatryoshkaSAE,
    "mp": MatchingPursuitSAE,
}
ALIASES = {"standard": "relu", "l1": "relu", "batch_topk": "batchtopk", "matching_pursuit": "mp",
           "mp_sae": "mp", "matryoshka_batchtopk": "matryoshka"}


class SaeConfigError(ActlakeError, ValueError):
    """The SAE cannot be built as asked."""


def arch_class(name: str) -> type[SparseAutoencoder]:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ARCHITECTURES:
        close = difflib.get_close_matches(name, list(ARCHITECTURES) + list(ALIASES), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise SaeConfigError(f"unknown SAE architecture {name!r}.{hint} Known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[key]


def create_sae(arch: str, d_in: int, d_sae: int, k: int | None = None, seed: int = 0, **options) -> SparseAutoencoder:
    """Build an SAE by architecture name.

    Example::

        sae = create_sae("topk", d_in=384, d_sae=6144, k=32)
    """
    cls = arch_class(arch)
    if cls.k_sparse:
        if not k or k <= 0:
            raise SaeConfigError(f"architecture {cls.arch!r} needs k > 0 (active latents per row)")
        if k > d_sae:
            raise SaeConfigError(f"k={k} is larger than the SAE's width d_sae={d_sae}; lower --k or raise "
                                 "--expansion")
    return cls(d_in, d_sae, k, seed, **options)
