"""The fast event loop of the asynchronous simulator (``SimConfig(kernel="fast")``, the default).

Same rules, same results, bit for bit, as the reference kernel
:func:`flexsnn.deploy.kernels.run_events` (kept as ``kernel="reference"``, and itself checked
against a plain-Python loop and against the independent simulator in ``tests/sim_reference.py``).
What differs is how the work is laid out (measured on a trained speck3c1fc chip: see
``benchmarks/sim_throughput.py``):

- **Channel-contiguous state and weights.** A core's neuron states are ``[h_out, w_out, c_out]``
  int16 and its weights ``[c_in, ky, k - 1 - kx, c_out]`` int16 (kx reversed), so on a stride-1
  core one event's update of one footprint row (all its output columns and channels) is one
  contiguous vector add (:func:`_add_block`), done in 16-bit lanes (LLVM's saturating or
  wrapping int16 add, as the reference's ``_clip_state``).
- **Rare path after the add.** The vector add clips (saturate) or wraps the new state to 16
  bits, as the reference's slow path does first; a neuron left below ``threshold_high`` cannot
  spike and only needs the floor ``max(u, threshold_low)``, done in the same vector pass. Only
  rows where some neuron reached the threshold are scanned again, and only those neurons
  fire and reset exactly as the reference. This needs ``-32768 <= threshold_low <
  threshold_high <= 32767`` (:func:`fast_kernel_supports`; images outside it, which the chip
  checks refuse anyway, run on the reference kernel). Each neuron is touched once per event, so
  finding the spikes row by row changes only their order; with
  ``update_order="channel-major"`` the spikes of one event are then sorted by
  ``(c_out, yo, xo)``, the reference's emission order.
- **Less per-event work.** The output rows/columns an input row/column reaches come from
  per-core tables (:func:`footprint_tables`, no divisions per event); a pending event is one
  packed int64 (``core << 48 | c << 32 | y << 16 | x``) on one stack/queue; pooling by a power
  of two is a shift; the per-event update is written out in the loop, and the arrays handed to
  :func:`_add_block` carry no reference count (a call with counted arrays costs atomic
  increments as expensive as the update itself).
- **A memory guard.** Besides ``max_cascade`` (core events caused by one input event or tick),
  ``max_events`` bounds pending plus recorded events: when a core's spikes could push that sum
  past it, the run stops with :data:`STATUS_EVENT_LIMIT` instead of growing its buffers.

Data layout: :class:`flexsnn.deploy.async_sim.PackedImage` (``weights_t``, ``fp_*`` tables).
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from flexsnn.deploy.kernels import (
    G_COUT, G_HIN, G_HOUT, G_K, G_LEAK, G_PX, G_PY, G_RESET_ZERO, G_SX, G_SY, G_THR_HIGH,
    G_THR_LOW, G_WIN, G_WOUT, STATE_MAX, STATE_MIN, STATUS_CASCADE_LIMIT, STATUS_EVENT_LIMIT, STATUS_OK, _clip_state,
    _fire,
)

_SHIFT_C, _SHIFT_Y = 32, 16
_MASK16 = 0xFFFF


@intrinsic
def _address_as_voidptr(typingctx, address):
    """An integer address as a ``void*`` (for :func:`_unmanaged`)."""
    sig = types.voidptr(types.uintp)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return sig, codegen


@njit(cache=True)
def _unmanaged_i16(a):
    """A view of the int16 array ``a`` without a reference count: passing it to a function
    then costs no atomic increment/decrement (``a`` must outlive the view)."""
    return carray(_address_as_voidptr(a.ctypes.data), a.shape[0], np.int16)


@intrinsic
def _add_sat_i16(typingctx, a, b):
    """``a + b`` on int16 saturated to [-32768, 32767] (the reference's ``_clip_state`` with
    saturation); LLVM's ``sadd.sat``, one vector lane per int16 when vectorised."""
    sig = types.int16(types.int16, types.int16)

    def codegen(context, builder, signature, args):
        i16 = ir.IntType(16)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i16, [i16, i16]),
                                            "llvm.sadd.sat.i16")
        return builder.call(fn, [args[0], args[1]])

    return sig, codegen


@intrinsic
def _add_wrap_i16(typingctx, a, b):
    """``a + b`` on int16 wrapped (two's complement; ``_clip_state`` without saturation)."""
    sig = types.int16(types.int16, types.int16)

    def codegen(context, builder, signature, args):
        return builder.add(args[0], args[1])

    return sig, codegen


@njit(cache=True)
def _add_block(state, weights, svu, wvu, uc, thr_high, thr_low, saturate):
    """``state[svu + c] += weights[wvu + c]`` for ``c < uc`` (int16 arrays; one block of
    consecutive neurons), 16-bit saturated or wrapped as the reference's ``_clip_state``;
    neurons left below ``thr_high`` get the floor ``thr_low``, the others (to spike) keep
    their value. ``thr_high``/``thr_low`` int16. Returns the largest new value (int16)."""
    top = np.int16(STATE_MIN)
    if saturate:
        for cu in range(uc):
            u = _add_sat_i16(state[svu + cu], weights[wvu + cu])
            top = max(top, u)
            state[svu + cu] = u if u >= thr_high else max(u, thr_low)
    else:
        for cu in range(uc):
            u = _add_wrap_i16(state[svu + cu], weights[wvu + cu])
            top = max(top, u)
            state[svu + cu] = u if u >= thr_high else max(u, thr_low)
    return top


@njit(cache=True)
def leak_update_fast(state, s_base, biases, b_base, c_out, h_out, w_out, thr_high, thr_low,
                     reset_zero, multi, saturate, out_k, out_n):
    """:func:`flexsnn.deploy.kernels.leak_update` on the ``[h_out, w_out, c_out]`` layout
    (neurons visited, and spikes reported, in C order of ``[c_out, h_out, w_out]``; spike
    ``s`` is neuron ``out_k[s] = c << 32 | y << 16 | x`` firing ``out_n[s]`` times)."""
    n_sp = 0
    for co in range(c_out):
        bias = np.int64(biases[b_base + co])
        for yo in range(h_out):
            for xo in range(w_out):
                idx = s_base + (yo * w_out + xo) * c_out + co
                v = _clip_state(np.int64(state[idx]) + bias, saturate)
                n, v = _fire(v, thr_high, thr_low, reset_zero, multi)
                state[idx] = v
                if n > 0:
                    out_k[n_sp] = (co << _SHIFT_C) | (yo << _SHIFT_Y) | xo
                    out_n[n_sp] = n
                    n_sp += 1
    return n_sp


@njit(cache=True)
def _grow1(a, need):
    if need <= a.shape[0]:
        return a
    b = np.empty(max(need, 2 * a.shape[0]), dtype=a.dtype)
    b[:a.shape[0]] = a
    return b


@njit(cache=True)
def run_buffers(geom):
    """Per-run counters and spike buffers of the fast kernels, sized from ``geom``.

    Returns ``(spike_counts [n_cores], synops [n_cores], ch_off [n_cores + 1] (first channel of
    each core in channel_counts), channel_counts [sum c_out], sp_k, sp_n (one update's spikes:
    room for a footprint, or a whole core when any core leaks), any_leak)``.
    """
    n_cores = geom.shape[0]
    spike_counts = np.zeros(n_cores, dtype=np.int64)
    synops = np.zeros(n_cores, dtype=np.int64)
    ch_off = np.zeros(n_cores + 1, dtype=np.int64)
    buf_len = 1
    any_leak = False
    for i in range(n_cores):
        ch_off[i + 1] = ch_off[i] + geom[i, G_COUT]
        buf_len = max(buf_len, geom[i, G_COUT] * geom[i, G_K] * geom[i, G_K])
        if geom[i, G_LEAK] != 0:
            any_leak = True
            buf_len = max(buf_len, geom[i, G_COUT] * geom[i, G_HOUT] * geom[i, G_WOUT])
    channel_counts = np.zeros(ch_off[n_cores], dtype=np.int64)
    sp_k = np.empty(buf_len, dtype=np.int64)
    sp_n = np.empty(buf_len, dtype=np.int64)
    return spike_counts, synops, ch_off, channel_counts, sp_k, sp_n, any_leak


@njit(cache=True)
def grow_columns(a, need):
    """``a`` (``[rows, cap]``) or a copy with at least ``need`` columns (capacity doubles)."""
    if need <= a.shape[1]:
        return a
    b = np.empty((a.shape[0], max(need, 2 * a.shape[1])), dtype=a.dtype)
    b[:, :a.shape[1]] = a
    return b


@njit(cache=True)
def _pool(v, p, shift):
    """``v // p`` (a shift when ``p`` is a power of two, ``shift >= 0``)."""
    if shift >= 0:
        return v >> shift
    return v // p


@njit(cache=True)
def run_events_fast(in_c, in_y, in_x, in_t, input_dests, geom, weights_t, w_off, biases, b_off,
                    state, s_off, dests, fp_ylo, fp_yhi, fp_xlo, fp_xhi, fp_yoff, fp_xoff,
                    leak_period_us, record, multi, saturate, breadth_first, position_major,
                    max_cascade, max_events):
    """Simulate one sample: :func:`flexsnn.deploy.kernels.run_events` on the fast layout.

    Args are those of the reference kernel, with ``weights_t`` (flat int32, per core
    ``[c_in, ky, k - 1 - kx, c_out]``) for ``weights``, ``state`` laid out per core as
    ``[h_out, w_out, c_out]``, and the footprint tables ``fp_ylo/fp_yhi`` (int64, per core
    ``h_in`` entries from ``fp_yoff``: first/last output row an input row reaches; last <
    first when none) and ``fp_xlo/fp_xhi`` (columns, from ``fp_xoff``). ``dests`` is int64
    ``[n, 2, 3]``: (local core, pooling, log2 pooling or -1). ``max_events``: most pending
    plus recorded events (memory guard).

    Returns:
        ``(rec, n_rec, spike_counts, synops, channel_counts, status, n_done)`` as the
        reference kernel; ``status`` may also be :data:`STATUS_EVENT_LIMIT`.
    """
    n_cores = geom.shape[0]
    state_u = _unmanaged_i16(state)
    weights_u = _unmanaged_i16(weights_t)
    # spike s of the current core: neuron sp_k[s] = c << 32 | y << 16 | x (ordered as
    # (c, y, x), the channel-major order), firing sp_n[s] times
    spike_counts, synops, ch_off, channel_counts, sp_k, sp_n, any_leak = run_buffers(geom)
    cand = np.empty(sp_k.shape[0], dtype=np.int64)  # one row's neurons to fire
    q = np.empty(4096, dtype=np.int64)
    rec = np.empty((5, 1024), dtype=np.int64)
    n_rec = 0
    n_in = in_t.shape[0]
    do_leak = any_leak and leak_period_us > 0
    next_tick = np.int64(0)
    if n_in > 0:
        next_tick = in_t[0] + leak_period_us
    n_dest_in = input_dests.shape[0]

    j = 0
    leak_next = n_cores
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
                m = leak_update_fast(state, s_off[i], biases, b_off[i], geom[i, G_COUT],
                                     geom[i, G_HOUT], geom[i, G_WOUT], geom[i, G_THR_HIGH],
                                     geom[i, G_THR_LOW], geom[i, G_RESET_ZERO] != 0, multi,
                                     saturate, sp_k, sp_n)
            elif j < n_in:
                if do_leak and next_tick <= in_t[j]:
                    t_now = next_tick
                    next_tick += leak_period_us
                    leak_next = 0
                    continue
                t_now = in_t[j]
                deliveries = 0
                if n_dest_in > q.shape[0]:
                    q = _grow1(q, n_dest_in)
                code = (in_c[j] << _SHIFT_C) | (in_y[j] << _SHIFT_Y) | in_x[j]
                for d in range(n_dest_in):
                    pos = d if breadth_first else n_dest_in - 1 - d
                    q[pos] = (input_dests[d] << 48) | code
                tail = n_dest_in
                j += 1
                continue
            else:
                break
        else:
            if breadth_first:
                e = q[head]
                head += 1
            else:
                tail -= 1
                e = q[tail]
            deliveries += 1
            if deliveries > max_cascade:
                return rec, n_rec, spike_counts, synops, channel_counts, STATUS_CASCADE_LIMIT, j - 1
            i = e >> 48
            ci = (e >> _SHIFT_C) & _MASK16
            y = (e >> _SHIFT_Y) & _MASK16
            x = e & _MASK16
            yl = fp_ylo[fp_yoff[i] + y]
            yh = fp_yhi[fp_yoff[i] + y]
            xl = fp_xlo[fp_xoff[i] + x]
            xh = fp_xhi[fp_xoff[i] + x]
            if yh < yl or xh < xl:
                continue
            # ---- one event (ci, y, x) into core i: rows yl..yh, columns xl..xh -----------
            # (written out here rather than called: a call that passes arrays costs atomic
            # reference counting per event, as much as the update itself)
            c_out = geom[i, G_COUT]
            w_out = geom[i, G_WOUT]
            kk = geom[i, G_K]
            thr_high = geom[i, G_THR_HIGH]
            thr_low = geom[i, G_THR_LOW]
            thr_high16 = np.int16(thr_high)  # in int16 range (fast_kernel_supports)
            thr_low16 = np.int16(thr_low)
            sx = geom[i, G_SX]
            n_x = xh - xl + 1
            # weights are [c_in, ky, k-1-kx, c_out]: column xl's kx-reversed index, then +sx
            # per output column; the state row's columns are consecutive
            kxr0 = kk - 1 - (x + geom[i, G_PX] - xl * sx)
            reset_zero = geom[i, G_RESET_ZERO] != 0
            for yo in range(yl, yh + 1):
                ky = y + geom[i, G_PY] - yo * geom[i, G_SY]
                wrow = w_off[i] + ((ci * kk + ky) * kk + kxr0) * c_out
                srow = s_off[i] + (yo * w_out + xl) * c_out
                # unsigned indices: numba then emits no negative-index wraparound, which lets
                # LLVM vectorise the add. u: the new state clipped (saturate) or wrapped to 16
                # bits, where the reference's slow path starts; u < thr_high: no spike, the
                # result is max(u, thr_low); else u is kept and the row is scanned again
                if sx == 1:  # the whole footprint row is one contiguous block
                    top = _add_block(state_u, weights_u, np.uint64(srow), np.uint64(wrow),
                                     np.uint64(n_x * c_out), thr_high16, thr_low16, saturate)
                else:
                    top = np.int64(STATE_MIN)
                    for dx in range(n_x):
                        t = _add_block(state_u, weights_u, np.uint64(srow + dx * c_out),
                                       np.uint64(wrow + dx * sx * c_out), np.uint64(c_out),
                                       thr_high16, thr_low16, saturate)
                        top = max(top, t)
                if top >= thr_high:
                    # the row's neurons at or above thr_high, in (column, channel) order:
                    # branch-free compaction (few spike: a branch per neuron would mispredict)
                    n_c = 0
                    for r in range(n_x * c_out):
                        cand[n_c] = r
                        n_c += state_u[np.uint64(srow + r)] >= thr_high16
                    for a in range(n_c):
                        r = cand[a]
                        dx = r // c_out
                        co = r - dx * c_out
                        n, u = _fire(np.int64(state[srow + r]), thr_high, thr_low, reset_zero, multi)
                        state[srow + r] = u
                        sp_k[m] = (co << _SHIFT_C) | (yo << _SHIFT_Y) | (xl + dx)
                        sp_n[m] = n
                        m += 1
            if m > 1 and not position_major:
                # to (c, y, x) order; written out (a call passing arrays costs atomic
                # reference counting); insertion sort, m is small
                if m > 32:
                    order = np.argsort(sp_k[:m])
                    tk = sp_k[:m][order]
                    tn = sp_n[:m][order]
                    sp_k[:m] = tk
                    sp_n[:m] = tn
                else:
                    for a in range(1, m):
                        ka = sp_k[a]
                        na = sp_n[a]
                        b = a - 1
                        while b >= 0 and sp_k[b] > ka:
                            sp_k[b + 1] = sp_k[b]
                            sp_n[b + 1] = sp_n[b]
                            b -= 1
                        sp_k[b + 1] = ka
                        sp_n[b + 1] = na
            synops[i] += c_out * (yh - yl + 1) * (xh - xl + 1)
        if m == 0:
            continue
        # ---- spikes of core i: count, record, forward ----------------------------------------
        n_spikes = 0
        for s in range(m):
            n_spikes += sp_n[s]
        spike_counts[i] += n_spikes
        rec_i = record[i] != 0
        if tail - head + 2 * n_spikes + n_rec + (n_spikes if rec_i else 0) > max_events:
            return rec, n_rec, spike_counts, synops, channel_counts, STATUS_EVENT_LIMIT, j - 1
        if rec_i and n_rec + n_spikes > rec.shape[1]:
            rec = grow_columns(rec, n_rec + n_spikes)
        if tail + 2 * n_spikes > q.shape[0]:
            if head > 0:  # breadth-first: drop the delivered head before growing
                q[:tail - head] = q[head:tail]
                tail -= head
                head = 0
            q = _grow1(q, tail + 2 * n_spikes)
        start = tail
        d0 = dests[i, 0, 0]
        d1 = dests[i, 1, 0]
        p0, sh0 = dests[i, 0, 1], dests[i, 0, 2]
        p1, sh1 = dests[i, 1, 1], dests[i, 1, 2]
        h0 = w0 = h1 = w1 = 0
        if d0 >= 0:
            h0, w0 = geom[d0, G_HIN], geom[d0, G_WIN]
        if d1 >= 0:
            h1, w1 = geom[d1, G_HIN], geom[d1, G_WIN]
        ch_base = ch_off[i]
        for s in range(m):
            nsp = sp_n[s]
            ks = sp_k[s]
            cs = ks >> _SHIFT_C
            ys = (ks >> _SHIFT_Y) & _MASK16
            xs = ks & _MASK16
            channel_counts[ch_base + cs] += nsp
            c0 = -1
            if d0 >= 0:
                yy = _pool(ys, p0, sh0)
                xx = _pool(xs, p0, sh0)
                if yy < h0 and xx < w0:
                    c0 = (d0 << 48) | (cs << _SHIFT_C) | (yy << _SHIFT_Y) | xx
            c1 = -1
            if d1 >= 0:
                yy = _pool(ys, p1, sh1)
                xx = _pool(xs, p1, sh1)
                if yy < h1 and xx < w1:
                    c1 = (d1 << 48) | (cs << _SHIFT_C) | (yy << _SHIFT_Y) | xx
            for _r in range(nsp):
                if rec_i:
                    rec[0, n_rec] = i
                    rec[1, n_rec] = xs
                    rec[2, n_rec] = ys
                    rec[3, n_rec] = cs
                    rec[4, n_rec] = t_now
                    n_rec += 1
                if c0 >= 0:
                    q[tail] = c0
                    tail += 1
                if c1 >= 0:
                    q[tail] = c1
                    tail += 1
        if not breadth_first:
            lo = start
            hi = tail - 1
            while lo < hi:
                q[lo], q[hi] = q[hi], q[lo]
                lo += 1
                hi -= 1
    return rec, n_rec, spike_counts, synops, channel_counts, STATUS_OK, j


def footprint_tables(n_in: int, n_out: int, k: int, s: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last output index reached by each input index (int64 ``[n_in]`` each; the
    last is below the first when none is reached): ``o*s - p <= i <= o*s - p + k - 1``."""
    i = np.arange(n_in, dtype=np.int64)
    a = i + p - (k - 1)
    lo = np.where(a <= 0, 0, (a + s - 1) // s)
    hi = np.minimum((i + p) // s, n_out - 1)
    return lo.astype(np.int64), hi.astype(np.int64)


def fast_kernel_supports(thr_high: int, thr_low: int) -> bool:
    """True when a core's thresholds satisfy the fast kernel's precondition
    ``-32768 <= thr_low < thr_high <= 32767`` (every image the chip checks accept; others run
    on the reference kernel)."""
    return STATE_MIN <= int(thr_low) < int(thr_high) <= STATE_MAX
