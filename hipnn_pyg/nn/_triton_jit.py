r"""The Triton kernels of the three edge contractions (:mod:`~hipnn_pyg.nn.contraction`),
undecorated: :mod:`~hipnn_pyg.nn.triton_kernels` imports this module only when a
``"triton"`` contraction runs (it needs triton) and wraps each function with
``triton.jit``, or with Triton's interpreter under ``TRITON_INTERPRET=1``.

Every kernel writes each output element exactly once, from one program: ``envsum`` and
``featsum`` are segment sums over the edges of one output row (a CSR order of the
grouping), ``sensesum`` has one output per edge, and so has ``featsum_edges``, the
``featsum`` of groupings whose every edge is its own row (messages). No atomics, so the
results do not depend on scheduling. Indices are int64 throughout (environments pass
2^31 elements).
Tiles are ``[BLOCK_E, BLOCK_S, BLOCK_F]`` products reduced in registers, accumulated
in ``ACC`` (float32, or float64 for float64 inputs).
"""

import triton
import triton.language as tl


def envsum_kernel(s_ptr, x_ptr, start_ptr, edges_ptr, gather_ptr, out_ptr, S, F,
                  ACC: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_S: tl.constexpr,
                  BLOCK_F: tl.constexpr):
    # out[r, ν, f] = Σ_{e in row r} s[e, ν] x[gather[e], f]; program (row, f block, ν block).
    row = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    nu = tl.program_id(2) * BLOCK_S + tl.arange(0, BLOCK_S)
    f_in, nu_in = f < F, nu < S
    begin = tl.load(start_ptr + row)
    end = tl.load(start_ptr + row + 1)
    acc = tl.zeros([BLOCK_S, BLOCK_F], dtype=ACC)
    for first in range(begin, end, BLOCK_E):
        k = first + tl.arange(0, BLOCK_E)
        live = k < end
        e = tl.load(edges_ptr + k, mask=live, other=0)
        g = tl.load(gather_ptr + e, mask=live, other=0)
        s = tl.load(s_ptr + e[:, None] * S + nu[None, :], mask=live[:, None] & nu_in[None, :],
                    other=0.0).to(ACC)
        x = tl.load(x_ptr + g[:, None] * F + f[None, :], mask=live[:, None] & f_in[None, :],
                    other=0.0).to(ACC)
        acc += tl.sum(s[:, :, None] * x[:, None, :], axis=0)
    target = out_ptr + row * S * F + nu[:, None] * F + f[None, :]
    tl.store(target, acc.to(out_ptr.dtype.element_ty), mask=nu_in[:, None] & f_in[None, :])


def sensesum_kernel(env_ptr, x_ptr, gather_ptr, scatter_ptr, out_ptr, E, S, F,
                    ACC: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_S: tl.constexpr,
                    BLOCK_F: tl.constexpr):
    # out[e, ν] = Σ_f env[scatter[e], ν, f] x[gather[e], f]; program (e block, ν block).
    k = tl.program_id(0).to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
    nu = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    live, nu_in = k < E, nu < S
    g = tl.load(gather_ptr + k, mask=live, other=0)
    r = tl.load(scatter_ptr + k, mask=live, other=0)
    env_rows = env_ptr + r[:, None, None] * S * F + nu[None, :, None] * F
    acc = tl.zeros([BLOCK_E, BLOCK_S], dtype=ACC)
    for first in range(0, F, BLOCK_F):
        f = first + tl.arange(0, BLOCK_F)
        f_in = f < F
        env = tl.load(env_rows + f[None, None, :],
                      mask=live[:, None, None] & nu_in[None, :, None] & f_in[None, None, :],
                      other=0.0).to(ACC)
        x = tl.load(x_ptr + g[:, None] * F + f[None, :], mask=live[:, None] & f_in[None, :],
                    other=0.0).to(ACC)
        acc += tl.sum(env * x[:, None, :], axis=2)
    tl.store(out_ptr + k[:, None] * S + nu[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=live[:, None] & nu_in[None, :])


def featsum_kernel(env_ptr, s_ptr, start_ptr, edges_ptr, scatter_ptr, out_ptr, S, F,
                   ACC: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_S: tl.constexpr,
                   BLOCK_F: tl.constexpr):
    # out[q, f] = Σ_{e in row q} Σ_ν s[e, ν] env[scatter[e], ν, f]; program (row, f block).
    row = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    f_in = f < F
    begin = tl.load(start_ptr + row)
    end = tl.load(start_ptr + row + 1)
    acc = tl.zeros([BLOCK_F], dtype=ACC)
    for first in range(begin, end, BLOCK_E):
        k = first + tl.arange(0, BLOCK_E)
        live = k < end
        e = tl.load(edges_ptr + k, mask=live, other=0)
        r = tl.load(scatter_ptr + e, mask=live, other=0)
        for first_nu in range(0, S, BLOCK_S):
            nu = first_nu + tl.arange(0, BLOCK_S)
            nu_in = nu < S
            s = tl.load(s_ptr + e[:, None] * S + nu[None, :],
                        mask=live[:, None] & nu_in[None, :], other=0.0).to(ACC)
            env = tl.load(env_ptr + r[:, None, None] * S * F + nu[None, :, None] * F
                          + f[None, None, :],
                          mask=live[:, None, None] & nu_in[None, :, None] & f_in[None, None, :],
                          other=0.0).to(ACC)
            acc += tl.sum(tl.sum(s[:, :, None] * env, axis=1), axis=0)
    tl.store(out_ptr + row * F + f, acc.to(out_ptr.dtype.element_ty), mask=f_in)


def featsum_edges_kernel(env_ptr, s_ptr, scatter_ptr, out_ptr, E, S, F,
                         ACC: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_S: tl.constexpr,
                         BLOCK_F: tl.constexpr):
    # featsum where every edge is its own row (gather[e] = e, messages):
    # out[e, f] = Σ_ν s[e, ν] env[scatter[e], ν, f]; program (e block, f block).
    k = tl.program_id(0).to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    live, f_in = k < E, f < F
    r = tl.load(scatter_ptr + k, mask=live, other=0)
    acc = tl.zeros([BLOCK_E, BLOCK_F], dtype=ACC)
    for first_nu in range(0, S, BLOCK_S):
        nu = first_nu + tl.arange(0, BLOCK_S)
        nu_in = nu < S
        s = tl.load(s_ptr + k[:, None] * S + nu[None, :], mask=live[:, None] & nu_in[None, :],
                    other=0.0).to(ACC)
        env = tl.load(env_ptr + r[:, None, None] * S * F + nu[None, :, None] * F
                      + f[None, None, :],
                      mask=live[:, None, None] & nu_in[None, :, None] & f_in[None, None, :],
                      other=0.0).to(ACC)
        acc += tl.sum(s[:, :, None] * env, axis=1)
    tl.store(out_ptr + k[:, None] * F + f[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=live[:, None] & f_in[None, :])


KERNELS = {"envsum": envsum_kernel, "sensesum": sensesum_kernel, "featsum": featsum_kernel,
           "featsum_edges": featsum_edges_kernel}

__all__ = ["KERNELS", "triton", "tl"]
