"""The stream kernel of the asynchronous simulator: feed-forward images, core by core.

Used by ``SimConfig(kernel="fast")`` (the default) whenever :func:`stream_plan` accepts the
image and only one core is recorded; results are bit for bit those of the event-loop kernel
:func:`flexsnn.deploy.kernels_fast.run_events_fast` and of the reference kernel.

**Why the order may change.** When every core is fed by exactly one source (the input, or one
core earlier in core order: a chain or a tree, no merge, no feedback), the sequence of events a
core receives is the sequence of spikes its source emits (pooled, in emission order), whatever
order the cascades run in: depth-first and breadth-first give every core the same sequence,
hence the same states, spikes and counts (the rules in :mod:`flexsnn.deploy.async_sim`). The
kernel therefore takes the input in chunks (up to :data:`CHUNK_INPUTS` input events) and runs
each core over all of its pending events of the chunk, in core order, appending the spikes to
its destinations' streams. Slow-clock ticks travel down the streams as markers: a core leaks
when its marker arrives (after every event its source sent before the tick, as on the event
loop, where a tick's leaky cores run in core order and each cascade ends before the next core
leaks), then passes the marker on. The one recorded core's events come out in its emission
order, which is again the same.

**Limits stay exact.** ``max_cascade`` and ``max_events`` are checked with a bound: when a
chunk's core events exceed ``max_cascade``, or its core events plus three times its spikes plus
the recorded events exceed ``max_events`` (the most the event loop could hold at any point of
that chunk), or the streams would outgrow ``max_events``, the kernel stops with
:data:`STATUS_FALLBACK` and the caller reruns the sample on the event loop, which decides
exactly (and raises the named error where it applies).

**The update.** Weights are expanded per core to ``[c_in, ky, kx0, d, c_out]`` int16 with
``kx0`` the kernel column of the first output column an input column reaches and ``d`` the
output column after it (``w[c_out, c_in, ky, kx0 - d * sx]``, zero where negative), so one
event's update of one output row is one contiguous block of ``n_x * c_out`` weights added to one
contiguous block of the ``[h_out, w_out, c_out]`` int16 state, for every stride. The block goes
through :func:`_upd_vec` 32 neurons at a time (one vector of 16-bit lanes: saturating or
wrapping add, floor for the neurons left below ``threshold_high``, for single spikes the fire
and reset too, and a bit mask of the neurons at or above it; lanes past the block are written
back unchanged, so the arrays carry :data:`PAD` spare entries; 32 lanes measured 7 % faster
than 16). Only the masked neurons are then visited (multi spikes: the exact rare path, fire,
reset, floor), in (row, column, channel) order, sorted to (channel, row, column) for
``update_order="channel-major"``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from flexsnn.deploy.kernels import (
    G_COUT, G_HIN, G_HOUT, G_K, G_LEAK, G_PX, G_PY, G_RESET_ZERO, G_SX, G_SY, G_THR_HIGH,
    G_THR_LOW, G_WIN, G_WOUT, STATUS_OK, _fire,
)
from flexsnn.deploy.kernels_fast import grow_columns, leak_update_fast, run_buffers

#: returned when a limit might be reached: rerun the sample on the event-loop kernel
STATUS_FALLBACK = 3
#: spare int16 entries after the state and the expanded weights (a vector may read and rewrite
#: up to _LANES - 1 entries past a block)
PAD = 32
#: input events per chunk (the streams hold one chunk's events at a time)
CHUNK_INPUTS = 256
#: most stream items (input events and ticks) per chunk: the item index takes 16 bits
_CHUNK_ITEMS = 60_000
_LANES = 32
_SHIFT_I, _SHIFT_C, _SHIFT_Y = 48, 32, 16
_MASK16 = 0xFFFF
_LOW48 = (1 << 48) - 1
_MARK = _LOW48  # a tick marker: c, y and x fields all ones


def _splat(builder, value, vty):
    undef = ir.Constant(vty, ir.Undefined)
    v = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(ir.IntType(32), vty.count), None))


@intrinsic
def _upd_vec(typingctx, s_addr, w_addr, n_lanes, thr_high, thr_low, saturate, fire, reset_zero):
    """Update :data:`_LANES` (32) consecutive int16 neurons at address ``s_addr`` with the int16 weights at
    ``w_addr``: ``u = s + w`` saturated (``saturate``) or wrapped to 16 bits. Neurons with
    ``u < thr_high`` get ``max(u, thr_low)``; the others keep ``u`` (the caller fires them) or,
    with ``fire`` (single spikes and ``thr_high > 0``, so that ``u - thr_high`` fits in 16
    bits), are fired here: ``max(0 if reset_zero else u - thr_high, thr_low)``. Only the first
    ``n_lanes`` (>= 32: all) change: the others get weight 0, floor -32768 and no spike, so the
    whole vector is written back with a plain store (a masked store would stop the next load
    of these neurons from being forwarded from it). Returns the bit mask (bit ``l``: neuron
    ``l``) of the changed neurons at or above ``thr_high``."""
    sig = types.uint64(types.uintp, types.uintp, types.int64, types.int16, types.int16,
                       types.boolean, types.boolean, types.boolean)

    def codegen(context, builder, signature, args):
        sa, wa, nl, th, tl, sat, fire_, rz = args
        i16 = ir.IntType(16)
        v16 = ir.VectorType(i16, _LANES)  # (named for its 16-bit lanes)
        zero = ir.Constant(v16, [0] * _LANES)
        ps = builder.inttoptr(sa, v16.as_pointer())
        pw = builder.inttoptr(wa, v16.as_pointer())
        n16 = builder.trunc(builder.select(builder.icmp_signed("<", nl, ir.Constant(nl.type, _LANES)),
                                           nl, ir.Constant(nl.type, _LANES)), i16)
        lanes = builder.icmp_signed("<", ir.Constant(v16, list(range(_LANES))), _splat(builder, n16, v16))
        s = builder.load(ps, align=2)
        w = builder.select(lanes, builder.load(pw, align=2), zero)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, v16]),
                                            "llvm.sadd.sat.v32i16")
        u = builder.select(sat, builder.call(fn, [s, w]), builder.add(s, w))
        vth = _splat(builder, th, v16)
        vtl = builder.select(lanes, _splat(builder, tl, v16), ir.Constant(v16, [-32768] * _LANES))
        spk = builder.and_(builder.icmp_signed(">=", u, vth), lanes)
        fired = builder.select(rz, zero, builder.sub(u, vth))
        kept = builder.select(fire_, fired, u)
        base = builder.select(spk, kept, u)  # spiking: fired (or u, fired by the caller)
        floor = builder.select(builder.icmp_signed(">", base, vtl), base, vtl)
        nv = builder.select(builder.and_(spk, builder.not_(_splat(builder, fire_, ir.VectorType(ir.IntType(1), _LANES)))),
                            u, floor)
        builder.store(nv, ps, align=2)
        bits = builder.bitcast(spk, ir.IntType(_LANES))
        return builder.zext(bits, ir.IntType(64))

    return sig, codegen


@intrinsic
def _ctz64(typingctx, v):
    """Index of the lowest set bit of a non-zero uint64."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64, ir.IntType(1)]),
                                            "llvm.cttz.i64")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])

    return sig, codegen


@njit(cache=True)
def _seen_before(a, d):
    """True when ``a[d]`` occurs in ``a[:d]``."""
    for e in range(d):
        if a[e] == a[d]:
            return True
    return False


@njit(cache=True)
def _sort_spikes(sp_k, sp_n, m):
    """Sort the first ``m`` spikes by key (a stable argsort; for many spikes at once)."""
    order = np.argsort(sp_k[:m], kind="mergesort")
    tk = sp_k[:m][order]
    tn = sp_n[:m][order]
    sp_k[:m] = tk
    sp_n[:m] = tn


@njit(cache=True)
def _core_pass(i, qi, m, q, q_len, geom, weights_x, wx_off, biases, b_off, state, s_off, dests,
               fp_ylo, fp_yhi, fp_xlo, fp_xhi, fp_yoff, fp_xoff, lane_x, lane_c, lane_off, item_t,
               sp_k, sp_n, tmp_k, tmp_n, rec, rec_core, multi, saturate, position_major, spike_counts,
               channel_counts, ch_off, synops, acc):
    """Run core ``i`` over its stream ``q[i, qi:q_len[i]]``, appending its spikes to its
    destinations' streams (and to ``rec`` when ``i == rec_core``).

    ``m > 0``: event ``qi`` was already applied and its ``m`` spikes wait in ``sp_k``/``sp_n``
    (a previous pass ran out of room). ``acc``: int64 ``[n_rec, core events, spikes]`` of the
    chunk, updated. Returns ``(qi, m, need_q, need_rec)``: the pass stopped at event ``qi``
    with ``m`` spikes pending because the streams need ``need_q`` columns or ``rec``
    ``need_rec``; ``qi == q_len[i]`` when the stream is done. (Arrays are never reassigned
    here: a reassigned array costs atomic reference counting on every loop turn. Computed
    indices are cast to unsigned where they are known >= 0: numba then emits no negative-index
    wraparound; measured 9 % faster.)
    """
    s_addr = state.ctypes.data
    w_addr = weights_x.ctypes.data
    n_q = q_len[i]
    c_out = geom[i, G_COUT]
    h_out = geom[i, G_HOUT]
    w_out = geom[i, G_WOUT]
    kk = geom[i, G_K]
    sy = geom[i, G_SY]
    sx = geom[i, G_SX]
    py = geom[i, G_PY]
    px = geom[i, G_PX]
    row_w = ((kk + sx - 1) // sx) * c_out  # expanded weights per (ci, ky, kx0)
    thr_high = geom[i, G_THR_HIGH]
    thr_low = geom[i, G_THR_LOW]
    thr_high16 = np.int16(thr_high)
    thr_low16 = np.int16(thr_low)
    reset_zero = geom[i, G_RESET_ZERO] != 0
    # single spikes with thr_high > 0: fired in the vector update (u - thr_high fits in 16 bits)
    vec_fire = not multi and thr_high > 0
    leaky = geom[i, G_LEAK] != 0
    s_base = s_off[i]
    w_base = wx_off[i]
    yoff = fp_yoff[i]
    xoff = fp_xoff[i]
    loff = lane_off[i]
    rec_i = i == rec_core
    d0 = dests[i, 0, 0]
    d1 = dests[i, 1, 0]
    d1m = d1 if d1 != d0 else -1  # a tick goes once to each destination core
    p0, sh0 = dests[i, 0, 1], dests[i, 0, 2]
    p1, sh1 = dests[i, 1, 1], dests[i, 1, 2]
    h0 = w0 = h1 = w1 = 0
    if d0 >= 0:
        h0, w0 = geom[d0, G_HIN], geom[d0, G_WIN]
    if d1 >= 0:
        h1, w1 = geom[d1, G_HIN], geom[d1, G_WIN]
    ch_base = ch_off[i]
    cap = q.shape[1]
    n_rec = acc[0]
    n_events = acc[1]
    n_spk_all = acc[2]
    ops = np.int64(0)
    resume = m > 0
    while qi < n_q:
        e = q[np.uint64(i), np.uint64(qi)]
        marker = (e & _LOW48) == _MARK
        if resume:
            resume = False
        elif marker:
            if (d0 >= 0 and q_len[d0] >= cap) or (d1m >= 0 and q_len[d1m] >= cap):
                break  # no room to pass the tick on: nothing done yet
            m = 0
            if leaky:
                m = leak_update_fast(state, s_base, biases, b_off[i], c_out, h_out, w_out, thr_high,
                                     thr_low, reset_zero, multi, saturate, sp_k, sp_n)
        else:
            m = 0
            n_events += 1
            ci = (e >> _SHIFT_C) & _MASK16
            y = (e >> _SHIFT_Y) & _MASK16
            x = e & _MASK16
            uy = np.uint64(yoff + y)
            ux = np.uint64(xoff + x)
            yl = fp_ylo[uy]
            yh = fp_yhi[uy]
            xl = fp_xlo[ux]
            xh = fp_xhi[ux]
            if yh < yl or xh < xl:
                qi += 1
                continue
            blk = (xh - xl + 1) * c_out
            ops += blk * (yh - yl + 1)
            kx0 = x + px - xl * sx
            for yo in range(yl, yh + 1):
                wrow = w_base + ((ci * kk + y + py - yo * sy) * kk + kx0) * row_w
                srow = s_base + (yo * w_out + xl) * c_out
                for off in range(0, blk, _LANES):
                    bits = _upd_vec(s_addr + np.uint64(2 * (srow + off)),
                                  w_addr + np.uint64(2 * (wrow + off)),
                                  blk - off, thr_high16, thr_low16, saturate, vec_fire, reset_zero)
                    while bits != 0:  # these neurons reached thr_high
                        r = off + np.int64(_ctz64(bits))
                        bits &= bits - np.uint64(1)
                        n = 1
                        if not vec_fire:  # the exact rare path
                            n, v = _fire(np.int64(state[srow + r]), thr_high, thr_low, reset_zero, multi)
                            state[srow + r] = v
                        ur = np.uint64(loff + r)
                        sp_k[np.uint64(m)] = (lane_c[ur] << _SHIFT_C) | (yo << _SHIFT_Y) | (xl + lane_x[ur])
                        sp_n[np.uint64(m)] = n
                        m += 1
            if m > 1 and not position_major:
                # found in (row, column, channel) order; to (channel, row, column)
                if m > 16:
                    _sort_spikes(sp_k, sp_n, m)
                else:  # rank sort (keys are distinct): few, predictable branches
                    for a in range(m):
                        ka = sp_k[a]
                        rank = 0
                        for b in range(m):
                            rank += sp_k[b] < ka
                        tmp_k[np.uint64(rank)] = ka
                        tmp_n[np.uint64(rank)] = sp_n[a]
                    for a in range(m):
                        sp_k[a] = tmp_k[a]
                        sp_n[a] = tmp_n[a]
        if m > 0:
            # ---- spikes: count, record, append to the destinations' streams ------------------
            n_spikes = m
            if multi:
                n_spikes = 0
                for s in range(m):
                    n_spikes += sp_n[s]
            need = 2 * n_spikes + 2
            if d0 >= 0:
                need += q_len[d0]
            if d1 >= 0:
                need += q_len[d1]
            need_rec = n_rec + n_spikes if rec_i else 0
            if need > cap or need_rec > rec.shape[1]:
                break  # the caller makes room and calls again with these m spikes
            n_spk_all += n_spikes
            spike_counts[i] += n_spikes
            idx = e >> _SHIFT_I
            t_now = item_t[np.uint64(idx)]
            idx_bits = idx << _SHIFT_I
            for s in range(m):
                nsp = sp_n[s]
                ks = sp_k[s]
                cs = ks >> _SHIFT_C
                ys = (ks >> _SHIFT_Y) & _MASK16
                xs = ks & _MASK16
                channel_counts[np.uint64(ch_base + cs)] += nsp
                c0 = -1
                if d0 >= 0:
                    yy = ys >> sh0 if sh0 >= 0 else ys // p0
                    xx = xs >> sh0 if sh0 >= 0 else xs // p0
                    if yy < h0 and xx < w0:
                        c0 = idx_bits | (cs << _SHIFT_C) | (yy << _SHIFT_Y) | xx
                c1 = -1
                if d1 >= 0:
                    yy = ys >> sh1 if sh1 >= 0 else ys // p1
                    xx = xs >> sh1 if sh1 >= 0 else xs // p1
                    if yy < h1 and xx < w1:
                        c1 = idx_bits | (cs << _SHIFT_C) | (yy << _SHIFT_Y) | xx
                for _r in range(nsp):
                    if rec_i:
                        un = np.uint64(n_rec)
                        rec[0, un] = i
                        rec[1, un] = xs
                        rec[2, un] = ys
                        rec[3, un] = cs
                        rec[4, un] = t_now
                        n_rec += 1
                    if c0 >= 0:
                        q[np.uint64(d0), np.uint64(q_len[d0])] = c0
                        q_len[d0] += 1
                    if c1 >= 0:
                        q[np.uint64(d1), np.uint64(q_len[d1])] = c1
                        q_len[d1] += 1
            m = 0
        if marker:  # after this core's leak the tick goes on down the streams (room checked)
            if d0 >= 0:
                q[d0, q_len[d0]] = e
                q_len[d0] += 1
            if d1m >= 0:
                q[d1m, q_len[d1m]] = e
                q_len[d1m] += 1
        qi += 1
    synops[i] += ops
    acc[0] = n_rec
    acc[1] = n_events
    acc[2] = n_spk_all
    if qi >= n_q:
        return qi, 0, 0, 0
    need = 2 * cap
    need_rec = 2 * rec.shape[1] if rec_i else 0
    return qi, m, need, need_rec


@njit(cache=True)
def run_events_stream(in_c, in_y, in_x, in_t, input_dests, geom, weights_x, wx_off, biases, b_off,
                      state, s_off, dests, fp_ylo, fp_yhi, fp_xlo, fp_xhi, fp_yoff, fp_xoff,
                      lane_x, lane_c, lane_off, leak_period_us, rec_core, multi, saturate,
                      position_major, max_cascade, max_events):
    """Simulate one sample core by core (module docstring); same results as
    :func:`flexsnn.deploy.kernels_fast.run_events_fast` or ``STATUS_FALLBACK``.

    Args differing from the event-loop kernel: ``weights_x`` (int16, per core
    ``[c_in, ky, kx0, d, c_out]`` from ``wx_off``, :data:`PAD` spare entries at the end),
    ``state`` int16 per core ``[h_out, w_out, c_out]`` with :data:`PAD` spare entries,
    ``lane_x``/``lane_c`` (int64, per core from ``lane_off``: output column offset and channel
    of entry ``r`` of a footprint row block), ``rec_core`` (the one recorded local core), no
    ``breadth_first`` (both orders give the same result here).

    Returns:
        ``(rec, n_rec, spike_counts, synops, channel_counts, status, n_done)`` as the
        event-loop kernel; on ``STATUS_FALLBACK`` the state and figures are partial.
    """
    n_cores = geom.shape[0]
    # spike s: sp_k[s] = c << 32 | y << 16 | x, firing sp_n[s] times
    spike_counts, synops, ch_off, channel_counts, sp_k, sp_n, any_leak = run_buffers(geom)
    tmp_k = np.empty(16, dtype=np.int64)  # (sorting room)
    tmp_n = np.empty(16, dtype=np.int64)
    q = np.empty((n_cores, 4096), dtype=np.int64)  # per core: pending events of the chunk
    q_len = np.zeros(n_cores, dtype=np.int64)
    item_t = np.empty(_CHUNK_ITEMS, dtype=np.int64)  # time of the chunk's item (event/tick)
    rec = np.empty((5, 1024), dtype=np.int64)
    acc = np.zeros(3, dtype=np.int64)  # n_rec, core events and spikes of the chunk
    n_in = in_t.shape[0]
    do_leak = any_leak and leak_period_us > 0
    next_tick = np.int64(0)
    if n_in > 0:
        next_tick = in_t[0] + leak_period_us
    n_dest_in = input_dests.shape[0]
    j = 0
    while j < n_in:
        # ---- the chunk's input items (ticks due before an input event come first) --------
        n_items = 0
        n_new = 0
        while j < n_in and n_new < CHUNK_INPUTS and n_items < _CHUNK_ITEMS:
            if do_leak and next_tick <= in_t[j]:
                code = _MARK
                item_t[n_items] = next_tick
                next_tick += leak_period_us
            else:
                code = (in_c[j] << _SHIFT_C) | (in_y[j] << _SHIFT_Y) | in_x[j]
                item_t[n_items] = in_t[j]
                j += 1
                n_new += 1
            code |= n_items << _SHIFT_I
            n_items += 1
            for d in range(n_dest_in):
                di = input_dests[d]
                if (code & _LOW48) == _MARK and _seen_before(input_dests, d):
                    continue  # a tick reaches each core once
                if q_len[di] >= q.shape[1]:
                    q = grow_columns(q, q_len[di] + 1)
                q[di, q_len[di]] = code
                q_len[di] += 1
        acc[1] = 0
        acc[2] = 0
        # ---- each core over its stream, in core order --------------------------------------
        for i in range(n_cores):
            qi = 0
            m = 0
            while True:
                qi, m, need_q, need_rec = _core_pass(
                    i, qi, m, q, q_len, geom, weights_x, wx_off, biases, b_off, state, s_off, dests,
                    fp_ylo, fp_yhi, fp_xlo, fp_xhi, fp_yoff, fp_xoff, lane_x, lane_c, lane_off,
                    item_t, sp_k, sp_n, tmp_k, tmp_n, rec, rec_core, multi, saturate, position_major,
                    spike_counts, channel_counts, ch_off, synops, acc)
                if qi >= q_len[i]:
                    break
                if need_q > max_events:  # the streams would outgrow the memory guard
                    return rec, acc[0], spike_counts, synops, channel_counts, STATUS_FALLBACK, j
                q = grow_columns(q, need_q)
                rec = grow_columns(rec, need_rec)
            q_len[i] = 0
        # the event loop could have held at most this many events at once in this chunk
        if acc[1] > max_cascade or acc[1] + 3 * acc[2] + acc[0] > max_events:
            return rec, acc[0], spike_counts, synops, channel_counts, STATUS_FALLBACK, j
    return rec, acc[0], spike_counts, synops, channel_counts, STATUS_OK, j


# ---- tables built from a ChipImage (used by pack_image) -------------------------------------
def expanded_weights(w: np.ndarray, stride_x: int) -> np.ndarray:
    """``[c_out, c_in, k, k]`` weights -> int16 ``[c_in, ky, kx0, d, c_out]`` (flat) with entry
    ``w[c_out, c_in, ky, kx0 - d * stride_x]`` (0 where that column is negative), ``d <
    ceil(k / stride_x)``: the weights one event applies to consecutive output columns."""
    c_out, c_in, k, _ = w.shape
    nd = -(-k // stride_x)
    out = np.zeros((c_in, k, k, nd, c_out), dtype=np.int16)
    wt = np.asarray(w).transpose(1, 2, 3, 0)  # [c_in, ky, kx, c_out]
    for kx0 in range(k):
        for d in range(nd):
            kx = kx0 - d * stride_x
            if kx >= 0:
                out[:, :, kx0, d, :] = wt[:, :, kx, :]
    return out.ravel()


def lane_tables(c_out: int, k: int, stride_x: int) -> tuple[np.ndarray, np.ndarray]:
    """Output column offset and channel of entry ``r`` of a footprint row block (int64 each,
    ``ceil(k / stride_x) * c_out`` entries)."""
    r = np.arange(-(-k // stride_x) * c_out, dtype=np.int64)
    return r // c_out, r % c_out


def stream_plan(sources: list[list[int]]) -> bool:
    """True when the stream kernel gives the event loop's results: every core (local index
    ``i``) has exactly one source, the input (``-1``) or a core ``< i`` (``sources[i]``: the
    distinct sources of core ``i``)."""
    return all(len(s) == 1 and s[0] < i for i, s in enumerate(sources))
