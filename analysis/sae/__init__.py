"""Sparse autoencoders on activation datasets: architectures, training (one process or Ray Train), encoding."""

from analysis.sae.base import SparseAutoencoder
from analysis.sae.io import load_sae, save_sae
from analysis.sae.registry import ARCHITECTURES, create_sae

__all__ = ["ARCHITECTURES", "SparseAutoencoder", "create_sae", "load_sae", "save_sae"]
