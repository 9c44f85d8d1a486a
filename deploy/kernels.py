"""Compiled inner loops of the asynchronous simulator, each beside a plain reference.

Every numba kernel here has a reference implementation with the same signature (NumPy where
the operation vectorises, plain Python otherwise) that the tests compare it with:

==========================  ================================  =================================
kernel (``@njit(cache)``)   reference                          job
==========================  ================================  =================================
:func:`footprint_update`    :func:`footprint_update_ref`       one event into one core (NumPy)
:func:`leak_update`         :func:`leak_update_ref`            one slow-clock tick of one core
:func:`run_events`          :func:`run_events_ref`             the whole event loop (Python)
==========================  ================================  =================================

The rules these kernels follow are documented in :mod:`flexsnn.deploy.async_sim`.

Data layout (built by :func:`flexsnn.deploy.async_sim.pack_image`): the used cores get local
indices ``0..n-1`` in :meth:`ChipImage.core_order` order; their parameters are rows of ``geom``
(int64 ``[n, N_GEOM]``, columns ``G_*`` below); weights, biases and states are concatenated
into flat arrays with per-core offsets (``w_off``, ``b_off``, ``s_off``). Weights keep the
ChipImage layout ``[c_out, c_in, k, k]`` (int8), states ``[c_out, h_out, w_out]`` (int32
holding 16-bit values), biases ``[c_out]`` (int16). ``dests`` (int64 ``[n, 2, 2]``) holds
``(local core, pooling)`` per destination, ``-1`` when unused.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# ---- packed core parameters (columns of ``geom``) ----------------------------------------
G_CIN, G_HIN, G_WIN, G_COUT, G_HOUT, G_WOUT, G_K, G_SY, G_SX, G_PY, G_PX = range(11)
G_THR_HIGH, G_THR_LOW, G_RESET_ZERO, G_LEAK, G_CORE_ID = range(11, 16)
N_GEOM = 16

STATE_MIN = -(2 ** 15)
STATE_MAX = 2 ** 15 - 1

#: return codes of :func:`run_events`
STATUS_OK = 0
STATUS_CASCADE_LIMIT = 1


@njit(cache=True, inline="always")
def _clip_state(v: int, saturate: bool) -> int:
    """16-bit signed state: saturate at the range ends, or wrap around (two's complement)."""
    if saturate:
        if v > STATE_MAX:
            return STATE_MAX
        if v < STATE_MIN:
            return STATE_MIN
        return v
    return ((v - STATE_MIN) & 0xFFFF) + STATE_MIN


@njit(cache=True, inline="always")
def _fire(v: int, thr_high: int, thr_low: int, reset_zero: bool, multi: bool):
    """Spike decision of one neuron whose new state is ``v``: returns ``(n_spikes, v_next)``.

    single: one spike when ``v >= thr_high``; multi: ``v // thr_high`` spikes (sinabs'
    MultiSpike). Reset: subtract ``n * thr_high`` or set to 0. Then the floor ``thr_low``.
    """
    n = 0
    if v >= thr_high:
        if multi and thr_high > 0:
            n = v // thr_high
        else:
            n = 1
        if reset_zero:
            v = 0
        else:
            v = v - n * thr_high
    if v < thr_low:
        v = thr_low
    return n, v


# ---- one event into one core -------------------------------------------------------------
@njit(cache=True)
def footprint_update(state, weights, c_out, h_out, w_out, k, sy, sx, py, px, ci, y, x,
                     thr_high, thr_low, reset_zero, multi, saturate, position_major,
                     out_c, out_y, out_x, out_n):
    """Apply one input event ``(ci, y, x)`` to every neuron its kernel reaches.

    Args:
        state: int32 ``[c_out, h_out, w_out]`` neuron states (updated in place).
        weights: int8 ``[c_out, c_in, k, k]``.
        c_out, h_out, w_out, k, sy, sx, py, px: core geometry (stride, padding as y, x).
        ci, y, x: channel and position of the event in the core's input map.
        thr_high, thr_low, reset_zero, multi, saturate: neuron rules (see module docs).
        position_major: update order; False: channel, then row, then column (C order);
            True: row, column, then channel.
        out_c, out_y, out_x, out_n: int64 buffers (length >= c_out*k*k) receiving the
            spiking neurons and their spike counts, in update order.

    Returns:
        ``(n_spiking, synops)``: entries written to the buffers; weights applied.
    """
    # output rows whose receptive field holds y: yo*sy - py <= y <= yo*sy - py + k - 1
    a = y + py - (k - 1)
    yo_lo = 0 if a <= 0 else (a + sy - 1) // sy
    yo_hi = (y + py) // sy
    if yo_hi > h_out - 1:
        yo_hi = h_out - 1
    b = x + px - (k - 1)
    xo_lo = 0 if b <= 0 else (b + sx - 1) // sx
    xo_hi = (x + px) // sx
    if xo_hi > w_out - 1:
        xo_hi = w_out - 1
    if yo_hi < yo_lo or xo_hi < xo_lo:
        return 0, 0
    n_sp = 0
    if not position_major:
        for co in range(c_out):
            for yo in range(yo_lo, yo_hi + 1):
                ky = y + py - yo * sy
                for xo in range(xo_lo, xo_hi + 1):
                    kx = x + px - xo * sx
                    v = _clip_state(np.int64(state[co, yo, xo]) + weights[co, ci, ky, kx], saturate)
                    n, v = _fire(v, thr_high, thr_low, reset_zero, multi)
                    state[co, yo, xo] = v
                    if n > 0:
                        out_c[n_sp] = co
                        out_y[n_sp] = yo
                        out_x[n_sp] = xo
                        out_n[n_sp] = n
                        n_sp += 1
    else:
        for yo in range(yo_lo, yo_hi + 1):
            ky = y + py - yo * sy
            for xo in range(xo_lo, xo_hi + 1):
                kx = x + px - xo * sx
                for co in range(c_out):
                    v = _clip_state(np.int64(state[co, yo, xo]) + weights[co, ci, ky, kx], saturate)
                    n, v = _fire(v, thr_high, thr_low, reset_zero, multi)
                    state[co, yo, xo] = v
                    if n > 0:
                        out_c[n_sp] = co
                        out_y[n_sp] = yo
                        out_x[n_sp] = xo
                        out_n[n_sp] = n
                        n_sp += 1
    synops = c_out * (yo_hi - yo_lo + 1) * (xo_hi - xo_lo + 1)
    return n_sp, synops


def footprint_update_ref(state, weights, c_out, h_out, w_out, k, sy, sx, py, px, ci, y, x,
                         thr_high, thr_low, reset_zero, multi, saturate, position_major,
                         out_c, out_y, out_x, out_n):
    """NumPy reference of :func:`footprint_update` (same signature and effects).

    Every neuron is touched once per event, so the updates of one event are independent and
    can be applied as whole-array operations; only the order of the reported spikes depends
    on ``position_major``.
    """
    yo = np.arange(h_out)
    xo = np.arange(w_out)
    ky = y + py - yo * sy
    kx = x + px - xo * sx
    ry = yo[(ky >= 0) & (ky < k)]
    rx = xo[(kx >= 0) & (kx < k)]
    if ry.size == 0 or rx.size == 0:
        return 0, 0
    kys = y + py - ry * sy
    kxs = x + px - rx * sx
    w = weights[:, ci][:, kys][:, :, kxs].astype(np.int64)  # [c_out, ny, nx]
    block = np.ix_(np.arange(c_out), ry, rx)
    v = state[block].astype(np.int64) + w
    if saturate:
        v = np.clip(v, STATE_MIN, STATE_MAX)
    else:
        v = ((v - STATE_MIN) & 0xFFFF) + STATE_MIN
    fire = v >= thr_high
    if multi and thr_high > 0:
        n = np.where(fire, v // thr_high, 0)
    else:
        n = fire.astype(np.int64)
    if reset_zero:
        v = np.where(fire, 0, v)
    else:
        v = v - n * thr_high
    v = np.maximum(v, thr_low)
    state[block] = v
    order = (1, 2, 0) if position_major else (0, 1, 2)
    nt = n.transpose(order)
    idx = np.nonzero(nt)
    grids = [np.arange(c_out), ry, rx]
    coords = [None, None, None]
    for axis_pos, axis in enumerate(order):
        coords[axis] = grids[axis][idx[axis_pos]]
    m = idx[0].size
    out_c[:m], out_y[:m], out_x[:m] = coords[0], coords[1], coords[2]
    out_n[:m] = nt[idx]
    return m, c_out * ry.size * rx.size


# ---- one slow-clock tick of one core ------------------------------------------------------
@njit(cache=True)
def leak_update(state, biases, thr_high, thr_low, reset_zero, multi, saturate,
                out_c, out_y, out_x, out_n):
    """Add ``biases[c]`` to every neuron of channel ``c`` (one slow-clock tick).

    ``state`` int32 ``[c_out, h_out, w_out]`` (in place); neurons in C order; spiking ones
    reported in the buffers (length >= state.size). Returns the number of spiking neurons.
    """
    c_out, h_out, w_out = state.shape
    n_sp = 0
    for co in range(c_out):
        bias = np.int64(biases[co])
        for yo in range(h_out):
            for xo in range(w_out):
                v = _clip_state(np.int64(state[co, yo, xo]) + bias, saturate)
                n, v = _fire(v, thr_high, thr_low, reset_zero, multi)
                state[co, yo, xo] = v
                if n > 0:
                    out_c[n_sp] = co
                    out_y[n_sp] = yo
                    out_x[n_sp] = xo
                    out_n[n_sp] = n
                    n_sp += 1
    return n_sp


def leak_update_ref(state, biases, thr_high, thr_low, reset_zero, multi, saturate,
                    out_c, out_y, out_x, out_n):
    """NumPy reference of :func:`leak_update` (same signature and effects)."""
    v = state.astype(np.int64) + biases.astype(np.int64)[:, None, None]
    v = np.clip(v, STATE_MIN, STATE_MAX) if saturate else ((v - STATE_MIN) & 0xFFFF) + STATE_MIN
    fire = v >= thr_high
    n = np.where(fire, v // thr_high, 0) if (multi and thr_high > 0) else fire.astype(np.int64)
    v = np.where(fire, 0, v) if reset_zero else v - n * thr_high
    state[...] = np.maximum(v, thr_low)
    idx = np.nonzero(n)
    m = idx[0].size
    out_c[:m], out_y[:m], out_x[:m] = idx
    out_n[:m] = n[idx]
    return m


# ---- the event loop ----------------------------------------------------------------------
@njit(cache=True)
def _grow(a, need):
    if need <= a.shape[0]:
        return a
    b = np.empty(max(need, 2 * a.shape[0]), dtype=a.dtype)
    b[:a.shape[0]] = a
    return b


def _run_events_impl(in_c, in_y, in_x, in_t, input_dests, geom, weights, w_off, biases, b_off,
                     state, s_off, dests, leak_period_us, record, multi, saturate,
                     breadth_first, position_major, max_cascade):
    """Simulate one sample (body shared by :func:`run_events` and :func:`run_events_ref`).

    Args:
        in_c, in_y, in_x, in_t: int64 ``[N]`` input events already mapped to the input map
            (channel, row, column; DVS pooling applied), ``t`` in µs, sorted.
        input_dests: int64 local indices of the cores the input feeds.
        geom, weights, w_off, biases, b_off, state, s_off, dests: the packed image (module docs);
            ``state`` is updated in place.
        leak_period_us: slow-clock period (0 = no leak ticks).
        record: uint8 ``[n]``: 1 = record the output events of that core.
        multi, saturate, breadth_first, position_major: rules (see async_sim).
        max_cascade: most core events one input event (or tick) may cause.

    Returns:
        ``(rec, n_rec, spike_counts, synops, channel_counts, status, n_done)``: ``rec`` int64
        ``[5, cap]`` rows (local core, x, y, feature, t) of which ``n_rec`` are used;
        per-core spike and SynOps counts; spikes per (core, channel) flattened with offsets
        ``cumsum(c_out)``; a STATUS_* code and the number of input events consumed.
    """
    n_cores = geom.shape[0]
    spike_counts = np.zeros(n_cores, dtype=np.int64)
    synops = np.zeros(n_cores, dtype=np.int64)
    ch_off = np.zeros(n_cores + 1, dtype=np.int64)
    max_neurons = 1
    max_fp = 1
    for i in range(n_cores):
        ch_off[i + 1] = ch_off[i] + geom[i, G_COUT]
        nn = geom[i, G_COUT] * geom[i, G_HOUT] * geom[i, G_WOUT]
        if nn > max_neurons:
            max_neurons = nn
        fp = geom[i, G_COUT] * geom[i, G_K] * geom[i, G_K]
        if fp > max_fp:
            max_fp = fp
    channel_counts = np.zeros(ch_off[n_cores], dtype=np.int64)
    # spike buffers of one core update
    buf_len = max(max_neurons, max_fp)
    sp_c = np.empty(buf_len, dtype=np.int64)
    sp_y = np.empty(buf_len, dtype=np.int64)
    sp_x = np.empty(buf_len, dtype=np.int64)
    sp_n = np.empty(buf_len, dtype=np.int64)
    # pending core events: (local core, channel, row, column)
    q_core = np.empty(1024, dtype=np.int64)
    q_c = np.empty(1024, dtype=np.int64)
    q_y = np.empty(1024, dtype=np.int64)
    q_x = np.empty(1024, dtype=np.int64)
    rec = np.empty((5, 1024), dtype=np.int64)
    n_rec = 0

    any_leak = False
    for i in range(n_cores):
        if geom[i, G_LEAK] != 0:
            any_leak = True
    n_in = in_t.shape[0]
    next_tick = np.int64(0)
    if n_in > 0:
        next_tick = in_t[0] + leak_period_us
    do_leak = any_leak and leak_period_us > 0

    n_done = 0
    j = 0
    # a "source" is either a tick (is_tick) or input event j
    while j < n_in:
        is_tick = do_leak and next_tick <= in_t[j]
        t_now = next_tick if is_tick else in_t[j]
        head = 0
        tail = 0  # queue/stack holds entries [head, tail)
        deliveries = 0
        # seed the pending list
        if is_tick:
            next_tick += leak_period_us
            # every leaky core in core order; spikes of core i are forwarded before core i+1 leaks
            for i in range(n_cores):
                if geom[i, G_LEAK] == 0:
                    continue
                c_out = geom[i, G_COUT]
                h_out = geom[i, G_HOUT]
                w_out = geom[i, G_WOUT]
                st = state[s_off[i]:s_off[i] + c_out * h_out * w_out].reshape((c_out, h_out, w_out))
                m = leak_update(st, biases[b_off[i]:b_off[i] + c_out], geom[i, G_THR_HIGH],
                                geom[i, G_THR_LOW], geom[i, G_RESET_ZERO] != 0, multi, saturate,
                                sp_c, sp_y, sp_x, sp_n)
                head = 0
                tail = 0
                # emit the tick's spikes of core i, then drain
                for s in range(m):
                    nsp = sp_n[s]
                    spike_counts[i] += nsp
                    channel_counts[ch_off[i] + sp_c[s]] += nsp
                    if record[i] != 0:
                        rec = _grow2(rec, n_rec + nsp)
                        for _r in range(nsp):
                            rec[0, n_rec] = i
                            rec[1, n_rec] = sp_x[s]
                            rec[2, n_rec] = sp_y[s]
                            rec[3, n_rec] = sp_c[s]
                            rec[4, n_rec] = t_now
                            n_rec += 1
                # collect forwarded events in emission order
                n_fw = 0
                for s in range(m):
                    for d in range(2):
                        if dests[i, d, 0] >= 0:
                            n_fw += sp_n[s]
                need = tail + n_fw
                q_core = _grow(q_core, need)
                q_c = _grow(q_c, need)
                q_y = _grow(q_y, need)
                q_x = _grow(q_x, need)
                tail = _forward(i, m, sp_c, sp_y, sp_x, sp_n, geom, dests, q_core, q_c, q_y, q_x,
                                tail, breadth_first)
                head, tail, n_rec, rec, q_core, q_c, q_y, q_x, status, deliveries = _drain(
                    head, tail, deliveries, t_now, q_core, q_c, q_y, q_x, geom, weights, w_off,
                    state, s_off, dests, record, multi, saturate, breadth_first, position_major,
                    max_cascade, sp_c, sp_y, sp_x, sp_n, spike_counts, synops, channel_counts,
                    ch_off, rec, n_rec)
                if status != STATUS_OK:
                    return rec, n_rec, spike_counts, synops, channel_counts, status, n_done
            continue
        # input event j to every input destination (in listed order)
        nd = input_dests.shape[0]
        q_core = _grow(q_core, nd)
        q_c = _grow(q_c, nd)
        q_y = _grow(q_y, nd)
        q_x = _grow(q_x, nd)
        for d in range(nd):
            # stack: push in reverse so that the first destination is served first
            pos = d if breadth_first else nd - 1 - d
            q_core[pos] = input_dests[d]
            q_c[pos] = in_c[j]
            q_y[pos] = in_y[j]
            q_x[pos] = in_x[j]
        tail = nd
        head, tail, n_rec, rec, q_core, q_c, q_y, q_x, status, deliveries = _drain(
            head, tail, deliveries, t_now, q_core, q_c, q_y, q_x, geom, weights, w_off,
            state, s_off, dests, record, multi, saturate, breadth_first, position_major,
            max_cascade, sp_c, sp_y, sp_x, sp_n, spike_counts, synops, channel_counts,
            ch_off, rec, n_rec)
        if status != STATUS_OK:
            return rec, n_rec, spike_counts, synops, channel_counts, status, n_done
        j += 1
        n_done += 1
    return rec, n_rec, spike_counts, synops, channel_counts, STATUS_OK, n_done


def _grow2_impl(a, need):
    if need <= a.shape[1]:
        return a
    b = np.empty((a.shape[0], max(need, 2 * a.shape[1])), dtype=a.dtype)
    b[:, :a.shape[1]] = a
    return b


def _forward_impl(i, m, sp_c, sp_y, sp_x, sp_n, geom, dests, q_core, q_c, q_y, q_x, tail,
                  breadth_first):
    """Append the events that spikes ``0..m-1`` of core ``i`` send to its destinations.

    Order of delivery: spike by spike (in update order), each spike's copies (multi-spike)
    one after another, and for each copy destination 0 before destination 1. A pooled
    destination gets the event at ``(c, y // p, x // p)``; spikes in the rows/columns that
    floor pooling cuts off are dropped. For the stack (depth-first) the block is written
    reversed so it pops in delivery order.
    """
    start = tail
    for s in range(m):
        for _r in range(sp_n[s]):
            for d in range(2):
                dst = dests[i, d, 0]
                if dst < 0:
                    continue
                p = dests[i, d, 1]
                yy = sp_y[s] // p
                xx = sp_x[s] // p
                if yy >= geom[dst, G_HIN] or xx >= geom[dst, G_WIN]:
                    continue
                q_core[tail] = dst
                q_c[tail] = sp_c[s]
                q_y[tail] = yy
                q_x[tail] = xx
                tail += 1
    if not breadth_first:
        lo = start
        hi = tail - 1
        while lo < hi:
            q_core[lo], q_core[hi] = q_core[hi], q_core[lo]
            q_c[lo], q_c[hi] = q_c[hi], q_c[lo]
            q_y[lo], q_y[hi] = q_y[hi], q_y[lo]
            q_x[lo], q_x[hi] = q_x[hi], q_x[lo]
            lo += 1
            hi -= 1
    return tail


def _drain_impl(head, tail, deliveries, t_now, q_core, q_c, q_y, q_x, geom, weights, w_off,
                state, s_off, dests, record, multi, saturate, breadth_first, position_major,
                max_cascade, sp_c, sp_y, sp_x, sp_n, spike_counts, synops, channel_counts,
                ch_off, rec, n_rec):
    """Deliver pending core events until none is left (queue: FIFO; stack: LIFO)."""
    status = STATUS_OK
    while tail > head:
        if breadth_first:
            e = head
            head += 1
        else:
            tail -= 1
            e = tail
        i = q_core[e]
        ci = q_c[e]
        y = q_y[e]
        x = q_x[e]
        deliveries += 1
        if deliveries > max_cascade:
            status = STATUS_CASCADE_LIMIT
            break
        c_out = geom[i, G_COUT]
        c_in = geom[i, G_CIN]
        h_out = geom[i, G_HOUT]
        w_out = geom[i, G_WOUT]
        k = geom[i, G_K]
        st = state[s_off[i]:s_off[i] + c_out * h_out * w_out].reshape((c_out, h_out, w_out))
        w = weights[w_off[i]:w_off[i] + c_out * c_in * k * k].reshape((c_out, c_in, k, k))
        m, ops = footprint_update(st, w, c_out, h_out, w_out, k, geom[i, G_SY], geom[i, G_SX],
                                  geom[i, G_PY], geom[i, G_PX], ci, y, x, geom[i, G_THR_HIGH],
                                  geom[i, G_THR_LOW], geom[i, G_RESET_ZERO] != 0, multi, saturate,
                                  position_major, sp_c, sp_y, sp_x, sp_n)
        synops[i] += ops
        if m == 0:
            continue
        n_fw = 0
        for s in range(m):
            nsp = sp_n[s]
            spike_counts[i] += nsp
            channel_counts[ch_off[i] + sp_c[s]] += nsp
            if record[i] != 0:
                rec = _grow2(rec, n_rec + nsp)
                for _r in range(nsp):
                    rec[0, n_rec] = i
                    rec[1, n_rec] = sp_x[s]
                    rec[2, n_rec] = sp_y[s]
                    rec[3, n_rec] = sp_c[s]
                    rec[4, n_rec] = t_now
                    n_rec += 1
            n_fw += 2 * nsp
        if breadth_first and head > 0 and head == tail:
            head = 0
            tail = 0
        need = tail + n_fw
        q_core = _grow(q_core, need)
        q_c = _grow(q_c, need)
        q_y = _grow(q_y, need)
        q_x = _grow(q_x, need)
        tail = _forward(i, m, sp_c, sp_y, sp_x, sp_n, geom, dests, q_core, q_c, q_y, q_x, tail,
                        breadth_first)
    return head, tail, n_rec, rec, q_core, q_c, q_y, q_x, status, deliveries


_grow2 = njit(cache=True)(_grow2_impl)
_forward = njit(cache=True)(_forward_impl)
_drain = njit(cache=True)(_drain_impl)
run_events = njit(cache=True)(_run_events_impl)
run_events.__doc__ = _run_events_impl.__doc__


def run_events_ref(in_c, in_y, in_x, in_t, input_dests, geom, weights, w_off, biases, b_off,
                   state, s_off, dests, leak_period_us, record, multi, saturate,
                   breadth_first, position_major, max_cascade):
    """Plain-Python reference of :func:`run_events` (same signature and results).

    Runs the same event loop uncompiled, with the NumPy references
    :func:`footprint_update_ref` / :func:`leak_update_ref` for the per-core updates. It is
    about 100x slower; use it only in tests.
    """
    g = _run_events_impl.__globals__
    saved = {name: g[name] for name in ("footprint_update", "leak_update", "_grow", "_grow2",
                                         "_forward", "_drain")}
    try:
        g.update(footprint_update=footprint_update_ref, leak_update=leak_update_ref,
                 _grow=_grow.py_func, _grow2=_grow2_impl, _forward=_forward_impl,
                 _drain=_drain_impl)
        return _run_events_impl(in_c, in_y, in_x, in_t, input_dests, geom, weights, w_off,
                                biases, b_off, state, s_off, dests, leak_period_us, record,
                                multi, saturate, breadth_first, position_major, max_cascade)
    finally:
        g.update(saved)
