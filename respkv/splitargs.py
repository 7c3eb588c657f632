"""Redis's sdssplitargs: one line of text into arguments, as redis-server splits inline
commands and configuration lines.

Arguments are separated by blanks (C isspace). "Double quotes" take the escapes \\n \\r \\t
\\b \\a \\xHH and \\<any>; 'single quotes' take only \\'. A closing quote must be followed
by a blank or the end of the line; a quote may open in the middle of an argument (a"b c").
Unbalanced quotes give None. The text ends at the first NUL byte, as a C string does.
"""

from __future__ import annotations

from typing import Final

_C_SPACE: Final = frozenset(b" \t\n\v\f\r")  # C isspace() in the C locale
_TOKEN_END: Final = frozenset(b" \n\r\t")  # what ends an unquoted token in sdssplitargs
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES: Final = {ord("n"): 0x0A, ord("r"): 0x0D, ord("t"): 0x09, ord("b"): 0x08, ord("a"): 0x07}
_SPLIT_SLOW_BYTES: Final = b"\"'\v\f"


def split_args(line: bytes) -> list[bytes] | None:
    """The arguments of line; None when its quotes are unbalanced."""
    if b"\0" in line:
        line = line.split(b"\0", 1)[0]
    # Without quotes, '\v' or '\f', sdssplitargs is exactly bytes.split() (C isspace ==
    # Python's bytes whitespace). '\v' and '\f' differ: skipped between tokens, kept inside.
    if len(line.translate(None, _SPLIT_SLOW_BYTES)) == len(line):
        return line.split()
    return _split_args_slow(line)


def _split_args_slow(line: bytes) -> list[bytes] | None:
    n = len(line)
    argv: list[bytes] = []
    i = 0
    while True:
        while i < n and line[i] in _C_SPACE:
            i += 1
        if i >= n:
            return argv
        token = bytearray()
        in_double = in_single = False
        while True:
            c = line[i] if i < n else 0
            after = line[i + 1] if i + 1 < n else 0
            if in_double:
                if (
                    c == 0x5C
                    and after == ord("x")
                    and i + 3 < n
                    and line[i + 2] in _HEX
                    and line[i + 3] in _HEX
                ):
                    token.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 0x5C and after:
                    i += 1
                    token.append(_ESCAPES.get(after, after))
                elif c == 0x22:
                    # A closing quote must be followed by a blank or the end of the line.
                    if after and after not in _C_SPACE:
                        return None
                    i += 1
                    break
                elif c == 0:
                    return None
                else:
                    token.append(c)
            elif in_single:
                if c == 0x5C and after == 0x27:
                    i += 1
                    token.append(0x27)
                elif c == 0x27:
                    if after and after not in _C_SPACE:
                        return None
                    i += 1
                    break
                elif c == 0:
                    return None
                else:
                    token.append(c)
            elif c == 0 or c in _TOKEN_END:
                if c:
                    i += 1
                break
            elif c == 0x22:
                in_double = True
            elif c == 0x27:
                in_single = True
            else:
                token.append(c)
            i += 1
        argv.append(bytes(token))
