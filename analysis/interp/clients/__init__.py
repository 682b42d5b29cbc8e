"""Explainer and scorer models: ``base.make_client(spec)``; one module per kind (``base.KINDS``)."""
