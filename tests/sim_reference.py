"""An independent, slow, plain-Python Speck2e reference simulator (tests only).

Written separately from ``flexsnn.deploy.kernels`` from the rules in
``flexsnn.deploy.async_sim`` (module docstring): it enumerates *every* output neuron and asks
whether its receptive field contains the event (no footprint arithmetic), keeps state in
nested Python lists, and follows the depth-first order by plain recursion (breadth-first with
a deque). It works on the ChipImage objects directly (no packing).
"""

from __future__ import annotations

from collections import deque

import numpy as np

S_MIN, S_MAX = -32768, 32767


class RefSim:
    def __init__(self, image, *, spike="single", order="depth-first", update_order="channel-major",
                 saturate=True, leak_period_us=1000):
        self.image = image
        self.multi = spike == "multi"
        self.dfs = order == "depth-first"
        self.pos_major = update_order == "position-major"
        self.saturate = saturate
        self.period = leak_period_us
        self.cores = {c.core: c for c in image.cores}

    def _fresh_state(self):
        st = {}
        for cid, c in self.cores.items():
            co, h, w = c.output_shape
            st[cid] = [[[0] * w for _ in range(h)] for _ in range(co)]
        return st

    def _neurons(self, c):
        co, h, w = c.output_shape
        if self.pos_major:
            return [(o, yy, xx) for yy in range(h) for xx in range(w) for o in range(co)]
        return [(o, yy, xx) for o in range(co) for yy in range(h) for xx in range(w)]

    def _apply(self, cid, o, yy, xx, amount):
        """Add ``amount`` to one neuron, return how many spikes it emits."""
        c = self.cores[cid]
        v = self.state[cid][o][yy][xx] + amount
        if self.saturate:
            v = min(max(v, S_MIN), S_MAX)
        else:
            while v > S_MAX:
                v -= 65536
            while v < S_MIN:
                v += 65536
        n = 0
        if v >= c.threshold_high:
            n = (v // c.threshold_high) if (self.multi and c.threshold_high > 0) else 1
            v = 0 if c.reset_mode == "zero" else v - n * c.threshold_high
        v = max(v, c.threshold_low)
        self.state[cid][o][yy][xx] = v
        return n

    def _update(self, cid, ch, y, x):
        """One event into core ``cid``: returns the spikes [(c, y, x)] (copies for multi)."""
        c = self.cores[cid]
        k = c.kernel_size
        sy, sx = c.stride
        py, px = c.padding
        spikes = []
        for o, yy, xx in self._neurons(c):
            ky = y - (yy * sy - py)
            kx = x - (xx * sx - px)
            if 0 <= ky < k and 0 <= kx < k:
                self.synops[cid] += 1
                n = self._apply(cid, o, yy, xx, int(c.weights[o, ch, ky, kx]))
                spikes += [(o, yy, xx)] * n
        return spikes

    def _emit(self, cid, spikes, t):
        """Record spikes; return the list of (dest core, c, y, x) in delivery order."""
        c = self.cores[cid]
        out = []
        for (o, yy, xx) in spikes:
            self.counts[cid] += 1
            if cid == self.image.output_core or self.record_all:
                self.events.append((cid, xx, yy, o, t))
            for d in c.destinations:
                dst = self.cores[d.core]
                py_, px_ = yy // d.pooling, xx // d.pooling
                if py_ < dst.input_shape[1] and px_ < dst.input_shape[2]:
                    out.append((d.core, o, py_, px_))
        return out

    def _deliver_dfs(self, cid, ch, y, x, t):
        for nxt in self._emit(cid, self._update(cid, ch, y, x), t):
            self._deliver_dfs(*nxt, t)

    def _deliver_bfs(self, items, t):
        q = deque(items)
        while q:
            cid, ch, y, x = q.popleft()
            q.extend(self._emit(cid, self._update(cid, ch, y, x), t))

    def _tick(self, t):
        for cid in self.image.core_order():
            c = self.cores[cid]
            if not (c.leak_enabled and np.any(c.biases != 0)):
                continue
            spikes = []
            co, h, w = c.output_shape
            for o in range(co):
                for yy in range(h):
                    for xx in range(w):
                        spikes += [(o, yy, xx)] * self._apply(cid, o, yy, xx, int(c.biases[o]))
            items = self._emit(cid, spikes, t)
            if self.dfs:
                for it in items:
                    self._deliver_dfs(*it, t)
            else:
                self._deliver_bfs(items, t)

    def run(self, events, *, record_all=False):
        """Returns (events list of (core, x, y, feature, t), spike counts, synops)."""
        self.state = self._fresh_state()
        self.synops = {cid: 0 for cid in self.cores}
        self.counts = {cid: 0 for cid in self.cores}
        self.events = []
        self.record_all = record_all
        inp = self.image.input
        next_tick = int(events["t"][0]) + self.period if len(events) else 0
        for ev in events:
            t = int(ev["t"])
            while next_tick <= t:
                self._tick(next_tick)
                next_tick += self.period
            ch = 0 if inp.merge_polarities else int(ev["p"])
            y, x = int(ev["y"]) // inp.pooling, int(ev["x"]) // inp.pooling
            if self.dfs:
                for d in inp.destinations:
                    self._deliver_dfs(d, ch, y, x, t)
            else:
                self._deliver_bfs([(d, ch, y, x) for d in inp.destinations], t)
        return self.events, self.counts, self.synops
