"""Latent dashboards: per-latent statistics collected in one pass (``collect``), contexts and logit effects
(``details``), written as a static site (``site``) by ``actlake sae dashboard`` (``run``)."""
