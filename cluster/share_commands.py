"""``actlake copy | card``: sharing datasets — a checked copy (a version, some hooks or rows) elsewhere, and the
dataset card people and the Hugging Face Hub read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from simple_parsing import field

from shards.card import CardOptions
from shards.config import nested, split_list, take_credentials
from shards.errors import ConfigError
from shards.secrets import redact, split_credentials
from shards.storage import ExtendOptions, StorageOptions, check_option_list


@dataclass
class CopyConfig:
    """Copy a dataset (one version, some hooks, some rows) to another place, checking every byte on the way."""

    src: str = field(positional=True, metavar="SRC")
    """The dataset to copy: a local path, s3://…, https://… (a web server) or any fsspec URI."""

    dst: str = field(positional=True, metavar="DST")
    """Where the copy goes (a new dataset; rerunning the same copy resumes it)."""

    hooks: list[str] = field(default_factory=list, nargs="*", metavar="HOOK[,HOOK...]")
    """Hooks to copy (default: all)."""

    version: int | None = None
    """The source version to copy (default: the latest, or, when DST holds this copy begun earlier, the version it
    was begun on: a rerun resumes it; `actlake versions SRC` lists the kept ones)."""

    rows: str = ""
    """Rows START:STOP of the source version, in its row order (STOP exclusive), e.g. 0:100000."""

    examples: str = ""
    """Example ids START:STOP (STOP exclusive), e.g. 0:500."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace a different dataset at DST (without it, DST must be empty or this same copy, which resumes)."""

    threads: int = 8
    """Units copied at once."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options of SRC (--endpoint-url, --anonymous, ...)."""

    dst_endpoint_url: str | None = None
    """DST's S3-compatible endpoint when it differs from SRC's (default: SRC's, or AWS_ENDPOINT_URL)."""

    dst_region: str | None = None
    """DST's region (default: SRC's)."""

    dst_profile: str | None = None
    """DST's profile of ~/.aws (default: SRC's)."""

    dst_storage_option: list[str] = field(default_factory=list, nargs="*", action=ExtendOptions)
    """Other fsspec options of DST as KEY=VALUE (repeat the flag for more)."""

    card: CardOptions = field(default_factory=CardOptions)
    """The copy's card: licence and citation (default: the source's)."""

    dst_credentials: dict = field(default_factory=dict, cmd=False)
    """Key and secret taken out of a ``KEY:SECRET@`` DST URI (never a flag; redacted wherever written)."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        self.card = nested(self.card, CardOptions)
        self.hooks = split_list(self.hooks)
        if isinstance(self.dst_storage_option, str):
            self.dst_storage_option = [self.dst_storage_option]
        check_option_list(self.dst_storage_option, "--dst-storage-option")
        self.dst, creds = split_credentials(self.dst)
        self.dst_credentials = {**self.dst_credentials, **creds}
        take_credentials(self, "src")
        if self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: use at least 1")
        if self.version is not None and self.version < 1:
            raise ConfigError(f"--version {self.version}: versions are numbered from 1 (`actlake versions SRC`)")
        from shards.copy import parse_range

        parse_range(self.rows, "rows"), parse_range(self.examples, "examples")  # refused before any work

    def dst_options(self) -> StorageOptions:
        """DST's storage options: SRC's, with the --dst-* ones laid over (a web server's login never carried)."""
        src = self.storage
        creds = {k: v for k, v in src.credentials.items() if not k.startswith("http_")}
        return StorageOptions(endpoint_url=self.dst_endpoint_url or src.endpoint_url,
                              region=self.dst_region or src.region, profile=self.dst_profile or src.profile,
                              storage_option=self.dst_storage_option or list(src.storage_option),
                              credentials={**creds, **self.dst_credentials})


def cmd_copy(cfg: CopyConfig):
    """``actlake copy``: see ``shards.copy``."""
    import dataclasses

    from shards.copy import CopyPlan, copy_dataset, parse_range

    def plan_of(m) -> CopyPlan:
        if cfg.hooks:
            missing = [h for h in cfg.hooks if h not in m.hooks]
            if missing:
                raise ConfigError(f"--hooks {missing}: not in {cfg.src} (it has {', '.join(m.hooks)})")
        return CopyPlan(version=m.version, hooks=tuple(cfg.hooks) if cfg.hooks else None,
                        rows=parse_range(cfg.rows, "rows"), examples=parse_range(cfg.examples, "examples"))

    config = redact({"command": "copy", **dataclasses.asdict(cfg)})
    return copy_dataset(cfg.src, cfg.dst, plan_of, src_options=cfg.storage, dst_options=cfg.dst_options(),
                        overwrite=cfg.overwrite, threads=cfg.threads, version=cfg.version, config=config,
                        provenance=cfg.card.to_details())


@dataclass
class CardConfig:
    """Write a dataset's card (README.md, in the Hugging Face Hub's layout) from its manifest again."""

    uri: str = field(positional=True, metavar="URI")
    """The dataset."""

    card: CardOptions = field(default_factory=CardOptions)
    """Licence and citation to show (default: those recorded when the dataset was made)."""

    out: str = ""
    """Write the card to this file instead of URI/README.md (e.g. for a dataset served read-only)."""

    print: bool = field(default=False, action="store_true")
    """Print the card instead of writing it."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options (endpoint, region, profile, ...)."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        self.card = nested(self.card, CardOptions)
        take_credentials(self, "uri", "out")


def cmd_card(cfg: CardConfig) -> int:
    """``actlake card``: the card printed, written to ``--out`` or to URI/README.md. It never replaces a dataset's
    own file nor a file that is not a card (``shards.card.card_destination``, ``card_conflict``), checked before
    the manifest is read."""
    from cluster.dataset_commands import check_version_suffix
    from shards.card import CARD, card_conflict, card_destination, render_card
    from shards.manifest import read_manifest
    from shards.storage import Storage

    check_version_suffix("card", cfg.uri, cfg.storage)
    storage = Storage(cfg.uri, cfg.storage)
    out = Storage(cfg.out, cfg.storage) if cfg.out and not cfg.print else None
    if out is not None:
        card_destination(out, storage)
    elif not cfg.print:
        storage.require_writable("writing its card (give --out FILE or --print)")
        conflict = card_conflict(storage)
        if conflict:
            raise ConfigError(f"{conflict}. Move it away to write the card there, or give --out FILE or --print.")
    manifest = read_manifest(storage)
    text = render_card(manifest, storage.display(), cfg.card)  # control characters of the manifest escaped
    if cfg.print:
        print(text, end="")
        return 0
    if out is not None:
        out.put_bytes("", text.encode())
        print(json.dumps({"card": out.display(), "bytes": len(text.encode())}))
        return 0
    storage.put_bytes(CARD, text.encode())
    print(json.dumps({"card": storage.display(CARD), "bytes": len(text.encode())}))
    return 0


@dataclass
class ExportConfig:
    """Write a hook of a dataset in another tool's layout (saelens: SAELens' cached activations)."""

    uri: str = field(positional=True, metavar="URI")
    """The dataset."""

    format: Literal["saelens"] = "saelens"
    """saelens: the folder SAELens' CacheActivationsRunner writes and `use_cached_activations` reads."""

    hook: str = ""
    """The hook to export (required when the dataset has several)."""

    out: str = ""
    """The folder to write (must be empty or absent)."""

    context_size: int = 0
    """Tokens per row (SAELens' context_size; default: the dataset's own, else 128)."""

    column: str = ""
    """The activation column's name, i.e. SAELens' hook_name (default: the hook_name an actlake SAE trained on the
    hook has in its cfg.json: the TransformerLens name, blocks.N.hook_resid_post for resid.N, ..., else the module
    path; `--column resid.3` names it by our alias)."""

    dtype: Literal["float32", "float16"] = "float32"
    """The stored dtype (SAELens' `dtype`)."""

    max_tokens: int = 0
    """Export at most this many tokens (0: all)."""

    data_version: int | None = None
    """The version to export (default: the latest)."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options of URI."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        take_credentials(self, "uri")
        if not self.out:
            raise ConfigError("--out DIR: the folder to write the export to")
        if self.context_size < 0 or self.max_tokens < 0:
            raise ConfigError("--context-size and --max-tokens must be >= 0")


def export_column(hook: str, module: str | None, given: str = "") -> tuple[str, str]:
    """The export's activation column and why it has that name: SAELens' ``ActivationsStore`` reads the column
    named by its ``hook_name``, so it is named as the cfg.json of an actlake SAE trained on ``hook`` names it
    (``analysis.sae.io.saelens_hook_name``), unless ``--column`` says otherwise."""
    from analysis.sae.io import saelens_hook_name

    if given:
        return given, f"named by --column (actlake hook {hook})"
    column = saelens_hook_name(hook, module) or hook
    how = ("its TransformerLens name" if column not in (hook, module) else
           "its module path (the hook has no TransformerLens name)" if column != hook else "its own name")
    return column, (f"actlake hook {hook} as {how}: the hook_name in the cfg.json of an actlake SAE trained on "
                    f"it, which SAELens' ActivationsStore reads this column by")


def cmd_export(cfg: ExportConfig):
    from shards.adapters.saelens import export_saelens
    from shards.reader import open_dataset

    ds = open_dataset(cfg.uri, cfg.storage, version=cfg.data_version)
    hooks = list(ds.hooks)
    hook = cfg.hook or (hooks[0] if len(hooks) == 1 else "")
    if hook not in ds.hooks:
        raise ConfigError(f"--hook {cfg.hook or '(none)'}: choose one of {', '.join(hooks)}")
    if ds.schema.hooks[hook].shape and len(ds.schema.hooks[hook].shape) != 1:
        raise ConfigError(f"--hook {hook} has shape {list(ds.schema.hooks[hook].shape)}; SAELens trains on vectors")
    if (ds.manifest.provenance.details.get("packing") or {}).get("pool", "none") not in ("none", None):
        raise ConfigError(f"{cfg.uri} holds pooled rows (one per example); SAELens' layout is one row per token")
    column, note = export_column(hook, ds.hook_spec(hook).module, cfg.column)
    try:
        return export_saelens(ds, hook, cfg.out, context_size=cfg.context_size or None, column=column,
                              column_note=note, dtype=cfg.dtype, max_tokens=cfg.max_tokens or None)
    except (FileExistsError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
