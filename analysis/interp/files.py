"""The files a `sae explain` output holds (named once: `sae score`, `sae dashboard` and `sae evaluate` read them)."""

EXPLANATIONS = "explanations.jsonl"  #: one object per explained latent
CONTEXTS = "contexts.jsonl"  #: per selected latent: contexts shown, held out, not active
SCORES_DIR = "scores"  #: `sae score`'s default output under the explain output
SCORES = "scores.jsonl"  #: one object per latent, scorer and explanation (own / random)
PREDICTIONS = "predictions.jsonl"  #: the scorer's answer per sample
TABLE, TABLE_INFO = "latent_table.npz", "latent_table.json"  #: the collection pass kept for `sae dashboard`


def explanations_digest(prompt_hashes: list[str]) -> str:
    """What a `sae score` run scored: a digest of the explanations' prompt hashes, in latent order."""
    import hashlib

    return hashlib.sha256(" ".join(prompt_hashes).encode()).hexdigest()[:16]


def explained_by(folder, sae_digest: str, what: str) -> tuple[list[dict], dict | None]:
    """A finished `sae explain` output of the SAE whose digest is ``sae_digest``: (its explanations, the summary
    of `sae score` under it, or None when it was not scored or was scored before the explanations changed).
    Raises ``ValueError`` naming the problem otherwise; ``what`` names the option in that message."""
    import json

    try:
        summary = json.loads(folder.get_bytes("summary.json"))
        rows = [json.loads(x) for x in folder.get_bytes(EXPLANATIONS).decode().splitlines() if x.strip()]
    except FileNotFoundError:
        raise ValueError(f"{what} {folder.display()}: no finished `actlake sae explain` run (summary.json and "
                         f"{EXPLANATIONS}); run it, or rerun it to finish") from None
    if summary.get("sae_digest") != sae_digest:
        raise ValueError(f"{what} {folder.display()} explains another SAE (or this one before it was trained "
                         "again): explain this SAE with `actlake sae explain`")
    try:
        scored = json.loads(folder.get_bytes(f"{SCORES_DIR}/summary.json"))
    except FileNotFoundError:
        return rows, None
    order = [r["prompt_hash"] for r in sorted(rows, key=lambda r: r["latent"])]
    if (scored.get("settings") or {}).get("explanations") != explanations_digest(order):
        return rows, None  # scored before the explanations were made again: those scores are not theirs
    return rows, scored


def table_info(ds, hook: str, min_position: int, n_top: int, sae_digest: str, seed: int) -> dict:
    """What a kept collection pass was made from (``TABLE_INFO``)."""
    return {"dataset_id": ds.dataset_id, "version": ds.version, "hook": hook, "min_position": min_position,
            "n_top": n_top, "sae": sae_digest, "seed": seed}


def read_kept_table(folder, want: dict):
    """The collection pass kept in ``folder`` when it was made from what ``want`` (``table_info``) says, with at
    least ``want["n_top"]`` top rows per latent (any seed when ``want`` has none); else None (a damaged file too:
    the caller makes its own pass)."""
    import json

    from analysis.sae.dashboard.collect import LatentTable

    try:
        info = json.loads(folder.get_bytes(TABLE_INFO))
        if any(info.get(k) != v for k, v in want.items() if k != "n_top") or info.get("n_top", 0) < want["n_top"]:
            return None
        return LatentTable.from_npz(folder.get_bytes(TABLE))
    except Exception:  # noqa: BLE001 - missing or damaged: not usable
        return None
