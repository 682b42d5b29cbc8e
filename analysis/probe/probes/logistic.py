"""L2-penalised logistic regression, scikit-learn's objective: binary (one sigmoid column) or multinomial (one
column per class), intercept not penalised, ``reg`` = 1/C.

All fits of a hook are one problem over a weight matrix ``(d, fits x columns)``: every objective evaluation is one
pass of wide matrix products over the items, solved by L-BFGS (strong Wolfe line search) to a gradient tolerance
when the items are in memory; streamed items get minibatch Adam on the same objective instead. The fits are
independent, so the joint optimum is each fit's own optimum.

L-BFGS runs in preconditioned coordinates (a change of variables, so the optimum is scikit-learn's): each weight
column is ``V diag((c·λ + penalty)^-1/2) u`` with ``V, λ`` the eigenvectors and eigenvalues of the standardised
features' covariance and ``c`` the logistic curvature at the start. Activations are strongly anisotropic, and
without this L-BFGS (and scikit-learn's lbfgs) needs several times more passes over the items.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from analysis.common.cost import timed
from analysis.probe.problems import Features, Fit, FitResult, ProbeData
from analysis.probe.registry import PassCost, ProbeKind, SolverOptions, register


class _Batched:
    """The fits' shapes, masks and penalties, shared by the full-batch and minibatch solvers."""

    def __init__(self, feats: Features, data: ProbeData, fits: list[Fit]) -> None:
        self.feats, self.fits = feats, fits
        self.K = 1 if data.n_classes == 2 else data.n_classes
        self.P = len(fits)
        self.train = data.masks(fits, "train")
        self.test = data.masks(fits, "test")
        self.n_train = self.train.sum(0).double().clamp_min(1)
        self.targets = torch.from_numpy(np.ascontiguousarray(data.targets))
        self.target_of = torch.tensor([f.target for f in fits], dtype=torch.long)
        reg = torch.tensor([f.solve_reg for f in fits], dtype=torch.float64)
        self.penalty = (reg / self.n_train).repeat_interleave(self.K)  # per column, per training item

    def y(self, items) -> torch.Tensor:
        return self.targets[items][:, self.target_of]

    def raw(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised-space (W, b) to the stored values' space: x @ We + be = ((x - mean) / std) @ W + b."""
        d = self.feats.d
        W, b = theta[:d], theta[d]
        We = W * self.feats.inv_std[:, None]
        return We, b - (self.feats.mean * self.feats.inv_std) @ W

    def point_loss(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per item and fit: the loss, and d loss / d logits (m, P, K)."""
        if self.K == 1:
            zz, yy = z[..., 0], y.to(z.dtype)
            return F.softplus(zz) - yy * zz, (torch.sigmoid(zz) - yy)[..., None]
        logp = torch.log_softmax(z, -1)
        g = logp.exp()
        g.scatter_add_(-1, y[..., None], torch.full_like(g[..., :1], -1.0))
        return -logp.gather(-1, y[..., None])[..., 0], g

    def objective(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        d, K, P = self.feats.d, self.K, self.P
        We, be = self.raw(theta)
        We32, be32 = We.float(), be.float()
        gWe = torch.zeros((d, P * K), dtype=torch.float64)
        gbe = torch.zeros(P * K, dtype=torch.float64)
        loss = 0.0
        inv_n = (1.0 / self.n_train).float()
        for items, x in self.feats.chunks():
            w = self.train[items].float() * inv_n
            z = torch.addmm(be32, x, We32).view(len(x), P, K)
            lo, g = self.point_loss(z, self.y(items))
            loss += float((lo * w).sum(dtype=torch.float64))
            g = (g * w[..., None]).reshape(len(x), P * K)
            gWe += (x.t() @ g).double()
            gbe += g.sum(0, dtype=torch.float64)
        W = theta[:d]
        gW = gWe * self.feats.inv_std[:, None] - (self.feats.mean * self.feats.inv_std)[:, None] * gbe[None, :]
        gW += self.penalty * W
        loss += 0.5 * float((self.penalty * (W * W).sum(0)).sum())
        return loss, torch.cat([gW, gbe[None]])

    def scores(self, We: torch.Tensor, be: torch.Tensor) -> np.ndarray:
        correct = torch.zeros(self.P, dtype=torch.float64)
        total = torch.zeros(self.P, dtype=torch.float64)
        We32, be32 = We.float(), be.float()
        for items, x in self.feats.chunks():
            z = torch.addmm(be32, x, We32).view(len(x), self.P, self.K)
            pred = (z[..., 0] > 0).long() if self.K == 1 else z.argmax(-1)
            t = self.test[items]
            correct += ((pred == self.y(items)) & t).sum(0).double()
            total += t.sum(0).double()
        return torch.where(total > 0, correct / total.clamp_min(1), torch.nan).numpy()

    def result(self, theta: torch.Tensor, iterations: int, notes: dict) -> FitResult:
        We, be = self.raw(theta)
        W = We.t().reshape(self.P, self.K, -1).float()
        b = be.reshape(self.P, self.K).float()
        return FitResult(list(W), list(b), self.scores(We, be), iterations, notes)


def _covariance(feats: Features) -> torch.Tensor:
    """Covariance of the standardised items (one pass; float32 within a chunk is plenty for a preconditioner,
    and keeps the pass's memory at one float32 chunk)."""
    s = torch.zeros(feats.d, dtype=torch.float64)
    ss = torch.zeros((feats.d, feats.d), dtype=torch.float64)
    mean, inv = feats.mean.float(), feats.inv_std.float()
    for _, x in feats.chunks():
        xs = x.sub_(mean).mul_(inv)  # the chunk is already a float32 copy
        s += xs.sum(0, dtype=torch.float64)
        ss += (xs.t() @ xs).double()
    m = s / feats.n
    return ss / feats.n - torch.outer(m, m)


def _lbfgs(prob: _Batched, opts: SolverOptions) -> FitResult:
    d, PK = prob.feats.d, prob.P * prob.K
    lam, V = torch.linalg.eigh(_covariance(prob.feats))
    curvature = 0.25 if prob.K == 1 else 1.0 / prob.K
    S = (curvature * lam.clamp_min(0)[:, None] + prob.penalty[None, :]).clamp_min(1e-12).rsqrt()  # (d, PK)

    def weights(u: torch.Tensor) -> torch.Tensor:
        return torch.cat([V @ (S * u[:d]), u[d:]])

    u = torch.zeros((d + 1, PK), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([u], lr=1, max_iter=opts.max_iter, max_eval=opts.max_iter * 5 // 4,
                            tolerance_grad=opts.tol, tolerance_change=1e-14, history_size=20,
                            line_search_fn="strong_wolfe")
    evals, grad_max = [0], [math.nan]

    def closure():
        loss, grad = prob.objective(weights(u.detach()))
        grad_max[0] = float(grad.abs().max())
        u.grad = torch.cat([S * (V.t() @ grad[:d]), grad[d:]])
        evals[0] += 1
        return torch.tensor(loss, dtype=torch.float64)

    opt.step(closure)
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    return prob.result(weights(u.detach()), iters, {"solver": "lbfgs", "evaluations": evals[0],
                                                    "max_abs_gradient": grad_max[0],
                                                    "converged": grad_max[0] <= opts.tol})


def _minibatch(prob: _Batched, opts: SolverOptions) -> FitResult:
    """Adam on standardised rows streamed in windows (shuffled inside each window), learning rate decaying
    linearly to zero; the same objective as the full-batch solver, its gradient estimated per minibatch."""
    d, P, K = prob.feats.d, prob.P, prob.K
    gen = torch.Generator().manual_seed(0)
    W = torch.zeros((d, P * K), requires_grad=True)
    b = torch.zeros(P * K, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=opts.lr)
    steps_total = max(1, opts.epochs * math.ceil(prob.feats.n / opts.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps_total))
    penalty = prob.penalty.float()
    step = 0
    for _ in range(opts.epochs):
        for items, x in prob.feats.chunks():
            items = torch.arange(items.start, items.stop) if isinstance(items, slice) else items
            xs = prob.feats.standardized(x).float()
            for sel in torch.randperm(len(x), generator=gen).split(opts.batch_size):
                tr = prob.train[items[sel]].float()
                z = (xs[sel] @ W + b).view(len(sel), P, K)
                lo, _ = prob.point_loss(z, prob.y(items[sel]))
                loss = ((lo * tr).sum(0) / tr.sum(0).clamp_min(1)).sum() + 0.5 * (penalty * (W * W).sum(0)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
    theta = torch.cat([W.detach(), b.detach()[None]]).double()
    return prob.result(theta, step, {"solver": "minibatch-adam", "epochs": opts.epochs, "steps": step})


def logistic_pass_cost(feats: Features, data: ProbeData, fits: list[Fit]) -> PassCost:
    """The full-batch solver's parts, timed on ``feats``: the covariance pass, its eigendecomposition and one
    objective pass for these fits (the median of three: on cores shared with other jobs the best of a few
    passes was half of what a whole run's passes took)."""
    prob = _Batched(feats, data, fits)
    cov, setup = timed(lambda: _covariance(feats))
    _, fixed = timed(lambda: torch.linalg.eigh(cov))
    theta = torch.zeros((feats.d + 1, prob.P * prob.K), dtype=torch.float64)
    per_pass = float(np.median([timed(lambda: prob.objective(theta))[1] for _ in range(3)]))
    return PassCost(per_pass, setup, fixed)


def fit_logistic(feats: Features, data: ProbeData, fits: list[Fit], opts: SolverOptions) -> FitResult:
    """Every fit of ``fits`` on ``feats``: full-batch L-BFGS in memory, minibatch Adam when streamed."""
    prob = _Batched(feats, data, fits)
    return _lbfgs(prob, opts) if feats.in_memory else _minibatch(prob, opts)


LOGISTIC = register(ProbeKind("logistic", ("classify",), "accuracy", "1/C", (1e-4, 1e-3, 1e-2, 1e-1),
                              fit_logistic, pass_cost=logistic_pass_cost))
