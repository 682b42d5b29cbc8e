"""One file per SAE architecture; ``analysis.sae.registry`` names them."""
