"""The reference kernel of the asynchronous simulator (``SimConfig(kernel="reference")``): compiled
inner loops in the ChipImage layout, each beside a plain reference.

The default kernel, :mod:`flexsnn.deploy.kernels_fast`, lays the data out for speed and must give
the same results bit for bit; this module is the straightforward version it is tested against.

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
STATUS_EVENT_LIMIT = 2  # pending plus recorded events would pass max_events (memory guard)
#: default ``max_events`` of the kernels (no limit)
NO_EVENT_LIMIT = 2 ** 62


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
@njit(cache=True, inline="always")
def _slow_update(v, thr_high, thr_low, reset_zero, multi, saturate):
    """Rare path of a neuron update (out of range, spike or floor): ``(n_spikes, v_next)``."""
    v = _clip_state(v, saturate)
    return _fire(v, thr_high, thr_low, reset_zero, multi)


@njit(cache=True, inline="always")
def footprint_update(state, s_base, weights, w_base, c_in, c_out, h_out, w_out, k, sy, sx, py, px,
                     ci, y, x, thr_high, thr_low, reset_zero, multi, saturate, position_major,
                     out_c, out_y, out_x, out_n):
    """Apply one input event ``(ci, y, x)`` to every neuron its kernel reaches.

    Args:
        state: flat int32 neuron states; this core's ``[c_out, h_out, w_out]`` block (C order)
            starts at ``s_base`` (updated in place).
        weights: flat int8; this core's ``[c_out, c_in, k, k]`` block starts at ``w_base``.
        c_in, c_out, h_out, w_out, k, sy, sx, py, px: core geometry (stride, padding as y, x).
        ci, y, x: channel and position of the event in the core's input map.
        thr_high, thr_low, reset_zero, multi, saturate: neuron rules (see module docs).
        position_major: update order; False: channel, then row, then column (C order);
            True: row, column, then channel.
        out_c, out_y, out_x, out_n: int64 buffers (length >= c_out*k*k) receiving the
            spiking neurons and their spike counts, in update order.

    Returns:
        ``(n_spiking, synops)``: entries written to the buffers; weights applied.

    The common case (no spike, no floor, no overflow: ``thr_low <= v < thr_high``) is a plain
    addition; anything else takes the exact slow path (clip/wrap, fire, reset, floor).
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
    kk = k * k
    plane = h_out * w_out
    if not position_major:
        for co in range(c_out):
            wc = w_base + (co * c_in + ci) * kk
            sc = s_base + co * plane
            for yo in range(yo_lo, yo_hi + 1):
                wrow = wc + (y + py - yo * sy) * k + x + px
                srow = sc + yo * w_out
                for xo in range(xo_lo, xo_hi + 1):
                    v = np.int64(state[srow + xo]) + weights[wrow - xo * sx]
                    if v >= thr_high or v < thr_low:
                        n, v = _slow_update(v, thr_high, thr_low, reset_zero, multi, saturate)
                        if n > 0:
                            out_c[n_sp] = co
                            out_y[n_sp] = yo
                            out_x[n_sp] = xo
                            out_n[n_sp] = n
                            n_sp += 1
                    state[srow + xo] = v
    else:
        for yo in range(yo_lo, yo_hi + 1):
            for xo in range(xo_lo, xo_hi + 1):
                woff = w_base + ci * kk + (y + py - yo * sy) * k + (x + px - xo * sx)
                soff = s_base + yo * w_out + xo
                for co in range(c_out):
                    v = np.int64(state[soff + co * plane]) + weights[woff + co * c_in * kk]
                    if v >= thr_high or v < thr_low:
                        n, v = _slow_update(v, thr_high, thr_low, reset_zero, multi, saturate)
                        if n > 0:
                            out_c[n_sp] = co
                            out_y[n_sp] = yo
                            out_x[n_sp] = xo
                            out_n[n_sp] = n
                            n_sp += 1
                    state[soff + co * plane] = v
    synops = c_out * (yo_hi - yo_lo + 1) * (xo_hi - xo_lo + 1)
    return n_sp, synops


def footprint_update_ref(state, s_base, weights, w_base, c_in, c_out, h_out, w_out, k, sy, sx,
                         py, px, ci, y, x, thr_high, thr_low, reset_zero, multi, saturate,
                         position_major, out_c, out_y, out_x, out_n):
    """NumPy reference of :func:`footprint_update` (same signature and effects).

    Every neuron is touched once per event, so the updates of one event are independent and
    can be applied as whole-array operations; only the order of the reported spikes depends
    on ``position_major``.
    """
    state = state[s_base:s_base + c_out * h_out * w_out].reshape(c_out, h_out, w_out)  # a view
    weights = weights[w_base:w_base + c_out * c_in * k * k].reshape(c_out, c_in, k, k)
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
def leak_update(state, s_base, biases, b_base, c_out, h_out, w_out, thr_high, thr_low,
                reset_zero, multi, saturate, out_c, out_y, out_x, out_n):
    """Add ``biases[b_base + c]`` to every neuron of channel ``c`` (one slow-clock tick).

    ``state``: flat int32, this core's ``[c_out, h_out, w_out]`` block at ``s_base`` (in
    place); neurons in C order; spiking ones reported in the buffers (length >= the block
    size). Returns the number of spiking neurons.
    """
    n_sp = 0
    for co in range(c_out):
        bias = np.int64(biases[b_base + co])
        for yo in range(h_out):
            base = s_base + (co * h_out + yo) * w_out
            for xo in range(w_out):
                v = _clip_state(np.int64(state[base + xo]) + bias, saturate)
                n, v = _fire(v, thr_high, thr_low, reset_zero, multi)
                state[base + xo] = v
                if n > 0:
                    out_c[n_sp] = co
                    out_y[n_sp] = yo
                    out_x[n_sp] = xo
                    out_n[n_sp] = n
                    n_sp += 1
    return n_sp


def leak_update_ref(state, s_base, biases, b_base, c_out, h_out, w_out, thr_high, thr_low,
                    reset_zero, multi, saturate, out_c, out_y, out_x, out_n):
    """NumPy reference of :func:`leak_update` (same signature and effects)."""
    block = state[s_base:s_base + c_out * h_out * w_out].reshape(c_out, h_out, w_out)  # a view
    v = block.astype(np.int64) + biases[b_base:b_base + c_out].astype(np.int64)[:, None, None]
    v = np.clip(v, STATE_MIN, STATE_MAX) if saturate else ((v - STATE_MIN) & 0xFFFF) + STATE_MIN
    fire = v >= thr_high
    n = np.where(fire, v // thr_high, 0) if (multi and thr_high > 0) else fire.astype(np.int64)
    v = np.where(fire, 0, v) if reset_zero else v - n * thr_high
    block[...] = np.maximum(v, thr_low)
    idx = np.nonzero(n)
    m = idx[0].size
    out_c[:m], out_y[:m], out_x[:m] = idx
    out_n[:m] = n[idx]
    return m


# ---- the event loop ----------------------------------------------------------------------
def _grow_impl(a, need):
    """``a`` (1-D) or a copy with room for at least ``need`` entries."""
    if need <= a.shape[0]:
        return a
    b = np.empty(max(need, 2 * a.shape[0]), dtype=a.dtype)
    b[:a.shape[0]] = a
    return b


def _grow2_impl(a, need):
    """``a`` (2-D) or a copy with room for at least ``need`` columns."""
    if need <= a.shape[1]:
        return a
    b = np.empty((a.shape[0], max(need, 2 * a.shape[1])), dtype=a.dtype)
    b[:, :a.shape[1]] = a
    return b


_grow = njit(cache=True)(_grow_impl)
_grow2 = njit(cache=True)(_grow2_impl)


def _run_events_impl(in_c, in_y, in_x, in_t, input_dests, geom, weights, w_off, biases, b_off,
                     state, s_off, dests, leak_period_us, record, multi, saturate,
                     breadth_first, position_major, max_cascade, max_events=NO_EVENT_LIMIT):
    """Simulate one sample (body of :func:`run_events`, and of :func:`run_events_ref`).

    Args:
        in_c, in_y, in_x, in_t: int64 ``[N]`` input events already mapped to the input map
            (channel, row, column; DVS pooling applied), ``t`` in µs, sorted.
        input_dests: int64 local indices of the cores the input feeds.
        geom, weights, w_off, biases, b_off, state, s_off, dests: the packed image (module docs);
            ``state`` is updated in place.
        leak_period_us: slow-clock period (0 = no leak ticks).
        record: uint8 ``[n]``: 1 = record the output events of that core.
        multi, saturate, breadth_first, position_major: rules (see async_sim).
        max_cascade: most core events one input event (or one core's tick) may cause.
        max_events: most pending plus recorded events (memory guard): when a core's spikes
            could push that sum past it, the run stops with STATUS_EVENT_LIMIT.

    Returns:
        ``(rec, n_rec, spike_counts, synops, channel_counts, status, n_done)``: ``rec`` int64
        ``[5, cap]`` rows (local core, x, y, feature, t) of which ``n_rec`` are used;
        per-core spike and SynOps counts; spikes per (core, channel) flattened with offsets
        ``cumsum(c_out)``; a STATUS_* code and the number of input events consumed.

    One loop serves every source of activity. When nothing is pending it takes the next
    source: the next leaky core of a running tick, else a due tick, else the next input event
    (whose copies for the input destinations are pushed). Otherwise it delivers one pending
    core event (stack top for depth-first, queue head for breadth-first). Either way the
    spikes of the updated core are then counted, recorded and forwarded (pooled) as one block
    in delivery order (written reversed on the stack so that it pops in order).
    """
    n_cores = geom.shape[0]
    spike_counts = np.zeros(n_cores, dtype=np.int64)
    synops = np.zeros(n_cores, dtype=np.int64)
    ch_off = np.zeros(n_cores + 1, dtype=np.int64)
    buf_len = 1
    any_leak = False
    for i in range(n_cores):
        ch_off[i + 1] = ch_off[i] + geom[i, G_COUT]
        nn = geom[i, G_COUT] * geom[i, G_HOUT] * geom[i, G_WOUT]
        fp = geom[i, G_COUT] * geom[i, G_K] * geom[i, G_K]
        buf_len = max(buf_len, fp)
        if geom[i, G_LEAK] != 0:
            any_leak = True
            buf_len = max(buf_len, nn)
    channel_counts = np.zeros(ch_off[n_cores], dtype=np.int64)
    sp_c = np.empty(buf_len, dtype=np.int64)
    sp_y = np.empty(buf_len, dtype=np.int64)
    sp_x = np.empty(buf_len, dtype=np.int64)
    sp_n = np.empty(buf_len, dtype=np.int64)
    q_core = np.empty(4096, dtype=np.int64)
    q_c = np.empty(4096, dtype=np.int64)
    q_y = np.empty(4096, dtype=np.int64)
    q_x = np.empty(4096, dtype=np.int64)
    rec = np.empty((5, 4096), dtype=np.int64)
    n_rec = 0
    n_in = in_t.shape[0]
    do_leak = any_leak and leak_period_us > 0
    next_tick = np.int64(0)
    if n_in > 0:
        next_tick = in_t[0] + leak_period_us
    n_dest_in = input_dests.shape[0]

    j = 0  # next input event
    leak_next = n_cores  # next core to leak in the running tick (n_cores: no tick running)
    head = 0
    tail = 0
    deliveries = 0
    t_now = np.int64(0)
    while True:
        i = -1
        m = 0
        if tail == head:
            head = 0
            tail = 0
            if leak_next < n_cores:
                i = leak_next
                while i < n_cores and geom[i, G_LEAK] == 0:
                    i += 1
                if i >= n_cores:
                    leak_next = n_cores
                    continue
                leak_next = i + 1
                deliveries = 0
                m = leak_update(state, s_off[i], biases, b_off[i], geom[i, G_COUT],
                                geom[i, G_HOUT], geom[i, G_WOUT], geom[i, G_THR_HIGH],
                                geom[i, G_THR_LOW], geom[i, G_RESET_ZERO] != 0, multi, saturate,
                                sp_c, sp_y, sp_x, sp_n)
            elif j < n_in:
                if do_leak and next_tick <= in_t[j]:
                    t_now = next_tick
                    next_tick += leak_period_us
                    leak_next = 0
                    continue
                t_now = in_t[j]
                deliveries = 0
                if n_dest_in > q_core.shape[0]:
                    q_core = _grow(q_core, n_dest_in)
                    q_c = _grow(q_c, n_dest_in)
                    q_y = _grow(q_y, n_dest_in)
                    q_x = _grow(q_x, n_dest_in)
                for d in range(n_dest_in):
                    pos = d if breadth_first else n_dest_in - 1 - d
                    q_core[pos] = input_dests[d]
                    q_c[pos] = in_c[j]
                    q_y[pos] = in_y[j]
                    q_x[pos] = in_x[j]
                tail = n_dest_in
                j += 1
                continue
            else:
                break
        else:
            if breadth_first:
                e = head
                head += 1
            else:
                tail -= 1
                e = tail
            deliveries += 1
            if deliveries > max_cascade:
                return rec, n_rec, spike_counts, synops, channel_counts, STATUS_CASCADE_LIMIT, j - 1
            i = q_core[e]
            m, ops = footprint_update(state, s_off[i], weights, w_off[i], geom[i, G_CIN],
                                      geom[i, G_COUT], geom[i, G_HOUT], geom[i, G_WOUT],
                                      geom[i, G_K], geom[i, G_SY], geom[i, G_SX], geom[i, G_PY],
                                      geom[i, G_PX], q_c[e], q_y[e], q_x[e],
                                      geom[i, G_THR_HIGH], geom[i, G_THR_LOW],
                                      geom[i, G_RESET_ZERO] != 0, multi, saturate,
                                      position_major, sp_c, sp_y, sp_x, sp_n)
            synops[i] += ops
        if m == 0:
            continue
        # ---- spikes of core i: count, record, forward --------------------------------------
        n_spikes = 0
        for s in range(m):
            n_spikes += sp_n[s]
        spike_counts[i] += n_spikes
        if tail - head + 2 * n_spikes + n_rec + (n_spikes if record[i] != 0 else 0) > max_events:
            return rec, n_rec, spike_counts, synops, channel_counts, STATUS_EVENT_LIMIT, j - 1
        if record[i] != 0 and n_rec + n_spikes > rec.shape[1]:
            rec = _grow2(rec, n_rec + n_spikes)
        need = tail + 2 * n_spikes
        if need > q_core.shape[0] and head > 0:  # breadth-first: drop the delivered head first
            for a in range(tail - head):
                q_core[a], q_c[a], q_y[a], q_x[a] = q_core[head + a], q_c[head + a], q_y[head + a], q_x[head + a]
            tail -= head
            head = 0
            need = tail + 2 * n_spikes
        if need > q_core.shape[0]:
            q_core = _grow(q_core, need)
            q_c = _grow(q_c, need)
            q_y = _grow(q_y, need)
            q_x = _grow(q_x, need)
        start = tail
        d0 = dests[i, 0, 0]
        d1 = dests[i, 1, 0]
        for s in range(m):
            nsp = sp_n[s]
            cs = sp_c[s]
            ys = sp_y[s]
            xs = sp_x[s]
            channel_counts[ch_off[i] + cs] += nsp
            for _r in range(nsp):
                if record[i] != 0:
                    rec[0, n_rec] = i
                    rec[1, n_rec] = xs
                    rec[2, n_rec] = ys
                    rec[3, n_rec] = cs
                    rec[4, n_rec] = t_now
                    n_rec += 1
                # destination 0, then 1; pooled coordinates; floor pooling drops the rest
                if d0 >= 0:
                    p = dests[i, 0, 1]
                    yy = ys // p
                    xx = xs // p
                    if yy < geom[d0, G_HIN] and xx < geom[d0, G_WIN]:
                        q_core[tail] = d0
                        q_c[tail] = cs
                        q_y[tail] = yy
                        q_x[tail] = xx
                        tail += 1
                if d1 >= 0:
                    p = dests[i, 1, 1]
                    yy = ys // p
                    xx = xs // p
                    if yy < geom[d1, G_HIN] and xx < geom[d1, G_WIN]:
                        q_core[tail] = d1
                        q_c[tail] = cs
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
    return rec, n_rec, spike_counts, synops, channel_counts, STATUS_OK, j


run_events = njit(cache=True)(_run_events_impl)
run_events.__doc__ = _run_events_impl.__doc__


def run_events_ref(in_c, in_y, in_x, in_t, input_dests, geom, weights, w_off, biases, b_off,
                   state, s_off, dests, leak_period_us, record, multi, saturate,
                   breadth_first, position_major, max_cascade, max_events=NO_EVENT_LIMIT):
    """Plain-Python reference of :func:`run_events` (same signature and results).

    Runs the same event loop uncompiled, with the NumPy references
    :func:`footprint_update_ref` / :func:`leak_update_ref` for the per-core updates (the
    loop body looks its helpers up as module globals; they are swapped for the duration of
    the call). About 1000x slower; use it only in tests.
    """
    g = _run_events_impl.__globals__
    saved = {name: g[name] for name in ("footprint_update", "leak_update", "_grow", "_grow2")}
    try:
        g.update(footprint_update=footprint_update_ref, leak_update=leak_update_ref,
                 _grow=_grow_impl, _grow2=_grow2_impl)
        return _run_events_impl(in_c, in_y, in_x, in_t, input_dests, geom, weights, w_off,
                                biases, b_off, state, s_off, dests, leak_period_us, record,
                                multi, saturate, breadth_first, position_major, max_cascade,
                                max_events)
    finally:
        g.update(saved)
