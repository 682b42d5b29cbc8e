"""One file per SAE architecture, each registering itself (``analysis.sae.registry``); a new one is a file
and a line here."""

from analysis.sae.saes import batchtopk, jumprelu, matryoshka, mp, relu, snmf, topk  # noqa: F401 - they register
