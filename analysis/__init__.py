"""Everything that consumes activation datasets: SAE training and encoding (``sae/``), and what every analysis
shares (``common/``); ``registry.py`` names the analyses the CLI offers."""
