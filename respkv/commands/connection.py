"""Connection commands: PING ECHO QUIT RESET HELLO AUTH SELECT and CLIENT's subcommands.

Semantics and error texts are redis-server 7.0's (networking.c, server.c, acl.c); CLIENT
SETINFO and NO-TOUCH follow 7.2, which added them. respkv has one user, `default`: its
password is `requirepass` (no password = any password is accepted, as Redis's `nopass`).

Every connection is a normal client here (no replicas, pub/sub or monitors), so CLIENT LIST
and CLIENT KILL's TYPE filters match `normal` only.
"""

from __future__ import annotations

import hmac
import weakref
from typing import TYPE_CHECKING

from respkv import REDIS_COMPAT_VERSION, errors, info
from respkv.commands.args import parse_int
from respkv.commands.introspection import arg, help_reply, token_arg
from respkv.commands.table import command, container, subcommand
from respkv.replies import OK, PONG, CommandError, Map, Raw, Verbatim

if TYPE_CHECKING:
    from respkv.client import Client
    from respkv.server_state import ServerState

SERVER_NAME = b"respkv"
DEFAULT_USER = b"default"

AUTH_WITHOUT_PASSWORD = (
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?"
)
HELLO_NOAUTH = (
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO AUTH <user> <pass> option can be used to authenticate the client and select the "
    "RESP protocol version at the same time"
)
BAD_CLIENT_NAME = "ERR Client names cannot contain spaces, newlines or special characters."
INT_RANGE = "ERR value is out of range, value must between -2147483648 and 2147483647"
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
# getClientTypeByName: the names CLIENT LIST / KILL accept for TYPE.
CLIENT_TYPES = frozenset({b"normal", b"slave", b"replica", b"pubsub", b"master"})
RESET_REPLY = Raw(b"+RESET\r\n")


def c_string(arg_: bytes) -> str:
    """An argument as Redis's printf("%s") shows it: cut at the first NUL byte."""
    return arg_.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def is_valid_attr(value: bytes) -> bool:
    """Names and library info must keep CLIENT LIST splittable: printable ASCII, no spaces."""
    return all(0x21 <= byte <= 0x7E for byte in value)


def parse_c_int(arg_: bytes) -> int:
    """A C int as getIntFromObjectOrReply reads it."""
    value = parse_int(arg_)
    if not INT32_MIN <= value <= INT32_MAX:
        raise CommandError(INT_RANGE)
    return value


# Per-client flags the Client object has no slot for (CLIENT NO-EVICT / NO-TOUCH), kept per
# server so several servers in one process (tests) cannot see each other's clients.
_client_flags: weakref.WeakKeyDictionary[ServerState, dict[int, set[str]]] = (
    weakref.WeakKeyDictionary()
)


def client_flags(client: Client) -> set[str]:
    table = _client_flags.setdefault(client.server, {})
    if len(table) > 2 * len(client.server.clients) + 16:
        for gone in [cid for cid in table if cid not in client.server.clients]:
            del table[gone]
    return table.setdefault(client.id, set())


def _password_ok(client: Client, username: bytes, password: bytes) -> bool:
    if username != DEFAULT_USER:
        return False
    required = client.server.config.requirepass
    if not required:
        return True
    # Config keeps non-UTF-8 bytes as surrogate escapes; this restores the exact bytes.
    return hmac.compare_digest(password, required.encode("utf-8", "surrogateescape"))


# Liveness and session ----------------------------------------------------------------------


@command(
    "ping", -1, "fast", group="connection",
    summary="Ping the server", since="1.0.0",
    acl="@fast @connection", arguments=[arg("message", "string", flags="optional")],
)
async def ping(client: Client, argv: list[bytes]) -> object:
    if len(argv) > 2:
        raise errors.wrong_arity("ping")
    return PONG if len(argv) == 1 else argv[1]


@command(
    "echo", 2, "loading stale fast", group="connection",
    summary="Echo the given string", since="1.0.0", acl="@fast @connection",
    arguments=[arg("message", "string")],
)
async def echo(client: Client, argv: list[bytes]) -> object:
    return argv[1]


@command(
    "quit", -1, "noscript loading stale fast no_auth allow_busy", group="connection",
    summary="Close the connection", since="1.0.0", acl="@fast @connection",
)
async def quit_(client: Client, argv: list[bytes]) -> object:
    client.close_after_reply = True
    return OK


@command(
    "reset", 1, "noscript loading stale fast no_auth allow_busy", group="connection",
    summary="Reset the connection", since="6.2.0", acl="@fast @connection",
)
async def reset(client: Client, argv: list[bytes]) -> object:
    # clearClientConnectionState: the connection looks new again, except its library info.
    client.multi = None
    client.multi_error = False
    client.server.unwatch_all(client)
    client.db = 0
    client.node = client.server.node  # CONSISTENCY's levels: back to the server defaults
    client.resp = 2
    client.name = b""
    client.authenticated = not client.server.config.requirepass
    client_flags(client).clear()
    return RESET_REPLY


@command(
    "hello", -1, "noscript loading stale fast no_auth allow_busy", group="connection",
    summary="Handshake with Redis", since="6.0.0", acl="@fast @connection",
    arguments=[
        arg("arguments", "block", flags="optional", args=[
            arg("protover", "integer"),
            arg("username_password", "block", token="AUTH", flags="optional", args=[
                arg("username", "string"),
                arg("password", "string"),
            ]),
            arg("clientname", "string", token="SETNAME", flags="optional"),
        ]),
    ],
)
async def hello(client: Client, argv: list[bytes]) -> object:
    version = 0
    index = 1
    if len(argv) >= 2:
        version = parse_int(argv[1], "ERR Protocol version is not an integer or out of range")
        if version < 2 or version > 3:
            raise CommandError("NOPROTO unsupported protocol version")
        index = 2
    # Redis 7.0 applies the options in order: an AUTH or SETNAME before a bad option has
    # already taken effect when the error is returned.
    while index < len(argv):
        more = len(argv) - 1 - index
        option = argv[index].lower()
        if option == b"auth" and more >= 2:
            if not _password_ok(client, argv[index + 1], argv[index + 2]):
                raise CommandError(errors.WRONGPASS)
            client.authenticated = True
            index += 3
        elif option == b"setname" and more >= 1:
            name = argv[index + 1]
            if not is_valid_attr(name):
                raise CommandError(BAD_CLIENT_NAME)
            client.name = name
            index += 2
        else:
            raise CommandError(f"ERR Syntax error in HELLO option '{c_string(argv[index])}'")
    if not client.authenticated:
        raise CommandError(HELLO_NOAUTH)
    if version:
        client.resp = version
    # Clients start with HELLO: a good moment to make sure INFO's rate sampler runs.
    info.start_sampling(client.server)
    return Map({
        b"server": SERVER_NAME,
        b"version": REDIS_COMPAT_VERSION.encode(),
        b"proto": client.resp,
        b"id": client.id,
        b"mode": b"standalone",
        b"role": b"master",
        b"modules": [],
    })


@command(
    "auth", -2, "noscript loading stale fast no_auth allow_busy", group="connection",
    summary="Authenticate to the server", since="1.0.0",
    complexity="O(N) where N is the number of passwords defined for the user",
    acl="@fast @connection",
    arguments=[
        arg("username", "string", since="6.0.0", flags="optional"),
        arg("password", "string"),
    ],
)
async def auth(client: Client, argv: list[bytes]) -> object:
    if len(argv) > 3:
        raise CommandError(errors.SYNTAX)
    if len(argv) == 2:
        if not client.server.config.requirepass:
            raise CommandError(AUTH_WITHOUT_PASSWORD)
        username, password = DEFAULT_USER, argv[1]
    else:
        username, password = argv[1], argv[2]
    if not _password_ok(client, username, password):
        # Like Redis, a failed AUTH leaves an authenticated connection authenticated.
        raise CommandError(errors.WRONGPASS)
    client.authenticated = True
    return OK


@command(
    "select", 2, "loading stale fast", group="connection",
    summary="Change the selected database for the current connection", since="1.0.0",
    acl="@fast @connection",
    arguments=[arg("index", "integer")],
)
async def select(client: Client, argv: list[bytes]) -> object:
    index = parse_c_int(argv[1])
    if not 0 <= index < client.server.config.databases:
        raise CommandError(errors.DB_INDEX)
    client.db = index
    return OK


# CLIENT ------------------------------------------------------------------------------------

CLIENT = container(
    "client", group="connection", summary="A container for client connection commands",
    since="2.4.0", acl="@slow",
)

_CLIENT_HELP = (
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "    * ID <client-id>",
    "      Kill connections by client id.",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "    * ID <client-id> [<client-id> ...]",
    "      Return clients with the given IDs.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <option> <value>",
    "    Set client meta attr. Options are:",
    "    * LIB-NAME: the client lib name.",
    "    * LIB-VER: the client lib version.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "NO-TOUCH (ON|OFF)",
    "    Will not touch LRU/LFU stats when this mode is on.",
    "HELP",
    "    Prints this help.",
)

_CONNECTION_ACL = "@slow @connection"
_ADMIN_ACL = "@admin @slow @dangerous @connection"


@subcommand(
    CLIENT, "id", 2, "noscript loading stale",
    summary="Returns the client ID for the current connection", since="5.0.0",
    acl=_CONNECTION_ACL,
)
async def client_id(client: Client, argv: list[bytes]) -> object:
    return client.id


@subcommand(
    CLIENT, "setname", 3, "noscript loading stale", summary="Set the current connection name",
    since="2.6.9", acl=_CONNECTION_ACL, arguments=[arg("connection-name", "string")],
)
async def client_setname(client: Client, argv: list[bytes]) -> object:
    name = argv[2]
    if not is_valid_attr(name):
        raise CommandError(BAD_CLIENT_NAME)
    client.name = name
    return OK


@subcommand(
    CLIENT, "getname", 2, "noscript loading stale", summary="Get the current connection name",
    since="2.6.9", acl=_CONNECTION_ACL,
)
async def client_getname(client: Client, argv: list[bytes]) -> object:
    return client.name or None


@subcommand(
    CLIENT, "setinfo", 4, "noscript loading stale",
    summary="Sets information specific to the client or connection.", since="7.2.0",
    acl=_CONNECTION_ACL,
    arguments=[
        arg("attr", "oneof", args=[
            arg("libname", "string", token="LIB-NAME"),
            arg("libver", "string", token="LIB-VER"),
        ]),
    ],
)
async def client_setinfo(client: Client, argv: list[bytes]) -> object:
    attr, value = argv[2], argv[3]
    which = attr.lower()
    if which not in (b"lib-name", b"lib-ver"):
        raise CommandError(f"ERR Unrecognized option '{c_string(attr)}'")
    # Redis 7.2 checks the value as a C string: the check stops at a NUL byte.
    if not is_valid_attr(value.split(b"\0", 1)[0]):
        raise CommandError(
            f"ERR {c_string(attr)} cannot contain spaces, newlines or special characters."
        )
    if which == b"lib-name":
        client.lib_name = value
    else:
        client.lib_ver = value
    return OK


def _flags_field(client: Client) -> str:
    flags = ""
    if client.multi is not None:
        flags += "x"
    if client.dirty_cas:
        flags += "d"
    if client.close_after_reply:
        flags += "c"
    if client.addr.startswith("/"):
        flags += "U"
    extra = client_flags(client)
    if "no-evict" in extra:
        flags += "e"
    if "no-touch" in extra:
        flags += "T"
    return flags or "N"


def client_info_line(client: Client) -> str:
    """One client as CLIENT LIST / CLIENT INFO print it (Redis 7.2 fields, in order).

    Buffer and memory figures that respkv does not track per connection are 0, except
    multi-mem: the bytes of the commands queued by MULTI.
    """
    server = client.server
    age_s = max(0, (client.node.clock.wall_ms() - client.created_ms) // 1000)
    idle_s = max(0, int(server.monotonic() - client.last_interaction))
    queued = client.multi
    multi_mem = sum(len(part) for argv in queued for part in argv) if queued else 0
    fields = (
        f"id={client.id}",
        f"addr={client.addr}",
        f"laddr={client.laddr}",
        f"fd={client.fd}",
        f"name={c_string(client.name)}",
        f"age={age_s}",
        f"idle={idle_s}",
        f"flags={_flags_field(client)}",
        f"db={client.db}",
        "sub=0",
        "psub=0",
        "ssub=0",
        f"multi={-1 if queued is None else len(queued)}",
        "qbuf=0",
        "qbuf-free=0",
        "argv-mem=0",
        f"multi-mem={multi_mem}",
        "rbs=0",
        "rbp=0",
        "obl=0",
        "oll=0",
        "omem=0",
        f"tot-mem={multi_mem}",
        "events=r",
        f"cmd={client.last_command}",
        "user=default",
        "redir=-1",
        f"resp={client.resp}",
        f"lib-name={c_string(client.lib_name)}",
        f"lib-ver={c_string(client.lib_ver)}",
    )
    return " ".join(fields)


@subcommand(
    CLIENT, "info", 2, "noscript loading stale",
    summary="Returns information about the current client connection.", since="6.2.0",
    acl=_CONNECTION_ACL,
)
async def client_info(client: Client, argv: list[bytes]) -> object:
    return Verbatim((client_info_line(client) + "\n").encode("utf-8", "surrogateescape"))


def _client_type(name: bytes) -> bytes:
    lowered = name.lower()
    if lowered not in CLIENT_TYPES:
        raise CommandError(f"ERR Unknown client type '{c_string(name)}'")
    return lowered


@subcommand(
    CLIENT, "list", -2, "admin noscript loading stale",
    summary="Get the list of client connections",
    since="2.4.0", complexity="O(N) where N is the number of client connections",
    acl=_ADMIN_ACL,
    arguments=[
        arg("normal_master_replica_pubsub", "oneof", token="TYPE", since="5.0.0",
            flags="optional", args=[
                token_arg("NORMAL"), token_arg("MASTER"), token_arg("REPLICA"),
                token_arg("PUBSUB"),
            ]),
        arg("id", "block", token="ID", since="6.2.0", flags="optional", args=[
            arg("client-id", "integer", flags="multiple"),
        ]),
    ],
)
async def client_list(client: Client, argv: list[bytes]) -> object:
    clients = client.server.clients
    if len(argv) == 4 and argv[2].lower() == b"type":
        wanted = _client_type(argv[3])
        chosen = list(clients.values()) if wanted == b"normal" else []
    elif len(argv) > 3 and argv[2].lower() == b"id":
        chosen = []
        for raw in argv[3:]:
            other = clients.get(parse_int(raw, "ERR Invalid client ID"))
            if other is not None:
                chosen.append(other)
    elif len(argv) != 2:
        raise CommandError(errors.SYNTAX)
    else:
        chosen = list(clients.values())
    text = "".join(client_info_line(other) + "\n" for other in chosen)
    return Verbatim(text.encode("utf-8", "surrogateescape"))


@subcommand(
    CLIENT, "kill", -3, "admin noscript loading stale", summary="Kill the connection of a client",
    since="2.4.0", complexity="O(N) where N is the number of client connections",
    acl=_ADMIN_ACL,
    arguments=[
        arg("filter", "oneof", args=[
            arg("ip:port", "string", deprecated_since="2.8.12"),
            arg("new-format", "oneof", flags="multiple", args=[
                arg("client-id", "integer", token="ID", since="2.8.12", flags="optional"),
                arg("normal_master_slave_pubsub", "oneof", token="TYPE", since="2.8.12",
                    flags="optional",
                    args=[token_arg("NORMAL"), token_arg("MASTER", since="3.2.0"),
                          token_arg("SLAVE"), token_arg("REPLICA", since="5.0.0"),
                          token_arg("PUBSUB")]),
                arg("username", "string", token="USER", flags="optional"),
                arg("ip:port", "string", token="ADDR", flags="optional"),
                arg("ip:port", "string", token="LADDR", since="6.2.0", flags="optional"),
                arg("yes/no", "string", token="SKIPME", flags="optional"),
            ]),
        ]),
    ],
)
async def client_kill(client: Client, argv: list[bytes]) -> object:
    addr: str | None = None
    laddr: str | None = None
    wanted_type: bytes | None = None
    wanted_id = 0
    skipme = True
    old_form = len(argv) == 3
    if old_form:
        addr = argv[2].decode("utf-8", "surrogateescape")
        skipme = False  # the old form may kill the caller itself
    else:
        index = 2
        while index < len(argv):
            option = argv[index].lower()
            if index + 1 >= len(argv):
                raise CommandError(errors.SYNTAX)
            value = argv[index + 1]
            if option == b"id":
                wanted_id = _client_id_filter(value)
            elif option == b"type":
                wanted_type = _client_type(value)
            elif option == b"addr":
                addr = value.decode("utf-8", "surrogateescape")
            elif option == b"laddr":
                laddr = value.decode("utf-8", "surrogateescape")
            elif option == b"user":
                if value != DEFAULT_USER:
                    raise CommandError(f"ERR No such user '{c_string(value)}'")
            elif option == b"skipme":
                if value.lower() == b"yes":
                    skipme = True
                elif value.lower() == b"no":
                    skipme = False
                else:
                    raise CommandError(errors.SYNTAX)
            else:
                raise CommandError(errors.SYNTAX)
            index += 2
    killed = 0
    for other in list(client.server.clients.values()):
        if addr is not None and other.addr != addr:
            continue
        if laddr is not None and other.laddr != laddr:
            continue
        if wanted_type is not None and wanted_type != b"normal":
            continue
        if wanted_id and other.id != wanted_id:
            continue
        if other is client:
            if skipme:
                continue
            # Closed only once this reply is out, as Redis's CLIENT_CLOSE_AFTER_REPLY.
            client.close_after_reply = True
        elif callable(other.kill):
            other.kill()
        killed += 1
    if old_form:
        if not killed:
            raise CommandError("ERR No such client")
        return OK
    return killed


def _client_id_filter(value: bytes) -> int:
    message = "ERR client-id should be greater than 0"
    client_id = parse_int(value, message)
    if client_id < 1:
        raise CommandError(message)
    return client_id


def _on_off(client: Client, argv: list[bytes], flag: str) -> object:
    mode = argv[2].lower()
    if mode == b"on":
        client_flags(client).add(flag)
    elif mode == b"off":
        client_flags(client).discard(flag)
    else:
        raise CommandError(errors.SYNTAX)
    return OK


_ON_OFF = [arg("enabled", "oneof", args=[token_arg("ON"), token_arg("OFF")])]


@subcommand(
    CLIENT, "no-evict", 3, "admin noscript loading stale",
    summary="Set client eviction mode for the current connection", since="7.0.0",
    acl=_ADMIN_ACL, arguments=_ON_OFF,
)
async def client_no_evict(client: Client, argv: list[bytes]) -> object:
    # respkv never evicts clients; the flag is kept so CLIENT LIST reports it.
    return _on_off(client, argv, "no-evict")


@subcommand(
    CLIENT, "no-touch", 3, "noscript loading stale",
    summary="Controls whether commands sent by the client affect the LRU/LFU of accessed keys.",
    since="7.2.0", acl=_CONNECTION_ACL, arguments=_ON_OFF,
)
async def client_no_touch(client: Client, argv: list[bytes]) -> object:
    # respkv keeps no LRU/LFU data; the flag is kept so CLIENT LIST reports it.
    return _on_off(client, argv, "no-touch")


@subcommand(
    CLIENT, "help", 2, "loading stale",
    summary="Show helpful text about the different subcommands", since="5.0.0",
    acl=_CONNECTION_ACL,
)
async def client_help(client: Client, argv: list[bytes]) -> object:
    return help_reply(_CLIENT_HELP)
