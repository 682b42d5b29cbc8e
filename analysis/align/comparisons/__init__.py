"""RDM comparison methods, one file each; importing this package registers them."""

from analysis.align.comparisons import cosine, cov_weighted, kendall_a, pearson, rho_a, spearman  # noqa: F401
