"""What an explainer or scorer model is to actlake: a chat completion with usage, behind one small interface;
each kind registered next to its own code (``register``), the table also the list of valid ``--explainer``s."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from shards.errors import ActlakeError


class ClientError(ActlakeError, RuntimeError):
    """A model endpoint failed for this request (after its retries): the latent is left unanswered, the run
    goes on and a rerun asks again."""


class FatalClientError(ActlakeError, RuntimeError):
    """A failure no retry mends (the key refused, the model unknown, nothing listening): the run stops at once."""


@dataclass
class Answer:
    """A model's reply: its text, per generated token the top log-probabilities (``[{"token", "logprob",
    "top": [{"token", "logprob"}]}]``, when asked and given), and the tokens billed."""

    text: str
    logprobs: list[dict] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_json(self) -> dict:
        return {"text": self.text, "logprobs": self.logprobs, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}

    @classmethod
    def from_json(cls, d: dict) -> Answer:
        return cls(d["text"], d.get("logprobs"), int(d.get("prompt_tokens", 0)), int(d.get("completion_tokens", 0)))


class Client(Protocol):
    """A chat model: ``complete`` returns its answer to one prompt or raises ``ClientError`` /
    ``FatalClientError``; safe to call from several threads."""

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
                 logprobs: int = 0) -> Answer: ...

    def check(self) -> None:
        """Raise ``FatalClientError`` now if the model cannot be reached (called once, before any work)."""


@dataclass
class ClientSpec:
    """Everything a worker needs to make the client (no secret: a key is read from the environment where the
    client runs, by the variable named here)."""

    kind: str
    model: str
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 4
    flag: str = "--explainer-model"  #: the option that named the model (in messages)


class Secret:
    """A key handed to Ray workers whose environment lacks it (a cluster's workers do not inherit the driver's
    shell): shown as ``***`` by repr and str, so a traceback or log line never prints it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    @classmethod
    def from_env(cls, spec: ClientSpec) -> Secret | None:
        import os

        value = os.environ.get(spec.api_key_env, "")
        return cls(value) if value else None


#: ``--explainer`` name -> a client from its spec (and the key, where the environment lacks it)
CLIENTS: dict[str, Callable[..., Client]] = {}


def register(name: str):
    def add(factory):
        CLIENTS[name] = factory
        return factory
    return add


def make_client(spec: ClientSpec, key: Secret | None = None) -> Client:
    """The client a spec names (its module imported on first use: the local one needs torch, the other not);
    ``key``: the driver's, used where this process' environment has none."""
    import importlib

    importlib.import_module(KINDS[spec.kind].module)
    return CLIENTS[spec.kind](spec, key)


@dataclass(frozen=True)
class Kind:
    """A client kind: the module that registers it, and the CPUs a Ray task asking through it takes."""

    module: str
    cpus: float


#: client kinds (``--explainer`` / ``--client`` choices)
KINDS = {"openai": Kind("analysis.interp.clients.openai_chat", cpus=0.25),
         "transformers": Kind("analysis.interp.clients.local", cpus=1.0)}
