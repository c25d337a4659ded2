"""The worker's side of the election among replicas (``store.leader`` holds the lock and the
fence): who polls and maintains, the self-metrics that say so, and the log lines.

Rules:

- One replica leads; only it polls, writes, maintains and reads cluster objects. Followers
  serve queries (the server process) and expose self-metrics with ``recorder_leader 0``.
- A leader checks its lock every ``check_seconds``. When it is gone (the session ended, the
  database silent past half a lease) the replica has **lost contact**: it withdraws its usage
  gauges and stops maintaining, but goes on polling into its buffer (the fence refuses its
  writes), since it cannot tell a database outage, where no one writes, from a partition of
  its own. When the database answers again, it either takes the lock back and writes what it
  buffered (a single replica loses nothing to an outage), or finds another replica leading:
  then it is **deposed**, stops polling, and **hands over** the batches it fetched but did not
  store (``on_depose``: the worker's ``_hand_over``, through ``store.handover``): the
  partition began before the takeover, so the new leader's polls do not cover the time
  between its last stored write and the takeover, and metrics-server serves only its latest
  values. The new leader writes them (skipping what it stored itself); what cannot be handed
  over within the database timeout is discarded and counted
  (``recorder_samples_dropped_total{reason="deposed"}``).
- A new leader says how long nobody polled: the old leader's heartbeat named its newest poll
  and its size; the polls missed since then, times that size, are logged and counted
  (``recorder_unpolled_samples_total``), never hidden. A leader partitioned rather than dead
  polled on meanwhile and hands those polls over once the database answers it, so the
  estimate is an upper bound.
- SQLite (``leadership`` None): this replica always leads (the SQLite writer lock keeps a
  second one away).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from recorder.errors import StoreUnavailable
from recorder.store.leader import LeaderMark, Leadership, NotLeader

log = logging.getLogger("recorder.elector")


class Elector:
    def __init__(
        self,
        leadership: Leadership | None,
        registry: CollectorRegistry,
        interval_seconds: float,
        *,
        on_lead: Callable[[], None],
        on_lost: Callable[[], None],
        on_depose: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._leadership = leadership
        self._interval = interval_seconds
        self._on_lead = on_lead
        self._on_lost = on_lost
        self._on_depose = on_depose
        self._lost_contact = False
        self._clock = clock
        self._mark: LeaderMark | None = None
        self._lock = threading.Lock()
        self._unavailable = False
        self.leader = Gauge(
            "recorder_leader",
            "1 while this replica is the leader (polls, writes, maintains; cluster usage "
            "gauges come from it alone), else 0",
            registry=registry,
        )
        self.takeovers = Counter(
            "recorder_leader_takeovers",
            "Times this replica became the leader",
            registry=registry,
        )
        self.depositions = Counter(
            "recorder_leader_depositions",
            "Times this replica, having lost its lock, found another replica leading",
            registry=registry,
        )
        self.unpolled = Counter(
            "recorder_unpolled_samples",
            "Samples metrics-server served while no replica polled (estimated at a takeover: "
            "the polls missed since the last leader's newest poll, times its size)",
            registry=registry,
        )
        self.leader.set(1 if leadership is None else 0)

    @property
    def is_leader(self) -> bool:
        """Whether this replica holds the lock: it writes, maintains, exposes usage gauges."""
        return self._leadership is None or self._leadership.is_leader

    @property
    def role(self) -> str:
        """This replica's part, for ``/readyz``'s details."""
        if self.is_leader:
            return "leader"
        if self._lost_contact:
            return "lost the leader lock: polls into its buffer until the database answers"
        return "follower (another replica polls)"

    @property
    def may_poll(self) -> bool:
        """The leader, or a leader that lost contact with the database (it buffers)."""
        return self.is_leader or self._lost_contact

    @property
    def check_seconds(self) -> float:
        return self._leadership.check_seconds if self._leadership is not None else 1.0

    def polled(self, at_seconds: float, samples: int) -> None:
        """A successful poll of ``samples`` at ``at_seconds`` (wall clock), for the heartbeat."""
        with self._lock:
            self._mark = LeaderMark(int(at_seconds * 1000), samples)

    def begin(self) -> None:
        """The first round, before polling starts (SQLite: this replica leads)."""
        if self._leadership is None:
            self._on_lead()
        else:
            self.step()

    def step(self) -> None:
        """One round: a leader proves its lock, a follower tries to take it."""
        leadership = self._leadership
        if leadership is None:
            return
        if leadership.is_leader:
            with self._lock:
                mark = self._mark
            try:
                leadership.heartbeat(mark)
            except NotLeader as exc:
                self._lost(str(exc))
            return
        try:
            led = leadership.try_lead()
        except StoreUnavailable as exc:
            if not self._unavailable:
                log.warning("cannot take part in the leader election now: %s", exc)
            self._unavailable = True
            return
        self._unavailable = False
        if led:
            self._took_over(None if self._lost_contact else leadership.last_seen_leader)
        elif self._lost_contact and leadership.other_leads:
            self._deposed()

    def run(self, stop: threading.Event) -> None:
        """``step`` every ``check_seconds`` until ``stop``."""
        while not stop.wait(self.check_seconds):
            try:
                self.step()
            except Exception as exc:  # the election must go on; a bug is logged, not fatal
                log.error("the leader election failed unexpectedly: %r", exc)

    def _took_over(self, last: LeaderMark | None) -> None:
        self.leader.set(1)
        self.takeovers.inc()
        if self._lost_contact:
            self._lost_contact = False
            log.warning("this replica leads again: it writes what it buffered meanwhile")
        elif last is None or last.polled_ms <= 0:
            log.info("this replica is the leader now: it polls and maintains")
        else:
            silent = max(0.0, self._clock() - last.polled_ms / 1000)
            # The slot nearest the takeover is the new leader's own first poll.
            missed = max(0, math.floor(silent / self._interval + 0.5) - 1)
            if missed:
                self.unpolled.inc(missed * last.samples)
                log.warning(
                    "this replica is the leader now; nobody polled for %.1fs since the last "
                    "leader's newest poll: %d polls (about %d samples metrics-server served) "
                    "were not recorded, unless the last leader polled them and hands them over",
                    silent,
                    missed,
                    missed * last.samples,
                )
            else:
                log.info(
                    "this replica is the leader now; the last leader polled %.1fs ago, no poll "
                    "was missed",
                    silent,
                )
        self._on_lead()

    def _lost(self, why: str) -> None:
        self.leader.set(0)
        self._lost_contact = True
        log.error(
            "this replica lost the leader lock (%s): it polls on into its buffer until the "
            "database says who leads",
            why,
        )
        self._on_lost()

    def _deposed(self) -> None:
        self._lost_contact = False
        self.depositions.inc()
        log.error("another replica leads now: this one stops polling and follows")
        self._on_depose()

    def close(self) -> None:
        if self._leadership is not None:
            self._leadership.close()
        self.leader.set(1 if self._leadership is None else 0)
