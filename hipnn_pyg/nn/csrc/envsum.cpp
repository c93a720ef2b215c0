// CPU kernels of the HIP-NN environment sum and its two derivative contractions
// (see hipnn_pyg/nn/envsum.py). Each output row is written by one thread: no atomics.
// Feature loops are innermost and contiguous so that the compiler vectorises them.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>

namespace {

constexpr int64_t kTile = 16;  // features per register tile

// env[a, v, :] = sum over edges e of centre a: s[e, v] * x[j(e), :]. Each tile of
// features is accumulated in registers over all the centre's edges, then stored once.
template <typename scalar_t>
void envsum_kernel(const scalar_t* s, const scalar_t* x, const int64_t* order,
                   const int64_t* start, const int64_t* edges, const int64_t* nbr,
                   scalar_t* out, int64_t num_atoms, int64_t ns, int64_t nf) {
  at::parallel_for(0, num_atoms, 16, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      scalar_t* row = out + order[p] * ns * nf;
      for (int64_t v = 0; v < ns; ++v) {
        int64_t f0 = 0;
        for (; f0 + kTile <= nf; f0 += kTile) {
          scalar_t acc[kTile] = {};
          for (int64_t k = start[p]; k < start[p + 1]; ++k) {
            const int64_t e = edges[k];
            const scalar_t sv = s[e * ns + v];
            const scalar_t* xj = x + nbr[e] * nf + f0;
#pragma omp simd
            for (int64_t t = 0; t < kTile; ++t) acc[t] += sv * xj[t];
          }
          for (int64_t t = 0; t < kTile; ++t) row[v * nf + f0 + t] = acc[t];
        }
        for (int64_t k = start[p]; k < start[p + 1] && f0 < nf; ++k) {  // the remainder
          const int64_t e = edges[k];
          const scalar_t sv = s[e * ns + v];
          for (int64_t f = f0; f < nf; ++f) row[v * nf + f] += sv * x[nbr[e] * nf + f];
        }
      }
    }
  });
}

// out[e, v] = sum_f env[i(e), v, f] * x[j(e), f]
template <typename scalar_t>
void sensesum_kernel(const scalar_t* env, const scalar_t* x, const int64_t* nbr,
                     const int64_t* ctr, scalar_t* out, int64_t num_edges, int64_t ns,
                     int64_t nf) {
  at::parallel_for(0, num_edges, 64, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const scalar_t* __restrict__ xj = x + nbr[e] * nf;
      const scalar_t* ei = env + ctr[e] * ns * nf;
      for (int64_t v = 0; v < ns; ++v) {
        const scalar_t* __restrict__ ev = ei + v * nf;
        scalar_t total = 0;
#pragma omp simd reduction(+ : total)
        for (int64_t f = 0; f < nf; ++f) total += ev[f] * xj[f];
        out[e * ns + v] = total;
      }
    }
  });
}

// out[j, :] = sum over edges e with neighbour j: sum_v s[e, v] * env[i(e), v, :],
// tiled over features like envsum.
template <typename scalar_t>
void featsum_kernel(const scalar_t* env, const scalar_t* s, const int64_t* start,
                    const int64_t* edges, const int64_t* ctr, scalar_t* out,
                    int64_t num_atoms, int64_t ns, int64_t nf) {
  at::parallel_for(0, num_atoms, 16, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      int64_t f0 = 0;
      for (; f0 + kTile <= nf; f0 += kTile) {
        scalar_t acc[kTile] = {};
        for (int64_t k = start[j]; k < start[j + 1]; ++k) {
          const int64_t e = edges[k];
          const scalar_t* ei = env + ctr[e] * ns * nf + f0;
          for (int64_t v = 0; v < ns; ++v) {
            const scalar_t sv = s[e * ns + v];
            const scalar_t* source = ei + v * nf;
#pragma omp simd
            for (int64_t t = 0; t < kTile; ++t) acc[t] += sv * source[t];
          }
        }
        for (int64_t t = 0; t < kTile; ++t) out[j * nf + f0 + t] = acc[t];
      }
      for (int64_t k = start[j]; k < start[j + 1] && f0 < nf; ++k) {  // the remainder
        const int64_t e = edges[k];
        for (int64_t v = 0; v < ns; ++v) {
          const scalar_t sv = s[e * ns + v];
          for (int64_t f = f0; f < nf; ++f) out[j * nf + f] += sv * env[(ctr[e] * ns + v) * nf + f];
        }
      }
    }
  });
}

const int64_t* indices(const torch::Tensor& t) { return t.data_ptr<int64_t>(); }

// num_rows: the rows of the output (atoms; x may have other rows, e.g. one per edge).
torch::Tensor envsum(const torch::Tensor& s, const torch::Tensor& x,
                     const torch::Tensor& atom_order, const torch::Tensor& row_start,
                     const torch::Tensor& edge_order, const torch::Tensor& neighbours,
                     int64_t num_rows) {
  auto out = torch::zeros({num_rows, s.size(1), x.size(1)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "envsum", [&] {
    envsum_kernel<scalar_t>(s.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                            indices(atom_order), indices(row_start), indices(edge_order),
                            indices(neighbours), out.data_ptr<scalar_t>(), num_rows,
                            s.size(1), x.size(1));
  });
  return out;
}

torch::Tensor sensesum(const torch::Tensor& env, const torch::Tensor& x,
                       const torch::Tensor& neighbours, const torch::Tensor& centres) {
  auto out = torch::empty({neighbours.size(0), env.size(1)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sensesum", [&] {
    sensesum_kernel<scalar_t>(env.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                              indices(neighbours), indices(centres),
                              out.data_ptr<scalar_t>(), neighbours.size(0), env.size(1),
                              env.size(2));
  });
  return out;
}

// num_rows: the rows of the output (the CSR groups of neighbour_start), atoms for
// featsum itself; edges when each group is a single edge (pairsum.py).
torch::Tensor featsum(const torch::Tensor& env, const torch::Tensor& s,
                      const torch::Tensor& neighbour_start, const torch::Tensor& by_neighbour,
                      const torch::Tensor& centres, int64_t num_rows) {
  auto out = torch::zeros({num_rows, env.size(2)}, env.options());
  AT_DISPATCH_FLOATING_TYPES(env.scalar_type(), "featsum", [&] {
    featsum_kernel<scalar_t>(env.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                             indices(neighbour_start), indices(by_neighbour),
                             indices(centres), out.data_ptr<scalar_t>(), num_rows,
                             env.size(1), env.size(2));
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("envsum", &envsum, "environment sum grouped by centre");
  m.def("sensesum", &sensesum, "per-edge contraction of environment and features");
  m.def("featsum", &featsum, "environment contracted with sensitivities, by neighbour");
}
