"""A Snakemake profile's resource settings, applied to a job as Snakemake applies them.

The profile (``slurm/config.yaml``) is YTE-templated: its ``__definitions__`` read ``MVL_SLURM_*``
from the environment. :func:`load_profile` evaluates it with ``yte`` exactly as Snakemake 9 does
(``yte.process_yaml(..., require_use_yte=True)``) and turns its mappings into the command-line
form (``set-resources: {train_run: {mem_mb: ...}}`` -> ``train_run:mem_mb=...``).

Precedence for one job, as in Snakemake: ``set-threads`` replaces the rule's ``threads``;
``set-resources`` replaces the rule's resource; ``default-resources`` fills a resource that
neither sets. Values are Python expressions of ``attempt`` and ``threads``
(``32000 * attempt``). An option given on the command line replaces the profile's whole list for
that option (Snakemake reads profiles with configargparse), so ``--set-resources
train_run:runtime=2880`` drops every ``set-resources`` entry of the profile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from medvisionllama.errors import InputError

#: where Snakemake looks for a profile given by name (after the path itself)
PROFILE_HOMES = (Path.home() / ".config" / "snakemake", Path("/etc/xdg/snakemake"))


@dataclass
class Profile:
    """The resource options of a profile (or of a command line), in command-line form."""

    set_threads: dict[str, str] = field(default_factory=dict)  #: rule -> expression
    set_resources: dict[str, dict[str, str]] = field(default_factory=dict)  #: rule -> name -> expression
    default_resources: dict[str, str] = field(default_factory=dict)  #: name -> expression
    retries: int = 0
    source: str = ""

    def override(self, *, set_threads: list[str] | None = None, set_resources: list[str] | None = None,
                 default_resources: list[str] | None = None) -> "Profile":
        """This profile with command-line options on top (each given option replaces its list)."""
        other = Profile(dict(self.set_threads), {k: dict(v) for k, v in self.set_resources.items()},
                        dict(self.default_resources), self.retries, self.source)
        if set_threads:
            other.set_threads = _assignments(set_threads, "--set-threads")
        if set_resources:
            other.set_resources = _rule_assignments(set_resources, "--set-resources")
        if default_resources:
            other.default_resources = _assignments(default_resources, "--default-resources")
        return other


def _assignments(items: list[str], option: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise InputError(f"{option} {item!r}: expected NAME=VALUE")
        result[key.strip()] = value.strip()
    return result


def _rule_assignments(items: list[str], option: str) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    for item in items:
        rule, sep, assign = str(item).partition(":")
        if not sep:
            raise InputError(f"{option} {item!r}: expected RULE:RESOURCE=VALUE")
        result.setdefault(rule.strip(), {}).update(_assignments([assign], option))
    return result


def _format_value(value: Any) -> str:
    """As Snakemake's profile reader: a string holding a number stays a quoted string."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                kind(value)
                return repr(value)
            except ValueError:
                pass
        return value
    return str(value)


def find_profile(profile: str | os.PathLike[str]) -> Path:
    """The profile's YAML file: ``profile`` as a folder or file, else ~/.config/snakemake/<name>."""
    path = Path(profile)
    candidates = [path] + [home / str(profile) for home in PROFILE_HOMES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        for name in ("profile.yaml", "config.yaml"):
            if (candidate / name).is_file():
                return candidate / name
    raise InputError(f"profile {str(profile)!r}: no config.yaml in {path} or in {', '.join(map(str, PROFILE_HOMES))}")


def load_profile(profile: str | os.PathLike[str]) -> Profile:
    """Evaluate a profile's YAML (its YTE templates read the current environment)."""
    import yte

    path = find_profile(profile)
    try:
        with open(path) as stream:
            data = yte.process_yaml(stream, require_use_yte=True)
    except Exception as exc:  # yte raises plain exceptions for template errors
        raise InputError(f"profile {path}: cannot evaluate it: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"profile {path}: expected a mapping of options")

    def one_level(key: str) -> dict[str, str]:
        value = data.get(key) or {}
        if isinstance(value, list):
            return _assignments(value, f"{path}: {key}")
        return {str(k): _format_value(v) for k, v in value.items()}

    set_resources = data.get("set-resources") or {}
    if isinstance(set_resources, list):
        rules = _rule_assignments(set_resources, f"{path}: set-resources")
    else:
        if not all(isinstance(v, dict) for v in set_resources.values()):
            raise InputError(f"{path}: set-resources must map each rule to its resources")
        rules = {str(r): {str(k): _format_value(v) for k, v in res.items()} for r, res in set_resources.items()}
    try:
        retries = int(data.get("retries", 0) or 0)
    except (TypeError, ValueError):
        raise InputError(f"{path}: retries must be a whole number, got {data.get('retries')!r}") from None
    return Profile(one_level("set-threads"), rules, one_level("default-resources"), retries, str(path))


def evaluate(expression: str, *, attempt: int, threads: int | None = None, where: str = "") -> Any:
    """The value of a resource expression (``"32000 * attempt"``, ``"'gpuq'"``, ``"8"``)."""
    names: dict[str, Any] = {"attempt": attempt, "__builtins__": {"min": min, "max": max, "int": int,
                                                                  "round": round, "str": str}}
    if threads is not None:
        names["threads"] = threads
    try:
        return eval(compile(expression, "<resource>", "eval"), names)  # noqa: S307 - the user's own profile
    except NameError as exc:
        if getattr(exc, "name", None) not in {"input", "wildcards", "rulename", "resources", "output"}:
            return expression  # a bare word (gpuq, a100): Snakemake keeps it as a string
        raise InputError(f"{where}: cannot evaluate {expression!r} here ({exc}); preflight knows attempt and threads only") from None
    except SyntaxError:
        return expression  # a bare string, as Snakemake keeps it


@dataclass(frozen=True)
class Value:
    """A resource value and where it came from (``rule``, ``set-resources``, ``default-resources``,
    ``set-threads``, ``estimate``), so that a message can name the setting to change."""

    value: Any
    source: str


RuleResources = Mapping[str, "Any | Callable[[int, int], Any]"]


def apply(rule: str, threads: int, resources: RuleResources, profile: Profile, attempt: int = 1,
          *, estimated: frozenset[str] = frozenset(), cores: int | None = None) -> tuple[Value, dict[str, Value]]:
    """Threads and resources of one job of ``rule`` after the profile.

    ``resources``: the rule's own, each a value or a function ``(attempt, threads) -> value``
    (as a rule's lambdas); names in ``estimated`` are labelled ``estimate``. ``cores``: Snakemake's
    ``--cores``, which caps threads."""
    if rule in profile.set_threads:
        t = Value(int(evaluate(profile.set_threads[rule], attempt=attempt, where=f"set-threads {rule}")), "set-threads")
    else:
        t = Value(int(threads), "rule")
    if cores is not None and t.value > cores:
        t = Value(cores, "--cores")
    result: dict[str, Value] = {}
    for name, value in resources.items():
        raw = value(attempt, t.value) if callable(value) else value
        result[name] = Value(raw, "estimate" if name in estimated else "rule")
    for name, expr in profile.set_resources.get(rule, {}).items():
        where = f"set-resources {rule}:{name}"
        result[name] = Value(evaluate(expr, attempt=attempt, threads=t.value, where=where), "set-resources")
    for name, expr in profile.default_resources.items():
        if name not in result:
            where = f"default-resources {name}"
            result[name] = Value(evaluate(expr, attempt=attempt, threads=t.value, where=where), "default-resources")
    return t, result
