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
checkpoints) and the CLI names (``--lr``) are those of one plain dataclass. ``config_params(Config)``
turns the fields into the command's options (typed by the field, default and help from the field; a
command's own fields first, then its groups'; a tuple is a list option, the option repeated, and for
names and numbers also comma-separated), and ``Settings.__post_init__`` rejects a value of the wrong
type, a non-finite number, one out of range or not among the choices with a ``ConfigError`` naming the
option. So ``--help``, the config stored in checkpoints and the checks cannot disagree. Head options
(``--head-opt KEY=VALUE``) are ``Settings`` too: ``coerce`` reads their text. A training run writes its
resolved settings to OUT/config.json (``write_run_config``), which ``--config`` replays.
"""
import dataclasses
import math

from m3net.errors import ConfigError

# Spellings a user may give a boolean option (any case).
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def setting(default=dataclasses.MISSING, help="", *, minimum=None, exclusive=False, maximum=None, choices=None,
            option=None, path=None, item=None, cli=True, default_factory=dataclasses.MISSING):
    """A config field with what the CLI and the checks need to know about it.

    minimum/maximum: numeric bounds (``exclusive`` makes the minimum a strict bound); choices: the
    allowed values (of every element, for a tuple); option: the command line's spelling when it is not
    --field-name (a bool's "--on/--off" pair or a lone "--flag"; a list's singular "--checkpoint");
    path: "file", "dir" or "any" for click.Path (a tuple's elements, for a list of paths); item: the element
    type of a tuple (default: its default's first element's type, else str); cli=False keeps the field
    out of the command line (set by code or by its own option, e.g. head options).
    """
    metadata = {"help": help, "minimum": minimum, "exclusive": exclusive, "maximum": maximum,
                "choices": tuple(choices) if choices else None, "option": option, "path": path, "item": item,
                "cli": cli}
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
    def label(value):
        return config.option_label(f.name, value) if isinstance(config, Settings) else option_name(f.name)

    for f in dataclasses.fields(config):
        value, meta = getattr(config, f.name), f.metadata
        _check_type(label(value), value, field_kind(f))
        if not meta:
            continue
        for item in (value if isinstance(value, tuple) else (value,)):
            _check_value(label(item), item, meta)  # a list's error names the element


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


def element_type(f):
    """The type of a tuple field's elements: its ``item``, else its default's first element's type, else str."""
    if f.metadata.get("item"):
        return f.metadata["item"]
    defaults = f.default if f.default is not dataclasses.MISSING else ()
    return type(defaults[0]) if defaults else str


def coerce(config_class, f, value):
    """``value`` for field ``f`` of ``config_class``: text (from the command line) parsed by the field's
    type, an int widened for a float field, "2,3" or a sequence made a tuple of the field's element
    type. What is left wrong (type, range, choices) is the config's own check at construction."""
    kind = field_kind(f)
    label = config_class.option_label(f.name, value)
    if kind is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{label}: expected comma-separated values")
        element = element_type(f)
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


def _list_values(f):
    """The callback of a list option: every occurrence's items (a list of names or numbers also splits on
    commas: --seeds 0,1 --seeds 2 is --seeds 0,1,2; a list of paths does not, a path may hold a comma) parsed
    as the field's element type."""
    splits = not f.metadata.get("path")
    element = element_type(f)

    def parse(ctx, param, given):
        items = [part for text in given for part in (text.split(",") if splits else (text,))]
        return tuple(parse_value(f"{param.opts[0]} {item.strip()!r}", item.strip(), element)
                     for item in items if item.strip())

    return parse


def _click_params(f):
    """(declarations, keyword arguments) of the click option of field ``f``."""
    import click

    meta, kind = f.metadata, f.type
    names = [meta["option"]] if meta.get("option") else [option_name(f.name)]
    kwargs = {"help": meta.get("help") or None, "show_default": True}
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        kwargs["required"] = True
    elif f.default is not dataclasses.MISSING:
        kwargs["default"] = f.default
    if kind is bool:
        if not meta.get("option"):
            names = [f"{option_name(f.name)}/--no-{f.name.replace('_', '-')}"]
        elif "/" not in meta["option"]:
            kwargs["is_flag"], kwargs["show_default"] = True, False
    elif kind is tuple:  # a list: the option repeated (names and numbers also comma-separated); the config
        # checks each element
        paths = bool(meta.get("path"))
        kwargs.update(multiple=True, type=str, metavar="PATH" if paths else "A[,B...]", callback=_list_values(f))
        if "default" in kwargs:
            kwargs["default"] = tuple(map(str, kwargs["default"])) or None
        choices = f" Any of: {', '.join(map(str, meta['choices']))}." if meta.get("choices") else ""
        how = "repeat the option" if paths else "repeat the option or separate with commas"
        kwargs["help"] = f"{kwargs['help'] or ''}{choices} (A list: {how}.)".strip()
    elif meta.get("choices"):
        kwargs["type"] = click.Choice([str(c) for c in meta["choices"]])
    elif meta.get("path"):
        kwargs["type"] = click.Path(file_okay=meta["path"] != "dir", dir_okay=meta["path"] != "file")
    elif kind in (int, float, str):
        kwargs["type"] = kind
    return (*names, f.name), kwargs


def config_params(config_class):
    """One click option per ``setting()`` field of ``config_class``, the class's own fields first (plain
    fields and cli=False settings stay out of the command line)."""
    import click

    fields = [f for f in _command_order(config_class) if f.metadata and f.metadata.get("cli", True)]
    return [click.Option(declarations, **kwargs) for declarations, kwargs in map(_click_params, fields)]


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


RUN_CONFIG = "config.json"  # in every training run's --out: what `--config` replays
NOT_REPLAYED = ("resume",)  # a replay starts a run (--resume continues one)


def write_run_config(out, command, config):
    """OUT/config.json: the command and every resolved setting of ``config`` (presets applied, head options
    typed), written atomically at the start of a run, so ``m3net COMMAND --config OUT/config.json`` replays it."""
    import json
    import os

    from m3net._version import __version__

    path = os.path.join(out, RUN_CONFIG)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump({"command": command, "m3net": __version__, "settings": dataclasses.asdict(config)}, fh, indent=1)
    os.replace(tmp, path)
    return path


def load_run_config(path):
    """(command, settings) of a run's config.json; an unreadable or foreign file is a ConfigError naming it."""
    import json

    try:
        with open(path) as fh:
            saved = json.load(fh)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--config {path}: not a readable run config ({err})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict) or "command" not in saved:
        raise ConfigError(f"--config {path}: not an m3net run config (expected the config.json a training run "
                          "writes into its --out)")
    return saved["command"], saved["settings"]


def read_run_config(path, command):
    """The settings of a run's config.json as the defaults of ``command`` (``--config``); a file another
    command wrote is refused, and --resume is never replayed."""
    wrote, saved = load_run_config(path)
    if wrote != command:
        raise ConfigError(f"--config {path}: written by `m3net {wrote}`, not `m3net {command}`")
    return {key: value for key, value in saved.items() if key not in NOT_REPLAYED}


def split_settings(options, *groups):
    """Instances of the settings ``groups`` from the keyword arguments ``options`` that are their fields, which
    are taken out of ``options`` (the rest stays there for the command's own config)."""
    return tuple(group(**{f.name: options.pop(f.name) for f in dataclasses.fields(group) if f.name in options})
                 for group in groups)
