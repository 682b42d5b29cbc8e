"""Linear probes over a dataset's hooks: controls, concept depth, steering directions (``actlake probe``).

The batched solvers also work on a user's own matrices: see ``analysis.probe.probes.logistic.fit_logistic`` and
``analysis.probe.probes.ridge.fit_ridge`` with ``analysis.probe.problems.Features``.
"""

import analysis.probe.probes  # noqa: F401, E402 - registers the probe kinds
