"""Running actlake on Ray clusters, and the ``actlake`` command line."""
