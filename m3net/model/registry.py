"""The registry of few-shot heads (``name -> class``) that the trainer, tests and CLI iterate, and the
parsing of their options (--head-opt). The contract itself is m3net.model.base.FewShotHead;
parameter-free heads (``trainable = False``) are scored straight from the cache.
"""
import dataclasses
import textwrap

from m3net.config import Settings, coerce, describe, setting, settings
from m3net.errors import ConfigError

HEADS = {}


@settings
class HeadSettings(Settings):
    """The head a command trains or benchmarks, and its options."""

    head: str = setting("m3net", "Head from the registry (see `m3net heads`).")
    head_options: dict = setting(cli=False, default_factory=dict)  # typed by the head's Config (--head-opt)


def register_head(name):
    """Class decorator: make the head buildable as ``build_head(name, ...)``."""

    def decorate(cls):
        if name in HEADS:
            raise ValueError(f"head {name!r} is registered twice ({HEADS[name].__name__}, {cls.__name__})")
        cls.name = name
        if "Config" not in vars(cls):  # a head without options of its own gets its own Config to carry its name
            cls.Config = settings(type("Config", (cls.Config,), {"__module__": cls.__module__,
                                                                 "__qualname__": f"{cls.__qualname__}.Config"}))
        cls.Config.head_name = name
        HEADS[name] = cls
        return cls

    return decorate


def list_heads():
    return sorted(HEADS)


def head_class(name):
    if name not in HEADS:
        raise ConfigError(f"unknown head {name!r}; choose from {', '.join(list_heads())}")
    return HEADS[name]


def head_options(name, options):
    """``options`` checked against head ``name``'s Config: unknown keys, values that are not of the field's
    type, out of range or not among its choices are a ConfigError naming the option; text values ("false",
    "off", "0.5", "2,3") are parsed. Checked here, before any cache is loaded or model built."""
    config_class = head_class(name).Config
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(f"head {name!r} has no option(s) {unknown}; its options are {sorted(fields)}")
    typed = {key: coerce(config_class, fields[key], value) for key, value in options.items()}
    config_class(**typed)  # the Config's own checks: type, range, choices
    return typed


def parse_head_options(name, pairs):
    """--head-opt KEY=VALUE texts -> typed options of head ``name`` (dashes in KEY read as underscores)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--head-opt {pair!r}: expected KEY=VALUE")
        options[key.strip().replace("-", "_")] = value.strip()
    return head_options(name, options)


def parse_named_head_options(heads, pairs):
    """evaluate's --head-opt HEAD.KEY=VALUE texts -> {head: typed options}, for the parameter-free ``heads``
    it scores (a trained head's options are in its checkpoint)."""
    grouped = {}
    for pair in pairs:
        name, dot, rest = pair.partition(".")
        if not dot or "=" not in rest:
            raise ConfigError(f"--head-opt {pair!r}: expected HEAD.KEY=VALUE (e.g. otam.gamma=0.01)")
        if name not in heads:
            raise ConfigError(f"--head-opt {pair!r}: {name!r} is not a --head of this evaluation "
                              f"({', '.join(heads) or 'none given'})")
        grouped.setdefault(name, []).append(rest)
    return {name: parse_head_options(name, texts) for name, texts in grouped.items()}


def _options(config_class):
    """The fields a user sets (feature_dim and num_frames come from the cache)."""
    return [f for f in dataclasses.fields(config_class) if f.metadata.get("cli", True)]


def head_table():
    """One line per registered head: name, trained or parameter-free, options with their defaults."""
    lines = []
    for name in list_heads():
        cls = HEADS[name]
        options = ", ".join(f"{f.name}={f.default!r}" for f in _options(cls.Config))
        lines.append(f"{name:<12} {'trained' if cls.trainable else 'parameter-free':<15} {options}")
    return "\n".join(lines + ["", "`m3net heads NAME` explains each option of one head."])


def describe_head(name):
    """Head ``name``: the first paragraph of its docstring, then every option with its type, default,
    range or choices and its help."""
    cls = head_class(name)
    summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    kind = "trained" if cls.trainable else "parameter-free (scored straight from the cache)"
    lines = [f"{name}: {kind}", textwrap.fill(summary, 100), "", "options (--head-opt KEY=VALUE):"]
    for f in _options(cls.Config):
        lines.append(f"  {f.name}  ({describe(f)})")
        lines += textwrap.wrap(f.metadata.get("help", ""), 96, initial_indent="      ", subsequent_indent="      ")
    if not _options(cls.Config):
        lines.append("  (none)")
    return "\n".join(lines)


def build_head(name, **options):
    """The head ``name`` built from its Config fields (unknown options and mistyped values are errors)."""
    cls = head_class(name)
    return cls(cls.Config(**head_options(name, options)))
