"""``llmops deploy``, ``routes``, ``rollout`` and ``rollback``: the model registry, the routes a
``model`` name is served by (retries, fallbacks, circuit breaker, canary, shadow), the judge-driven
rollout of a canary, and rolling a route back. Also ``prompt-label`` (move a prompt label, so a
prompt can be rolled back too).

The pure parts (``NAME@VERSION``, ``--param``, ``--price``, ``--retry-on``, a route built from flags
over its current revision, what changed between two revisions) are plain functions, tested without
a server; the commands call ``InferenceService`` and ``DriftService.GetRollout`` over gRPC."""
from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import sys
from dataclasses import dataclass, fields

import click
import grpc

from llmops.cli.client import Client
from llmops.cli.console import load_settings, make_console, rpc_error_text
from llmops.v1 import inference_pb2

BACKENDS = ("llama_cpp", "tgi", "openai")
RETRY_ON = {"unavailable": inference_pb2.RETRY_ON_UNAVAILABLE, "timeout": inference_pb2.RETRY_ON_TIMEOUT,
            "rate_limited": inference_pb2.RETRY_ON_RATE_LIMITED}
#: the server's defaults for fields left at zero (inference.proto), shown so a table never says "0"
DEFAULT_BACKOFF_S, DEFAULT_MAX_BACKOFF_S, DEFAULT_MULTIPLIER = 0.1, 2.0, 2.0
DEFAULT_CIRCUIT_FAILURES, DEFAULT_CIRCUIT_COOLDOWN_S = 5, 30.0
DEFAULT_POLICY = {"score": "faithfulness", "tier": "cheap", "min_samples": 30, "max_samples": 500,
                  "max_drop": 0.05, "alpha": 0.01}
CLEAR = object()   # ``--max-error-rate none``: remove an optional limit


class FlagError(ValueError):
    """A flag's value, or a combination of flags, that cannot make a valid request."""


# -- parsing ---------------------------------------------------------------------------------
def parse_ref(text: str) -> inference_pb2.DeploymentRef:
    """``NAME`` (the newest version when the route is set) or ``NAME@VERSION``; ``NAME@latest`` = ``NAME``."""
    name, sep, version = text.strip().partition("@")
    if not name:
        raise FlagError(f"{text!r}: a deployment is NAME or NAME@VERSION")
    if not sep or version == "latest":
        return inference_pb2.DeploymentRef(name=name, version=0)
    if not version.isdigit() or int(version) < 1:
        raise FlagError(f"{text!r}: the version after '@' must be a whole number >= 1 (or 'latest')")
    return inference_pb2.DeploymentRef(name=name, version=int(version))


def ref_text(ref) -> str:
    """``name@3``; ``name@latest`` for version 0; ``-`` for no deployment."""
    if not ref.name:
        return "-"
    return f"{ref.name}@{ref.version if ref.version else 'latest'}"


_PARAM_FIELDS = {f.name: f for f in inference_pb2.GenerationParameters.DESCRIPTOR.fields}


def parse_params(items) -> inference_pb2.GenerationParameters:
    """``--param KEY=VALUE`` (repeatable) as ``GenerationParameters``, with TGI's names; ``stop``
    may repeat (each one a stop sequence), booleans are true/false/1/0/yes/no."""
    from google.protobuf.descriptor import FieldDescriptor as F

    params = inference_pb2.GenerationParameters()
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise FlagError(f"--param {item!r}: expected KEY=VALUE, e.g. max_new_tokens=64")
        field = _PARAM_FIELDS.get(key)
        if field is None:
            raise FlagError(f"--param {item!r}: unknown parameter {key!r}; known: {', '.join(sorted(_PARAM_FIELDS))}")
        try:
            if field.type == F.TYPE_BOOL:
                if raw.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                value = raw.strip().lower() in ("true", "1", "yes")
            elif field.type in (F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64):
                value = int(raw)
            elif field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
                value = float(raw)
            else:
                value = raw
        except ValueError:
            kind = {F.TYPE_BOOL: "true or false", F.TYPE_FLOAT: "a number"}.get(field.type, "a whole number")
            raise FlagError(f"--param {item!r}: {key} must be {kind}") from None
        if _is_repeated(field):
            getattr(params, key).append(value)
        else:
            setattr(params, key, value)
    return params


def _is_repeated(field) -> bool:
    # ``label`` is deprecated in newer protobuf releases; ``is_repeated`` exists only there
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED


def parse_price(text: str) -> tuple[float, float]:
    """``--price PROMPT/COMPLETION`` in USD per 1M tokens, e.g. ``0.15/0.60``."""
    prompt, sep, completion = text.partition("/")
    try:
        if not sep:
            raise ValueError
        values = float(prompt), float(completion)
    except ValueError:
        raise FlagError(f"--price {text!r}: expected PROMPT/COMPLETION in USD per 1M tokens, e.g. 0.15/0.60") from None
    if min(values) < 0:
        raise FlagError(f"--price {text!r}: prices cannot be negative")
    return values


def parse_retry_on(text: str) -> list[int]:
    """``unavailable,timeout,rate_limited`` (any of them) as ``RetryOn`` values; ``all`` = the three."""
    names = [n.strip().lower().replace("-", "_") for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return []
    bad = [n for n in names if n not in RETRY_ON]
    if bad or not names:
        raise FlagError(f"--retry-on {text!r}: expected a comma-separated list of {', '.join(RETRY_ON)} (or all)")
    return [RETRY_ON[n] for n in dict.fromkeys(names)]


def build_deployment(name: str, backend: str, *, url: str = "", model_path: str = "", remote_model: str = "",
                     prompt_template: str = "", prompt_version: int | None = None, params=(), price: str = "",
                     timeout_s: float = 0.0, description: str = "", api_key_env: str = "",
                     created_by: str = "") -> inference_pb2.Deployment:
    """The ``Deployment`` that ``deploy NAME`` registers (the server assigns its version)."""
    d = inference_pb2.Deployment(name=name, backend=backend, url=url, model_path=model_path,
                                 remote_model=remote_model, prompt_template=prompt_template,
                                 timeout_s=timeout_s, description=description, api_key_env=api_key_env,
                                 created_by=created_by)
    if prompt_version is not None:
        d.prompt_version = prompt_version
    d.default_parameters.CopyFrom(parse_params(params))
    if price:
        d.prompt_price_per_m, d.completion_price_per_m = parse_price(price)
    return d


# -- a route from flags over its current revision ------------------------------------------------
@dataclass
class RouteFlags:
    """What ``routes set`` was given; ``None`` = keep the current revision's value."""
    primary: str | None = None
    fallbacks: tuple[str, ...] | None = None      # () with --no-fallbacks
    retries: int | None = None                    # retries after the first try: attempts = retries + 1
    backoff: float | None = None
    max_backoff: float | None = None
    retry_on: str | None = None
    attempt_timeout: float | None = None
    deadline: float | None = None
    circuit_failures: int | None = None           # 0 = no circuit breaker
    circuit_cooldown: float | None = None
    canary: str | None = None
    canary_percent: float | None = None
    sticky: str | None = None                     # "session" | "user" | "none"
    score: str | None = None
    tier: str | None = None
    min_samples: int | None = None
    max_samples: int | None = None
    max_drop: float | None = None
    alpha: float | None = None
    max_error_rate: object = None                 # a float, or CLEAR
    max_latency_ratio: object = None
    auto_promote: bool | None = None
    no_canary: bool = False
    shadow: str | None = None
    shadow_percent: float | None = None
    no_shadow: bool = False

    POLICY = ("score", "tier", "min_samples", "max_samples", "max_drop", "alpha", "max_error_rate",
              "max_latency_ratio", "auto_promote")

    def given(self, names) -> list[str]:
        return [n for n in names if getattr(self, n) is not None]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_route(name: str, current: inference_pb2.Route | None, flags: RouteFlags) -> inference_pb2.Route:
    """The route ``routes set`` sends: the current revision (or a new route) with only the given flags
    changed. Bookkeeping the server assigns (revision, who, why, when, restored_from) is cleared."""
    route = inference_pb2.Route()
    if current is not None:
        route.CopyFrom(current)
    for f in ("revision", "changed_by", "reason", "created_at", "restored_from"):
        route.ClearField(f)
    route.name = name

    if flags.primary is not None:
        route.primary.CopyFrom(parse_ref(flags.primary))
    if not route.primary.name:
        raise FlagError(f"route {name!r} does not exist yet: give it a --primary deployment")
    if flags.fallbacks is not None:
        del route.fallbacks[:]
        route.fallbacks.extend(parse_ref(f) for f in flags.fallbacks)

    if flags.retries is not None:
        route.retry.attempts = flags.retries + 1
    if flags.backoff is not None:
        route.retry.initial_backoff_s = flags.backoff
    if flags.max_backoff is not None:
        route.retry.max_backoff_s = flags.max_backoff
    if flags.retry_on is not None:
        del route.retry.retry_on[:]
        route.retry.retry_on.extend(parse_retry_on(flags.retry_on))
    if flags.attempt_timeout is not None:
        route.attempt_timeout_s = flags.attempt_timeout
    if flags.deadline is not None:
        route.deadline_s = flags.deadline
    if flags.circuit_failures is not None or flags.circuit_cooldown is not None:
        if not route.HasField("circuit"):
            # an unset breaker is the default one; a set breaker with 0 failures is off, so keep the default count
            route.circuit.failure_threshold = DEFAULT_CIRCUIT_FAILURES
        if flags.circuit_failures is not None:
            route.circuit.failure_threshold = flags.circuit_failures
        if flags.circuit_cooldown is not None:
            route.circuit.cooldown_s = flags.circuit_cooldown

    _apply_canary(route, flags)
    _apply_shadow(route, flags)
    return route


def _apply_canary(route: inference_pb2.Route, flags: RouteFlags) -> None:
    canary_flags = flags.given(("canary", "canary_percent", "sticky", *RouteFlags.POLICY))
    if flags.no_canary:
        if canary_flags:
            raise FlagError(f"--no-canary removes the canary: it cannot go with {', '.join(map(_flag, canary_flags))}")
        route.ClearField("canary")
        return
    if not canary_flags:
        return
    has_canary = route.HasField("canary") and route.canary.deployment.name
    if flags.canary is None and not has_canary:
        raise FlagError(f"route {route.name!r} has no canary: {', '.join(map(_flag, canary_flags))} "
                        "need --canary DEPLOYMENT[@VERSION]")
    if flags.canary is not None:
        route.canary.deployment.CopyFrom(parse_ref(flags.canary))
    if flags.canary_percent is not None:
        route.canary.percent = flags.canary_percent
    elif not has_canary:
        raise FlagError("a new canary needs --canary-percent P (0-100 of the route's requests)")
    if flags.sticky is not None:
        route.canary.sticky = "" if flags.sticky == "none" else flags.sticky
    policy = route.canary.policy
    for f in ("score", "tier", "min_samples", "max_samples", "max_drop", "alpha", "auto_promote"):
        if getattr(flags, f) is not None:
            setattr(policy, f, getattr(flags, f))
    for f in ("max_error_rate", "max_latency_ratio"):
        value = getattr(flags, f)
        if value is CLEAR:
            policy.ClearField(f)
        elif value is not None:
            setattr(policy, f, value)


def _apply_shadow(route: inference_pb2.Route, flags: RouteFlags) -> None:
    shadow_flags = flags.given(("shadow", "shadow_percent"))
    if flags.no_shadow:
        if shadow_flags:
            raise FlagError(f"--no-shadow removes the shadow: it cannot go with {', '.join(map(_flag, shadow_flags))}")
        route.ClearField("shadow")
        return
    if not shadow_flags:
        return
    has_shadow = route.HasField("shadow") and route.shadow.deployment.name
    if flags.shadow is None and not has_shadow:
        raise FlagError(f"route {route.name!r} has no shadow: --shadow-percent needs --shadow DEPLOYMENT[@VERSION]")
    if flags.shadow is not None:
        route.shadow.deployment.CopyFrom(parse_ref(flags.shadow))
    if flags.shadow_percent is not None:
        route.shadow.percent = flags.shadow_percent
    elif not has_shadow:
        raise FlagError("a new shadow needs --shadow-percent P (0-100 of the route's requests get a copy)")


def promoted_route(current: inference_pb2.Route) -> inference_pb2.Route:
    """``rollout promote``: the canary's deployment becomes the primary; the canary is gone."""
    if not (current.HasField("canary") and current.canary.deployment.name):
        raise FlagError(f"route {current.name!r} has no canary to promote")
    route = build_route(current.name, current, RouteFlags(no_canary=True))
    route.primary.CopyFrom(current.canary.deployment)
    return route


# -- how a route reads -------------------------------------------------------------------------
def _num(v: float) -> str:
    return f"{v:g}"


def retry_text(route) -> str:
    r = route.retry
    if r.attempts <= 1:
        return "no retry"
    on = ", ".join(k for k, v in RETRY_ON.items() if v in r.retry_on) or "all"
    return (f"{r.attempts - 1} retries, backoff {_num(r.initial_backoff_s or DEFAULT_BACKOFF_S)}s"
            f"..{_num(r.max_backoff_s or DEFAULT_MAX_BACKOFF_S)}s x{_num(r.multiplier or DEFAULT_MULTIPLIER)}, on {on}")


def circuit_text(route) -> str:
    if not route.HasField("circuit"):
        return f"{DEFAULT_CIRCUIT_FAILURES} failures, {_num(DEFAULT_CIRCUIT_COOLDOWN_S)}s cooldown (default)"
    if route.circuit.failure_threshold <= 0:
        return "off"
    return f"{route.circuit.failure_threshold} failures, {_num(route.circuit.cooldown_s or DEFAULT_CIRCUIT_COOLDOWN_S)}s cooldown"


def canary_text(route) -> str:
    if not (route.HasField("canary") and route.canary.deployment.name):
        return "-"
    c = route.canary
    return f"{ref_text(c.deployment)} {_num(c.percent)}%" + (f" sticky per {c.sticky}" if c.sticky else "")


def policy_text(policy) -> str:
    p = {k: getattr(policy, k) or v for k, v in DEFAULT_POLICY.items()}
    parts = [f"{p['score']} ({p['tier']})", f"{p['min_samples']}..{p['max_samples']} judged",
             f"max drop {_num(p['max_drop'])}", f"alpha {_num(p['alpha'])}"]
    if policy.HasField("max_error_rate"):
        parts.append(f"error rate <= {_num(policy.max_error_rate)}")
    if policy.HasField("max_latency_ratio"):
        parts.append(f"p95 latency <= {_num(policy.max_latency_ratio)}x primary")
    parts.append("auto-promote" if policy.auto_promote else "a person promotes")
    return ", ".join(parts)


def shadow_text(route) -> str:
    if not (route.HasField("shadow") and route.shadow.deployment.name):
        return "-"
    return f"{ref_text(route.shadow.deployment)} {_num(route.shadow.percent)}%"


def _seconds(v: float) -> str:
    return f"{_num(v)}s" if v else "none"


def route_facts(route) -> dict[str, str]:
    """The route's serving configuration, one readable line per aspect (what ``route_changes`` compares)."""
    has_canary = route.HasField("canary") and route.canary.deployment.name
    return {
        "primary": ref_text(route.primary),
        "fallbacks": ", ".join(ref_text(f) for f in route.fallbacks) or "-",
        "retry": retry_text(route),
        "attempt timeout": _seconds(route.attempt_timeout_s),
        "deadline": _seconds(route.deadline_s),
        "circuit breaker": circuit_text(route),
        "canary": canary_text(route),
        "canary policy": policy_text(route.canary.policy) if has_canary else "-",
        "shadow": shadow_text(route),
    }


def route_changes(before, after) -> list[str]:
    """``aspect: old -> new`` for each aspect that differs (``before`` None: a new route)."""
    new = route_facts(after)
    if before is None:
        return [f"{k}: {v}" for k, v in new.items() if v not in ("-", "none")]
    old = route_facts(before)
    return [f"{k}: {old[k]} -> {new[k]}" for k in new
            if old[k] != new[k] and not (k == "canary policy" and new["canary"] == "-")]


def when(ts) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return dt.datetime.fromtimestamp(ts.seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(ts, now: dt.datetime | None = None) -> str:
    """How long ago, as kubectl's AGE column: ``45s``, ``12m``, ``3h``, ``2d``."""
    if not ts.seconds and not ts.nanos:
        return "-"
    now = now or dt.datetime.now(dt.UTC)
    secs = max(0, int((now - dt.datetime.fromtimestamp(ts.seconds, dt.UTC)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def as_json(msg) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(msg, preserving_proto_field_name=True)


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2))


def _esc(text) -> str:
    from rich.markup import escape

    return escape(str(text))


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without USER): the server records "api"
        return ""


@contextlib.contextmanager
def exit_on_rpc_error():
    """A failed RPC as ``CODE: message`` on stderr, exit 1. The server's message is escaped: it may
    quote what was sent (``'[x]'``), which rich would otherwise read as markup."""
    try:
        yield
    except grpc.RpcError as exc:
        _fail(exc)


def _fail(exc: grpc.RpcError):
    make_error_console().print(f"[red]{_esc(rpc_error_text(exc))}[/]")
    sys.exit(1)


def make_error_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)   # one line per error, for grep and logs


def _checked(fn, *args, **kwargs):
    """Run a pure builder; a bad flag is click's usage error (exit 2), not a traceback."""
    try:
        return fn(*args, **kwargs)
    except FlagError as exc:
        raise click.UsageError(str(exc)) from None


def _console():
    """The CLI's console; piped (not a terminal, no COLUMNS), 200 columns wide so a table's rows stay
    whole lines for grep, as kubectl's do."""
    import os

    console = make_console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = 200
    return console


def _table(*columns, keys: int = 1):
    """A compact table; its first ``keys`` columns never wrap, the others wrap at words (a word too long
    for its column is folded, never cut)."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for n, col in enumerate(columns):
        table.add_column(col, no_wrap=n < keys, overflow="fold")
    return table


def _inference():
    return Client(load_settings()).inference


def _current_route(stub, name: str):
    """The route's current revision, or None when there is no such route."""
    try:
        return stub.GetRoute(inference_pb2.GetRouteRequest(name=name), timeout=10)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


# -- llmops deploy -----------------------------------------------------------------------------
class _DeployGroup(click.Group):
    """``llmops deploy NAME ...`` registers; ``llmops deploy list|show|register`` are its subcommands
    (a deployment named like a subcommand: ``llmops deploy register list ...``)."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["register", *args]
        return super().resolve_command(ctx, args)


@click.group("deploy", cls=_DeployGroup)
def deploy_group() -> None:
    """The model registry: `deploy NAME --backend ...` registers NAME's next version; `deploy list`, `deploy show`."""


@deploy_group.command("register")
@click.argument("name")
@click.option("--backend", type=click.Choice(BACKENDS), required=True, help="Kind of model server.")
@click.option("--url", default="", help="tgi: the server's base URL; openai: the API's base URL (.../v1).")
@click.option("--model-path", default="", help="llama_cpp: a GGUF file (default: the embedded SmolLM2).")
@click.option("--remote-model", default="", help="openai: the model id the server knows (default: NAME).")
@click.option("--api-key-env", default="", help="tgi/openai: environment variable (on the server) with the bearer token.")
@click.option("--prompt-template", default="", help="Prompt template when a request names none (default: rag/chat).")
@click.option("--prompt-version", type=int, default=None, help="Its version (default: the one labelled production).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Default generation parameter, TGI names (repeat): max_new_tokens=64, temperature=0.7, stop=###.")
@click.option("--price", default="", metavar="PROMPT/COMPLETION", help="USD per 1M tokens, e.g. 0.15/0.60.")
@click.option("--timeout", "timeout_s", type=float, default=0.0, help="tgi/openai: seconds per HTTP call (0: the server's default).")
@click.option("--description", default="")
@click.option("--by", "created_by", default=None, help="Who registers it (default: your login name).")
@click.option("--json", "json_out", is_flag=True, help="Print the registered deployment as JSON.")
def deploy_register(name, backend, url, model_path, remote_model, api_key_env, prompt_template, prompt_version,
                    params, price, timeout_s, description, created_by, json_out) -> None:
    """Register NAME's next version (every version is kept); prints the version."""
    console = _console()
    d = _checked(build_deployment, name, backend, url=url, model_path=model_path, remote_model=remote_model,
                 prompt_template=prompt_template, prompt_version=prompt_version, params=params, price=price,
                 timeout_s=timeout_s, description=description, api_key_env=api_key_env,
                 created_by=_user() if created_by is None else created_by)
    with exit_on_rpc_error():
        got = _inference().RegisterDeployment(d, timeout=30)
    if json_out:
        _echo_json(as_json(got))
        return
    console.print(f"deployment [bold]{_esc(got.name)}@{got.version}[/] registered ({_esc(_endpoint(got))}); "
                  f"route to it with: llmops routes set ROUTE --primary {_esc(got.name)}@{got.version} --reason ...")


def _endpoint(d) -> str:
    if d.backend == "llama_cpp":
        return f"llama_cpp {d.model_path or 'embedded SmolLM2'}"
    return f"{d.backend} {d.url}" + (f" model {d.remote_model}" if d.remote_model else "")


def _params_text(p) -> str:
    parts = []
    for f in inference_pb2.GenerationParameters.DESCRIPTOR.fields:
        if _is_repeated(f):
            parts.extend(f"{f.name}={v!r}" for v in getattr(p, f.name))
        elif f.has_presence and p.HasField(f.name) or not f.has_presence and getattr(p, f.name):
            parts.append(f"{f.name}={getattr(p, f.name):g}" if isinstance(getattr(p, f.name), float)
                         else f"{f.name}={getattr(p, f.name)}")
    return " ".join(parts) or "-"


def _price_text(d) -> str:
    if not d.HasField("prompt_price_per_m") and not d.HasField("completion_price_per_m"):
        return "-"
    return f"{_num(d.prompt_price_per_m)}/{_num(d.completion_price_per_m)}"


def _prompt_text(d) -> str:
    if not d.prompt_template and not d.HasField("prompt_version"):
        return "-"
    return (d.prompt_template or "rag/chat") + (f" v{d.prompt_version}" if d.HasField("prompt_version") else " (production)")


@deploy_group.command("list")
@click.argument("name", required=False, default="")
@click.option("--all-versions", is_flag=True, help="Every version (default: the newest of each).")
@click.option("--json", "json_out", is_flag=True)
def deploy_list(name, all_versions, json_out) -> None:
    """Deployments: the newest version of each (or every version of NAME with --all-versions)."""
    console = _console()
    with exit_on_rpc_error():
        resp = _inference().ListDeployments(inference_pb2.ListDeploymentsRequest(name=name, all_versions=all_versions),
                                            timeout=10)
    if json_out:
        _echo_json(as_json(resp))
        return
    if not resp.deployments:
        console.print(f"no deployment named {_esc(name)}" if name else "no deployments registered")
        return
    table = _table("deployment", "endpoint", "prompt", "parameters", "price $/1M", "created", "by", "description")
    for d in resp.deployments:
        table.add_row(_esc(f"{d.name}@{d.version}"), _esc(_endpoint(d)), _esc(_prompt_text(d)),
                      _esc(_params_text(d.default_parameters)), _price_text(d), when(d.created_at),
                      _esc(d.created_by or "-"), _esc(d.description or "-"))
    console.print(table)


@deploy_group.command("show")
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("--json", "json_out", is_flag=True)
def deploy_show(ref, json_out) -> None:
    """One deployment version (default: the newest), and the routes that send traffic to it."""
    console = _console()
    wanted = _checked(parse_ref, ref)
    stub = _inference()
    with exit_on_rpc_error():
        d = stub.GetDeployment(wanted, timeout=10)
        routes = stub.ListRoutes(inference_pb2.ListRoutesRequest(), timeout=10).routes
    uses = deployment_uses(d, routes)
    if json_out:
        _echo_json({**as_json(d), "used_by": uses})
        return
    console.print(f"[bold]deployment {_esc(d.name)}@{d.version}[/]  created {when(d.created_at)} by "
                  f"{_esc(d.created_by or '-')}")
    if d.backend == "llama_cpp":
        where = (("model path", d.model_path or "the embedded SmolLM2"),)
    else:
        where = (("url", d.url), ("remote model", d.remote_model or f"{d.name} (the deployment's name)"),
                 ("api key env", d.api_key_env or "-"), ("timeout", _seconds(d.timeout_s)))
    for label, value in (("backend", d.backend), *where, ("prompt", _prompt_text(d)),
                         ("parameters", _params_text(d.default_parameters)),
                         ("price $/1M prompt/completion", _price_text(d)), ("description", d.description or "-")):
        console.print(f"  {label}: {_esc(value)}")
    console.print("  used by: " + (_esc(", ".join(uses)) or "no route"))


def deployment_uses(d, routes) -> list[str]:
    """``route (arm)`` for each current route that names this deployment version."""
    out = []
    for r in routes:
        arms = [("primary", r.primary)] + [(f"fallback {i}", f) for i, f in enumerate(r.fallbacks, 1)]
        arms += [("canary", r.canary.deployment), ("shadow", r.shadow.deployment)]
        out.extend(f"{r.name} ({arm})" for arm, ref in arms if ref.name == d.name and ref.version == d.version)
    return out


# -- llmops routes -----------------------------------------------------------------------------
def print_routes(console, routes) -> None:
    """The current routes: what serves each, and its last change (age, who, why)."""
    table = _table("route", "rev", "primary", "fallbacks", "canary", "shadow", "age", "by", "why")
    for r in routes:
        table.add_row(_esc(r.name), _rev_text(r), _esc(ref_text(r.primary)),
                      _esc(", ".join(ref_text(f) for f in r.fallbacks) or "-"), _esc(canary_text(r)),
                      _esc(shadow_text(r)), age(r.created_at), _esc(r.changed_by or "-"), _esc(r.reason or "-"))
    console.print(table)


def print_history(console, routes) -> None:
    """Every revision of one route, newest (current) first."""
    console.print(f"[bold]route {_esc(routes[0].name)}[/]: {len(routes)} revisions, current {routes[0].revision}")
    table = _table("rev", "changed", "by", "why", "primary", "fallbacks", "canary", "shadow", "retry")
    for r in routes:
        table.add_row(_rev_text(r), when(r.created_at), _esc(r.changed_by or "-"), _esc(r.reason or "-"),
                      _esc(ref_text(r.primary)), _esc(", ".join(ref_text(f) for f in r.fallbacks) or "-"),
                      _esc(canary_text(r)), _esc(shadow_text(r)), _esc(retry_text(r)))
    console.print(table)


def _rev_text(r) -> str:
    return str(r.revision) + (f" (restores {r.restored_from})" if r.restored_from else "")


def print_route(console, route) -> None:
    title = f"[bold]route {_esc(route.name)}[/] revision {route.revision}"
    if route.restored_from:
        title += f" (restores revision {route.restored_from})"
    console.print(f"{title}  changed {when(route.created_at)} by {_esc(route.changed_by or '-')}: "
                  f"{_esc(route.reason or '-')}")
    for k, v in route_facts(route).items():
        console.print(f"  {k}: {_esc(v)}")


@click.group("routes", invoke_without_command=True)
@click.option("--json", "json_out", is_flag=True, help="Print the routes as JSON (with no subcommand).")
@click.pass_context
def routes_group(ctx, json_out) -> None:
    """Routes: the model name a client sends and how it is served. With no subcommand: the current routes."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(routes_list, json_out=json_out)


@routes_group.command("list")
@click.option("--json", "json_out", is_flag=True)
def routes_list(json_out) -> None:
    """The current revision of every route."""
    console = _console()
    with exit_on_rpc_error():
        resp = _inference().ListRoutes(inference_pb2.ListRoutesRequest(), timeout=10)
    if json_out:
        _echo_json(as_json(resp))
    elif not resp.routes:
        console.print("no routes: create one with llmops routes set NAME --primary DEPLOYMENT --reason ...")
    else:
        print_routes(console, resp.routes)


@routes_group.command("history")
@click.argument("name")
@click.option("--json", "json_out", is_flag=True)
def routes_history(name, json_out) -> None:
    """Every revision of route NAME, newest (the current one) first, with who changed it and why."""
    console = _console()
    with exit_on_rpc_error():
        resp = _inference().ListRoutes(inference_pb2.ListRoutesRequest(name=name), timeout=10)
    if json_out:
        _echo_json(as_json(resp))
    elif not resp.routes:
        make_error_console().print(f"[red]NOT_FOUND: no route named {_esc(name)}[/]")
        sys.exit(1)
    else:
        print_history(console, resp.routes)


@routes_group.command("show")
@click.argument("name")
@click.option("--revision", type=click.IntRange(min=1), default=None, help="One revision (default: the current one).")
@click.option("--json", "json_out", is_flag=True)
def routes_show(name, revision, json_out) -> None:
    """One revision of route NAME, every setting spelled out (defaults included)."""
    console = _console()
    with exit_on_rpc_error():
        route = _inference().GetRoute(inference_pb2.GetRouteRequest(name=name, revision=revision or 0), timeout=10)
    if json_out:
        _echo_json(as_json(route))
    else:
        print_route(console, route)


class _OptionalFloat(click.ParamType):
    """A number, or ``none`` to remove an optional limit."""
    name = "NUMBER|none"

    def convert(self, value, param, ctx):
        if value is CLEAR or isinstance(value, float):
            return value
        if str(value).strip().lower() in ("none", "off"):
            return CLEAR
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number (or none)", param, ctx)


def _route_options(fn):
    """The options of ``routes set`` (one place, so the flags and RouteFlags stay the same list)."""
    options = [
        click.option("--primary", metavar="D[@V]", help="The deployment that serves the route."),
        click.option("--fallback", "fallbacks", multiple=True, metavar="D[@V]",
                     help="A fallback, tried in order when the primary fails (repeat; replaces the list)."),
        click.option("--no-fallbacks", is_flag=True, help="Remove every fallback."),
        click.option("--retries", type=click.IntRange(0, 9), help="Retries after the first try, per deployment."),
        click.option("--backoff", type=float, metavar="S", help="Wait before the first retry (then doubled, full jitter)."),
        click.option("--max-backoff", type=float, metavar="S", help="Longest wait between retries."),
        click.option("--retry-on", metavar="LIST", help="unavailable,timeout,rate_limited (any of them) or all."),
        click.option("--attempt-timeout", type=float, metavar="S", help="One attempt (0: none beyond the deployment's)."),
        click.option("--deadline", type=float, metavar="S", help="The whole request, all attempts (0: none)."),
        click.option("--circuit-failures", type=click.IntRange(min=0), metavar="N",
                     help="Consecutive failures that open a deployment's circuit (0: no breaker)."),
        click.option("--circuit-cooldown", type=float, metavar="S", help="How long an open circuit skips it."),
        click.option("--canary", metavar="D[@V]", help="Canary deployment."),
        click.option("--canary-percent", type=float, metavar="P", help="Its share of the route's requests, 0-100."),
        click.option("--sticky", type=click.Choice(["session", "user", "none"]), help="Keep each session/user on one side."),
        click.option("--score", help="Judge score the rollout compares (default faithfulness)."),
        click.option("--tier", type=click.Choice(["cheap", "llm", "reference", "safety"]), help="Judge tier of that score (default cheap)."),
        click.option("--min-samples", type=click.IntRange(min=0), metavar="N", help="Judged canary requests before any decision."),
        click.option("--max-samples", type=click.IntRange(min=0), metavar="N", help="Judged canary requests by which it is decided."),
        click.option("--max-drop", type=float, metavar="X", help="Largest drop of the canary's mean tolerated."),
        click.option("--alpha", type=float, metavar="A", help="False-rollback rate of the sequential test."),
        click.option("--max-error-rate", type=_OptionalFloat(), help="Canary requests that may fail, 0-1 (none: unchecked)."),
        click.option("--max-latency-ratio", type=_OptionalFloat(), help="Canary p95 / primary p95 (none: unchecked)."),
        click.option("--auto-promote/--no-auto-promote", default=None, help="Promote a canary that holds (else a person does)."),
        click.option("--no-canary", is_flag=True, help="Remove the canary."),
        click.option("--shadow", metavar="D[@V]", help="Shadow deployment: gets a copy, its answer is never returned."),
        click.option("--shadow-percent", type=float, metavar="P", help="Share of requests copied to it, 0-100."),
        click.option("--no-shadow", is_flag=True, help="Remove the shadow."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


_ROUTE_FLAG_NAMES = {f.name for f in fields(RouteFlags)}


@routes_group.command("set")
@click.argument("name")
@_route_options
@click.option("--reason", required=True, help="Why (kept with the revision).")
@click.option("--by", "changed_by", default=None, help="Who (default: your login name).")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--json", "json_out", is_flag=True, help="Print the new revision as JSON.")
def routes_set(name, reason, changed_by, dry_run, json_out, no_fallbacks, fallbacks, **options) -> None:
    """Create route NAME, or change only the given flags of its current revision (a new revision)."""
    if no_fallbacks and fallbacks:
        raise click.UsageError("--no-fallbacks removes the fallbacks: it cannot go with --fallback")
    given_fallbacks = () if no_fallbacks else (tuple(fallbacks) if fallbacks else None)
    flags = RouteFlags(fallbacks=given_fallbacks, **{k: v for k, v in options.items() if k in _ROUTE_FLAG_NAMES})
    console = _console()
    stub = _inference()
    with exit_on_rpc_error():
        current = _current_route(stub, name)
        route = _checked(build_route, name, current, flags)
        changes = route_changes(current, route)
        if dry_run:
            console.print(f"route {_esc(name)}: would {'change' if current else 'be created with'}:")
            for line in changes or ["nothing"]:
                console.print(f"  {_esc(line)}")
            return
        new = _set_route(stub, route, current, changed_by, reason)
    if json_out:
        _echo_json(as_json(new))
        return
    before = f" (was {current.revision})" if current else " (new route)"
    console.print(f"route [bold]{_esc(new.name)}[/] revision {new.revision}{before}")
    for line in route_changes(current, new) or ["nothing changed"]:
        console.print(f"  {_esc(line)}")


# -- llmops rollout / rollback --------------------------------------------------------------------
def _decision_name(value: int) -> str:
    from llmops.v1 import events_pb2

    return events_pb2.RolloutDecision.Name(value).removeprefix("ROLLOUT_DECISION_").lower()


def print_rollout(console, st, route=None) -> None:
    """One canary's rollout: state, the policy, the evidence per arm, the test against its threshold,
    and the decisions. ``route`` (GetRoute) adds the canary's share of traffic."""
    ev = st.evidence
    colour = {"gathering": "yellow", "rolled_back": "red", "promoted": "green", "passed": "green"}.get(st.state, "white")
    console.print(f"[bold]route {_esc(st.route)}[/] revision {st.route_revision}  state: [{colour}]{_esc(st.state)}[/]")
    share = ""
    if route is not None and route.HasField("canary") and route.canary.deployment.name:
        share = f" at {_num(route.canary.percent)}% of requests" + (
            f", sticky per {route.canary.sticky}" if route.canary.sticky else "")
    console.print(f"  canary {_esc(ref_text(st.canary))}{share}   primary {_esc(ref_text(st.primary))}")
    if route is not None and route.revision != st.route_revision:
        console.print(f"  [dim]the route is now at revision {route.revision} ({_esc(canary_text(route))} canary)[/]")
    console.print(f"  policy: {_esc(policy_text(st.policy))}")
    table = _table("arm", "judged", f"mean {ev.score or DEFAULT_POLICY['score']}", "requests", "errors", "error rate",
                   "p95 latency", keys=7)
    table.add_row("canary", str(ev.canary_n), f"{ev.canary_mean:.3f}" if ev.canary_n else "-", str(ev.canary_requests),
                  str(ev.canary_errors), f"{ev.canary_error_rate:.1%}" if ev.canary_requests else "-",
                  f"{ev.canary_p95_latency_ms:.0f} ms" if ev.canary_p95_latency_ms else "-")
    table.add_row("primary", str(ev.primary_n), f"{ev.primary_mean:.3f}" if ev.primary_n else "-", "-", "-", "-",
                  f"{ev.primary_p95_latency_ms:.0f} ms" if ev.primary_p95_latency_ms else "-")
    console.print(table)
    if ev.canary_n and ev.primary_n:
        console.print(f"  difference (canary - primary): {ev.difference:+.3f}, tolerated drop {_num(ev.max_drop)}")
    if ev.test:
        console.print(f"  test {_esc(ev.test)}: statistic {ev.statistic:.3g} vs threshold {ev.threshold:.3g} "
                      f"({'reached' if ev.threshold and ev.statistic >= ev.threshold else 'not reached'})")
    if st.decisions:
        decisions = _table("when", "decision", "revision", "applied as", "reason", keys=4)
        for d in st.decisions:
            decisions.add_row(when(d.timestamp), _decision_name(d.decision), str(d.route_revision),
                              str(d.applied_revision) if d.applied_revision else "-", _esc(d.reason))
        console.print(decisions)


@click.group("rollout")
def rollout_group() -> None:
    """Canary rollouts decided by the judge's scores of live traffic: status, promote, abort."""


@rollout_group.command("status")
@click.argument("route", required=False, default="")
@click.option("--json", "json_out", is_flag=True)
def rollout_status(route, json_out) -> None:
    """The rollout monitor's view of ROUTE's canary (default: every route with one): its state, the
    judged samples and means of both arms, the sequential test against its threshold, error rate,
    p95 latencies and the decisions; the canary's share of traffic comes from the route itself."""
    from llmops.v1 import drift_pb2

    console = _console()
    client = Client(load_settings())
    not_seen = None   # the monitor's NOT_FOUND for a route whose canary it has not seen traffic of yet
    try:
        rollouts = list(client.drift.GetRollout(drift_pb2.GetRolloutRequest(route=route), timeout=10).rollouts)
    except grpc.RpcError as exc:
        if not (route and exc.code() == grpc.StatusCode.NOT_FOUND):
            _fail(exc)
        rollouts, not_seen = [], exc
    routes, route_errors = {}, {}
    for name in {st.route for st in rollouts} | ({route} if route else set()):
        try:   # the canary's share is the route's; without the inference service the status still shows
            routes[name] = client.inference.GetRoute(inference_pb2.GetRouteRequest(name=name), timeout=5)
        except grpc.RpcError as exc:
            route_errors[name] = exc
    if not_seen is not None and route not in routes:
        _fail(route_errors.get(route) or not_seen)   # no such route (or inference down): the monitor's word stands
    if json_out:
        out = []
        for st in rollouts:
            item = as_json(st)
            r = routes.get(st.route)
            if r is not None and r.HasField("canary"):
                item["canary_percent"] = r.canary.percent
            out.append(item)
        _echo_json({"rollouts": out})
        return
    for name, exc in route_errors.items():
        console.print(f"[dim]route {_esc(name)}: {_esc(rpc_error_text(exc))} (from inference)[/]")
    if not rollouts:
        r = routes.get(route)
        if r is not None and r.HasField("canary") and r.canary.deployment.name:
            console.print(f"route {_esc(route)} revision {r.revision}: canary {_esc(canary_text(r))}, primary "
                          f"{_esc(ref_text(r.primary))}; state: waiting (the rollout monitor has judged none of its "
                          "traffic yet)")
        elif r is not None:
            console.print(f"route {_esc(route)} revision {r.revision}: no canary (primary {_esc(ref_text(r.primary))})")
        else:
            console.print("no canary is being rolled out")
        return
    for st in rollouts:
        print_rollout(console, st, routes.get(st.route))


def _set_route(stub, route, current, changed_by, reason):
    """SetRoute against the revision read (``current``; None: the route must not exist yet)."""
    return stub.SetRoute(inference_pb2.SetRouteRequest(
        route=route, changed_by=_user() if changed_by is None else changed_by, reason=reason,
        expected_revision=current.revision if current else 0), timeout=30)


def _set_and_report(console, stub, current, route, changed_by, reason, verb: str) -> None:
    with exit_on_rpc_error():
        new = _set_route(stub, route, current, changed_by, reason)
    console.print(f"route [bold]{_esc(new.name)}[/] revision {new.revision} (was {current.revision}): {verb}")
    for line in route_changes(current, new):
        console.print(f"  {_esc(line)}")


@rollout_group.command("promote")
@click.argument("route")
@click.option("--reason", required=True)
@click.option("--by", "changed_by", default=None, help="Who (default: your login name).")
def rollout_promote(route, reason, changed_by) -> None:
    """Make ROUTE's canary its primary and drop the canary (what a person does after a 'passed' decision)."""
    console = _console()
    stub = _inference()
    with exit_on_rpc_error():
        current = stub.GetRoute(inference_pb2.GetRouteRequest(name=route), timeout=10)
    _set_and_report(console, stub, current, _checked(promoted_route, current), changed_by, reason, "canary promoted")


@rollout_group.command("abort")
@click.argument("route")
@click.option("--reason", required=True)
@click.option("--by", "changed_by", default=None, help="Who (default: your login name).")
def rollout_abort(route, reason, changed_by) -> None:
    """Drop ROUTE's canary: all traffic back to the primary (a new revision)."""
    console = _console()
    stub = _inference()
    with exit_on_rpc_error():
        current = stub.GetRoute(inference_pb2.GetRouteRequest(name=route), timeout=10)
    if not (current.HasField("canary") and current.canary.deployment.name):
        raise click.UsageError(f"route {route!r} has no canary to abort")
    _set_and_report(console, stub, current, build_route(route, current, RouteFlags(no_canary=True)), changed_by,
                    reason, "canary aborted")


@click.command("rollback")
@click.argument("route")
@click.option("--to-revision", type=click.IntRange(min=1), default=None,
              help="The revision to restore (default: the one before the current one).")
@click.option("--reason", required=True, help="Why (kept with the new revision).")
@click.option("--by", "changed_by", default=None, help="Who (default: your login name).")
@click.option("--json", "json_out", is_flag=True, help="Print the new revision as JSON.")
def rollback(route, to_revision, reason, changed_by, json_out) -> None:
    """Roll ROUTE back: a new revision that copies an earlier one (every replica applies it within a second)."""
    console = _console()
    stub = _inference()
    with exit_on_rpc_error():
        current = _current_route(stub, route)
        new = stub.Rollback(inference_pb2.RollbackRequest(route=route, to_revision=to_revision or 0,
                                                          changed_by=_user() if changed_by is None else changed_by,
                                                          reason=reason), timeout=30)
    if json_out:
        _echo_json(as_json(new))
        return
    was = f" (was {current.revision})" if current else ""
    console.print(f"route [bold]{_esc(new.name)}[/] revision {new.revision}{was} restores revision {new.restored_from}")
    for line in (route_changes(current, new) if current else []) or ["no setting differs from the revision before"]:
        console.print(f"  {_esc(line)}")


# -- llmops prompt-label ---------------------------------------------------------------------------
@click.command("prompt-label")
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@click.argument("label", default="production")
def prompt_label(name, version, label) -> None:
    """Move prompt template NAME's LABEL (default production) to VERSION: roll a prompt forward or back."""
    console = _console()
    with exit_on_rpc_error():
        t = _inference().SetPromptLabel(inference_pb2.SetPromptLabelRequest(name=name, version=version, label=label),
                                        timeout=30)
    console.print(f"prompt {_esc(t.name)}: label {_esc(label)} -> version {t.version} "
                  f"(its labels: {_esc(', '.join(t.labels) or '-')})")


COMMANDS = (deploy_group, routes_group, rollout_group, rollback, prompt_label)
