"""Settings written once: every default, help text and valid range lives in one ``setting()`` field.

    lr: float = setting(1e-4, "SGD learning rate (paper: 1e-4).", minimum=0, exclusive=True)

A stage's config is a ``Settings`` dataclass composed from settings groups shared by the stages that
take the same options (each group beside the code that uses it, e.g. ``RunSettings`` here,
``EpisodeSettings`` in m3net.data.episodes, ``ResidencySettings`` in m3net.train.features):

    @settings
    class TrainConfig(RunSettings, EpisodeSettings, OptimizerSettings, ...):
        cache: str = setting(help="...", path="file")
        episodes: int = from_group(ScheduleSettings, "episodes", 10_000)   # another default, same help/range

The groups are mixins, so a config stays flat: ``config.lr``, ``dataclasses.asdict(config)`` (stored in
checkpoints) and the CLI names (``--lr``) are those of one plain dataclass. ``click_options(Config)``
turns the fields into the command's options (typed by the field, default and help from the field; a
command's own fields first, then its groups'), and ``Settings.__post_init__`` rejects a value of the
wrong type, a non-finite number, one out of range or not among the choices with a ``ConfigError``
naming the option. So ``--help``, the config stored in checkpoints and the checks cannot disagree.
Head options (``--head-opt KEY=VALUE``) are ``Settings`` too: ``coerce`` reads their text.
"""
import dataclasses
import math

from m3net.errors import ConfigError

# Spellings a user may give a boolean option (any case).
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def setting(default=dataclasses.MISSING, help="", *, minimum=None, exclusive=False, maximum=None, choices=None,
            flag=None, path=None, cli=True, default_factory=dataclasses.MISSING):
    """A config field with what the CLI and the checks need to know about it.

    minimum/maximum: numeric bounds (``exclusive`` makes the minimum a strict bound); choices: the
    allowed values (of every element, for a tuple); flag: click's "--on/--off" spelling of a bool;
    path: "file" or "dir" for click.Path; cli=False keeps the field out of the command line (set by
    code or by its own option, e.g. head options).
    """
    metadata = {"help": help, "minimum": minimum, "exclusive": exclusive, "maximum": maximum,
                "choices": tuple(choices) if choices else None, "flag": flag, "path": path, "cli": cli}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settings(cls):
    """``@dataclass(kw_only=True)``: the decorator of every config and settings group (keyword-only
    fields, so groups compose in any order and a required field may follow defaulted ones)."""
    return dataclasses.dataclass(kw_only=True)(cls)


@settings
class Settings:
    """Base of every config and settings group: construction validates each setting() field."""

    def __post_init__(self):
        validate(self)

    @classmethod
    def option_label(cls, name, value):
        """How an error names a field given ``value`` (the command line's spelling)."""
        return f"{option_name(name)} {value!r}"


def from_group(group, name, default=dataclasses.MISSING):
    """Setting ``name`` of settings group ``group``, with another ``default`` if given: a stage whose default
    differs redeclares the field this way, and a stage that needs one field of a group takes it alone; its
    help, range and choices stay written once, in the group."""
    base = next((f for f in dataclasses.fields(group) if f.name == name), None)
    if base is None:
        raise TypeError(f"{group.__name__} has no setting {name!r}")
    if default is dataclasses.MISSING:
        default = base.default
    return dataclasses.field(default=default, metadata=base.metadata)


@settings
class RunSettings(Settings):
    """Where a command runs and the seed of its random choices."""

    seed: int = setting(0, "Seed of every random choice the command makes (episodes, initialisation, crops, "
                        "generated data): the same seed gives the same result.")
    device: str = setting("auto", "auto (cuda if available), cuda, cuda:1, cpu.")


def option_name(name):
    return "--" + name.replace("_", "-")


def field_kind(f):
    """The type a field's values must have (None: not checked)."""
    return f.type if isinstance(f.type, type) else None


def _check_type(label, value, kind):
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = kind is None or isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{label}: expected {getattr(kind, '__name__', kind)}")


def _check_value(label, value, meta):
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{label}: expected a finite number")
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is not None and (value < low or (meta.get("exclusive") and value == low)):
        raise ConfigError(f"{label}: expected {'>' if meta.get('exclusive') else '>='} {low}")
    if high is not None and value > high:
        raise ConfigError(f"{label}: expected <= {high}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{label}: expected one of {', '.join(map(str, choices))}")


def validate(config):
    """Raise ConfigError for the first field of ``config`` whose value its setting() forbids."""
    for f in dataclasses.fields(config):
        value, meta = getattr(config, f.name), f.metadata
        label = config.option_label(f.name, value) if isinstance(config, Settings) else option_name(f.name)
        _check_type(label, value, field_kind(f))
        if not meta:
            continue
        for item in (value if isinstance(value, tuple) else (value,)):
            _check_value(label, item, meta)


def describe(f):
    """One line on a setting: its type, default, range or choices (for `m3net heads NAME`)."""
    meta, kind = f.metadata, field_kind(f)
    default = f.default if f.default is not dataclasses.MISSING else "(required)"
    parts = [getattr(kind, "__name__", "value"), f"default {default!r}"]
    if meta.get("choices"):
        parts.append("one of " + ", ".join(map(str, meta["choices"])))
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is not None:
        parts.append(f"{'>' if meta.get('exclusive') else '>='} {low}")
    if high is not None:
        parts.append(f"<= {high}")
    return "; ".join(parts)


def parse_value(label, text, kind):
    """``text`` parsed as ``kind`` (bool, int, float or str); errors name ``label``."""
    if kind is bool:
        word = text.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise ConfigError(f"{label}: expected a boolean ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)})")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{label}: expected an integer") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{label}: expected a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{label}: expected a finite number")
        return value
    return text


def coerce(config_class, f, value):
    """``value`` for field ``f`` of ``config_class``: text (from the command line) parsed by the field's
    type, an int widened for a float field, "2,3" or a sequence made a tuple of the default's element
    type. What is left wrong (type, range, choices) is the config's own check at construction."""
    kind = field_kind(f)
    label = config_class.option_label(f.name, value)
    if kind is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{label}: expected comma-separated values")
        defaults = f.default if f.default is not dataclasses.MISSING else ()
        element = type(defaults[0]) if defaults else str
        return tuple(parse_value(config_class.option_label(f.name, item), item.strip(), element)
                     if isinstance(item, str) else item for item in items)
    if isinstance(value, str) and kind in (bool, int, float):
        return parse_value(label, value, kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _command_order(config_class):
    """The class's own fields first (what the command is about), then those of its groups."""
    fields = dataclasses.fields(config_class)
    own = set(vars(config_class).get("__annotations__", {}))
    return [f for f in fields if f.name in own] + [f for f in fields if f.name not in own]


def _click_option(f):
    import click

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
    elif kind is tuple:  # comma-separated on the command line; the config checks each element
        kwargs.update(type=str, metavar="A,B,...", callback=lambda ctx, param, text: tuple(
            item.strip() for item in text.split(",") if item.strip()) if isinstance(text, str) else text)
        if "default" in kwargs:
            kwargs["default"] = ",".join(map(str, kwargs["default"]))
        if meta.get("choices"):
            kwargs["help"] = f"{kwargs['help'] or ''} Any of: {', '.join(map(str, meta['choices']))}.".strip()
    elif meta.get("choices"):
        kwargs["type"] = click.Choice([str(c) for c in meta["choices"]])
    elif meta.get("path"):
        kwargs["type"] = click.Path(file_okay=meta["path"] == "file", dir_okay=meta["path"] == "dir")
    elif kind in (int, float, str):
        kwargs["type"] = kind
    return click.option(*names, f.name, **kwargs)


def click_options(config_class):
    """Decorator adding one click option per ``setting()`` field of ``config_class`` (plain fields and
    cli=False settings stay out of the command line)."""
    fields = [f for f in _command_order(config_class) if f.metadata and f.metadata.get("cli", True)]

    def decorate(command):
        for f in reversed(fields):
            command = _click_option(f)(command)
        return command

    return decorate


def parse_seeds(text):
    """"0,1,2" -> (0, 1, 2): distinct non-negative integers (the seeds of a run over several benchmarks)."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"seeds {text!r}: expected comma-separated integers such as 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {text!r}: a seed is listed twice")
    if min(seeds) < 0:
        raise ConfigError(f"seeds {text!r}: expected non-negative integers")
    return seeds
