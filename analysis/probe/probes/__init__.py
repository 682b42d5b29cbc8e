"""One file per probe kind, each registering itself (``analysis.probe.registry``); a new one is a file and a
line here."""

from analysis.probe.probes import logistic, ridge  # noqa: F401 - they register
