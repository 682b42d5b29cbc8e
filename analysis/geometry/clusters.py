"""Cluster indices of labelled rows, per layer: where do classes separate?

Exact over all rows (per-class moments, merged batch by batch as Chan et al. 1979): Calinski–Harabasz (as
scikit-learn), Xie–Beni with hard memberships (Σ‖x − c_y‖² / (n · min_{i≠j}‖c_i − c_j‖²)) and AQI; and
Davies–Bouldin (as scikit-learn), in two passes: the class centroids from the first, each row's distance to its
centroid in the second. On the seeded sample (they need all pairwise distances): silhouette (scikit-learn) and
Dunn (min distance between points of different classes / max class diameter).

AQI (Borah et al. 2025, "Alignment Quality Index") combines Calinski–Harabasz and Xie–Beni. Public code
min–max normalises both across the groups of one run and scores a t-SNE/UMAP embedding, so a number depends
on what else was in the run. Here each index is mapped to [0, 1] on its own, in the raw activation space:
CH ↦ B / (B + W) (the between-class share of the variance, a monotone function of CH for fixed n and k) and
XB ↦ 1 / (1 + XB); AQI = γ · B/(B + W) + (1 − γ) / (1 + XB). ``--aqi-space tsne`` adds ``aqi_tsne``: the same
formula on a 2-D t-SNE of the sample, for comparison with the papers' numbers.
"""

from __future__ import annotations

import numpy as np

from analysis.geometry.registry import Batch, Definition, HookContext, Sample, Statistic, StatResult, register

AQI_SOURCE = "Borah et al. 2025, Alignment Quality Index (AQI)"
WORKING_MB = 128  #: scikit-learn's pairwise chunks (its default, 1 GiB, set the run's peak memory)


class ClassMoments:
    """Per-class count, mean and sum of squared deviations from the class mean, mergeable batch by batch."""

    def __init__(self, k: int, d: int) -> None:
        self.n, self.mean, self.m2 = np.zeros(k), np.zeros((k, d)), np.zeros(k)

    def add(self, x: np.ndarray, codes: np.ndarray) -> None:
        keep = codes >= 0
        x, codes = x[keep], codes[keep]
        k = len(self.n)
        nb = np.bincount(codes, minlength=k).astype(np.float64)
        sums = _class_sums(x, codes, k)
        present = nb > 0
        mb = np.zeros_like(self.mean)
        mb[present] = sums[present] / nb[present, None]
        dev = x - mb[codes]
        m2b = np.bincount(codes, weights=np.einsum("ij,ij->i", dev, dev), minlength=k)
        n = self.n + nb
        delta = mb - self.mean
        w = np.divide(nb, n, out=np.zeros_like(n), where=n > 0)
        self.m2 = self.m2 + m2b + np.einsum("ij,ij->i", delta, delta) * self.n * w
        self.mean = self.mean + delta * w[:, None]
        self.n = n

    def indices(self, gamma: float) -> dict[str, float]:
        """Calinski–Harabasz, Xie–Beni and AQI of the classes seen (empty classes left out)."""
        has = self.n > 0
        n_c, mean_c, m2_c = self.n[has], self.mean[has], self.m2[has]
        n, k = n_c.sum(), len(n_c)
        if k < 2:
            return {"calinski_harabasz": None, "xie_beni": None, "aqi": None}
        grand = (n_c[:, None] * mean_c).sum(axis=0) / n
        between = float((n_c * ((mean_c - grand) ** 2).sum(axis=1)).sum())
        within = float(m2_c.sum())
        ch = 1.0 if within == 0 else between * (n - k) / (within * (k - 1))  # scikit-learn's convention
        sq = ((mean_c[:, None, :] - mean_c[None, :, :]) ** 2).sum(axis=2)
        min_sep = float(sq[~np.eye(k, dtype=bool)].min())
        xb = within / (n * min_sep) if min_sep > 0 else float("inf")
        share = between / (between + within) if between + within > 0 else 0.0
        return {"calinski_harabasz": float(ch), "xie_beni": float(xb), "aqi": gamma * share + (1 - gamma) / (1 + xb)}


def _class_sums(x: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Per-class row sums (k × d) as one sparse one-hot product."""
    from scipy.sparse import csr_matrix

    onehot = csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(k, len(codes)))
    return np.asarray(onehot @ x)


def davies_bouldin(centroids: np.ndarray, mean_dist: np.ndarray) -> float:
    """scikit-learn's ``davies_bouldin_score`` from the class centroids (k × d) and each class's mean distance to
    its centroid: the mean over classes of max_{j≠i} (s_i + s_j) / ‖c_i − c_j‖ (0 when every spread or every
    centroid distance is ~0; coinciding centroids are left out of the max, as scikit-learn does)."""
    diff = centroids[:, None, :] - centroids[None, :, :]
    dist = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    if np.allclose(mean_dist, 0) or np.allclose(dist, 0):
        return 0.0
    dist[dist == 0] = np.inf
    return float(np.mean(np.max((mean_dist[:, None] + mean_dist[None, :]) / dist, axis=1)))


def cluster_indices(x: np.ndarray, labels: np.ndarray, gamma: float = 0.5) -> dict[str, float]:
    """Calinski–Harabasz, Xie–Beni and AQI of rows ``x`` with class ``labels`` (any hashable values)."""
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    mom = ClassMoments(len(classes), np.asarray(x).shape[1])
    mom.add(np.asarray(x, dtype=np.float64), codes)
    return mom.indices(gamma)


def dunn_index(x: np.ndarray, labels: np.ndarray) -> float:
    """min distance between points of different classes / max distance between points of one class."""
    from sklearn.metrics import pairwise_distances_chunked

    labels = np.asarray(labels)
    sep, diam, start = np.inf, 0.0, 0
    for chunk in pairwise_distances_chunked(np.asarray(x, dtype=np.float64)):
        same = labels[start:start + len(chunk), None] == labels[None, :]
        sep = min(sep, float(np.where(same, np.inf, chunk).min()))
        diam = max(diam, float(np.where(same, chunk, 0.0).max()))
        start += len(chunk)
    return sep / diam if diam > 0 else float("inf")


class ClusterAccumulator:
    """Class moments in the first pass, distances to the class centroids in the second (``TwoPass``)."""

    def __init__(self, ctx: HookContext) -> None:
        self.ctx = ctx
        self.moments = ClassMoments(len(ctx.classes), ctx.width)
        self.dist_sum = np.zeros(len(ctx.classes))  #: Σ ‖x − c_y‖ per class (second pass)

    def update(self, b: Batch) -> None:
        self.moments.add(b.x, b.label)

    def rescan(self, b: Batch) -> None:
        keep = b.label >= 0
        dev = b.x[keep] - self.moments.mean[b.label[keep]]
        self.dist_sum += np.bincount(b.label[keep], weights=np.sqrt(np.einsum("ij,ij->i", dev, dev)),
                                     minlength=len(self.dist_sum))

    def _davies_bouldin(self) -> float | None:
        has = self.moments.n > 0
        k, n = int(has.sum()), float(self.moments.n.sum())
        if k < 2 or k >= n:  # scikit-learn refuses these label counts
            return None
        return davies_bouldin(self.moments.mean[has], self.dist_sum[has] / self.moments.n[has])

    def _sampled(self, sample: Sample) -> dict[str, float | None]:
        import sklearn
        from sklearn.metrics import silhouette_score

        keep = sample.label >= 0
        x, y = sample.x[keep], sample.label[keep]
        if len(np.unique(y)) < 2 or len(np.unique(y)) >= len(y):
            return {"silhouette": None, "dunn": None}
        with sklearn.config_context(working_memory=WORKING_MB):  # pairwise distances in chunks of this size
            return {"silhouette": float(silhouette_score(x, y)), "dunn": dunn_index(x, y)}

    def finish(self, sample: Sample) -> StatResult:
        s = self.ctx.settings
        out = StatResult()
        out.scalars.update(self.moments.indices(s.aqi_gamma))
        out.scalars["davies_bouldin"] = self._davies_bouldin()
        out.scalars.update(self._sampled(sample))
        if s.aqi_space == "tsne":
            out.scalars["aqi_tsne"] = _tsne_aqi(sample, s.aqi_gamma, s.seed)
            out.definitions["aqi_tsne"] = Definition("AQI on a 2-D t-SNE of the sample (scikit-learn TSNE)",
                                                     AQI_SOURCE, exact=False)
        out.definitions.update(
            calinski_harabasz=Definition("(B/(k-1)) / (W/(n-k)), as sklearn.metrics.calinski_harabasz_score",
                                         "Calinski & Harabasz 1974"),
            xie_beni=Definition("hard-membership Xie–Beni: W / (n · min_{i≠j} ‖c_i − c_j‖²)", "Xie & Beni 1991"),
            aqi=Definition(f"γ·B/(B+W) + (1−γ)/(1+XB), γ={s.aqi_gamma:g}, raw activation space", AQI_SOURCE),
            silhouette=Definition("mean silhouette (sklearn.metrics.silhouette_score, euclidean)",
                                  "Rousseeuw 1987", exact=False),
            davies_bouldin=Definition("sklearn.metrics.davies_bouldin_score, over all rows (two passes)",
                                      "Davies & Bouldin 1979"),
            dunn=Definition("min between-class point distance / max class diameter", "Dunn 1974", exact=False))
        return out


def _tsne_aqi(sample: Sample, gamma: float, seed: int) -> float | None:
    from sklearn.manifold import TSNE

    keep = sample.label >= 0
    if keep.sum() < 5:
        return None
    emb = TSNE(n_components=2, random_state=seed, init="pca").fit_transform(sample.x[keep])
    return cluster_indices(emb, sample.label[keep], gamma)["aqi"]


register(Statistic("clusters", "with --label: silhouette, Davies–Bouldin, Calinski–Harabasz, Dunn, Xie–Beni, AQI",
                   ClusterAccumulator, order=60, needs_label=True))
