"""Modalities by name; a new one is a module implementing ``Modality`` and a line here."""

from __future__ import annotations

from ingest.config import ExtractConfig
from ingest.modalities.base import Modality
from ingest.modalities.image import ImageModality
from ingest.modalities.text import TextModality
from ingest.models import LoadedModel

#: ``--modality auto`` takes the first that detects the job (text takes anything)
MODALITIES: dict[str, type[Modality]] = {m.name: m for m in (ImageModality, TextModality)}


def get_modality(name: str) -> type[Modality]:
    return MODALITIES[name]


def choose_modality(cfg: ExtractConfig, loaded: LoadedModel) -> type[Modality]:
    """The modality ``cfg`` names, or for ``auto`` the first one that detects the model and data."""
    if cfg.modality != "auto":
        return MODALITIES[cfg.modality]
    return next(m for m in MODALITIES.values() if m.detects(cfg, loaded))


__all__ = ["MODALITIES", "Modality", "choose_modality", "get_modality"]
