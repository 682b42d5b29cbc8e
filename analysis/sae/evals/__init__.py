"""SAE evaluations of ``actlake sae evaluate`` (one file per metric, registered by name in ``registry``)."""

from analysis.sae.evals import absorption, core_suite, sparse_probing, synthetic  # noqa: F401 - registers them
