"""RDM methods, one file each; importing this package registers them (``analysis.align.registry``)."""

from analysis.align.rdms import correlation, cosine, crossnobis, euclidean  # noqa: F401
