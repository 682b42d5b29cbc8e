"""Real pretrained models that install offline from the package registry, as ``--model`` factories."""
