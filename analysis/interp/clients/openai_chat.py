"""``--explainer openai``: any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's server, OpenAI,
OpenRouter) through the ``openai`` client, which reads ``OPENAI_BASE_URL`` and the key as it always does and
retries 429, 5xx, timeouts and dropped connections with exponential backoff (honouring ``Retry-After``)."""

from __future__ import annotations

import os

from analysis.interp.clients.base import Answer, ClientError, ClientSpec, FatalClientError, Secret, register
from shards.secrets import redact_text


def _without(text: str, secret: str) -> str:
    text = text.replace(secret, "***") if secret else text
    return redact_text(text)


@register("openai")
class OpenAIChat:
    """Chat completions over HTTP; the key is read here from ``spec.api_key_env`` and kept only in the client."""

    def __init__(self, spec: ClientSpec, key: Secret | None = None) -> None:
        import openai

        self.spec = spec
        self._key = os.environ.get(spec.api_key_env, "") or (key.value if key is not None else "")
        base = spec.base_url or os.environ.get("OPENAI_BASE_URL", "")
        if not self._key and not base:
            # the variable's name only when it is the default: a name given to --api-key-env is masked in
            # messages like any value of a flag named for a key
            which = spec.api_key_env if spec.api_key_env == "OPENAI_API_KEY" else "the variable --api-key-env names"
            raise FatalClientError(f"no key for the OpenAI API: set {which} (or point --base-url / "
                                   "OPENAI_BASE_URL at a local server, which needs none)")
        self.where = base or "https://api.openai.com/v1"
        # a local server takes any key; the client insists on one
        self.client = openai.OpenAI(api_key=self._key or "none", base_url=base or None, timeout=spec.timeout,
                                    max_retries=spec.max_retries)

    def check(self) -> None:
        """Before any work: the endpoint answers and takes the key (GET /models, which costs no tokens; an
        endpoint without that route is let through)."""
        import openai

        try:
            self.client.with_options(max_retries=1).models.list()
        except openai.AuthenticationError:
            raise FatalClientError(f"{self.where} refused the key (HTTP 401): check "
                                   f"{self._key_name()}") from None
        except openai.APIConnectionError:
            raise FatalClientError(f"nothing answers at {self.where}: start the server or fix --base-url / "
                                   "OPENAI_BASE_URL") from None
        except (openai.APIError, ValueError):
            pass  # no /models route (or an odd one): the first request will tell

    def _key_name(self) -> str:
        if not self._key:
            return f"no key is set ({self.spec.api_key_env} is empty)"
        default = self.spec.api_key_env == "OPENAI_API_KEY"
        return self.spec.api_key_env if default else "the variable --api-key-env names"

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
                 logprobs: int = 0) -> Answer:
        import openai

        extra = {"logprobs": True, "top_logprobs": logprobs} if logprobs else {}
        try:
            reply = self.client.chat.completions.create(model=self.spec.model, messages=messages,
                                                        max_tokens=max_tokens, temperature=temperature, **extra)
        except openai.AuthenticationError as e:
            raise FatalClientError(f"{self.where} refused the key (HTTP 401): check {self._key_name()} "
                                   f"({_without(str(e.message), self._key)})") from None
        except (openai.PermissionDeniedError, openai.NotFoundError, openai.BadRequestError) as e:
            raise FatalClientError(f"{self.where} refused the request (HTTP {e.status_code}) for model "
                                   f"{self.spec.model!r}: {_without(str(e.message), self._key)}") from None
        except openai.APITimeoutError:
            raise ClientError(f"{self.where}: no answer within {self.spec.timeout:g} s "
                              f"({self.spec.max_retries} retries)") from None
        except openai.APIConnectionError:
            raise FatalClientError(f"nothing answers at {self.where} (connection failed after "
                                   f"{self.spec.max_retries} retries): start the server or fix --base-url / "
                                   "OPENAI_BASE_URL") from None
        except openai.APIStatusError as e:  # 429 and 5xx once the retries are spent
            raise ClientError(f"{self.where} answered HTTP {e.status_code} after {self.spec.max_retries} retries: "
                              f"{_without(str(e.message), self._key)}") from None
        except openai.APIError as e:  # a body that is not a chat completion
            raise ClientError(f"{self.where} sent a malformed answer ({_without(str(e), self._key)[:200]})") from None
        except ValueError as e:  # a 200 whose body is not JSON, or not UTF-8 (JSONDecodeError, UnicodeDecodeError)
            raise ClientError(f"{self.where} sent a malformed answer: not JSON ({type(e).__name__})") from None
        return _answer(reply, self.where)


def _answer(reply, where: str) -> Answer:
    """The answer's text, log-probabilities and usage; anything missing is a malformed answer."""
    try:
        choice = reply.choices[0]
        text = choice.message.content
        if not isinstance(text, str):
            raise TypeError("no message content")
        lp = None
        if getattr(choice, "logprobs", None) is not None and choice.logprobs.content:
            try:
                lp = [{"token": t.token, "logprob": float(t.logprob),
                       "top": [{"token": c.token, "logprob": float(c.logprob)} for c in (t.top_logprobs or [])]}
                      for t in choice.logprobs.content]
            except (TypeError, ValueError, AttributeError):  # log-probabilities the server got wrong: the text stays
                lp = None
        usage = getattr(reply, "usage", None)
        return Answer(text, lp, max(0, int(getattr(usage, "prompt_tokens", 0) or 0)),
                      max(0, int(getattr(usage, "completion_tokens", 0) or 0)))
    except (AttributeError, IndexError, TypeError, ValueError) as e:
        raise ClientError(f"{where} sent a malformed answer: not a chat completion ({type(e).__name__}: "
                          f"{str(e)[:120]})") from None
