"""Sparse autoencoders on activation datasets: architectures, training (one process or Ray Train), encoding."""

import analysis.sae.saes  # noqa: F401 - registers the architectures
from analysis.sae.base import SparseAutoencoder
from analysis.sae.io import load_sae, save_sae
from analysis.sae.registry import ARCHITECTURES, create_sae

__all__ = ["ARCHITECTURES", "SparseAutoencoder", "create_sae", "load_sae", "save_sae"]
