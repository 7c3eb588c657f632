"""The INFO text: Redis 7's sections and field names, filled only with what respkv knows.

Clients and tools parse INFO (redis-py's parse_info, ioredis's ready check, exporters), so
field names and formats are Redis's, and a field appears only when its value is true for
respkv: there is no RDB file, fork, replica or allocator to report on, so those fields are
left out rather than faked. Deliberate choices:

- Memory figures are the process's resident set size (/proc/self/statm): respkv does not
  account allocations per object as Redis's allocator does, so `used_memory` is an RSS-based
  estimate and equals `used_memory_rss`.
- Persistence: data is always in the commit log (`aof_enabled:1`); `rdb_last_save_time` is
  the start of the server or the last SAVE/BGSAVE, which forces the log to disk. The
  storage engine's figures follow, prefixed `engine_` (as in `# Respkv`): tables, bytes on
  disk, flushes, compactions, write amplification ((commit log + table bytes written) /
  commit log bytes written), write stalls, corruption errors, block cache hits and misses,
  the compaction rate limit and the time it throttled. Space amplification (bytes on disk /
  live logical bytes) is not reported: the live bytes are known only after a full scan
  (the engine benchmark measures it), and `engine_disk_bytes` with DBSIZE bound it.
- `instantaneous_*` rates are averaged over a sliding window of 16 samples taken every
  100 ms, as Redis does; sampling starts with the first INFO, HELLO or CONFIG RESETSTAT (or
  `start_sampling()` at server start).
- `# Respkv` (in the default set) reports the node's identity and its counters: the bounds
  DESIGN.md promises to make visible (siblings dropped, clock prunes, engine counters ...).

Layout: each section is "# Title\\r\\n" and "name:value\\r\\n" lines; sections are separated
by an empty line. The order is fixed whatever order the sections were asked in.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

import respkv
from respkv.commands.table import all_specs

if TYPE_CHECKING:
    from cluster.cluster_node import ClusterNode
    from respkv.server_state import ServerState

# Redis's STATS_METRIC_SAMPLES and the 100 ms cron period that feeds them.
RATE_SAMPLES = 16
RATE_SAMPLE_INTERVAL_S = 0.1

# (name, title) in output order; the default set is what plain INFO prints.
SECTIONS = (
    ("server", "Server"),
    ("clients", "Clients"),
    ("memory", "Memory"),
    ("persistence", "Persistence"),
    ("stats", "Stats"),
    ("replication", "Replication"),
    ("cpu", "CPU"),
    ("modules", "Modules"),
    ("respkv", "Respkv"),
    ("commandstats", "Commandstats"),
    ("cluster", "Cluster"),
    ("keyspace", "Keyspace"),
)
DEFAULT_SECTIONS = frozenset(
    ("server", "clients", "memory", "persistence", "stats", "replication", "cpu", "modules",
     "respkv", "cluster", "keyspace")
)
ALL_SECTIONS = frozenset(name for name, _title in SECTIONS)
_ALIASES = {"module_list": "modules"}
# Node counters that CONFIG RESETSTAT zeroes (Redis's resetServerStats covers them).
_RESETTABLE_NODE_COUNTERS = (
    "expired_keys", "expired_time_cap_reached_count", "expire_cycle_cpu_milliseconds",
)


class _Rate:
    """Redis's trackInstantaneousMetric: per-second rates over the last RATE_SAMPLES."""

    __slots__ = ("index", "last_count", "last_time_s", "samples")

    def __init__(self, count: int, now_s: float) -> None:
        self.samples = [0.0] * RATE_SAMPLES
        self.index = 0
        self.last_count = count
        self.last_time_s = now_s

    def sample(self, count: int, now_s: float) -> None:
        elapsed = now_s - self.last_time_s
        per_second = (count - self.last_count) / elapsed if elapsed > 0 else 0.0
        self.samples[self.index] = max(per_second, 0.0)
        self.index = (self.index + 1) % RATE_SAMPLES
        self.last_count = count
        self.last_time_s = now_s

    def value(self) -> float:
        return sum(self.samples) / RATE_SAMPLES


class Metrics:
    """Per-server figures INFO needs that nothing else keeps."""

    def __init__(self, state: ServerState) -> None:
        self.lastsave_s = int(state.start_time)
        self.saves = 0
        self.node_baseline: dict[str, int] = {}
        self._state = weakref.ref(state)
        self._sampling = False
        self._rates: dict[str, _Rate] = {}
        self._reset_rates(state)

    def _reset_rates(self, state: ServerState) -> None:
        now = state.node.clock.monotonic()
        stats = state.stats
        self._rates = {
            "ops": _Rate(stats.total_commands_processed, now),
            "net_input": _Rate(stats.total_net_input_bytes, now),
            "net_output": _Rate(stats.total_net_output_bytes, now),
        }

    def start(self) -> None:
        if self._sampling:
            return
        state = self._state()
        if state is None:
            return
        self._sampling = True
        state.node.clock.call_later(RATE_SAMPLE_INTERVAL_S, self._tick)

    def _tick(self) -> None:
        state = self._state()
        if state is None:
            self._sampling = False
            return  # the server is gone: stop rescheduling
        now = state.node.clock.monotonic()
        stats = state.stats
        self._rates["ops"].sample(stats.total_commands_processed, now)
        self._rates["net_input"].sample(stats.total_net_input_bytes, now)
        self._rates["net_output"].sample(stats.total_net_output_bytes, now)
        state.node.clock.call_later(RATE_SAMPLE_INTERVAL_S, self._tick)

    def rate(self, name: str) -> float:
        return self._rates[name].value()

    def reset(self, state: ServerState) -> None:
        """CONFIG RESETSTAT: counters restart from zero, rates from now."""
        state.stats.reset()
        node_stats = state.node.stats()
        self.node_baseline = {
            name: node_stats.get(name, 0) for name in _RESETTABLE_NODE_COUNTERS
        }
        self._reset_rates(state)

    def node_stats(self, state: ServerState) -> dict[str, int]:
        stats = dict(state.node.stats())
        for name, base in self.node_baseline.items():
            if name in stats:
                stats[name] = max(0, stats[name] - base)
        return stats


_metrics: weakref.WeakKeyDictionary[ServerState, Metrics] = weakref.WeakKeyDictionary()


def metrics(state: ServerState) -> Metrics:
    """The server's Metrics, created (and rate sampling started) on first use."""
    found = _metrics.get(state)
    if found is None:
        found = _metrics[state] = Metrics(state)
        found.start()
    return found


def start_sampling(state: ServerState) -> None:
    """Start the instantaneous-rate sampler now (the server may call this at start-up)."""
    metrics(state)


def bytes_to_human(n: int) -> str:
    """Redis's bytesToHuman(): 1023B, 1.00K, 1.50M ..."""
    if n < 1024:
        return f"{n}B"
    for exponent, unit in enumerate("KMGTP", start=1):
        if n < 1024 ** (exponent + 1):
            return f"{n / 1024**exponent:.2f}{unit}"
    return f"{n}B"


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            resident_pages = int(handle.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def total_system_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 0


# Sections ----------------------------------------------------------------------------------

Fields = list[tuple[str, object]]


def _server(state: ServerState) -> Fields:
    uname = os.uname()
    uptime_s = int(state.monotonic() - state.start_monotonic)
    hz = _hz(state)
    return [
        ("redis_version", respkv.REDIS_COMPAT_VERSION),
        ("respkv_version", respkv.__version__),
        ("redis_mode", "standalone"),
        ("os", f"{uname.sysname} {uname.release} {uname.machine}"),
        ("arch_bits", 64 if sys.maxsize > 2**32 else 32),
        ("process_id", os.getpid()),
        ("run_id", state.run_id),
        ("tcp_port", state.tcp_port),
        ("server_time_usec", time.time_ns() // 1000),
        ("uptime_in_seconds", uptime_s),
        ("uptime_in_days", uptime_s // 86400),
        ("hz", hz),
        ("configured_hz", state.config.hz),
        ("executable", state.executable or os.path.abspath(sys.argv[0])),
        ("config_file", state.config_file or state.config.config_file),
    ]


def _hz(state: ServerState) -> int:
    # The background pace that really runs: the node's active expiry cycle.
    return max(1, 1000 // state.node.options.active_expire_interval_ms)


def _clients(state: ServerState) -> Fields:
    return [
        ("connected_clients", len(state.clients)),
        ("cluster_connections", 0),
        ("maxclients", state.config.maxclients),
        ("blocked_clients", 0),
        ("tracking_clients", 0),
        ("clients_in_timeout_table", 0),
    ]


def _memory(state: ServerState) -> Fields:
    rss = rss_bytes()
    peak = max(rss, peak_rss_bytes())
    system = total_system_memory()
    fields: Fields = [
        ("used_memory", rss),
        ("used_memory_human", bytes_to_human(rss)),
        ("used_memory_rss", rss),
        ("used_memory_rss_human", bytes_to_human(rss)),
        ("used_memory_peak", peak),
        ("used_memory_peak_human", bytes_to_human(peak)),
        ("total_system_memory", system),
        ("total_system_memory_human", bytes_to_human(system)),
    ]
    config = state.config
    fields.append(("maxmemory", config.maxmemory))
    fields.append(("maxmemory_human", bytes_to_human(config.maxmemory)))
    fields.append(("maxmemory_policy", config.maxmemory_policy))
    return fields


def _persistence(state: ServerState) -> Fields:
    info = metrics(state)
    return [
        ("loading", 0),
        ("async_loading", 0),
        ("rdb_bgsave_in_progress", 0),
        ("rdb_last_save_time", info.lastsave_s),
        ("rdb_last_bgsave_status", "ok"),
        ("rdb_saves", info.saves),
        ("aof_enabled", 1),
        ("aof_rewrite_in_progress", 0),
        ("aof_rewrite_scheduled", 0),
        ("aof_last_write_status", "ok" if state.write_error is None else "err"),
        *_engine_fields(info.node_stats(state)),
    ]


# (field, node stats key) of the engine figures in # Persistence, in output order.
_ENGINE_FIELDS = (
    ("engine_tables", "engine_tables"),
    ("engine_disk_bytes", "engine_disk_bytes"),
    ("engine_table_bytes", "engine_table_bytes"),
    ("engine_log_bytes", "engine_log_bytes"),
    ("engine_memtable_bytes", "engine_memtable_bytes"),
    ("engine_frozen_memtables", "engine_frozen_memtables"),
    ("engine_flushes", "engine_flushes"),
    ("engine_flushes_by_worker", "engine_flushes_by_worker"),
    ("engine_compactions_by_worker", "engine_compactions_by_worker"),
    ("engine_table_worker_failures", "engine_table_worker_failures"),
    ("engine_compactions", "engine_compactions"),
    ("engine_compaction_bytes_read", "engine_compaction_bytes_read"),
    ("engine_compaction_bytes_written", "engine_compaction_bytes_written"),
    ("engine_compaction_purged_keys", "compaction_purged_keys"),
    ("engine_compaction_throughput", "engine_compaction_throughput_bytes_per_s"),
    ("engine_compaction_throttled_ms", "engine_compaction_throttled_ms"),
    ("engine_write_stalls", "engine_write_stalls"),
    ("engine_corruption_errors", "engine_corruption_errors"),
    ("engine_background_errors", "engine_background_errors"),
    ("engine_block_cache_hits", "engine_block_cache_hits"),
    ("engine_block_cache_misses", "engine_block_cache_misses"),
    ("engine_block_cache_bytes", "engine_block_cache_bytes"),
)


def _engine_fields(node: dict[str, int]) -> Fields:
    """The engine's figures; none when the node has no open engine (it is closing)."""
    if "engine_tables" not in node:
        return []
    fields: Fields = [(name, node.get(key, 0)) for name, key in _ENGINE_FIELDS]
    percent = node.get("engine_write_amplification_percent", 100)
    fields.insert(10, ("engine_write_amplification", f"{percent / 100:.2f}"))
    return fields


def _stats(state: ServerState) -> Fields:
    stats = state.stats
    info = metrics(state)
    node = info.node_stats(state)
    return [
        ("total_connections_received", stats.total_connections_received),
        ("total_commands_processed", stats.total_commands_processed),
        ("instantaneous_ops_per_sec", int(info.rate("ops"))),
        ("total_net_input_bytes", stats.total_net_input_bytes),
        ("total_net_output_bytes", stats.total_net_output_bytes),
        ("instantaneous_input_kbps", f"{info.rate('net_input') / 1024:.2f}"),
        ("instantaneous_output_kbps", f"{info.rate('net_output') / 1024:.2f}"),
        ("rejected_connections", stats.rejected_connections),
        ("expired_keys", node.get("expired_keys", 0)),
        ("expired_time_cap_reached_count", node.get("expired_time_cap_reached_count", 0)),
        ("expire_cycle_cpu_milliseconds", node.get("expire_cycle_cpu_milliseconds", 0)),
        ("evicted_keys", 0),
        ("evicted_clients", 0),
        ("keyspace_hits", stats.keyspace_hits),
        ("keyspace_misses", stats.keyspace_misses),
        ("pubsub_channels", 0),
        ("pubsub_patterns", 0),
        ("pubsubshard_channels", 0),
        ("unexpected_error_replies", stats.unexpected_error_replies),
        ("total_error_replies", stats.total_error_replies),
        ("client_query_buffer_limit_disconnections",
         stats.client_query_buffer_limit_disconnections),
        ("client_output_buffer_limit_disconnections",
         stats.client_output_buffer_limit_disconnections),
    ]


def _replication(state: ServerState) -> Fields:
    return [
        ("role", "master"),
        ("connected_slaves", 0),
        ("master_failover_state", "no-failover"),
    ]


def _cpu(state: ServerState) -> Fields:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return [
        ("used_cpu_sys", f"{own.ru_stime:.6f}"),
        ("used_cpu_user", f"{own.ru_utime:.6f}"),
        ("used_cpu_sys_children", f"{children.ru_stime:.6f}"),
        ("used_cpu_user_children", f"{children.ru_utime:.6f}"),
    ]


def _modules(state: ServerState) -> Fields:
    return []  # respkv loads no modules


def _respkv(state: ServerState) -> Fields:
    node = state.node
    fields: Fields = [
        ("node_id", node.node_id),
        ("actor", node.actor.hex() if isinstance(node.actor, bytes) else node.actor),
        ("databases", node.options.databases),
        ("appendfsync", node.options.fsync),
    ]
    fields.extend(sorted(metrics(state).node_stats(state).items()))
    return fields


def _commandstats(state: ServerState) -> Fields:
    fields: Fields = []
    # Calls are counted per command; timing every command would cost more than it tells,
    # so usec is not measured (reported as 0).
    for spec in all_specs():
        if spec.calls:
            figures = f"calls={spec.calls},usec=0,usec_per_call=0.00"
            fields.append((f"cmdstat_{spec.fullname}", figures))
    return fields


def _cluster(state: ServerState) -> Fields:
    # Redis Cluster's protocol is not spoken: clients must not switch to cluster mode, so
    # cluster_enabled stays 0 and respkv's own cluster is described by fields of its own.
    node = state.node
    membership = getattr(node, "membership", None)
    if membership is None:  # standalone: exactly what redis-server says
        return [("cluster_enabled", 0)]
    config = state.config
    core = cast("ClusterNode", node)
    return [
        ("cluster_enabled", 0),
        ("respkv_cluster_nodes", len(membership.members)),
        ("respkv_cluster_owners", len(membership.ring().node_ids())),
        ("respkv_cluster_nodes_up", len(core.up_nodes())),
        ("respkv_cluster_ready", int(core.ready)),
        ("respkv_node_status", core.status.name.lower()),
        ("respkv_cluster_peers_missing", len(membership.missing_addresses())),
        ("respkv_replication_factor", config.replication_factor),
        ("respkv_read_consistency", config.read_consistency),
        ("respkv_write_consistency", config.write_consistency),
        # The repairer's state is text, so # Respkv (integer counters) cannot carry it.
        ("respkv_repair_state", core.repairer.info()["repair_state"]),
        *_hints_per_target(core),
    ]


def _hints_per_target(node: ClusterNode) -> Fields:
    """One ``respkv_hints_for_<node-id>:count=<n>,bytes=<b>`` line per other member (zeros
    included, so a parser sees a count fall to 0 rather than a line vanish), then any target
    no longer a member that still has hints. Node ids are hex: the field name holds no ':'
    and the value is the key=value list redis-py's parse_info turns into a dict."""
    hints = node.hints
    targets = [member.node_id for member in node.membership.others()]
    members = set(targets)
    targets += [t for t in hints.targets() if t not in members]
    fields: Fields = []
    for target in targets:
        pending = hints.pending(target)
        fields.append((f"respkv_hints_for_{target}",
                       f"count={pending.count},bytes={pending.bytes}"))
    return fields


def _keyspace(state: ServerState) -> Fields:
    return [
        (f"db{db}", f"keys={keys},expires={expires},avg_ttl=0")
        for db, keys, expires in state.node.keyspace()
        if keys or expires
    ]


_BUILDERS: dict[str, Callable[[ServerState], Fields]] = {
    "server": _server,
    "clients": _clients,
    "memory": _memory,
    "persistence": _persistence,
    "stats": _stats,
    "replication": _replication,
    "cpu": _cpu,
    "modules": _modules,
    "respkv": _respkv,
    "commandstats": _commandstats,
    "cluster": _cluster,
    "keyspace": _keyspace,
}


def wanted_sections(args: Iterable[bytes]) -> frozenset[str]:
    """The sections INFO's arguments select; no argument means the default set."""
    names = [arg.decode("latin-1").lower() for arg in args]
    if not names:
        return DEFAULT_SECTIONS
    wanted: set[str] = set()
    for name in names:
        if name in ("all", "everything"):
            wanted |= ALL_SECTIONS
        elif name == "default":
            wanted |= DEFAULT_SECTIONS
        else:
            wanted.add(_ALIASES.get(name, name))
    return frozenset(wanted)


def generate(state: ServerState, args: Iterable[bytes] = ()) -> bytes:
    """INFO [section ...] as the bytes Redis sends (without the bulk/verbatim framing)."""
    wanted = wanted_sections(args)
    parts: list[str] = []
    for name, title in SECTIONS:
        if name not in wanted:
            continue
        lines = [f"# {title}\r\n"]
        lines.extend(f"{field}:{value}\r\n" for field, value in _BUILDERS[name](state))
        parts.append("".join(lines))
    return "\r\n".join(parts).encode("utf-8", "surrogateescape")
