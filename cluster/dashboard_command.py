"""``actlake sae dashboard`` and ``actlake sae encode [--dashboard SITE]``: the dashboard (``analysis``) handed
the image sources of ``ingest`` for the thumbnails of image datasets, which ``analysis`` does not import."""

from __future__ import annotations

from analysis.sae.config import SaeEncodeConfig
from analysis.sae.dashboard.run import DashboardSummary, SaeDashboardConfig
from analysis.sae.dashboard.run import run as build_dashboard
from analysis.sae.dashboard.views import ImageLookup
from analysis.sae.encode import EncodeSummary
from analysis.sae.encode import run as encode
from ingest.image_sources import load_image_source
from shards.reader import Dataset


def open_images(ds: Dataset, source: str, storage) -> ImageLookup:
    """Stimulus id -> image, from ``source`` read with the fields the extraction job used."""
    job = ds.manifest.job_identity or {}
    src = load_image_source(source, job.get("image_field"), job.get("id_field"), storage_options=storage)
    where = {sid: i for i, sid in enumerate(src.ids)}
    return lambda sid: src.image(where[sid])


def cmd_dashboard(cfg: SaeDashboardConfig) -> DashboardSummary:
    """Build the static site of an SAE's latents (text contexts, or stimulus thumbnails and patch heat maps)."""
    return build_dashboard(cfg, open_images)


def cmd_encode(cfg: SaeEncodeConfig) -> EncodeSummary:
    """Encode the dataset with the SAE; with ``--dashboard SITE``, then build its dashboard there."""
    summary = encode(cfg)
    if cfg.dashboard:
        # the version encode read, whatever was committed since
        data = cfg.data.at(summary.dataset.version) if cfg.data is not None and cfg.data.uri else cfg.data
        build_dashboard(SaeDashboardConfig(sae=cfg.sae, data=data, out=cfg.dashboard, top=cfg.top_examples,
                                           context=cfg.context, batch_size=cfg.batch_size,
                                           min_position=cfg.min_position, overwrite=cfg.overwrite,
                                           storage=cfg.storage),
                        open_images)
    return summary
