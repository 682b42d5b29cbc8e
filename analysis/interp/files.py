"""The files a `sae explain` output holds (named once: `sae score`, `sae dashboard` and `sae evaluate` read them)."""

EXPLANATIONS = "explanations.jsonl"  #: one object per explained latent
CONTEXTS = "contexts.jsonl"  #: per selected latent: contexts shown, held out, not active
SCORES_DIR = "scores"  #: `sae score`'s default output under the explain output
SCORES = "scores.jsonl"  #: one object per latent, scorer and explanation (own / random)
PREDICTIONS = "predictions.jsonl"  #: the scorer's answer per sample
TABLE, TABLE_INFO = "latent_table.npz", "latent_table.json"  #: the collection pass kept for `sae dashboard`
