"""What every analysis shares: data arguments, streaming a hook's rows, joining rows with external tables,
run directories (new / resume / done, fingerprint, provenance), results and plots written to any URI,
and per-hook fan-out on Ray. An analysis receives its data and callbacks from these; it does no I/O itself."""
