"""Settings written once: each stage's ``@dataclass`` config is the single source of its defaults,
help texts and valid ranges.

    lr: float = setting(1e-4, "SGD learning rate (paper: 1e-4).", minimum=0, exclusive=True)

``click_options(Config)`` turns the fields into the command's options (``--lr``, typed by the
field, default and help from the field), and ``validate(config)`` (called by each config's
``__post_init__``) rejects a value of the wrong type, a non-finite number, one out of range or not
among the choices with a ``ConfigError`` naming the option. So ``--help``, the config stored in
checkpoints and the checks cannot disagree.
"""
import dataclasses
import math

import click

from m3net.errors import ConfigError


def setting(default=dataclasses.MISSING, help="", *, minimum=None, exclusive=False, maximum=None, choices=None,
            flag=None, path=None, cli=True, default_factory=dataclasses.MISSING):
    """A config field with what the CLI and the checks need to know about it.

    minimum/maximum: numeric bounds (``exclusive`` makes the minimum a strict bound); choices: the
    allowed values; flag: click's "--on/--off" spelling of a bool; path: "file" or "dir" for
    click.Path; cli=False keeps the field out of the command line (set by code, e.g. head options).
    """
    metadata = {"help": help, "minimum": minimum, "exclusive": exclusive, "maximum": maximum,
                "choices": tuple(choices) if choices else None, "flag": flag, "path": path, "cli": cli}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def device_setting():
    """The --device option every stage shares."""
    return setting("auto", "auto (cuda if available), cuda, cuda:1, cpu.")


def option_name(name):
    return "--" + name.replace("_", "-")


def _check_type(name, value, kind):
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = kind is None or isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{option_name(name)} {value!r}: expected {getattr(kind, '__name__', kind)}")


def validate(config):
    """Raise ConfigError for the first field of ``config`` whose value its setting() forbids."""
    for f in dataclasses.fields(config):
        value, meta = getattr(config, f.name), f.metadata
        kind = f.type if isinstance(f.type, type) else None
        _check_type(f.name, value, kind)
        if not meta:
            continue
        name = option_name(f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} {value}: expected a finite number")
        low, high = meta.get("minimum"), meta.get("maximum")
        if low is not None and (value < low or (meta.get("exclusive") and value == low)):
            raise ConfigError(f"{name} {value}: expected {'>' if meta.get('exclusive') else '>='} {low}")
        if high is not None and value > high:
            raise ConfigError(f"{name} {value}: expected <= {high}")
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{name} {value!r}: expected one of {', '.join(map(str, meta['choices']))}")


def _click_option(f):
    meta, kind = f.metadata, f.type
    names = [meta["flag"]] if meta.get("flag") else [option_name(f.name)]
    kwargs = {"help": meta.get("help") or None, "show_default": True}
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        kwargs["required"] = True
    elif f.default is not dataclasses.MISSING:
        kwargs["default"] = f.default
    if kind is bool:
        if not meta.get("flag"):
            names = [f"{option_name(f.name)}/--no-{f.name.replace('_', '-')}"]
        elif "/" not in meta["flag"]:
            kwargs["is_flag"], kwargs["show_default"] = True, False
    elif meta.get("choices"):
        kwargs["type"] = click.Choice([str(c) for c in meta["choices"]])
    elif meta.get("path"):
        kwargs["type"] = click.Path(file_okay=meta["path"] == "file", dir_okay=meta["path"] == "dir")
    elif kind in (int, float, str):
        kwargs["type"] = kind
    return click.option(*names, f.name, **kwargs)


def click_options(config_class, skip=()):
    """Decorator adding one click option per ``setting()`` field of ``config_class`` (in field order;
    plain fields and cli=False settings stay out of the command line)."""
    fields = [f for f in dataclasses.fields(config_class)
              if f.metadata and f.metadata.get("cli", True) and f.name not in skip]

    def decorate(command):
        for f in reversed(fields):
            command = _click_option(f)(command)
        return command

    return decorate


# Spellings a user may give a boolean option (any case).
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_value(owner, name, text, kind):
    """``text`` parsed as ``kind`` (bool, int, float or str) for the error message's ``owner``."""
    where = f"{owner} {name}={text!r}"
    if kind is bool:
        word = text.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise ConfigError(f"{where}: expected a boolean ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)})")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{where}: expected a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number")
        return value
    return text
