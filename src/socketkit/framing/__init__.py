"""Sans-I/O framing codecs: raw chunks, lines, length-prefixed frames.

See ``socketkit.framing.codecs`` for the rules each codec follows.
"""

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


def codec_by_name(name: str, max_message_size: int | None = None) -> Codec:
    """Build a codec from its name: ``raw``, ``line``, ``u32``, ``lecture``.

    Raises:
        SettingError: an unknown name, or a size the codec does not take.
    """
    from ..errors import SettingError

    try:
        if name == "raw":
            return RawCodec(max_message_size or DEFAULT_MAX_CHUNK_SIZE)
        if name == "line":
            return LineCodec(max_message_size or DEFAULT_MAX_LINE_LENGTH)
        if name == "u32":
            return LengthPrefixedCodec(max_message_size or DEFAULT_MAX_FRAME_SIZE)
        if name == "lecture":
            return LectureCodec(max_message_size or DEFAULT_MAX_LECTURE_SIZE)
    except ValueError as exc:
        # A setting from a user (the command line's --max-line): one line, not a traceback.
        raise SettingError(f"framing {name}: {exc}") from exc
    raise SettingError(f"unknown framing {name!r}: choose raw, line, u32 or lecture")
