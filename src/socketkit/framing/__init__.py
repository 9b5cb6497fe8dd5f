"""Sans-I/O framing codecs: raw chunks, lines, length-prefixed frames.

See ``socketkit.framing.codecs`` for the rules each codec follows.
"""

from collections.abc import Callable, Mapping
from types import MappingProxyType

from ..errors import SettingError
from ._buffer import ReceiveBuffer
from .codecs import (
    DEFAULT_MAX_CHUNK_SIZE,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_LECTURE_SIZE,
    DEFAULT_MAX_LINE_LENGTH,
    Codec,
    Decoder,
    LectureCodec,
    LengthPrefixedCodec,
    LineCodec,
    RawCodec,
)

__all__ = [
    "CODECS",
    "DEFAULT_MAX_CHUNK_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_LECTURE_SIZE",
    "DEFAULT_MAX_LINE_LENGTH",
    "Codec",
    "Decoder",
    "LectureCodec",
    "LengthPrefixedCodec",
    "LineCodec",
    "RawCodec",
    "ReceiveBuffer",
    "codec_by_name",
]


#: The codecs by the names the command line (``--frame``) and settings use.
CODECS: Mapping[str, Callable[..., Codec]] = MappingProxyType(
    {"raw": RawCodec, "line": LineCodec, "u32": LengthPrefixedCodec, "lecture": LectureCodec}
)


def codec_by_name(name: str, max_message_size: int | None = None) -> Codec:
    """Build a codec from its name in ``CODECS``: ``raw``, ``line``, ``u32``, ``lecture``.

    Args:
        name: a key of ``CODECS``.
        max_message_size: the largest message accepted (None or 0: the codec's default).

    Raises:
        SettingError: an unknown name, or a size the codec does not take.
    """
    make = CODECS.get(name)
    if make is None:
        raise SettingError(f"unknown framing {name!r}: choose {', '.join(CODECS)}")
    try:
        return make(max_message_size) if max_message_size else make()
    except ValueError as exc:
        # A setting from a user (the command line's --max-line): one line, not a traceback.
        raise SettingError(f"framing {name}: {exc}") from exc
