// CPU kernels of the HIP-NN environment sum and its two derivative contractions
// (see hipnn_pyg/nn/envsum.py). Each output row is written by one thread: no atomics.
// Register blocking: every inner loop has a compile-time trip count over a contiguous
// run of features, so the compiler keeps the accumulators in vector registers, and
// several independent accumulators hide the latency of the fused multiply-adds.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

// One vector register of scalar_t (16 floats or 8 doubles on AVX-512; GCC splits it
// into halves on narrower instruction sets).
constexpr int kBytes = 64;
template <typename scalar_t>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(kBytes)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(kBytes)));
};
template <typename scalar_t>
using Vec = typename VecOf<scalar_t>::type;
template <typename scalar_t>
constexpr int lanes() { return kBytes / sizeof(scalar_t); }

template <typename scalar_t>
inline Vec<scalar_t> load(const scalar_t* p) {
  Vec<scalar_t> v;
  __builtin_memcpy(&v, p, sizeof(v));  // unaligned load
  return v;
}
template <typename scalar_t>
inline void store(scalar_t* p, const Vec<scalar_t>& v) { __builtin_memcpy(p, &v, sizeof(v)); }
template <typename scalar_t>
inline scalar_t lane_sum(const Vec<scalar_t>& v) {
#ifdef __AVX512F__  // a shuffle tree; the portable loop below extracts lane by lane
  if constexpr (std::is_same_v<scalar_t, float>) return _mm512_reduce_add_ps(__m512(v));
  if constexpr (std::is_same_v<scalar_t, double>) return _mm512_reduce_add_pd(__m512d(v));
#endif
  scalar_t total = 0;
  for (int t = 0; t < lanes<scalar_t>(); ++t) total += v[t];
  return total;
}

// Calls body.operator()<N>() with N = count for the short counts (1 to 4 features of a
// tail, a species one-hot), so that their loops unroll; N = 0 means "count, at run time".
template <typename Body>
inline void with_count(int64_t count, Body&& body) {
  switch (count) {
    case 1: body.template operator()<1>(); break;
    case 2: body.template operator()<2>(); break;
    case 3: body.template operator()<3>(); break;
    case 4: body.template operator()<4>(); break;
    default: body.template operator()<0>(); break;
  }
}

constexpr int kTiles = 4;  // vectors of features per register block
constexpr int kRows = 4;   // sensitivities per register block of envsum and sensesum

// env[a, v0 + r, f0 : f0 + T lanes] = sum over the centre's edges e:
// s[e, v0 + r] x[j(e), f0 : ...], for r < R: R x T vector accumulators.
template <typename scalar_t, int R, int T>
inline void envsum_block(const scalar_t* s, const scalar_t* x, const int64_t* edges,
                         const int64_t* nbr, int64_t k0, int64_t k1, int64_t ns, int64_t nf,
                         int64_t v0, int64_t f0, scalar_t* row) {
  constexpr int L = lanes<scalar_t>();
  Vec<scalar_t> acc[R][T] = {};
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t e = edges[k];
    const scalar_t* xj = x + nbr[e] * nf + f0;
    const scalar_t* se = s + e * ns + v0;
    Vec<scalar_t> xv[T];
    for (int t = 0; t < T; ++t) xv[t] = load<scalar_t>(xj + t * L);
    for (int r = 0; r < R; ++r) {
      const scalar_t sv = se[r];
      for (int t = 0; t < T; ++t) acc[r][t] += sv * xv[t];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) store<scalar_t>(row + (v0 + r) * nf + f0 + t * L, acc[r][t]);
}

// The features after the last whole vector (fewer than one vector's lanes).
template <typename scalar_t, int R, int N>
inline void envsum_tail(const scalar_t* s, const scalar_t* x, const int64_t* edges,
                        const int64_t* nbr, int64_t k0, int64_t k1, int64_t ns, int64_t nf,
                        int64_t v0, int64_t f0, scalar_t* row) {
  scalar_t acc[R][lanes<scalar_t>()] = {};
  const int64_t count = N ? N : nf - f0;
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t e = edges[k];
    const scalar_t* xj = x + nbr[e] * nf + f0;
    const scalar_t* se = s + e * ns + v0;
    for (int r = 0; r < R; ++r)
      for (int64_t t = 0; t < count; ++t) acc[r][t] += se[r] * xj[t];
  }
  for (int r = 0; r < R; ++r)
    for (int64_t t = 0; t < count; ++t) row[(v0 + r) * nf + f0 + t] = acc[r][t];
}

template <typename scalar_t, int R>
inline void envsum_rows(const scalar_t* s, const scalar_t* x, const int64_t* edges,
                        const int64_t* nbr, int64_t k0, int64_t k1, int64_t ns, int64_t nf,
                        int64_t v0, scalar_t* row) {
  constexpr int L = lanes<scalar_t>();
  int64_t f0 = 0;
  for (; f0 + kTiles * L <= nf; f0 += kTiles * L)
    envsum_block<scalar_t, R, kTiles>(s, x, edges, nbr, k0, k1, ns, nf, v0, f0, row);
  switch ((nf - f0) / L) {
    case 3: envsum_block<scalar_t, R, 3>(s, x, edges, nbr, k0, k1, ns, nf, v0, f0, row); break;
    case 2: envsum_block<scalar_t, R, 2>(s, x, edges, nbr, k0, k1, ns, nf, v0, f0, row); break;
    case 1: envsum_block<scalar_t, R, 1>(s, x, edges, nbr, k0, k1, ns, nf, v0, f0, row); break;
    default: break;
  }
  f0 = nf - nf % L;
  if (f0 < nf) with_count(nf - f0, [&]<int N>() {
    envsum_tail<scalar_t, R, N>(s, x, edges, nbr, k0, k1, ns, nf, v0, f0, row);
  });
}

// env[a, v, :] = sum over edges e of centre a: s[e, v] * x[j(e), :].
template <typename scalar_t>
void envsum_kernel(const scalar_t* s, const scalar_t* x, const int64_t* order,
                   const int64_t* start, const int64_t* edges, const int64_t* nbr,
                   scalar_t* out, int64_t num_atoms, int64_t ns, int64_t nf) {
  at::parallel_for(0, num_atoms, 16, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      scalar_t* row = out + order[p] * ns * nf;
      const int64_t k0 = start[p], k1 = start[p + 1];
      int64_t v0 = 0;
      for (; v0 + kRows <= ns; v0 += kRows)
        envsum_rows<scalar_t, kRows>(s, x, edges, nbr, k0, k1, ns, nf, v0, row);
      switch (ns - v0) {
        case 3: envsum_rows<scalar_t, 3>(s, x, edges, nbr, k0, k1, ns, nf, v0, row); break;
        case 2: envsum_rows<scalar_t, 2>(s, x, edges, nbr, k0, k1, ns, nf, v0, row); break;
        case 1: envsum_rows<scalar_t, 1>(s, x, edges, nbr, k0, k1, ns, nf, v0, row); break;
        default: break;
      }
    }
  });
}

// out[v0 + r] = sum_f env_i[v0 + r, f] * x_j[f] for r < R: R vector accumulators,
// each reduced across its lanes once; the last nf % lanes features (N of them when N > 0)
// one by one (none when N < 0).
template <typename scalar_t, int R, int N>
inline void sensesum_rows(const scalar_t* ei, const scalar_t* xj, int64_t nf, int64_t v0,
                          scalar_t* out) {
  constexpr int L = lanes<scalar_t>();
  Vec<scalar_t> acc[R] = {};
  int64_t f0 = 0;
  for (; f0 + L <= nf; f0 += L) {
    const Vec<scalar_t> xv = load<scalar_t>(xj + f0);
    for (int r = 0; r < R; ++r) acc[r] += load<scalar_t>(ei + (v0 + r) * nf + f0) * xv;
  }
  const int64_t count = N < 0 ? 0 : N > 0 ? N : nf - f0;  // N < 0: no tail
  for (int r = 0; r < R; ++r) {
    scalar_t total = f0 > 0 ? lane_sum<scalar_t>(acc[r]) : scalar_t(0);
    const scalar_t* ev = ei + (v0 + r) * nf + f0;
    for (int64_t f = 0; f < count; ++f) total += ev[f] * xj[f0 + f];
    out[v0 + r] = total;
  }
}

// out[e, v] = sum_f env[i(e), v, f] * x[j(e), f]
template <typename scalar_t, int N>
void sensesum_edges(const scalar_t* env, const scalar_t* x, const int64_t* nbr,
                    const int64_t* ctr, scalar_t* out, int64_t num_edges, int64_t ns,
                    int64_t nf) {
  at::parallel_for(0, num_edges, 64, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const scalar_t* xj = x + nbr[e] * nf;
      const scalar_t* ei = env + ctr[e] * ns * nf;
      scalar_t* oe = out + e * ns;
      int64_t v0 = 0;
      for (; v0 + kRows <= ns; v0 += kRows)
        sensesum_rows<scalar_t, kRows, N>(ei, xj, nf, v0, oe);
      switch (ns - v0) {
        case 3: sensesum_rows<scalar_t, 3, N>(ei, xj, nf, v0, oe); break;
        case 2: sensesum_rows<scalar_t, 2, N>(ei, xj, nf, v0, oe); break;
        case 1: sensesum_rows<scalar_t, 1, N>(ei, xj, nf, v0, oe); break;
        default: break;
      }
    }
  });
}

template <typename scalar_t>
void sensesum_kernel(const scalar_t* env, const scalar_t* x, const int64_t* nbr,
                     const int64_t* ctr, scalar_t* out, int64_t num_edges, int64_t ns,
                     int64_t nf) {
  const int64_t tail = nf % lanes<scalar_t>();
  if (tail == 0) return sensesum_edges<scalar_t, -1>(env, x, nbr, ctr, out, num_edges, ns, nf);
  with_count(tail, [&]<int N>() {
    sensesum_edges<scalar_t, N>(env, x, nbr, ctr, out, num_edges, ns, nf);
  });
}

// out[j, f0 : f0 + T lanes] = sum over edges e with neighbour j: sum_v s[e, v]
// env[i(e), v, f0 : ...]; two accumulator sets (even and odd v) for independent chains.
template <typename scalar_t, int T>
inline void featsum_block(const scalar_t* env, const scalar_t* s, const int64_t* edges,
                          const int64_t* ctr, int64_t k0, int64_t k1, int64_t ns, int64_t nf,
                          int64_t f0, scalar_t* row) {
  constexpr int L = lanes<scalar_t>();
  Vec<scalar_t> even[T] = {}, odd[T] = {};
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t e = edges[k];
    const scalar_t* ei = env + ctr[e] * ns * nf + f0;
    const scalar_t* se = s + e * ns;
    int64_t v = 0;
    for (; v + 1 < ns; v += 2) {
      const scalar_t s0 = se[v], s1 = se[v + 1];
      for (int t = 0; t < T; ++t) {
        even[t] += s0 * load<scalar_t>(ei + v * nf + t * L);
        odd[t] += s1 * load<scalar_t>(ei + (v + 1) * nf + t * L);
      }
    }
    if (v < ns)
      for (int t = 0; t < T; ++t) even[t] += se[v] * load<scalar_t>(ei + v * nf + t * L);
  }
  for (int t = 0; t < T; ++t) store<scalar_t>(row + f0 + t * L, even[t] + odd[t]);
}

template <typename scalar_t, int N>
inline void featsum_tail(const scalar_t* env, const scalar_t* s, const int64_t* edges,
                         const int64_t* ctr, int64_t k0, int64_t k1, int64_t ns, int64_t nf,
                         int64_t f0, scalar_t* row) {
  scalar_t acc[lanes<scalar_t>()] = {};
  const int64_t count = N ? N : nf - f0;
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t e = edges[k];
    const scalar_t* ei = env + ctr[e] * ns * nf + f0;
    for (int64_t v = 0; v < ns; ++v)
      for (int64_t t = 0; t < count; ++t) acc[t] += s[e * ns + v] * ei[v * nf + t];
  }
  for (int64_t t = 0; t < count; ++t) row[f0 + t] = acc[t];
}

// out[j, :] = sum over edges e with neighbour j: sum_v s[e, v] * env[i(e), v, :].
template <typename scalar_t>
void featsum_kernel(const scalar_t* env, const scalar_t* s, const int64_t* start,
                    const int64_t* edges, const int64_t* ctr, scalar_t* out,
                    int64_t num_atoms, int64_t ns, int64_t nf) {
  constexpr int L = lanes<scalar_t>();
  at::parallel_for(0, num_atoms, 16, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      scalar_t* row = out + j * nf;
      const int64_t k0 = start[j], k1 = start[j + 1];
      int64_t f0 = 0;
      for (; f0 + kTiles * L <= nf; f0 += kTiles * L)
        featsum_block<scalar_t, kTiles>(env, s, edges, ctr, k0, k1, ns, nf, f0, row);
      switch ((nf - f0) / L) {
        case 3: featsum_block<scalar_t, 3>(env, s, edges, ctr, k0, k1, ns, nf, f0, row); break;
        case 2: featsum_block<scalar_t, 2>(env, s, edges, ctr, k0, k1, ns, nf, f0, row); break;
        case 1: featsum_block<scalar_t, 1>(env, s, edges, ctr, k0, k1, ns, nf, f0, row); break;
        default: break;
      }
      f0 = nf - nf % L;
      if (f0 < nf) with_count(nf - f0, [&]<int N>() {
        featsum_tail<scalar_t, N>(env, s, edges, ctr, k0, k1, ns, nf, f0, row);
      });
    }
  });
}

const int64_t* indices(const torch::Tensor& t) { return t.data_ptr<int64_t>(); }

// num_rows: the rows of the output (atoms; x may have other rows, e.g. one per edge).
// Every row is written, atoms without edges with zeros: no separate fill.
torch::Tensor envsum(const torch::Tensor& s, const torch::Tensor& x,
                     const torch::Tensor& atom_order, const torch::Tensor& row_start,
                     const torch::Tensor& edge_order, const torch::Tensor& neighbours,
                     int64_t num_rows) {
  auto out = torch::empty({num_rows, s.size(1), x.size(1)}, x.options());
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
  auto out = torch::empty({num_rows, env.size(2)}, env.options());
  AT_DISPATCH_FLOATING_TYPES(env.scalar_type(), "featsum", [&] {
    featsum_kernel<scalar_t>(env.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                             indices(neighbour_start), indices(by_neighbour),
                             indices(centres), out.data_ptr<scalar_t>(), num_rows,
                             env.size(1), env.size(2));
  });
  return out;
}

}  // namespace

void register_gaussians(pybind11::module& m);  // gaussians.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  register_gaussians(m);
  m.def("envsum", &envsum, "environment sum grouped by centre");
  m.def("sensesum", &sensesum, "per-edge contraction of environment and features");
  m.def("featsum", &featsum, "environment contracted with sensitivities, by neighbour");
}
