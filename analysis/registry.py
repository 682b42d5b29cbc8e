"""Analyses by command name: the CLI builds ``actlake <command>`` from this table.

An analysis is a module with its config dataclass as ``CONFIG`` and a ``run(cfg)`` that returns a
result with ``to_json()``; adding ``actlake probe`` or ``actlake align cka`` is that module and a line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class AnalysisCommand:
    module: str
    help: str  #: one line for ``actlake --help`` (the module is imported only when its command runs)


ANALYSES: dict[str, AnalysisCommand] = {
    "sae train": AnalysisCommand("analysis.sae.train", "Train sparse autoencoders on hooks of a dataset "
                                                       "(one process or Ray Train workers)."),
    "sae evaluate": AnalysisCommand("analysis.sae.evaluate", "Evaluate a trained SAE on stored activations: core "
                                                             "metrics, sparse probing, absorption, synthetic ground "
                                                             "truth (held-out examples by default)."),
    "sae synth": AnalysisCommand("analysis.sae.synth_command", "Write a synthetic activation dataset with known "
                                                               "features (Zipfian, hierarchical, correlated) for "
                                                               "benchmarking SAE architectures."),
    "probe": AnalysisCommand("analysis.probe.run", "Linear probes of a label over every hook: grouped CV, control "
                                                   "tasks, concept depth, steering directions (a Ray task per hook)."),
    "stats": AnalysisCommand("analysis.geometry.run", "Layer statistics over every hook: norms, layer change and "
                                                      "voids, sparsity, massive activations, spectra, intrinsic "
                                                      "dimension, cluster indices / AQI, logit lens "
                                                      "(a task per hook)."),
    "align rsa": AnalysisCommand("analysis.align.rsa_run", "RSA of every hook against brain RDMs: noise ceilings, "
                                                           "bootstrap CIs, permutation p-values (a task per hook)."),
    "align cka": AnalysisCommand("analysis.align.pairs_run", "CKA (streamed, exact at any N) and shape distances "
                                                             "between every pair of hooks of one or two datasets."),
    "align knn": AnalysisCommand("analysis.align.knn_run", "Mutual k-nearest-neighbour alignment between hooks of "
                                                           "two datasets (platonic-representation style)."),
    "align encode": AnalysisCommand("analysis.align.encode_run", "Voxelwise ridge encoding models from every hook to "
                                                                 "every response column (a task per hook)."),
    "align score": AnalysisCommand("analysis.align.score_run", "Brain-Score-style neural predictivity: cross-validated "
                                                               "PLS/ridge, split-half ceiling, ceiled score, layer "
                                                               "commitment (a task per hook)."),
    "align banded": AnalysisCommand("analysis.align.banded_run", "Banded ridge from several hooks to responses "
                                                                 "(himalaya's BandedRidgeCV), per-band R² split, "
                                                                 "unique/shared variance."),
    "report": AnalysisCommand("analysis.common.report_command", "Write report.html (settings, provenance, plots, "
                                                              "sortable tables) for a finished analysis run."),
}

#: help of command groups ("actlake sae ...")
GROUPS: dict[str, str] = {
    "sae": "Sparse autoencoders, transcoders and crosscoders: train on a dataset's hooks, evaluate on stored "
           "activations (evaluate) or in the model (eval), synthetic ground truth (synth), encode a dataset, browse "
           "latents (dashboard).",
    "align": "Model-brain and model-model alignment: RSA, CKA, mutual k-NN/CKNNA, encoding models, Brain-Score "
             "scores, banded ridge; a --data pattern sweeps a model zoo.",
}


def load_analysis(command: str) -> ModuleType:
    """The analysis module of ``command`` (it defines ``CONFIG`` and ``run``)."""
    return importlib.import_module(ANALYSES[command].module)
