r"""The Triton kernels of the three edge contractions (:mod:`~hipnn_pyg.nn.contraction`)
and of the Gaussian sensitivities' derivatives (:mod:`~hipnn_pyg.nn.sensitivity`),
undecorated: :mod:`~hipnn_pyg.nn.triton_kernels` imports this module only when a
``"triton"`` contraction runs (it needs triton) and wraps each function with
``triton.jit``, or with Triton's interpreter under ``TRITON_INTERPRET=1``.

Every kernel writes each output element exactly once, from one program: ``envsum`` and
``featsum`` are segment sums over the edges of one output row (a CSR order of the
grouping), ``sensesum`` has one output per edge, and so has ``featsum_edges``, the
``featsum`` of groupings whose every edge is its own row (messages). No atomics, so the
results do not depend on scheduling. The Gaussians' sums over edges (the gradients of the
centres and widths) are written per program, ``[programs, S]``, and added by torch.
Indices are int64 throughout (environments pass 2^31 elements).
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


def gaussian_grad_kernel(g_ptr, r_ptr, c_ptr, m_ptr, sigma_ptr, grad_r_ptr, grad_c_ptr,
                         part_m_ptr, part_sigma_ptr, E, S, FLOOR: tl.constexpr,
                         ACC: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_S: tl.constexpr):
    # csrc/gaussians.cpp's forward_kernel: with u = 1/r, δ = u - m, a = σδ,
    # G = exp(max(-a²/2, FLOOR)) and q = c σ a G: grad_r = u² Σ_ν g q, grad_c = Σ_ν g G,
    # and per program the partial sums over its edges Σ_e g q (m) and -Σ_e g c G a δ (σ).
    program = tl.program_id(0).to(tl.int64)
    k = program * BLOCK_E + tl.arange(0, BLOCK_E)
    live = k < E
    u = 1.0 / tl.load(r_ptr + k, mask=live, other=1.0).to(ACC)
    c = tl.load(c_ptr + k, mask=live, other=0.0).to(ACC)
    radial = tl.zeros([BLOCK_E], dtype=ACC)
    cut = tl.zeros([BLOCK_E], dtype=ACC)
    for first in range(0, S, BLOCK_S):
        nu = first + tl.arange(0, BLOCK_S)
        nu_in = nu < S
        m = tl.load(m_ptr + nu, mask=nu_in, other=0.0).to(ACC)
        sigma = tl.load(sigma_ptr + nu, mask=nu_in, other=0.0).to(ACC)
        g = tl.load(g_ptr + k[:, None] * S + nu[None, :], mask=live[:, None] & nu_in[None, :],
                    other=0.0).to(ACC)  # zero off the block: every term below has it
        delta = u[:, None] - m[None, :]
        a = sigma[None, :] * delta
        gG = g * tl.exp(tl.maximum(-0.5 * a * a, FLOOR))
        gq = gG * c[:, None] * sigma[None, :] * a
        radial += tl.sum(gq, axis=1)
        cut += tl.sum(gG, axis=1)
        tl.store(part_m_ptr + program * S + nu, tl.sum(gq, axis=0), mask=nu_in)
        tl.store(part_sigma_ptr + program * S + nu, -tl.sum(gG * c[:, None] * a * delta, axis=0),
                 mask=nu_in)
    tl.store(grad_r_ptr + k, (u * u * radial).to(grad_r_ptr.dtype.element_ty), mask=live)
    tl.store(grad_c_ptr + k, cut.to(grad_c_ptr.dtype.element_ty), mask=live)


def gaussian_grad_backward_kernel(g_ptr, r_ptr, c_ptr, m_ptr, sigma_ptr, h_r_ptr, h_c_ptr,
                                  h_m_ptr, h_sigma_ptr, grad_g_ptr, grad_r_ptr, grad_c_ptr,
                                  part_m_ptr, part_sigma_ptr, E, S, FLOOR: tl.constexpr,
                                  ACC: tl.constexpr, BLOCK_E: tl.constexpr,
                                  BLOCK_S: tl.constexpr):
    # csrc/gaussians.cpp's backward_kernel: the vector-Jacobian product of the kernel
    # above's four outputs with (h_r, h_c, h_m, h_σ) in its five inputs.
    program = tl.program_id(0).to(tl.int64)
    k = program * BLOCK_E + tl.arange(0, BLOCK_E)
    live = k < E
    u = 1.0 / tl.load(r_ptr + k, mask=live, other=1.0).to(ACC)
    c = tl.load(c_ptr + k, mask=live, other=0.0).to(ACC)
    h_r = tl.load(h_r_ptr + k, mask=live, other=0.0).to(ACC)
    h_c = tl.load(h_c_ptr + k, mask=live, other=0.0).to(ACC)
    radial = tl.zeros([BLOCK_E], dtype=ACC)
    by_u = tl.zeros([BLOCK_E], dtype=ACC)
    cut = tl.zeros([BLOCK_E], dtype=ACC)
    for first in range(0, S, BLOCK_S):
        nu = first + tl.arange(0, BLOCK_S)
        nu_in = nu < S
        block = live[:, None] & nu_in[None, :]
        m = tl.load(m_ptr + nu, mask=nu_in, other=0.0).to(ACC)
        sigma = tl.load(sigma_ptr + nu, mask=nu_in, other=0.0).to(ACC)
        h_m = tl.load(h_m_ptr + nu, mask=nu_in, other=0.0).to(ACC)
        h_sigma = tl.load(h_sigma_ptr + nu, mask=nu_in, other=0.0).to(ACC)
        g = tl.load(g_ptr + k[:, None] * S + nu[None, :], mask=block, other=0.0).to(ACC)
        sv = sigma[None, :]
        hs = h_sigma[None, :]
        delta = u[:, None] - m[None, :]
        a = sv * delta
        a2 = a * a
        G = tl.exp(tl.maximum(-0.5 * a2, FLOOR))
        w = (h_r * u * u)[:, None] + h_m[None, :]
        kk = sv * delta * (w * sv - hs * delta)  # (w q - hs p) / (c G)
        tl.store(grad_g_ptr + k[:, None] * S + nu[None, :],
                 (G * (c[:, None] * kk + h_c[:, None])).to(grad_g_ptr.dtype.element_ty),
                 mask=block)
        gG = g * G
        cc = c[:, None]
        radial += tl.sum(gG * cc * sv * a, axis=1)
        cut += tl.sum(gG * kk, axis=1)
        t_u = gG * (w * cc * sv * sv * (1.0 - a2) - h_c[:, None] * sv * a
                    - hs * cc * a * (2.0 - a2))
        by_u += tl.sum(t_u, axis=1)
        tl.store(part_m_ptr + program * S + nu, -tl.sum(t_u, axis=0), mask=nu_in)
        t_sigma = gG * delta * (w * cc * sv * (2.0 - a2) - h_c[:, None] * a
                                - hs * cc * delta * (1.0 - a2))
        tl.store(part_sigma_ptr + program * S + nu, tl.sum(t_sigma, axis=0), mask=nu_in)
    # u² in grad_r's output: d(u²)/du = 2u; and du/dr = -u².
    grad_r = -u * u * (2.0 * h_r * u * radial + by_u)
    tl.store(grad_r_ptr + k, grad_r.to(grad_r_ptr.dtype.element_ty), mask=live)
    tl.store(grad_c_ptr + k, cut.to(grad_c_ptr.dtype.element_ty), mask=live)


KERNELS = {"envsum": envsum_kernel, "sensesum": sensesum_kernel, "featsum": featsum_kernel,
           "featsum_edges": featsum_edges_kernel, "gaussian_grad": gaussian_grad_kernel,
           "gaussian_grad_backward": gaussian_grad_backward_kernel}

__all__ = ["KERNELS", "triton", "tl"]
