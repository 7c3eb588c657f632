"""Deterministic simulation of a cluster in one process (STYLE rules 7 and 8).

``SimClock`` (virtual time in integer ticks), ``SimNetwork`` (in-memory links with seeded
delay, loss, duplication, reordering, partitions and crashes) and history ``checkers``. One
``random.Random(seed)`` drives every choice, so a run replays exactly from its seed.
Nothing here is imported by ``cluster/``; the cluster reaches these only through the
``Clock`` and ``Transport`` interfaces it is given.
"""
