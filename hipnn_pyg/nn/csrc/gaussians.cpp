// CPU kernels of the inverse-distance Gaussian sensitivities' derivatives (see
// hipnn_pyg/nn/sensitivity.py): the first derivatives of s[e, v] = G[e, v] c[e] with
// G = exp(-(sigma (1/r - m))^2 / 2) (exponent floored at min_exponent), contracted with
// an upstream gradient g, and the backward of that contraction (force training). One
// pass over the [E, S] block, nothing of that size stored; sums over edges are
// accumulated per thread, then added.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

namespace hipnn {  // envsum.cpp
void check_values(const at::Tensor& t, const char* name, int64_t dim);
void check_same_dtype(const at::Tensor& a, const at::Tensor& b);
}  // namespace hipnn

namespace {

// The shapes the kernels read: g [E, S], r and c [E], m and sigma [S], one dtype.
void check_gaussian_inputs(const at::Tensor& g, const at::Tensor& r, const at::Tensor& c,
                           const at::Tensor& m, const at::Tensor& sigma) {
  hipnn::check_values(g, "gradient", 2);
  hipnn::check_values(r, "distances", 1);
  hipnn::check_values(c, "cutoff values", 1);
  hipnn::check_values(m, "inverse centres", 1);
  hipnn::check_values(sigma, "widths", 1);
  for (const at::Tensor* t : {&r, &c, &m, &sigma}) hipnn::check_same_dtype(g, *t);
  TORCH_CHECK(g.size(0) == r.size(0) && c.size(0) == r.size(0), "hipnn: gaussian_grad: ",
              g.size(0), " gradient rows, ", r.size(0), " distances, ", c.size(0),
              " cutoff values");
  TORCH_CHECK(g.size(1) == m.size(0) && sigma.size(0) == m.size(0), "hipnn: gaussian_grad: ",
              g.size(1), " gradient columns, ", m.size(0), " centres, ", sigma.size(0),
              " widths");
}

constexpr int64_t kGrain = 256;  // edges per task

// The per-edge-block partial sums over edges of [S]-sized outputs, added at the end.
template <typename scalar_t, typename Body>
void over_edges(int64_t num_edges, int64_t ns, scalar_t* sum_a, scalar_t* sum_b,
                const Body& body) {
  const int64_t blocks = (num_edges + kGrain - 1) / kGrain;
  std::vector<scalar_t> partial(static_cast<size_t>(std::max<int64_t>(blocks, 1)) * 2 * ns, 0);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      scalar_t* a = partial.data() + b * 2 * ns;
      for (int64_t e = b * kGrain; e < std::min(num_edges, (b + 1) * kGrain); ++e)
        body(e, a, a + ns);
    }
  });
  for (int64_t v = 0; v < ns; ++v) {
    scalar_t ta = 0, tb = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      ta += partial[b * 2 * ns + v];
      tb += partial[b * 2 * ns + ns + v];
    }
    sum_a[v] = ta;
    sum_b[v] = tb;
  }
}

// grad_r[e] = u^2 sum_v g q, grad_c[e] = sum_v g G, grad_m[v] = sum_e g q,
// grad_sigma[v] = -sum_e g c G sigma delta^2, with u = 1/r, delta = u - m,
// q = c sigma^2 delta G.
template <typename scalar_t>
void forward_kernel(const scalar_t* g, const scalar_t* r, const scalar_t* c, const scalar_t* m,
                    const scalar_t* sigma, scalar_t floor, int64_t num_edges, int64_t ns,
                    scalar_t* grad_r, scalar_t* grad_c, scalar_t* grad_m,
                    scalar_t* grad_sigma) {
  over_edges<scalar_t>(num_edges, ns, grad_m, grad_sigma,
                       [&](int64_t e, scalar_t* sum_m, scalar_t* sum_sigma) {
    const scalar_t u = 1 / r[e], ce = c[e];
    const scalar_t* ge = g + e * ns;
    scalar_t radial = 0, cut = 0;
    for (int64_t v = 0; v < ns; ++v) {
      const scalar_t delta = u - m[v], a = sigma[v] * delta;
      const scalar_t G = std::exp(std::max(scalar_t(-0.5) * a * a, floor));
      const scalar_t gG = ge[v] * G;
      const scalar_t gq = gG * ce * sigma[v] * a;  // g c sigma^2 delta G
      radial += gq;
      cut += gG;
      sum_m[v] += gq;
      sum_sigma[v] -= gG * ce * a * delta;  // g c G sigma delta^2
    }
    grad_r[e] = u * u * radial;
    grad_c[e] = cut;
  });
}

// The vector-Jacobian product of forward_kernel's four outputs with (h_r, h_c, h_m,
// h_sigma), in its five inputs (g, r, c, m, sigma); see sensitivity.py for the algebra.
template <typename scalar_t>
void backward_kernel(const scalar_t* g, const scalar_t* r, const scalar_t* c,
                     const scalar_t* m, const scalar_t* sigma, scalar_t floor,
                     const scalar_t* h_r, const scalar_t* h_c, const scalar_t* h_m,
                     const scalar_t* h_sigma, int64_t num_edges, int64_t ns,
                     scalar_t* grad_g, scalar_t* grad_r, scalar_t* grad_c, scalar_t* grad_m,
                     scalar_t* grad_sigma) {
  over_edges<scalar_t>(num_edges, ns, grad_m, grad_sigma,
                       [&](int64_t e, scalar_t* sum_m, scalar_t* sum_sigma) {
    const scalar_t u = 1 / r[e], ce = c[e], hr = h_r[e] * u * u, hc = h_c[e];
    const scalar_t* ge = g + e * ns;
    scalar_t* gg = grad_g + e * ns;
    scalar_t radial = 0, by_u = 0, cut = 0;
    for (int64_t v = 0; v < ns; ++v) {
      const scalar_t sv = sigma[v], delta = u - m[v], a = sv * delta, a2 = a * a;
      const scalar_t G = std::exp(std::max(scalar_t(-0.5) * a2, floor));
      const scalar_t w = hr + h_m[v], hs = h_sigma[v];
      const scalar_t k = sv * delta * (w * sv - hs * delta);  // (w q - hs p) / (c G)
      gg[v] = G * (ce * k + hc);
      const scalar_t gG = ge[v] * G;
      radial += gG * ce * sv * a;
      cut += gG * k;
      const scalar_t t_u = gG * (w * ce * sv * sv * (1 - a2) - hc * sv * a -
                                 hs * ce * a * (2 - a2));
      by_u += t_u;
      sum_m[v] -= t_u;
      sum_sigma[v] += gG * delta * (w * ce * sv * (2 - a2) - hc * a -
                                    hs * ce * delta * (1 - a2));
    }
    // u^2 in grad_r's output: d(u^2)/du = 2u; and du/dr = -u^2.
    grad_r[e] = -u * u * (2 * h_r[e] * u * radial + by_u);
    grad_c[e] = cut;
  });
}

std::vector<at::Tensor> gaussian_grad(const at::Tensor& g, const at::Tensor& r,
                                         const at::Tensor& c, const at::Tensor& m,
                                         const at::Tensor& sigma, double floor) {
  check_gaussian_inputs(g, r, c, m, sigma);
  const int64_t num_edges = r.size(0), ns = m.size(0);
  auto grad_r = at::empty({num_edges}, r.options());
  auto grad_c = at::empty({num_edges}, r.options());
  auto grad_m = at::empty({ns}, r.options());
  auto grad_sigma = at::empty({ns}, r.options());
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "gaussian_grad", [&] {
    forward_kernel<scalar_t>(g.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(),
                             c.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(),
                             sigma.data_ptr<scalar_t>(), static_cast<scalar_t>(floor),
                             num_edges, ns, grad_r.data_ptr<scalar_t>(),
                             grad_c.data_ptr<scalar_t>(), grad_m.data_ptr<scalar_t>(),
                             grad_sigma.data_ptr<scalar_t>());
  });
  return {grad_r, grad_c, grad_m, grad_sigma};
}

std::vector<at::Tensor> gaussian_grad_backward(
    const at::Tensor& g, const at::Tensor& r, const at::Tensor& c,
    const at::Tensor& m, const at::Tensor& sigma, double floor,
    const at::Tensor& h_r, const at::Tensor& h_c, const at::Tensor& h_m,
    const at::Tensor& h_sigma) {
  check_gaussian_inputs(g, r, c, m, sigma);
  hipnn::check_values(h_r, "gradient of the distance term", 1);
  hipnn::check_values(h_c, "gradient of the cutoff term", 1);
  hipnn::check_values(h_m, "gradient of the centres", 1);
  hipnn::check_values(h_sigma, "gradient of the widths", 1);
  TORCH_CHECK(h_r.size(0) == r.size(0) && h_c.size(0) == r.size(0) &&
                  h_m.size(0) == m.size(0) && h_sigma.size(0) == m.size(0),
              "hipnn: gaussian_grad_backward: gradients of the wrong length");
  const int64_t num_edges = r.size(0), ns = m.size(0);
  auto grad_g = at::empty({num_edges, ns}, r.options());
  auto grad_r = at::empty({num_edges}, r.options());
  auto grad_c = at::empty({num_edges}, r.options());
  auto grad_m = at::empty({ns}, r.options());
  auto grad_sigma = at::empty({ns}, r.options());
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "gaussian_grad_backward", [&] {
    backward_kernel<scalar_t>(
        g.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
        m.data_ptr<scalar_t>(), sigma.data_ptr<scalar_t>(), static_cast<scalar_t>(floor),
        h_r.data_ptr<scalar_t>(), h_c.data_ptr<scalar_t>(), h_m.data_ptr<scalar_t>(),
        h_sigma.data_ptr<scalar_t>(), num_edges, ns, grad_g.data_ptr<scalar_t>(),
        grad_r.data_ptr<scalar_t>(), grad_c.data_ptr<scalar_t>(), grad_m.data_ptr<scalar_t>(),
        grad_sigma.data_ptr<scalar_t>());
  });
  return {grad_g, grad_r, grad_c, grad_m, grad_sigma};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hipnn, m) {
  // First derivatives of the Gaussian sensitivities, and their vector-Jacobian product.
  m.def("gaussian_grad(Tensor g, Tensor r, Tensor c, Tensor m, Tensor sigma, float floor) "
        "-> Tensor[]");
  m.def("gaussian_grad_backward(Tensor g, Tensor r, Tensor c, Tensor m, Tensor sigma, "
        "float floor, Tensor h_r, Tensor h_c, Tensor h_m, Tensor h_sigma) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(hipnn, CPU, m) {
  m.impl("gaussian_grad", &gaussian_grad);
  m.impl("gaussian_grad_backward", &gaussian_grad_backward);
}
