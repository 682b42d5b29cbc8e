"""Bridges to other frameworks, one module each (``ray``, ``hf``, ``torch``); the core never imports them,
so ``import shards`` loads none of Ray, ``datasets`` or ``torch.utils.data``."""
