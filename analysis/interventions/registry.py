"""Intervention kinds by name. Each file beside this one declares its options dataclass and how it builds a
``shards.interventions.Intervention`` from them, and registers both here (as the SAE architectures do);
``__init__.py`` lists the files. ``build`` is the resolver the command layer hands to extraction."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shards.errors import InterventionError
from shards.registry import Registry

if TYPE_CHECKING:
    from shards.interventions import Intervention, InterventionSpec, ResolveContext


@dataclass(frozen=True)
class InterventionKind:
    """A registered kind: its options dataclass (parsed from ``key=value``; its ``__post_init__`` checks the
    values), its builder, and ``check``: its sources read and checked without the model (before it loads)."""

    name: str
    options: type
    build: Callable[[ResolveContext, object], Intervention]
    help: str
    check: Callable[[object, object], None] | None = None  #: (options, storage options) -> None or raises


KINDS: Registry[InterventionKind] = Registry("intervention kind", InterventionError)
register, get_kind = KINDS.register, KINDS.lookup


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _convert(text: str, typ, where: str):
    """A ``key=value`` string as the option's declared type (bool, int, float, str, optionals of them)."""
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    base = args[0] if args else typ
    try:
        if base is bool:
            if text.lower() not in _TRUE | _FALSE:
                raise ValueError("not a boolean")
            return text.lower() in _TRUE
        return base(text)
    except ValueError:
        raise InterventionError(f"{where}: {text!r} is not a {getattr(base, '__name__', base)}") from None


def parse_options(kind: InterventionKind, spec: InterventionSpec):
    """The kind's options from the spec's ``key=value`` pairs: unknown keys and missing required ones named."""
    hints = typing.get_type_hints(kind.options)
    fields = {f.name: f for f in dataclasses.fields(kind.options)}
    unknown = sorted(set(spec.options) - set(fields))
    if unknown:
        raise InterventionError(f"--intervene {spec.text()!r}: {kind.name} takes {', '.join(fields) or 'no options'}"
                                f", not {', '.join(unknown)}")
    values = {k: _convert(v, hints[k], f"--intervene {spec.text()!r}, option {k}") for k, v in spec.options.items()}
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        needs = ", ".join(f"{m}=..." for m in missing)
        raise InterventionError(f"--intervene {spec.text()!r}: {kind.name} needs {needs} ({kind.help})")
    return kind.options(**values)


def _naming_the_spec(spec: InterventionSpec, exc: InterventionError) -> InterventionError:
    """``exc`` with the ``--intervene`` value it is about in front (where it does not say so already)."""
    text = str(exc)
    return exc if text.startswith("--intervene") else InterventionError(f"--intervene {spec.text()!r}: {text}")


class KindResolver:
    """``ingest``'s ``Resolver`` over the registered kinds: ``check`` (options and sources, before the model
    loads) and the call (built against the loaded model's hook)."""

    def check(self, spec: InterventionSpec, storage: object = None) -> None:
        """Parse ``spec``'s options (each options class checks its values) and read and check its sources."""
        kind = get_kind(spec.kind)
        try:
            options = parse_options(kind, spec)
            if kind.check is not None:
                kind.check(options, storage)
        except InterventionError as exc:
            raise _naming_the_spec(spec, exc) from None

    def __call__(self, spec: InterventionSpec, ctx: ResolveContext) -> Intervention:
        """The intervention ``spec`` names, built and checked against the hook."""
        kind = get_kind(spec.kind)
        try:
            options = parse_options(kind, spec)
            _check_position(options, ctx)
            return kind.build(ctx, options)
        except InterventionError as exc:
            raise _naming_the_spec(spec, exc) from None


def _check_position(options, ctx: ResolveContext) -> None:
    """Refuse a ``from_position`` that no input reaches (it would change nothing, and the job would still be
    recorded as an intervened one): past the last token position, or on inputs without positions (images)."""
    position = getattr(options, "from_position", None)
    if not position or ctx.positions is None:
        return
    if ctx.positions == 0:
        raise InterventionError(f"option from_position={position}: these inputs (images) have no token positions, "
                                "so it would change nothing; leave from_position out (the change then applies to "
                                "every input)")
    if position >= ctx.positions:
        raise InterventionError(f"option from_position={position} is past the last token position of every input "
                                f"(inputs hold at most {ctx.positions} tokens, --context-size {ctx.positions}): it "
                                f"would change nothing. Give from_position below {ctx.positions}, or a larger "
                                "--context-size.")


#: the resolver the command layer hands to extraction
build = KindResolver()
