// CPU kernels of the HIP-NN environment sum and its two derivative contractions
// (see hipnn_pyg/nn/envsum.py). Each output row is written by one thread: no atomics.
// Register blocking: every inner loop has a compile-time trip count over a contiguous
// run of features, so the compiler keeps the accumulators in vector registers, and
// several independent accumulators hide the latency of the fused multiply-adds.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

// One vector register of scalar_t: 64 bytes on AVX-512, 32 on AVX/AVX2, 16 elsewhere
// (SSE, NEON). The width must match the instruction set: a wider vector type is split
// into registers by the compiler, and the register blocks below then spill (an AVX2
// CPU ran these kernels 5-10x slower with 64-byte vectors).
#if defined(__AVX512F__)
constexpr int kBytes = 64;
#elif defined(__AVX__)
constexpr int kBytes = 32;
#else
constexpr int kBytes = 16;
#endif
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

// Room for a tail of fewer features than one vector's lanes, and for the unrolled counts
// of with_count (up to 4) that instantiate the tails even where a vector has fewer lanes
// (doubles on 16-byte vectors) and never run there.
template <typename scalar_t>
constexpr int tail_room() { return lanes<scalar_t>() > 4 ? lanes<scalar_t>() : 4; }

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

// Register blocks: envsum keeps kRows x kTiles accumulators and kTiles feature vectors
// live, which fits AVX-512's 32 vector registers at 4 x 4 and the 16 of AVX2 at 2 x 4.
constexpr int kTiles = 4;  // vectors of features per register block
constexpr int kRows = kBytes == 64 ? 4 : 2;  // sensitivities per register block of envsum
constexpr int kSenseRows = 4;  // sensitivities per pass of sensesum (R accumulators)

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
  scalar_t acc[R][tail_room<scalar_t>()] = {};
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
      for (; v0 + kSenseRows <= ns; v0 += kSenseRows)
        sensesum_rows<scalar_t, kSenseRows, N>(ei, xj, nf, v0, oe);
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
  scalar_t acc[tail_room<scalar_t>()] = {};
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

const int64_t* indices(const at::Tensor& t) { return t.data_ptr<int64_t>(); }

}  // namespace

// --- checks at the boundary: what the loops above assume, named when it fails --------

namespace hipnn {

void check_values(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), "hipnn: ", name, " is on ", t.device(),
              "; these kernels are the CPU backend (use backend='torch' for other devices)");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "hipnn: ",
              name, " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, "hipnn: ", name, " must have ", dim, " dimensions, got ",
              t.sizes());
  TORCH_CHECK(t.is_contiguous(), "hipnn: ", name, " must be contiguous");
}

// Every entry in [0, upper): one pass over the indices, far cheaper than the kernels.
void check_index(const at::Tensor& t, const char* name, int64_t upper) {
  TORCH_CHECK(t.device().is_cpu(), "hipnn: ", name, " is on ", t.device(),
              "; these kernels are the CPU backend");
  TORCH_CHECK(t.scalar_type() == at::kLong, "hipnn: ", name, " must be int64, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 1, "hipnn: ", name, " must be one-dimensional, got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "hipnn: ", name, " must be contiguous");
  const int64_t* p = t.data_ptr<int64_t>();
  const int64_t n = t.numel();
  int64_t low = 0, high = -1;
  for (int64_t k = 0; k < n; ++k) {
    low = std::min(low, p[k]);
    high = std::max(high, p[k]);
  }
  TORCH_CHECK(low >= 0 && high < upper, "hipnn: ", name, " holds an index outside [0, ", upper,
              "): ", low < 0 ? low : high);
}

// CSR offsets: num_groups + 1 non-decreasing entries from 0 to at most num_items.
void check_offsets(const at::Tensor& start, const char* name, int64_t num_groups,
                   int64_t num_items) {
  check_index(start, name, num_items + 1);
  TORCH_CHECK(start.numel() == num_groups + 1, "hipnn: ", name, " must have ", num_groups + 1,
              " entries, got ", start.numel());
  const int64_t* p = start.data_ptr<int64_t>();
  for (int64_t k = 0; k < num_groups; ++k)
    TORCH_CHECK(p[k] <= p[k + 1], "hipnn: ", name, " must be non-decreasing");
}

// Each of 0 .. num_rows - 1 once: every output row is written by exactly one task.
void check_permutation(const at::Tensor& order, const char* name, int64_t num_rows) {
  check_index(order, name, num_rows);
  TORCH_CHECK(order.numel() == num_rows, "hipnn: ", name, " must list the ", num_rows,
              " rows once each, got ", order.numel(), " entries");
  std::vector<bool> seen(static_cast<size_t>(num_rows), false);
  const int64_t* p = order.data_ptr<int64_t>();
  for (int64_t k = 0; k < num_rows; ++k) {
    TORCH_CHECK(!seen[p[k]], "hipnn: ", name, " lists row ", p[k], " twice");
    seen[p[k]] = true;
  }
}

void check_same_dtype(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "hipnn: inputs of one dtype expected, got ",
              a.scalar_type(), " and ", b.scalar_type());
}

}  // namespace hipnn

namespace {

using hipnn::check_index;
using hipnn::check_offsets;
using hipnn::check_same_dtype;
using hipnn::check_values;

// num_rows: the rows of the output (atoms; x may have other rows, e.g. one per edge).
// Every row is written, atoms without edges with zeros: no separate fill.
at::Tensor envsum(const at::Tensor& s, const at::Tensor& x, const at::Tensor& order,
                  const at::Tensor& start, const at::Tensor& edges, const at::Tensor& nbr,
                  int64_t num_rows) {
  check_values(s, "sensitivities", 2);
  check_values(x, "features", 2);
  check_same_dtype(s, x);
  TORCH_CHECK(nbr.numel() == s.size(0), "hipnn: envsum: ", s.size(0),
              " sensitivity rows for ", nbr.numel(), " edges");
  hipnn::check_permutation(order, "envsum order", num_rows);
  check_offsets(start, "envsum offsets", num_rows, edges.numel());
  check_index(edges, "envsum edges", s.size(0));
  check_index(nbr, "envsum neighbours", x.size(0));
  auto out = at::empty({num_rows, s.size(1), x.size(1)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "envsum", [&] {
    envsum_kernel<scalar_t>(s.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), indices(order),
                            indices(start), indices(edges), indices(nbr),
                            out.data_ptr<scalar_t>(), num_rows, s.size(1), x.size(1));
  });
  return out;
}

at::Tensor sensesum(const at::Tensor& env, const at::Tensor& x, const at::Tensor& nbr,
                    const at::Tensor& ctr) {
  check_values(env, "environment", 3);
  check_values(x, "features", 2);
  check_same_dtype(env, x);
  TORCH_CHECK(env.size(2) == x.size(1), "hipnn: sensesum: environment of ", env.size(2),
              " features, features of ", x.size(1));
  TORCH_CHECK(nbr.numel() == ctr.numel(), "hipnn: sensesum: ", nbr.numel(), " neighbours, ",
              ctr.numel(), " centres");
  check_index(nbr, "sensesum neighbours", x.size(0));
  check_index(ctr, "sensesum centres", env.size(0));
  auto out = at::empty({nbr.numel(), env.size(1)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sensesum", [&] {
    sensesum_kernel<scalar_t>(env.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), indices(nbr),
                              indices(ctr), out.data_ptr<scalar_t>(), nbr.numel(),
                              env.size(1), env.size(2));
  });
  return out;
}

// num_rows: the rows of the output (the CSR groups of start), atoms for featsum
// itself; edges when each group is a single edge (pairsum.py).
at::Tensor featsum(const at::Tensor& env, const at::Tensor& s, const at::Tensor& start,
                   const at::Tensor& edges, const at::Tensor& ctr, int64_t num_rows) {
  check_values(env, "environment", 3);
  check_values(s, "sensitivities", 2);
  check_same_dtype(env, s);
  TORCH_CHECK(env.size(1) == s.size(1), "hipnn: featsum: environment of ", env.size(1),
              " sensitivities, sensitivities of ", s.size(1));
  TORCH_CHECK(ctr.numel() == s.size(0), "hipnn: featsum: ", s.size(0),
              " sensitivity rows for ", ctr.numel(), " edges");
  check_offsets(start, "featsum offsets", num_rows, edges.numel());
  check_index(edges, "featsum edges", s.size(0));
  check_index(ctr, "featsum centres", env.size(0));
  auto out = at::empty({num_rows, env.size(2)}, env.options());
  AT_DISPATCH_FLOATING_TYPES(env.scalar_type(), "featsum", [&] {
    featsum_kernel<scalar_t>(env.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), indices(start),
                             indices(edges), indices(ctr), out.data_ptr<scalar_t>(), num_rows,
                             env.size(1), env.size(2));
  });
  return out;
}

}  // namespace

// The operators' schemas (gaussians.cpp adds its two by TORCH_LIBRARY_FRAGMENT). Python
// registers their shape functions (hipnn_pyg/nn/csrc/__init__.py) and their autograd
// (hipnn_pyg/nn/contraction.py), so that torch.compile, torch.export and AOTInductor
// keep them as single operators.
TORCH_LIBRARY(hipnn, m) {
  m.def("envsum(Tensor s, Tensor x, Tensor order, Tensor start, Tensor edges, Tensor nbr, "
        "SymInt num_rows) -> Tensor");
  m.def("sensesum(Tensor env, Tensor x, Tensor nbr, Tensor ctr) -> Tensor");
  m.def("featsum(Tensor env, Tensor s, Tensor start, Tensor edges, Tensor ctr, "
        "SymInt num_rows) -> Tensor");
}

TORCH_LIBRARY_IMPL(hipnn, CPU, m) {
  m.impl("envsum", &envsum);
  m.impl("sensesum", &sensesum);
  m.impl("featsum", &featsum);
}
