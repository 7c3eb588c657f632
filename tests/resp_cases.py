"""Request streams with the outcome redis-server 7.0 gives them: the argv it runs, then either
the text after '-ERR Protocol error: ' or None (it runs those and waits for more).

test_resp_parser.py checks RequestParser against every case, and its differential test sends
every case to a real redis-server and checks Redis still agrees. To cover a new behaviour,
append a case; keep commands harmless (PING, ECHO, SET k, or names Redis does not know).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PING = [b"PING"]
PING_RAW = b"*1\r\n$4\r\nPING\r\n"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    commands: list[list[bytes]] = field(default_factory=list)
    error: str | None = None  # None: no protocol error, Redis waits for more bytes
    authenticated: bool = True
    # True where the bytes end inside a command Redis keeps waiting for.
    incomplete: bool = False
    # False where Redis's answer depends on how the bytes are cut into reads (its 64 KiB line
    # limit is checked after each read), so the case holds only when fed in one piece.
    any_chunking: bool = True


def _line(n: int) -> bytes:
    return b"A" * n


MALFORMED: list[Case] = [
    # A multibulk element must be a '$' bulk string.
    Case("status_element", b"*1\r\n+PING\r\n", error="expected '$', got '+'"),
    Case("integer_element", b"*1\r\n:1\r\n", error="expected '$', got ':'"),
    Case("verbatim_element", b"*1\r\n=8\r\ntxt:PING\r\n", error="expected '$', got '='"),
    Case("nested_array", b"*2\r\n$4\r\nECHO\r\n*1\r\n$1\r\na\r\n", error="expected '$', got '*'"),
    Case("set_element", b"*1\r\n~1\r\n$1\r\na\r\n", error="expected '$', got '~'"),
    # Serializes to exactly the length of the bulk string "a" it imitates.
    Case("nested_null_array", b"*2\r\n$4\r\nECHO\r\n*1\r\n_\r\n",
         error="expected '$', got '*'"),
    Case("bignum_element", b"*2\r\n$4\r\nECHO\r\n(12\r\n", error="expected '$', got '('"),
    Case("binary_type_byte", b"*1\r\n\xe9x\r\n", error="expected '$', got '\xe9'"),
    Case("newline_type_byte", b"*1\r\n\n$4\r\nPING\r\n", error="expected '$', got ' '"),
    Case("cr_type_byte", b"*1\r\n\r\r\n", error="expected '$', got ' '"),
    Case(
        "after_valid_commands",
        PING_RAW * 3 + b"*1\r\nX\r\n",
        commands=[PING] * 3,
        error="expected '$', got 'X'",
    ),
    # The '*' count: Redis's string2ll, then at most INT_MAX.
    Case("empty_count", b"*\r\n", error="invalid multibulk length"),
    Case("letter_count", b"*x\r\n", error="invalid multibulk length"),
    Case("leading_zero_count", b"*01\r\n$4\r\nPING\r\n", error="invalid multibulk length"),
    Case("plus_count", b"*+1\r\n$4\r\nPING\r\n", error="invalid multibulk length"),
    Case("minus_zero_count", b"*-0\r\n", error="invalid multibulk length"),
    Case("space_before_count", b"* 1\r\n", error="invalid multibulk length"),
    Case("space_after_count", b"*1 \r\n", error="invalid multibulk length"),
    Case("count_over_int_max", b"*2147483648\r\n", error="invalid multibulk length"),
    Case("count_under_llong_min", b"*-9223372036854775809\r\n", error="invalid multibulk length"),
    Case("count_21_digits", b"*123456789012345678901\r\n", error="invalid multibulk length"),
    Case("count_ends_lf_only", b"*1\n$4\r\nPING\r\n", error="invalid multibulk length"),
    Case("binary_count", b"*\xff\xfe\r\n", error="invalid multibulk length"),
    Case(
        "count_after_commands",
        PING_RAW + b"*?\r\n",
        commands=[PING],
        error="invalid multibulk length",
    ),
    # The '$' length: string2ll, then 0 <= length <= proto-max-bulk-len (512 MiB).
    Case("empty_bulk_length", b"*1\r\n$\r\n", error="invalid bulk length"),
    Case("null_bulk", b"*1\r\n$-1\r\n", error="invalid bulk length"),
    Case("negative_bulk_length", b"*1\r\n$-5\r\n", error="invalid bulk length"),
    Case("leading_zero_bulk_length", b"*1\r\n$04\r\nPING\r\n", error="invalid bulk length"),
    Case("plus_bulk_length", b"*1\r\n$+4\r\nPING\r\n", error="invalid bulk length"),
    Case("minus_zero_bulk_length", b"*1\r\n$-0\r\n", error="invalid bulk length"),
    Case("space_in_bulk_length", b"*1\r\n$ 4\r\nPING\r\n", error="invalid bulk length"),
    Case("letter_in_bulk_length", b"*1\r\n$4x\r\nPING\r\n", error="invalid bulk length"),
    Case("bulk_over_max", b"*1\r\n$536870913\r\n", error="invalid bulk length"),
    Case("huge_bulk_header_only", b"*1\r\n$99999999999\r\n", error="invalid bulk length"),
    Case("bulk_over_llong_max", b"*1\r\n$9223372036854775808\r\n", error="invalid bulk length"),
    Case(
        "huge_bulk_after_command",
        PING_RAW + b"*1\r\n$99999999999\r\n",
        commands=[PING],
        error="invalid bulk length",
    ),
    # Inline commands: sdssplitargs quoting.
    Case("unterminated_double_quote", b'ECHO "a\r\n', error="unbalanced quotes in request"),
    Case("unterminated_single_quote", b"ECHO 'a\r\n", error="unbalanced quotes in request"),
    Case("text_after_double_quote", b'ECHO "a"b\r\n', error="unbalanced quotes in request"),
    Case("text_after_single_quote", b"ECHO 'a'b\r\n", error="unbalanced quotes in request"),
    Case("quote_mid_token_then_text", b'ECHO a"b c"d\r\n', error="unbalanced quotes in request"),
    Case("backslash_at_line_end", b'ECHO "\\\r\n', error="unbalanced quotes in request"),
    Case("cr_inside_quotes", b'ECHO "a\r\r\n', error="unbalanced quotes in request"),
    Case(
        "unbalanced_after_commands",
        b"PING\r\n" + PING_RAW + b"ECHO 'x\n",
        commands=[PING, PING],
        error="unbalanced quotes in request",
    ),
    # The 64 KiB limit on a line still missing its end.
    Case("too_big_inline", _line(70_000), error="too big inline request"),
    Case(
        "too_big_inline_with_newline_late",
        _line(100_000) + b"\r\n",
        error="too big inline request",
        any_chunking=False,
    ),
    Case(
        "inline_nul_hides_newline",
        b"PING\x00" + _line(70_000) + b"\r\n",
        error="too big inline request",
    ),
    Case("too_big_mbulk_count", b"*" + b"1" * 70_000, error="too big mbulk count string"),
    Case("too_big_bulk_count", b"*1\r\n$" + b"1" * 70_000, error="too big bulk count string"),
    Case("long_count_line", b"*" + b"1" * 60_000 + b"\r\n", error="invalid multibulk length"),
    # Before AUTH (requirepass set): at most 10 arguments of at most 16 KiB.
    Case("unauth_count", b"*11\r\n", error="unauthenticated multibulk length", authenticated=False),
    Case(
        "unauth_bulk",
        b"*1\r\n$16385\r\n",
        error="unauthenticated bulk length",
        authenticated=False,
    ),
    Case(
        "unauth_invalid_first", b"*1\r\n$-1\r\n", error="invalid bulk length", authenticated=False
    ),
    Case(
        "unauth_huge_count",
        b"*2147483648\r\n",
        error="invalid multibulk length",
        authenticated=False,
    ),
    Case(
        "unauth_after_command",
        PING_RAW + b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000\r\n",
        commands=[PING],
        error="unauthenticated bulk length",
        authenticated=False,
    ),
]

ACCEPTED: list[Case] = [
    Case("ping", PING_RAW, commands=[PING]),
    Case("set", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", commands=[[b"SET", b"k", b"v"]]),
    Case("empty_bulk", b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", commands=[[b"ECHO", b""]]),
    Case(
        "crlf_inside_bulk",
        b"*2\r\n$4\r\nECHO\r\n$6\r\na\r\n\r\nb\r\n",
        commands=[[b"ECHO", b"a\r\n\r\nb"]],
    ),
    Case(
        "binary_bulk",
        b"*2\r\n$4\r\nECHO\r\n$4\r\n\x00\xff*$\r\n",
        commands=[[b"ECHO", b"\x00\xff*$"]],
    ),
    Case(
        "mixed_pipeline",
        PING_RAW + b"ECHO hello\r\n" + b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n" + b"PING\n",
        commands=[PING, [b"ECHO", b"hello"], [b"ECHO", b"hi"], PING],
    ),
    # Empty commands run nothing.
    Case("empty_multibulk", b"*0\r\n" + PING_RAW, commands=[PING]),
    Case("null_multibulk", b"*-1\r\n" + PING_RAW, commands=[PING]),
    Case("negative_multibulk", b"*-5\r\n*-9223372036854775808\r\n" + PING_RAW, commands=[PING]),
    Case("blank_lines", b"\r\n\r\n\n   \r\n PING\r\n", commands=[PING]),
    # Redis skips, unchecked, the byte after a header's '\r' and the two after bulk data.
    Case("header_cr_then_any_byte", b"*1\rX$4\rYPING\r\n", commands=[PING]),
    Case("no_crlf_after_bulk", b"*1\r\n$4\r\nPINGXY" + PING_RAW, commands=[PING, PING]),
    # Anything not starting with '*' is an inline command, RESP3 type bytes included.
    Case(
        "resp3_set_is_inline",
        b"~1\r\n$4\r\nPING\r\n",
        commands=[[b"~1"], [b"$4"], PING],
    ),
    Case("status_is_inline", b"+PING\r\n", commands=[[b"+PING"]]),
    # sdssplitargs: quotes, escapes, blanks.
    Case(
        "double_quote_escapes",
        b'ECHO "\\n\\r\\t\\b\\a\\z\\\\\\"\\x41\\xZ1\\x4"\r\n',
        commands=[[b"ECHO", b'\n\r\t\x08\x07z\\"AxZ1x4']],
    ),
    Case("single_quote_escape", b"ECHO 'a\\'b\\n'\r\n", commands=[[b"ECHO", b"a'b\\n"]]),
    Case("empty_quoted_args", b"ECHO \"\" ''\r\n", commands=[[b"ECHO", b"", b""]]),
    Case("quote_mid_token", b'ECHO a"b c"\r\n', commands=[[b"ECHO", b"ab c"]]),
    Case("vertical_tab_blank_or_byte", b"ECHO \x0bx\x0b\r\n", commands=[[b"ECHO", b"x\x0b"]]),
    Case("quote_then_vertical_tab", b'ECHO "a"\x0b\r\n', commands=[[b"ECHO", b"a"]]),
    Case("cr_separates_inline", b"PING\rECHO x\r\n", commands=[[b"PING", b"ECHO", b"x"]]),
    Case("one_cr_stripped", b"PING\r\r\n", commands=[PING]),
    Case("high_bytes_inline", b"\xff\xfe\r\n", commands=[[b"\xff\xfe"]]),
    Case("inline_just_under_limit", _line(65_530) + b"\r\n", commands=[[_line(65_530)]]),
    # Redis waits (strchr stops at a NUL, or the line is not complete yet).
    Case("waits_for_type_line", b"*1\r\nX", incomplete=True),
    Case("nul_in_inline_line", b"PING\x00\r\n", incomplete=True),
    Case("nul_in_count_line", b"*1\x00\r\n", incomplete=True),
    Case("nul_in_bulk_header", b"*1\r\n$4\x00\r\nPING\r\n", incomplete=True),
    Case(
        "waits_for_bulk",
        PING_RAW + b"*1\r\n$536870912\r\n",
        commands=[PING],
        incomplete=True,
    ),
    Case("unauth_ten_args_ok", b"*10\r\n", authenticated=False, incomplete=True),
    Case("unauth_16k_bulk_ok", b"*1\r\n$16384\r\n", authenticated=False, incomplete=True),
    Case("unauth_inline", b"PING\r\n", commands=[PING], authenticated=False),
]
