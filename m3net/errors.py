"""One family of errors for everything a user can get wrong.

Library code raises an ``M3NetError`` subclass whose message names the file or option at fault,
what was expected and what to do; the CLI (m3net.cli) turns any of them into one line on stderr
and the class's ``exit_code``. Anything else that escapes is a bug and keeps its traceback.
"""


class M3NetError(Exception):
    """A problem with the user's input, files or environment; str() is the whole message."""

    exit_code = 1


class ConfigError(M3NetError):
    """An option or configuration value that does not parse, is out of range or non-finite."""

    exit_code = 2  # click's own status for a bad option


class DatasetError(M3NetError):
    """Unknown dataset, unreadable root or split list; the message names the file or option."""


class EpisodeError(M3NetError):
    """The split cannot provide the requested episodes; the message says which classes lack clips."""


class CacheError(M3NetError):
    """The file is missing, unreadable, inconsistent or not an m3net cache; the message names the file."""


class ProvenanceError(CacheError):
    """The cache was built with other settings than the ones asked for; names each difference."""


class CheckpointError(M3NetError):
    """A checkpoint that is missing, unreadable, not m3net's, or does not fit the run."""


class WeightsError(M3NetError):
    """Backbone weights could not be found or do not fit the backbone; the message says what to do."""


class ClipError(M3NetError):
    """A clip cannot give frames (missing, empty, not a video, no frames); str() is the reason."""


class PredictError(M3NetError):
    """The support folder or query clips cannot be used for prediction."""


class LockError(M3NetError):
    """Another live m3net process is writing this file or run folder."""

    exit_code = 75  # EX_TEMPFAIL: try again when the other process is done


class NonFiniteError(M3NetError):
    """A loss, feature or output became NaN or infinite; the message says where."""
