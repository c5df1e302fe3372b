// test_ops.cpp — every op of the table in rmoe/kernels/ops.h: against the ref
// oracle, by finite differences, on hand-worked values, and for the contract
// of ops.h (null gradient outputs, index checks).
//
//  CpuVsRef.*     rmoe::cpu against the rmoe::ref oracle in float, forward and
//                 backward, on several shapes: odd sizes, a single token (N=1),
//                 experts owning zero rows, all rows on one expert. Every output
//                 sits between two bands of 16 sentinels (1234.5) that must
//                 survive; forward outputs start as NaN (so an unwritten element
//                 shows), gradient outputs start from the same random values for
//                 both backends (so the += convention is compared too). NaN/Inf
//                 are checked first, then
//                     err = max|cpu - ref| / (max|ref| + 1e-6)
//                 against a per-op threshold: kExact (copies, top-k ids),
//                 kElem = 1e-5 (pointwise), kReduce = 1e-5 (norm, softmax, lse),
//                 kGemm = 1e-4 (linear, attention, experts). Backward inputs saved
//                 by the forward (attention out and lse, rstd, gates, a/b/h, probs) come from ref.
//  NullGrad.*     the contract of ops.h for every gradient output of every op:
//                 that output null ("not needed") in turn, the others still
//                 equal ref (cpu and ref both called with the same nulls).
//  BadIndex/{Ref,Cpu}.* every index input of every op: an index at its bound
//                 and a negative one throw rmoe::Error naming the op, the
//                 index and the bound.
//  Fd/{Ref,Cpu}.* each backward in double against central differences
//                 (eps 1e-6) of L = sum(out * R) for a fixed random R;
//                 gradients accumulate onto random values and the increment is
//                 compared, relative tolerance 1e-6 of the largest gradient.
//                 rope is checked as the exact adjoint and inverse instead.
//  Known/{Ref,Cpu}.* a few hand-worked values that pin the forward formulas
//                 (which the FD tests cannot: they only tie backward to forward),
//                 and the token-id check of embedding.
//  RefChecks.*    the oracle's own shape and index checks.
//  OpTable.*      every op of the table (ops.h) has its cases: each case is
//                 an OP_CASE naming the ops it checks and how.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <numeric>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rmoe/core/error.h"
#include "rmoe/core/rng.h"
#include "rmoe/kernels/flash_attention.h"
#include "rmoe/kernels/ops.h"

extern "C" int openblas_get_num_threads(void);
extern "C" void openblas_set_num_threads(int);

using namespace rmoe;

namespace {

// ---- the two backends as types, one static function per op of the table -----

#define RMOE_TEST_FN(kind, name, cuda, dev, params, args) \
  RMOE_OP_TEMPLATE_##kind static void name params { RMOE_TEST_NS::name RMOE_OP_TARGS_##kind args; }
struct Ref {
  static constexpr const char* name = "Ref";
#define RMOE_TEST_NS rmoe::ref
  RMOE_OPS(RMOE_TEST_FN)
#undef RMOE_TEST_NS
};
struct Cpu {
  static constexpr const char* name = "Cpu";
#define RMOE_TEST_NS rmoe::cpu
  RMOE_OPS(RMOE_TEST_FN)
#undef RMOE_TEST_NS
};

struct BackendName {
  template <class B>
  static std::string GetName(int) {
    return B::name;
  }
};
using Backends = ::testing::Types<Ref, Cpu>;

// ---- what each case checks, and the table it must cover ------------------------
//
// OP_CASE(Suite, Name, "op: what ...", ...) is TEST(Suite, Name) that also
// records, before any test runs, what it checks of which op:
//   ref        the cpu backend equals the ref oracle (forward outputs, or the
//              gradients of a backward)
//   fd         the backward against finite differences of the forward
//   null:<g>   gradient output g null, the other outputs still right
//   index:<i>  index input i at its bound and negative: rejected
// OP_TYPED_CASE is the same for a TYPED_TEST (run on both backends).
// OpTable.EveryOpHasItsCases walks the op table and fails for every op that
// lacks a case for one of these (fd and null: ops with a gradient output;
// index: ops with an index input), and for a claim the op cannot have.

struct TableOp {
  std::string name;
  std::vector<std::pair<std::string, std::string>> params;  // (type, name)
};

// Splits "(Grad<T> dx, In<T> dy, double eps)" into (type, name) pairs.
std::vector<std::pair<std::string, std::string>> parse_params(std::string s) {
  s = s.substr(1, s.size() - 2);
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream in(s);
  for (std::string p; std::getline(in, p, ',');) {
    p.erase(0, p.find_first_not_of(' '));
    p.erase(p.find_last_not_of(' ') + 1);
    const size_t sp = p.rfind(' ');
    out.emplace_back(p.substr(0, sp), p.substr(sp + 1));
  }
  return out;
}

const std::vector<TableOp>& table_ops() {
  static const std::vector<TableOp> ops = [] {
    std::vector<TableOp> v;
#define RMOE_TEST_TABLE_ROW(kind, name, cuda, dev, params, args) v.push_back({#name, parse_params(#params)});
    RMOE_OPS(RMOE_TEST_TABLE_ROW)
#undef RMOE_TEST_TABLE_ROW
    return v;
  }();
  return ops;
}

// op -> what is checked -> the tests that check it.
using Coverage = std::map<std::string, std::map<std::string, std::vector<std::string>>>;
Coverage& coverage() {
  static Coverage c;
  return c;
}

// Each claim: "op: item item ...".
bool record(const char* test, std::initializer_list<const char*> claims) {
  for (const char* claim : claims) {
    std::istringstream in(claim);
    std::string op, item;
    in >> op;
    RMOE_CHECK(!op.empty() && op.back() == ':', test << ": claim '" << claim << "' is not \"op: what ...\"");
    op.pop_back();
    while (in >> item) coverage()[op][item].push_back(test);
  }
  return true;
}

#define OP_CASE(suite, test, ...)                                                            \
  [[maybe_unused]] const bool suite##_##test##_recorded = record(#suite "." #test, {__VA_ARGS__}); \
  TEST(suite, test)
#define OP_TYPED_CASE(suite, test, ...)                                                      \
  [[maybe_unused]] const bool suite##_##test##_recorded = record(#suite "." #test, {__VA_ARGS__}); \
  TYPED_TEST(suite, test)

// ---- guarded buffers ----------------------------------------------------------

constexpr int64_t kGuard = 16;
template <class T>
T sentinel() {
  return T(1234.5);
}
// Forward outputs start as this, so an element an op forgets to write shows.
template <class T>
T garbage() {
  if constexpr (std::is_floating_point_v<T>)
    return std::numeric_limits<T>::quiet_NaN();
  else
    return T(-7);
}

// A dense array with kGuard sentinels before and after it.
template <class T>
struct Buf {
  std::vector<int64_t> dims;
  std::vector<T> mem;

  Buf() = default;
  explicit Buf(std::vector<int64_t> d, T fill = T(0))
      : dims(std::move(d)), mem(size() + 2 * kGuard, sentinel<T>()) {
    std::fill(data(), data() + size(), fill);
  }
  int64_t size() const {
    int64_t n = 1;
    for (int64_t x : dims) n *= x;
    return n;
  }
  T* data() { return mem.data() + kGuard; }
  const T* data() const { return mem.data() + kGuard; }
  T& operator[](int64_t i) { return data()[i]; }
  const T& operator[](int64_t i) const { return data()[i]; }
  Tensor<T> t() {
    Tensor<T> v;
    v.data = data();
    v.ndim = static_cast<int>(dims.size());
    for (int i = 0; i < v.ndim; ++i) v.shape[i] = dims[i];
    return v;
  }
};

std::string index_str(const std::vector<int64_t>& dims, int64_t i) {
  std::vector<int64_t> ix(dims.size());
  for (int d = static_cast<int>(dims.size()) - 1; d >= 0; --d) {
    ix[d] = dims[d] ? i % dims[d] : 0;
    i = dims[d] ? i / dims[d] : 0;
  }
  std::ostringstream s;
  s << "[";
  for (size_t d = 0; d < ix.size(); ++d) s << (d ? "," : "") << ix[d];
  s << "]";
  return s.str();
}

template <class T>
::testing::AssertionResult guards_intact(const std::string& what, const Buf<T>& b) {
  for (int64_t i = 0; i < kGuard; ++i) {
    if (!(b.mem[i] == sentinel<T>()))
      return ::testing::AssertionFailure() << what << ": written before its start (element "
                                           << i - kGuard << " = " << b.mem[i] << ")";
    if (!(b.mem[kGuard + b.size() + i] == sentinel<T>()))
      return ::testing::AssertionFailure()
             << what << ": written past its end (element " << b.size() + i << " = "
             << b.mem[kGuard + b.size() + i] << ")";
  }
  return ::testing::AssertionSuccess();
}

// ---- random inputs ------------------------------------------------------------

class Rng {
 public:
  explicit Rng(uint64_t seed) : seed_(seed) {}
  template <class T>
  Buf<T> randn(std::vector<int64_t> dims, double scale = 1.0, double shift = 0.0) {
    Buf<T> b(std::move(dims));
    const uint64_t s = stream_++;
    for (int64_t i = 0; i < b.size(); ++i) b[i] = T(shift + scale * random_normal(seed_, s, i));
    return b;
  }
  double uniform() { return random_uniform(seed_, 0, counter_++); }
  int64_t below(int64_t n) { return std::min<int64_t>(n - 1, int64_t(uniform() * double(n))); }
  Buf<int32_t> ints(std::vector<int64_t> dims, int64_t n) {
    Buf<int32_t> b(std::move(dims));
    for (int64_t i = 0; i < b.size(); ++i) b[i] = int32_t(below(n));
    return b;
  }

 private:
  uint64_t seed_;
  uint64_t stream_ = 1;
  uint64_t counter_ = 0;
};

// Seeded by the test's name: values do not depend on which tests run.
Rng test_rng() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return Rng(hash_name(std::string(info->test_suite_name()) + "." + info->name()));
}

// ---- cpu vs ref comparison ----------------------------------------------------

constexpr double kExact = 0.0;
constexpr double kElem = 1e-5;
constexpr double kReduce = 1e-5;
constexpr double kGemm = 1e-4;

// The same output (or gradient) of both backends.
template <class T>
struct Pair {
  Buf<T> c, r;  // cpu, ref
};
template <class T>
Pair<T> fwd_pair(std::vector<int64_t> dims) {
  Buf<T> b(std::move(dims), garbage<T>());
  return {b, b};
}
template <class T>
Pair<T> grad_pair(Rng& rng, std::vector<int64_t> dims) {
  Buf<T> b = rng.randn<T>(std::move(dims));
  return {b, b};
}

template <class T>
::testing::AssertionResult close(const std::string& what, const Pair<T>& p, double thr) {
  const Buf<T>& got = p.c;
  const Buf<T>& want = p.r;
  if (auto g = guards_intact(what + " (cpu)", got); !g) return g;
  if (auto g = guards_intact(what + " (ref)", want); !g) return g;
  for (int64_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(double(got[i])))
      return ::testing::AssertionFailure()
             << what << index_str(got.dims, i) << ": cpu gave " << got[i] << ", ref " << want[i];
    if (!std::isfinite(double(want[i])))
      return ::testing::AssertionFailure()
             << what << index_str(got.dims, i) << ": ref gave " << want[i] << ", cpu " << got[i];
  }
  double maxdiff = 0.0, maxref = 0.0;
  int64_t worst = 0;
  for (int64_t i = 0; i < got.size(); ++i) {
    const double diff = std::abs(double(got[i]) - double(want[i]));
    if (diff > maxdiff) maxdiff = diff, worst = i;
    maxref = std::max(maxref, std::abs(double(want[i])));
  }
  const double err = maxdiff / (maxref + 1e-6);
  if (err <= thr) return ::testing::AssertionSuccess();
  auto f = ::testing::AssertionFailure();
  f << what << ": normalised error " << err << " > " << thr << " (max |ref| " << maxref
    << "); worst " << what << index_str(got.dims, worst) << ": cpu " << got[worst] << ", ref "
    << want[worst] << "; first mismatches:";
  int shown = 0;
  for (int64_t i = 0; i < got.size() && shown < 5; ++i)
    if (std::abs(double(got[i]) - double(want[i])) > thr * (maxref + 1e-6))
      f << " " << index_str(got.dims, i) << " cpu " << got[i] << " ref " << want[i] << ";", ++shown;
  return f;
}

#define SHAPE_TRACE(...) SCOPED_TRACE(::testing::Message() << __VA_ARGS__)

// ---- routings for the MoE ops -------------------------------------------------

// T tokens each choose k distinct experts; slots are sorted by expert (then
// token, then choice): slot_of[t,j] is the slot of token t's j-th choice,
// slot_token[slot] its token, offsets[E+1] each expert's slot range.
struct Routing {
  int64_t T = 0, k = 0, E = 0;
  Buf<int32_t> slot_of, slot_token;
  Buf<int64_t> offsets;
  Buf<int32_t> idx;  // [T,k] the choices
};

Routing make_routing(int64_t T, int64_t k, int64_t E, const std::vector<int>& choice) {
  Routing r{T, k, E, Buf<int32_t>({T, k}), Buf<int32_t>({T * k}), Buf<int64_t>({E + 1}), Buf<int32_t>({T, k})};
  std::copy(choice.begin(), choice.end(), r.idx.data());
  std::vector<int64_t> order(T * k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return choice[x] < choice[y]; });
  for (int64_t s = 0; s < T * k; ++s) {
    r.slot_of[order[s]] = int32_t(s);
    r.slot_token[s] = int32_t(order[s] / k);
  }
  for (int64_t e = 0; e <= E; ++e) r.offsets[e] = 0;
  for (int c : choice) ++r.offsets[c + 1];
  for (int64_t e = 0; e < E; ++e) r.offsets[e + 1] += r.offsets[e];
  return r;
}

// Each token picks k distinct experts from `allowed` at random (so experts not
// in `allowed` get no rows).
Routing random_routing(Rng& rng, int64_t T, int64_t k, int64_t E, std::vector<int> allowed) {
  std::vector<int> choice;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int> pool = allowed;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t i = j + rng.below(int64_t(pool.size()) - j);
      std::swap(pool[j], pool[i]);
      choice.push_back(pool[j]);
    }
  }
  return make_routing(T, k, E, choice);
}

std::vector<int> all_experts(int64_t E) {
  std::vector<int> v(E);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

Buf<int64_t> offsets_from_counts(const std::vector<int64_t>& counts) {
  Buf<int64_t> o({int64_t(counts.size()) + 1});
  o[0] = 0;
  for (size_t e = 0; e < counts.size(); ++e) o[e + 1] = o[e] + counts[e];
  return o;
}

// Router logits whose probabilities are far from ties: row n is a permutation
// of E evenly spaced values (gap `gap`) plus a little noise.
Buf<float> separated_logits(Rng& rng, int64_t N, int64_t E, double gap) {
  Buf<float> l({N, E});
  auto noise = rng.randn<double>({N, E}, 0.05 * gap);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<int> perm = all_experts(E);
    for (int64_t i = E - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(i + 1)]);
    for (int64_t e = 0; e < E; ++e)
      l[n * E + e] = float(gap * (perm[e] - E / 2) + noise[n * E + e]);
  }
  return l;
}

using F = float;

// =============================================================================
// 1. cpu vs ref, float
// =============================================================================

OP_CASE(CpuVsRef, Linear, "linear_forward: ref", "linear_backward: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t N, in, out;
  };
  for (S s : {S{1, 1, 1}, S{1, 7, 5}, S{3, 17, 13}, S{64, 33, 65}, S{37, 128, 96}})
    for (int variant : {0, 1, 2}) {  // 0: bias, all grads; 1: no bias, dx dW; 2: dW only
      SHAPE_TRACE("N=" << s.N << " in=" << s.in << " out=" << s.out << " variant=" << variant);
      auto x = rng.randn<F>({s.N, s.in});
      auto W = rng.randn<F>({s.out, s.in}, 0.3);
      auto b = rng.randn<F>({s.out});
      const Tensor<F> bv = variant == 0 ? b.t() : Tensor<F>{};
      auto y = fwd_pair<F>({s.N, s.out});
      Cpu::linear_forward(y.c.t(), x.t(), W.t(), bv);
      Ref::linear_forward(y.r.t(), x.t(), W.t(), bv);
      EXPECT_TRUE(close("y", y, kGemm));

      auto dy = rng.randn<F>({s.N, s.out});
      auto dx = grad_pair<F>(rng, {s.N, s.in});
      auto dW = grad_pair<F>(rng, {s.out, s.in});
      auto db = grad_pair<F>(rng, {s.out});
      auto opt = [&](Buf<F>& g, bool on) { return on ? g.t() : Tensor<F>{}; };
      Cpu::linear_backward(opt(dx.c, variant < 2), dW.c.t(), opt(db.c, variant == 0), dy.t(), x.t(),
                           W.t());
      Ref::linear_backward(opt(dx.r, variant < 2), dW.r.t(), opt(db.r, variant == 0), dy.t(), x.t(),
                           W.t());
      EXPECT_TRUE(close("dx", dx, kGemm));
      EXPECT_TRUE(close("dW", dW, kGemm));
      EXPECT_TRUE(close("db", db, kGemm));
    }
}

OP_CASE(CpuVsRef, Embedding, "embedding_forward: ref", "embedding_backward: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t N, V, d;
  };
  for (S s : {S{1, 1, 1}, S{17, 11, 13}, S{64, 1000, 32}, S{5, 3, 7}}) {
    SHAPE_TRACE("N=" << s.N << " V=" << s.V << " d=" << s.d);
    auto tokens = rng.ints({s.N}, s.V);  // repeats are certain when N > V
    auto W = rng.randn<F>({s.V, s.d});
    auto out = fwd_pair<F>({s.N, s.d});
    Cpu::embedding_forward(out.c.t(), tokens.t(), W.t());
    Ref::embedding_forward(out.r.t(), tokens.t(), W.t());
    EXPECT_TRUE(close("out", out, kExact));

    auto dout = rng.randn<F>({s.N, s.d});
    auto dW = grad_pair<F>(rng, {s.V, s.d});
    Cpu::embedding_backward(dW.c.t(), tokens.t(), dout.t());
    Ref::embedding_backward(dW.r.t(), tokens.t(), dout.t());
    EXPECT_TRUE(close("dW", dW, kElem));
  }
}

OP_CASE(CpuVsRef, RmsNorm, "rmsnorm_forward: ref", "rmsnorm_backward: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t N, d;
  };
  for (S s : {S{1, 1}, S{7, 13}, S{64, 256}, S{3, 1000}})
    for (bool with_dw : {true, false}) {
      SHAPE_TRACE("N=" << s.N << " d=" << s.d << " dw=" << with_dw);
      auto x = rng.randn<F>({s.N, s.d}, 2.0);
      auto w = rng.randn<F>({s.d}, 0.2, 1.0);
      auto out = fwd_pair<F>({s.N, s.d});
      auto rstd = fwd_pair<F>({s.N});
      Cpu::rmsnorm_forward(out.c.t(), rstd.c.t(), x.t(), w.t(), 1e-5);
      Ref::rmsnorm_forward(out.r.t(), rstd.r.t(), x.t(), w.t(), 1e-5);
      EXPECT_TRUE(close("out", out, kReduce));
      EXPECT_TRUE(close("rstd", rstd, kReduce));

      auto dout = rng.randn<F>({s.N, s.d});
      auto dx = grad_pair<F>(rng, {s.N, s.d});
      auto dw = grad_pair<F>(rng, {s.d});
      Cpu::rmsnorm_backward(dx.c.t(), with_dw ? dw.c.t() : Tensor<F>{}, dout.t(), x.t(), w.t(),
                            rstd.r.t());
      Ref::rmsnorm_backward(dx.r.t(), with_dw ? dw.r.t() : Tensor<F>{}, dout.t(), x.t(), w.t(),
                            rstd.r.t());
      EXPECT_TRUE(close("dx", dx, kReduce));
      EXPECT_TRUE(close("dw", dw, kReduce));
    }
}

OP_CASE(CpuVsRef, Rope, "rope_forward: ref", "rope_backward: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t B, S_, H, D;
    double theta;
  };
  for (S s :
       {S{1, 1, 1, 2, 1e4}, S{2, 7, 3, 6, 1e4}, S{1, 64, 4, 16, 5e5}, S{2, 5, 2, 10, 100.0}}) {
    SHAPE_TRACE("B=" << s.B << " S=" << s.S_ << " H=" << s.H << " D=" << s.D
                     << " theta=" << s.theta);
    auto x = rng.randn<F>({s.B, s.S_, s.H, s.D});
    Pair<F> fx{x, x};
    Cpu::rope_forward(fx.c.t(), s.theta);
    Ref::rope_forward(fx.r.t(), s.theta);
    EXPECT_TRUE(close("rope(x)", fx, kElem));
    Pair<F> bx{x, x};
    Cpu::rope_backward(bx.c.t(), s.theta);
    Ref::rope_backward(bx.r.t(), s.theta);
    EXPECT_TRUE(close("rope_backward(x)", bx, kElem));
  }
}

struct AttnShape {
  int64_t B, S_, H, D;
};

// The cpu backward's scratch, for `workers` threads (ops.h).
Buf<F> attention_scratch(int64_t S, int64_t workers) {
  return Buf<F>({flash::cpu_scratch_elements(S, workers)}, garbage<F>());
}

void attention_vs_ref(Rng& rng, AttnShape s) {
  SHAPE_TRACE("B=" << s.B << " S=" << s.S_ << " H=" << s.H << " D=" << s.D);
  const std::vector<int64_t> qs{s.B, s.S_, s.H, s.D};
  auto q = rng.randn<F>(qs), k = rng.randn<F>(qs), v = rng.randn<F>(qs);
  auto out = fwd_pair<F>(qs);
  auto lse = fwd_pair<F>({s.B, s.H, s.S_});
  Cpu::attention_forward(out.c.t(), lse.c.t(), q.t(), k.t(), v.t());
  Ref::attention_forward(out.r.t(), lse.r.t(), q.t(), k.t(), v.t());
  EXPECT_TRUE(close("out", out, kGemm));
  EXPECT_TRUE(close("lse", lse, kGemm));

  auto dout = rng.randn<F>(qs);
  auto dq = grad_pair<F>(rng, qs), dk = grad_pair<F>(rng, qs), dv = grad_pair<F>(rng, qs);
  auto scratch = attention_scratch(s.S_, 3);
  Cpu::attention_backward(dq.c.t(), dk.c.t(), dv.c.t(), scratch.t(), dout.t(), out.r.t(), lse.r.t(), q.t(), k.t(),
                          v.t());
  Ref::attention_backward(dq.r.t(), dk.r.t(), dv.r.t(), Tensor<F>{}, dout.t(), out.r.t(), lse.r.t(), q.t(), k.t(),
                          v.t());
  EXPECT_TRUE(guards_intact("scratch", scratch));
  EXPECT_TRUE(close("dq", dq, kGemm));
  EXPECT_TRUE(close("dk", dk, kGemm));
  EXPECT_TRUE(close("dv", dv, kGemm));
}

// The cpu's query blocks of flash::kCpuBlockQ = 32 rows, key blocks of
// kCpuBlockK = 128: S below one block, exactly one, partial last blocks (33,
// 65, 100, 129, 130, 300), several key blocks, several heads and sequences,
// D = 44 (the medium config) and other head dims that are no multiple of anything.
OP_CASE(CpuVsRef, Attention, "attention_forward: ref", "attention_backward: ref") {
  Rng rng = test_rng();
  for (AttnShape s : {AttnShape{1, 1, 1, 2}, AttnShape{2, 5, 3, 4}, AttnShape{1, 64, 2, 16},
                      AttnShape{3, 7, 1, 6}, AttnShape{1, 33, 4, 8}, AttnShape{2, 65, 2, 8},
                      AttnShape{1, 100, 3, 44}, AttnShape{2, 130, 2, 20}, AttnShape{1, 129, 1, 44},
                      AttnShape{1, 300, 2, 12}})
    attention_vs_ref(rng, s);
}

// The float exp of host_device.h (both backends' softmax and sigmoid) against exp in
// double: within 2 ulp over the normal range, 0 below it, exact at 0.
TEST(FlashAttention, FloatExpWithinTwoUlp) {
  double worst = 0.0;
  float worst_x = 0.0f;
  for (float x = -87.3f; x <= 88.0f; x += 0.00173f) {
    const double want = std::exp(double(x));
    const double ulp = double(std::nextafter(float(want), INFINITY)) - double(float(want));
    const double err = std::abs(double(flash::fexp(x)) - want) / ulp;
    if (err > worst) worst = err, worst_x = x;
  }
  EXPECT_LE(worst, 2.0) << "at x = " << worst_x;
  EXPECT_EQ(flash::fexp(0.0f), 1.0f);
  EXPECT_EQ(flash::fexp(-100.0f), 0.0f);
  EXPECT_EQ(flash::fexp(-INFINITY), 0.0f);
  EXPECT_TRUE(std::isnan(flash::fexp(NAN)));
}

// The cpu op's two schedules (whole heads per thread; key-block and
// query-block passes when there are fewer heads than threads) and every
// thread count give the same bits; the forward too.
OP_CASE(CpuVsRef, AttentionThreadsSameBits, "attention_forward: ref", "attention_backward: ref") {
  Rng rng = test_rng();
  const int saved = omp_get_max_threads();
  for (AttnShape s : {AttnShape{1, 130, 1, 20}, AttnShape{2, 200, 1, 44}, AttnShape{1, 150, 3, 16},
                      AttnShape{1, 300, 1, 12}}) {
    SHAPE_TRACE("B=" << s.B << " S=" << s.S_ << " H=" << s.H << " D=" << s.D);
    const std::vector<int64_t> qs{s.B, s.S_, s.H, s.D};
    auto q = rng.randn<F>(qs), k = rng.randn<F>(qs), v = rng.randn<F>(qs), dout = rng.randn<F>(qs);
    auto g0 = rng.randn<F>(qs);
    std::vector<std::vector<F>> got;
    for (int threads : {1, 2, 4})
      for (int64_t workers : {int64_t(1), int64_t(4)}) {
        omp_set_num_threads(threads);
        Buf<F> out(qs, garbage<F>()), lse({s.B, s.H, s.S_}, garbage<F>());
        Cpu::attention_forward(out.t(), lse.t(), q.t(), k.t(), v.t());
        auto dq = g0, dk = g0, dv = g0;
        auto scratch = attention_scratch(s.S_, workers);
        Cpu::attention_backward(dq.t(), dk.t(), dv.t(), scratch.t(), dout.t(), out.t(), lse.t(), q.t(), k.t(), v.t());
        std::vector<F> all;
        for (const Buf<F>* b : {&out, &lse, &dq, &dk, &dv}) all.insert(all.end(), b->data(), b->data() + b->size());
        got.push_back(all);
      }
    omp_set_num_threads(saved);
    for (size_t i = 1; i < got.size(); ++i) EXPECT_TRUE(got[i] == got[0]) << "run " << i << " differs from run 0";
  }
}

OP_CASE(CpuVsRef, SwigluTanh, "swiglu_forward: ref", "swiglu_backward: ref", "tanh_forward: ref", "tanh_backward: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t N, f;
  };
  for (S s : {S{1, 1}, S{7, 13}, S{33, 257}}) {
    SHAPE_TRACE("N=" << s.N << " f=" << s.f);
    auto a = rng.randn<F>({s.N, s.f}, 3.0), b = rng.randn<F>({s.N, s.f});
    auto h = fwd_pair<F>({s.N, s.f});
    Cpu::swiglu_forward(h.c.t(), a.t(), b.t());
    Ref::swiglu_forward(h.r.t(), a.t(), b.t());
    EXPECT_TRUE(close("swiglu h", h, kElem));
    auto dh = rng.randn<F>({s.N, s.f});
    auto da = grad_pair<F>(rng, {s.N, s.f}), db = grad_pair<F>(rng, {s.N, s.f});
    Cpu::swiglu_backward(da.c.t(), db.c.t(), dh.t(), a.t(), b.t());
    Ref::swiglu_backward(da.r.t(), db.r.t(), dh.t(), a.t(), b.t());
    EXPECT_TRUE(close("swiglu da", da, kElem));
    EXPECT_TRUE(close("swiglu db", db, kElem));

    auto y = fwd_pair<F>({s.N, s.f});
    Cpu::tanh_forward(y.c.t(), a.t());
    Ref::tanh_forward(y.r.t(), a.t());
    EXPECT_TRUE(close("tanh y", y, kElem));
    auto dx = grad_pair<F>(rng, {s.N, s.f});
    Cpu::tanh_backward(dx.c.t(), dh.t(), y.r.t());
    Ref::tanh_backward(dx.r.t(), dh.t(), y.r.t());
    EXPECT_TRUE(close("tanh dx", dx, kElem));
  }
}

OP_CASE(CpuVsRef, Gelu, "gelu_forward: ref", "gelu_backward: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t N, f;
  };
  for (S s : {S{1, 1}, S{7, 13}, S{33, 257}}) {
    SHAPE_TRACE("N=" << s.N << " f=" << s.f);
    auto x = rng.randn<F>({s.N, s.f}, 3.0), dy = rng.randn<F>({s.N, s.f});
    auto y = fwd_pair<F>({s.N, s.f});
    Cpu::gelu_forward(y.c.t(), x.t());
    Ref::gelu_forward(y.r.t(), x.t());
    EXPECT_TRUE(close("gelu y", y, kElem));
    auto dx = grad_pair<F>(rng, {s.N, s.f});
    Cpu::gelu_backward(dx.c.t(), dy.t(), x.t());
    Ref::gelu_backward(dx.r.t(), dy.t(), x.t());
    EXPECT_TRUE(close("gelu dx", dx, kElem));
  }
}

// gelu against known values of x Phi(x) (torch.nn.GELU()): exact erf, not the tanh form.
TEST(Ops, GeluValues) {
  Buf<double> x({1, 4}), y({1, 4});
  const double xs[] = {0.0, 1.0, -1.0, 2.5};
  for (int i = 0; i < 4; ++i) x.data()[i] = xs[i];
  Ref::gelu_forward(y.t(), x.t());
  EXPECT_EQ(y.data()[0], 0.0);
  EXPECT_NEAR(y.data()[1], 0.841344746068543, 1e-15);  // torch.nn.GELU() in float64
  EXPECT_NEAR(y.data()[2], -0.15865525393145702, 1e-15);
  EXPECT_NEAR(y.data()[3], 2.4844758366855597, 1e-14);
}

OP_CASE(CpuVsRef, L2NormExpScale, "l2norm_forward: ref", "l2norm_backward: ref", "exp_scale_forward: ref",
        "exp_scale_backward: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t N, C;
  };
  for (S s : {S{1, 1}, S{7, 13}, S{33, 257}, S{5, 3}})
    for (bool clamp : {false, true}) {  // clamp: row 0 is tiny, so its norm is clamped to eps = 1e-3
      SHAPE_TRACE("N=" << s.N << " C=" << s.C << " clamp=" << clamp);
      auto x = rng.randn<F>({s.N, s.C}, 2.0);
      const double eps = clamp ? 1e-3 : 1e-12;
      if (clamp)
        for (int64_t c = 0; c < s.C; ++c) x[c] *= 1e-5f;
      auto y = fwd_pair<F>({s.N, s.C});
      auto norm = fwd_pair<F>({s.N});
      Cpu::l2norm_forward(y.c.t(), norm.c.t(), x.t(), eps);
      Ref::l2norm_forward(y.r.t(), norm.r.t(), x.t(), eps);
      EXPECT_TRUE(close("l2norm y", y, kReduce));
      EXPECT_TRUE(close("l2norm norm", norm, kReduce));
      if (clamp) {
        EXPECT_EQ(norm.r[0], F(eps));
      }
      auto dy = rng.randn<F>({s.N, s.C});
      auto dx = grad_pair<F>(rng, {s.N, s.C});
      Cpu::l2norm_backward(dx.c.t(), dy.t(), y.r.t(), norm.r.t(), eps);
      Ref::l2norm_backward(dx.r.t(), dy.t(), y.r.t(), norm.r.t(), eps);
      EXPECT_TRUE(close("l2norm dx", dx, kReduce));
    }
  for (double ls : {0.7, 2.0}) {  // 2.0 > max_log_scale 1.5: clamped
    SHAPE_TRACE("log_scale=" << ls);
    const double mx = 1.5;
    auto x = rng.randn<F>({9, 5});
    auto s = rng.randn<F>({1}, 0.0, ls);
    auto y = fwd_pair<F>({9, 5});
    Cpu::exp_scale_forward(y.c.t(), x.t(), s.t(), mx);
    Ref::exp_scale_forward(y.r.t(), x.t(), s.t(), mx);
    EXPECT_TRUE(close("exp_scale y", y, kElem));
    Buf<F> inplace = x;  // y may be x
    Cpu::exp_scale_forward(inplace.t(), inplace.t(), s.t(), mx);
    EXPECT_TRUE(close("exp_scale in place", Pair<F>{inplace, y.r}, kElem));
    auto dy = rng.randn<F>({9, 5});
    auto dx = grad_pair<F>(rng, {9, 5});
    auto ds = grad_pair<F>(rng, {1});
    Cpu::exp_scale_backward(dx.c.t(), ds.c.t(), dy.t(), y.r.t(), s.t(), mx);
    Ref::exp_scale_backward(dx.r.t(), ds.r.t(), dy.t(), y.r.t(), s.t(), mx);
    EXPECT_TRUE(close("exp_scale dx", dx, kElem));
    EXPECT_TRUE(close("exp_scale dlog_scale", ds, kReduce));
  }
}

OP_CASE(CpuVsRef, Gru, "gru_forward: ref", "gru_backward: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t N, p;
  };
  for (S s : {S{1, 1}, S{7, 13}, S{64, 64}})
    for (bool with_dh : {true, false}) {
      SHAPE_TRACE("N=" << s.N << " p=" << s.p << " dh=" << with_dh);
      auto gi = rng.randn<F>({s.N, 3 * s.p}, 1.5), gh = rng.randn<F>({s.N, 3 * s.p}, 1.5);
      auto h = rng.randn<F>({s.N, s.p});
      auto hnew = fwd_pair<F>({s.N, s.p});
      auto gates = fwd_pair<F>({s.N, 3 * s.p});
      Cpu::gru_forward(hnew.c.t(), gates.c.t(), gi.t(), gh.t(), h.t());
      Ref::gru_forward(hnew.r.t(), gates.r.t(), gi.t(), gh.t(), h.t());
      EXPECT_TRUE(close("hnew", hnew, kElem));
      EXPECT_TRUE(close("gates", gates, kElem));

      auto dhnew = rng.randn<F>({s.N, s.p});
      auto dgi = grad_pair<F>(rng, {s.N, 3 * s.p}), dgh = grad_pair<F>(rng, {s.N, 3 * s.p});
      auto dh = grad_pair<F>(rng, {s.N, s.p});
      Cpu::gru_backward(dgi.c.t(), dgh.c.t(), with_dh ? dh.c.t() : Tensor<F>{}, dhnew.t(),
                        gates.r.t(), gh.t(), h.t());
      Ref::gru_backward(dgi.r.t(), dgh.r.t(), with_dh ? dh.r.t() : Tensor<F>{}, dhnew.t(),
                        gates.r.t(), gh.t(), h.t());
      EXPECT_TRUE(close("dgi", dgi, kElem));
      EXPECT_TRUE(close("dgh", dgh, kElem));
      EXPECT_TRUE(close("dh", dh, kElem));
    }
}

OP_CASE(CpuVsRef, Lstm, "lstm_forward: ref", "lstm_backward: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t N, p;
  };
  for (S s : {S{1, 1}, S{7, 13}, S{64, 64}})
    for (bool with_dc : {true, false}) {
      SHAPE_TRACE("N=" << s.N << " p=" << s.p << " dc=" << with_dc);
      auto gi = rng.randn<F>({s.N, 4 * s.p}, 1.5), gh = rng.randn<F>({s.N, 4 * s.p}, 1.5);
      auto c = rng.randn<F>({s.N, s.p});
      auto hnew = fwd_pair<F>({s.N, s.p}), cnew = fwd_pair<F>({s.N, s.p});
      auto gates = fwd_pair<F>({s.N, 4 * s.p});
      Cpu::lstm_forward(hnew.c.t(), cnew.c.t(), gates.c.t(), gi.t(), gh.t(), c.t());
      Ref::lstm_forward(hnew.r.t(), cnew.r.t(), gates.r.t(), gi.t(), gh.t(), c.t());
      EXPECT_TRUE(close("hnew", hnew, kElem));
      EXPECT_TRUE(close("cnew", cnew, kElem));
      EXPECT_TRUE(close("gates", gates, kElem));

      auto dhnew = rng.randn<F>({s.N, s.p}), dcnew = rng.randn<F>({s.N, s.p});
      auto dpre = grad_pair<F>(rng, {s.N, 4 * s.p});
      auto dc = grad_pair<F>(rng, {s.N, s.p});
      Cpu::lstm_backward(dpre.c.t(), with_dc ? dc.c.t() : Tensor<F>{}, dhnew.t(), dcnew.t(), gates.r.t(), c.t(),
                         cnew.r.t());
      Ref::lstm_backward(dpre.r.t(), with_dc ? dc.r.t() : Tensor<F>{}, dhnew.t(), dcnew.t(), gates.r.t(), c.t(),
                         cnew.r.t());
      EXPECT_TRUE(close("dpre", dpre, kElem));
      EXPECT_TRUE(close("dc", dc, kElem));
    }
}

OP_CASE(CpuVsRef, RouterTopk, "router_topk_forward: ref", "router_topk_backward: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t N, E, k;
  };
  for (S s : {S{1, 2, 1}, S{5, 8, 2}, S{37, 16, 4}, S{64, 64, 8}, S{3, 5, 5}, S{9, 7, 3}}) {
    SHAPE_TRACE("N=" << s.N << " E=" << s.E << " k=" << s.k);
    auto logits = separated_logits(rng, s.N, s.E, 4.0 / double(s.E));
    if (s.N >= 3) {  // exact ties: all equal; and the top values tied
      for (int64_t e = 0; e < s.E; ++e) logits[e] = 0.5f;
      for (int64_t e = 0; e < s.E; ++e) logits[2 * s.E + e] = e % 2 ? 1.0f : -1.0f;
    }
    auto probs = fwd_pair<F>({s.N, s.E});
    auto idx = fwd_pair<int32_t>({s.N, s.k});
    auto gate = fwd_pair<F>({s.N, s.k});
    auto lse = fwd_pair<F>({s.N});
    Cpu::router_topk_forward(probs.c.t(), idx.c.t(), gate.c.t(), lse.c.t(), logits.t());
    Ref::router_topk_forward(probs.r.t(), idx.r.t(), gate.r.t(), lse.r.t(), logits.t());
    EXPECT_TRUE(close("probs", probs, kReduce));
    EXPECT_TRUE(close("idx", idx, kExact));
    EXPECT_TRUE(close("gate", gate, kReduce));
    EXPECT_TRUE(close("lse", lse, kReduce));

    auto dgate = rng.randn<F>({s.N, s.k});
    auto extra = rng.randn<F>({s.E});
    // all paths; dgate only; dprobs_extra only; z-loss only
    for (int path : {0, 1, 2, 3}) {
      SHAPE_TRACE("path=" << path);
      const Tensor<F> dg = path == 0 || path == 1 ? dgate.t() : Tensor<F>{};
      const Tensor<F> ex = path == 0 || path == 2 ? extra.t() : Tensor<F>{};
      const double zs = path == 0 || path == 3 ? 0.3 : 0.0;
      auto dlogits = grad_pair<F>(rng, {s.N, s.E});
      Cpu::router_topk_backward(dlogits.c.t(), dg, ex, zs, probs.r.t(), idx.r.t(), lse.r.t());
      Ref::router_topk_backward(dlogits.r.t(), dg, ex, zs, probs.r.t(), idx.r.t(), lse.r.t());
      EXPECT_TRUE(close("dlogits", dlogits, kReduce));
    }
  }
}

struct ExpertsCase {
  int64_t d, f;
  std::vector<int64_t> counts;
};

void experts_vs_ref(Rng& rng, const ExpertsCase& s) {
  const int64_t E = int64_t(s.counts.size());
  auto offsets = offsets_from_counts(s.counts);
  const int64_t N = offsets[E];
  SHAPE_TRACE(
      "N=" << N << " d=" << s.d << " f=" << s.f << " E=" << E << " offsets="
           << ::testing::PrintToString(std::vector<int64_t>(offsets.data(), offsets.data() + E + 1)));
  auto xs = rng.randn<F>({N, s.d});
  auto W1 = rng.randn<F>({E, s.f, s.d}, 0.3), W3 = rng.randn<F>({E, s.f, s.d}, 0.3);
  auto W2 = rng.randn<F>({E, s.d, s.f}, 0.3);
  auto ys = fwd_pair<F>({N, s.d});
  auto a = fwd_pair<F>({N, s.f}), b = fwd_pair<F>({N, s.f}), h = fwd_pair<F>({N, s.f});
  Cpu::experts_forward(ys.c.t(), a.c.t(), b.c.t(), h.c.t(), xs.t(), offsets.t(), W1.t(), W3.t(),
                       W2.t());
  Ref::experts_forward(ys.r.t(), a.r.t(), b.r.t(), h.r.t(), xs.t(), offsets.t(), W1.t(), W3.t(),
                       W2.t());
  EXPECT_TRUE(close("ys", ys, kGemm));
  EXPECT_TRUE(close("a", a, kGemm));
  EXPECT_TRUE(close("b", b, kGemm));
  EXPECT_TRUE(close("h", h, kGemm));

  auto dys = rng.randn<F>({N, s.d});
  auto dxs = grad_pair<F>(rng, {N, s.d});
  auto dW1 = grad_pair<F>(rng, {E, s.f, s.d}), dW3 = grad_pair<F>(rng, {E, s.f, s.d});
  auto dW2 = grad_pair<F>(rng, {E, s.d, s.f});
  Buf<F> sa({N, s.f}, garbage<F>()), sb({N, s.f}, garbage<F>());
  Cpu::experts_backward(dxs.c.t(), dW1.c.t(), dW3.c.t(), dW2.c.t(), sa.t(), sb.t(), dys.t(),
                        xs.t(), offsets.t(), a.r.t(), b.r.t(), h.r.t(), W1.t(), W3.t(), W2.t());
  Ref::experts_backward(dxs.r.t(), dW1.r.t(), dW3.r.t(), dW2.r.t(), Tensor<F>{}, Tensor<F>{},
                        dys.t(), xs.t(), offsets.t(), a.r.t(), b.r.t(), h.r.t(), W1.t(), W3.t(),
                        W2.t());
  EXPECT_TRUE(guards_intact("scratch_da", sa));
  EXPECT_TRUE(guards_intact("scratch_db", sb));
  EXPECT_TRUE(close("dxs", dxs, kGemm));
  EXPECT_TRUE(close("dW1", dW1, kGemm));
  EXPECT_TRUE(close("dW3", dW3, kGemm));
  EXPECT_TRUE(close("dW2", dW2, kGemm));
}

OP_CASE(CpuVsRef, Experts, "experts_forward: ref", "experts_backward: ref") {
  Rng rng = test_rng();
  const std::vector<ExpertsCase> cases = {
      {4, 3, {1}},                            // one token, one expert
      {5, 6, {0, 1, 0, 0}},                   // one token, zero rows elsewhere
      {16, 24, {5, 0, 8, 0}},                 // empty experts between
      {8, 12, {20, 0, 0}},                    // everything on the first expert
      {8, 12, {0, 0, 0, 13}},                 // everything on the last expert
      {33, 47, {3, 17, 0, 11, 2, 0, 0, 31}},  // odd sizes
  };
  for (const ExpertsCase& s : cases) experts_vs_ref(rng, s);
}

// With at least two non-empty experts per thread, experts run one after the
// other or concurrently (one per thread, above kConcurrentExpertsMacs of work
// in cpu_moe.cpp), on single-threaded GEMMs either way: every such thread
// count, OpenMP's and OpenBLAS's alike, gives the bits of one thread, on a
// shape under that threshold and one over it. (With fewer experts than that
// the GEMMs use OpenBLAS's threads, which may round differently.)
OP_CASE(CpuVsRef, ExpertsThreadsSameBits, "experts_forward: ref", "experts_backward: ref") {
  Rng rng = test_rng();
  const int saved = omp_get_max_threads(), saved_blas = openblas_get_num_threads();
  // Forward multiply-adds: 0.02M, 4.1M (just under; GEMMs OpenBLAS would thread), 19M.
  for (const ExpertsCase& s : {ExpertsCase{16, 24, {5, 0, 8, 3, 1}}, ExpertsCase{96, 96, {60, 0, 45, 30, 14}},
                               ExpertsCase{64, 96, {300, 0, 17, 250, 90, 1, 200, 120, 64}}}) {
    const int64_t E = int64_t(s.counts.size());
    auto offsets = offsets_from_counts(s.counts);
    const int64_t N = offsets[E];
    SHAPE_TRACE("N=" << N << " d=" << s.d << " f=" << s.f << " E=" << E);
    auto xs = rng.randn<F>({N, s.d}), dys = rng.randn<F>({N, s.d});
    auto W1 = rng.randn<F>({E, s.f, s.d}, 0.3), W3 = rng.randn<F>({E, s.f, s.d}, 0.3);
    auto W2 = rng.randn<F>({E, s.d, s.f}, 0.3);
    auto g_x = rng.randn<F>({N, s.d}), g_13 = rng.randn<F>({E, s.f, s.d}), g_2 = rng.randn<F>({E, s.d, s.f});
    const int64_t active = std::count_if(s.counts.begin(), s.counts.end(), [](int64_t c) { return c > 0; });
    std::vector<std::vector<F>> got;
    for (int threads = 1; threads <= 4 && 2 * threads <= std::max<int64_t>(active, 2); threads *= 2) {
      omp_set_num_threads(threads);
      openblas_set_num_threads(threads);
      Buf<F> ys({N, s.d}, garbage<F>()), a({N, s.f}, garbage<F>()), b({N, s.f}, garbage<F>()),
          h({N, s.f}, garbage<F>()), sa({N, s.f}, garbage<F>()), sb({N, s.f}, garbage<F>());
      Cpu::experts_forward(ys.t(), a.t(), b.t(), h.t(), xs.t(), offsets.t(), W1.t(), W3.t(), W2.t());
      auto dxs = g_x, dW1 = g_13, dW3 = g_13;
      auto dW2 = g_2;
      Cpu::experts_backward(dxs.t(), dW1.t(), dW3.t(), dW2.t(), sa.t(), sb.t(), dys.t(), xs.t(), offsets.t(), a.t(),
                            b.t(), h.t(), W1.t(), W3.t(), W2.t());
      std::vector<F> all;
      for (const Buf<F>* x : {&ys, &a, &b, &h, &dxs, &dW1, &dW3, &dW2}) all.insert(all.end(), x->data(), x->data() + x->size());
      got.push_back(all);
    }
    omp_set_num_threads(saved);
    openblas_set_num_threads(saved_blas);
    ASSERT_GE(got.size(), 2u);
    for (size_t i = 1; i < got.size(); ++i) EXPECT_TRUE(got[i] == got[0]) << (1 << i) << " threads differ from 1";
  }
}

OP_CASE(CpuVsRef, GatherCombine, "moe_gather: ref", "moe_combine: ref", "moe_combine_backward: ref", "moe_gather_backward: ref") {
  Rng rng = test_rng();
  struct S {
    const char* name;
    int64_t d;
    Routing r;
  };
  std::vector<S> cases;
  cases.push_back({"one token", 7, random_routing(rng, 1, 1, 4, all_experts(4))});
  cases.push_back({"one token k=3", 5, random_routing(rng, 1, 3, 4, all_experts(4))});
  cases.push_back({"experts 0,3,5 empty", 7, random_routing(rng, 9, 2, 6, {1, 2, 4})});
  cases.push_back({"all on expert 3", 16, random_routing(rng, 16, 1, 4, {3})});
  cases.push_back({"random", 64, random_routing(rng, 33, 4, 8, all_experts(8))});
  cases.push_back({"d=1", 1, random_routing(rng, 11, 2, 5, all_experts(5))});
  for (S& s : cases) {
    Routing& r = s.r;
    const int64_t T = r.T, k = r.k, N = T * k, d = s.d;
    SHAPE_TRACE(s.name << ": T=" << T << " k=" << k << " E=" << r.E << " d=" << d);
    auto x = rng.randn<F>({T, d});
    auto xs = fwd_pair<F>({N, d});
    Cpu::moe_gather(xs.c.t(), x.t(), r.slot_token.t());
    Ref::moe_gather(xs.r.t(), x.t(), r.slot_token.t());
    EXPECT_TRUE(close("xs", xs, kExact));

    auto ys = rng.randn<F>({N, d});
    auto gate = rng.randn<F>({T, k}, 0.3, 0.5);
    auto out = fwd_pair<F>({T, d});
    Cpu::moe_combine(out.c.t(), ys.t(), r.slot_of.t(), gate.t());
    Ref::moe_combine(out.r.t(), ys.t(), r.slot_of.t(), gate.t());
    EXPECT_TRUE(close("out", out, kElem));

    auto dout = rng.randn<F>({T, d});
    auto dys = grad_pair<F>(rng, {N, d});
    auto dgate = grad_pair<F>(rng, {T, k});
    Cpu::moe_combine_backward(dys.c.t(), dgate.c.t(), dout.t(), ys.t(), r.slot_of.t(), gate.t());
    Ref::moe_combine_backward(dys.r.t(), dgate.r.t(), dout.t(), ys.t(), r.slot_of.t(), gate.t());
    EXPECT_TRUE(close("dys", dys, kElem));
    EXPECT_TRUE(close("dgate", dgate, kReduce));

    auto dxs = rng.randn<F>({N, d});
    auto dx = grad_pair<F>(rng, {T, d});
    Cpu::moe_gather_backward(dx.c.t(), dxs.t(), r.slot_of.t());
    Ref::moe_gather_backward(dx.r.t(), dxs.t(), r.slot_of.t());
    EXPECT_TRUE(close("dx", dx, kElem));
  }
}

OP_CASE(CpuVsRef, CrossEntropy, "cross_entropy: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t N, V;
  };
  for (S s : {S{1, 2}, S{7, 33}, S{64, 1000}, S{3, 50257}})
    for (bool with_grad : {true, false}) {
      SHAPE_TRACE("N=" << s.N << " V=" << s.V << " grad=" << with_grad);
      auto logits = rng.randn<F>({s.N, s.V}, 3.0);
      auto targets = rng.ints({s.N}, s.V);
      const double scale = 1.0 / double(s.N);
      auto losses = fwd_pair<F>({s.N});
      auto dlogits = grad_pair<F>(rng, {s.N, s.V});
      Cpu::cross_entropy(losses.c.t(), with_grad ? dlogits.c.t() : Tensor<F>{}, logits.t(),
                         targets.t(), scale);
      Ref::cross_entropy(losses.r.t(), with_grad ? dlogits.r.t() : Tensor<F>{}, logits.t(),
                         targets.t(), scale);
      EXPECT_TRUE(close("losses", losses, kReduce));
      EXPECT_TRUE(close("dlogits", dlogits, kReduce));
    }
}

OP_CASE(CpuVsRef, Basic, "fill: ref", "copy: ref", "add: ref", "sum: ref", "sum_squares: ref") {
  Rng rng = test_rng();
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(37), int64_t(4096), int64_t(3 * 4096 + 17)}) {
    SHAPE_TRACE("n=" << n);
    auto y = fwd_pair<F>({n});
    Cpu::fill(y.c.t(), -2.5);
    Ref::fill(y.r.t(), -2.5);
    EXPECT_TRUE(close("fill", y, kExact));

    auto a = rng.randn<F>({n}), b = rng.randn<F>({n});
    auto c = fwd_pair<F>({n});
    Cpu::copy(c.c.t(), a.t());
    Ref::copy(c.r.t(), a.t());
    EXPECT_TRUE(close("copy", c, kExact));
    auto sum = fwd_pair<F>({n});
    Cpu::add(sum.c.t(), a.t(), b.t());
    Ref::add(sum.r.t(), a.t(), b.t());
    EXPECT_TRUE(close("add", sum, kElem));
    Pair<F> inplace{a, a};  // y = a: in place
    Cpu::add(inplace.c.t(), inplace.c.t(), b.t());
    Ref::add(inplace.r.t(), inplace.r.t(), b.t());
    EXPECT_TRUE(close("add in place", inplace, kElem));

    auto s = fwd_pair<double>({1}), sq = fwd_pair<double>({1});
    Cpu::sum<F>(s.c.t(), a.t());
    Ref::sum<F>(s.r.t(), a.t());
    EXPECT_TRUE(close("sum", s, kReduce));
    Cpu::sum_squares<F>(sq.c.t(), a.t());
    Ref::sum_squares<F>(sq.r.t(), a.t());
    EXPECT_TRUE(close("sum_squares", sq, kReduce));
  }
  // copy has every element type; the rest run in double too.
  Buf<int32_t> i32({5});
  Buf<int64_t> i64({5});
  for (int i = 0; i < 5; ++i) i32[i] = 7 * i - 3, i64[i] = (int64_t(1) << 40) + i;
  auto c32 = fwd_pair<int32_t>({5});
  auto c64 = fwd_pair<int64_t>({5});
  Cpu::copy(c32.c.t(), i32.t());
  Ref::copy(c32.r.t(), i32.t());
  Cpu::copy(c64.c.t(), i64.t());
  Ref::copy(c64.r.t(), i64.t());
  EXPECT_TRUE(close("copy int32", c32, kExact));
  EXPECT_TRUE(close("copy int64", c64, kExact));
  EXPECT_EQ(c64.c[4], (int64_t(1) << 40) + 4);
  auto ad = rng.randn<double>({9}), bd = rng.randn<double>({9});
  auto yd = fwd_pair<double>({9});
  Cpu::add(yd.c.t(), ad.t(), bd.t());
  Ref::add(yd.r.t(), ad.t(), bd.t());
  EXPECT_TRUE(close("add double", yd, 1e-15));
}

OP_CASE(CpuVsRef, AddScaled, "add_scaled: ref") {
  Rng rng = test_rng();
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(37), int64_t(3 * 4096 + 17)})
    for (double alpha : {0.5, -1.25, 0.0}) {
      SHAPE_TRACE("n=" << n << " alpha=" << alpha);
      auto a = rng.randn<F>({n}), b = rng.randn<F>({n});
      auto y = fwd_pair<F>({n});
      Cpu::add_scaled(y.c.t(), a.t(), b.t(), alpha);
      Ref::add_scaled(y.r.t(), a.t(), b.t(), alpha);
      EXPECT_TRUE(close("add_scaled", y, kElem));
      Pair<F> in_a{a, a}, in_b{b, b};  // y = a, y = b: in place
      Cpu::add_scaled(in_a.c.t(), in_a.c.t(), b.t(), alpha);
      Ref::add_scaled(in_a.r.t(), in_a.r.t(), b.t(), alpha);
      EXPECT_TRUE(close("add_scaled y = a", in_a, kElem));
      Cpu::add_scaled(in_b.c.t(), a.t(), in_b.c.t(), alpha);
      Ref::add_scaled(in_b.r.t(), a.t(), in_b.r.t(), alpha);
      EXPECT_TRUE(close("add_scaled y = b", in_b, kElem));
    }
}

// The plan of random and skewed choices (experts without slots, all slots on
// one expert, one token) equals ref's and the test's own stable sort
// (make_routing: by expert, then token, then choice).
OP_CASE(CpuVsRef, RoutingPlan, "moe_route_plan: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t T, k, E;
    std::vector<int> allowed;
  };
  for (const S& s : {S{1, 1, 4, {2}}, S{1, 3, 4, {0, 1, 2, 3}}, S{9, 2, 6, {1, 2, 4}}, S{16, 1, 4, {3}},
                     S{33, 4, 8, {0, 1, 2, 3, 4, 5, 6, 7}}, S{64, 2, 64, all_experts(64)}}) {
    SHAPE_TRACE("T=" << s.T << " k=" << s.k << " E=" << s.E);
    Routing want = random_routing(rng, s.T, s.k, s.E, s.allowed);
    Buf<int32_t>& idx = want.idx;
    auto offsets = fwd_pair<int64_t>({s.E + 1});
    auto slot_token = fwd_pair<int32_t>({s.T * s.k});
    auto slot_of = fwd_pair<int32_t>({s.T, s.k});
    Cpu::moe_route_plan(offsets.c.t(), slot_token.c.t(), slot_of.c.t(), idx.t(), {});
    Ref::moe_route_plan(offsets.r.t(), slot_token.r.t(), slot_of.r.t(), idx.t(), {});
    EXPECT_TRUE(close("offsets", offsets, kExact));
    EXPECT_TRUE(close("slot_token", slot_token, kExact));
    EXPECT_TRUE(close("slot_of", slot_of, kExact));
    EXPECT_EQ(offsets.c.mem, want.offsets.mem);
    EXPECT_EQ(slot_token.c.mem, want.slot_token.mem);
    EXPECT_EQ(slot_of.c.mem, want.slot_of.mem);
  }
}

// With a capacity: random keep masks (none, some, all dropped). Dropped slots
// get slot_of = -1 and no row; the kept ones form the plan of the kept slots
// alone, in the same stable order.
OP_CASE(CpuVsRef, RoutingPlanWithDrops, "moe_route_plan: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t T, k, E;
    double keep_fraction;
  };
  for (const S& s : {S{1, 1, 4, 0.0}, S{9, 2, 6, 0.5}, S{33, 4, 8, 0.7}, S{64, 2, 16, 1.0}, S{16, 1, 4, 0.2}}) {
    SHAPE_TRACE("T=" << s.T << " k=" << s.k << " E=" << s.E << " keep " << s.keep_fraction);
    Routing all = random_routing(rng, s.T, s.k, s.E, all_experts(s.E));
    const int64_t n = s.T * s.k;
    Buf<int32_t> keep({s.T, s.k});
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) kept += keep[i] = rng.uniform() < s.keep_fraction ? 1 : 0;
    auto offsets = fwd_pair<int64_t>({s.E + 1});
    auto slot_token = fwd_pair<int32_t>({n});
    auto slot_of = fwd_pair<int32_t>({s.T, s.k});
    Cpu::moe_route_plan(offsets.c.t(), slot_token.c.t(), slot_of.c.t(), all.idx.t(), keep.t());
    Ref::moe_route_plan(offsets.r.t(), slot_token.r.t(), slot_of.r.t(), all.idx.t(), keep.t());
    EXPECT_TRUE(close("offsets", offsets, kExact));
    EXPECT_TRUE(close("slot_of", slot_of, kExact));
    EXPECT_EQ(offsets.c[s.E], kept);
    for (int64_t i = 0; i < kept; ++i) EXPECT_EQ(slot_token.c[i], slot_token.r[i]) << "slot " << i;
    // The kept slots in expert order, tokens in order: the test's own sort.
    std::vector<int64_t> order;
    for (int64_t i = 0; i < n; ++i)
      if (keep[i]) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return all.idx[a] < all.idx[b]; });
    for (int64_t i = 0; i < n; ++i)
      if (!keep[i]) {
        EXPECT_EQ(slot_of.c[i], -1) << "dropped slot " << i;
      }
    for (size_t r = 0; r < order.size(); ++r) {
      EXPECT_EQ(slot_of.c[order[r]], int32_t(r));
      EXPECT_EQ(slot_token.c[r], int32_t(order[r] / s.k));
    }
  }
}

// Combine, its backward and the gather backward with dropped slots
// (slot_of = -1): cpu against ref, and against the same routing with the
// dropped slots' gates set to 0 (a dropped slot is exactly a zero gate).
OP_CASE(CpuVsRef, CombineWithDroppedSlots, "moe_combine: ref", "moe_combine_backward: ref",
        "moe_gather_backward: ref") {
  Rng rng = test_rng();
  for (const int64_t T : {1, 7, 40}) {
    const int64_t k = 2, E = 5, d = 9, N = T * k;
    SHAPE_TRACE("T=" << T);
    Routing r = random_routing(rng, T, k, E, all_experts(E));
    Buf<int32_t> dropped_of = r.slot_of;
    auto gate = rng.randn<F>({T, k}, 0.3, 0.5);
    Buf<F> gate0 = gate;
    for (int64_t i = 0; i < N; ++i)
      if (i == 0 || rng.uniform() < 0.3) dropped_of[i] = -1, gate0[i] = 0;
    auto ys = rng.randn<F>({N, d});
    auto out = fwd_pair<F>({T, d});
    Buf<F> out0({T, d});
    Cpu::moe_combine(out.c.t(), ys.t(), dropped_of.t(), gate.t());
    Ref::moe_combine(out.r.t(), ys.t(), dropped_of.t(), gate.t());
    Ref::moe_combine(out0.t(), ys.t(), r.slot_of.t(), gate0.t());
    EXPECT_TRUE(close("out", out, kElem));
    EXPECT_TRUE(close("out vs zero gates", Pair<F>{out.c, out0}, kElem));

    auto dout = rng.randn<F>({T, d});
    auto dys = grad_pair<F>(rng, {N, d});
    auto dgate = grad_pair<F>(rng, {T, k});
    const Buf<F> dgate_before = dgate.c;
    Cpu::moe_combine_backward(dys.c.t(), dgate.c.t(), dout.t(), ys.t(), dropped_of.t(), gate.t());
    Ref::moe_combine_backward(dys.r.t(), dgate.r.t(), dout.t(), ys.t(), dropped_of.t(), gate.t());
    EXPECT_TRUE(close("dys", dys, kElem));
    EXPECT_TRUE(close("dgate", dgate, kReduce));
    for (int64_t i = 0; i < N; ++i)
      if (dropped_of[i] < 0) {
        EXPECT_EQ(dgate.c[i], dgate_before[i]) << "dropped slot " << i << " got a gradient";
      }

    auto dxs = rng.randn<F>({N, d});
    auto dx = grad_pair<F>(rng, {T, d});
    Cpu::moe_gather_backward(dx.c.t(), dxs.t(), dropped_of.t());
    Ref::moe_gather_backward(dx.r.t(), dxs.t(), dropped_of.t());
    EXPECT_TRUE(close("dx", dx, kElem));
  }
}

// The capacity decision: random keys with many ties, capacities from 0 to
// more than any expert gets, this rank's slots anywhere in the keys. cpu (one
// sort) against ref (a count per slot), and what it must be: every expert
// keeps min(capacity, its slots), a kept slot never has a lower probability
// than a dropped one of its expert.
OP_CASE(CpuVsRef, CapacityKeep, "moe_capacity_keep: ref", "moe_slot_keys: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t G, E, n, first;
  };
  for (const S& s : {S{1, 1, 1, 0}, S{12, 3, 4, 8}, S{40, 4, 40, 0}, S{200, 8, 50, 100}, S{64, 64, 16, 16}}) {
    Buf<double> keys({s.G, 2});
    for (int64_t g = 0; g < s.G; ++g) {
      keys[2 * g] = double(rng.below(s.E));
      keys[2 * g + 1] = double(rng.below(4)) / 4.0;  // four values: many ties
    }
    std::vector<int64_t> per_expert(size_t(s.E), 0);
    for (int64_t g = 0; g < s.G; ++g) ++per_expert[size_t(keys[2 * g])];
    for (const int64_t cap : {int64_t(0), int64_t(1), s.G / s.E, s.G}) {
      SHAPE_TRACE("G=" << s.G << " E=" << s.E << " slots [" << s.first << ", " << s.first + s.n << ") cap " << cap);
      auto keep = fwd_pair<int32_t>({s.n});
      auto dropped = fwd_pair<int64_t>({1});
      Cpu::moe_capacity_keep(keep.c.t(), dropped.c.t(), keys.t(), s.first, cap, s.E);
      Ref::moe_capacity_keep(keep.r.t(), dropped.r.t(), keys.t(), s.first, cap, s.E);
      EXPECT_TRUE(close("keep", keep, kExact));
      EXPECT_TRUE(close("dropped", dropped, kExact));
      int64_t want_dropped = 0;
      for (int64_t c : per_expert) want_dropped += std::max<int64_t>(0, c - cap);
      EXPECT_EQ(dropped.c[0], want_dropped);
      if (s.first == 0 && s.n == s.G) {  // all keys are this rank's: check the order property
        for (int64_t a = 0; a < s.G; ++a)
          for (int64_t b = 0; b < s.G; ++b)
            if (keys[2 * a] == keys[2 * b] && keep.c[a] && !keep.c[b]) {
              EXPECT_TRUE(keys[2 * a + 1] > keys[2 * b + 1] || (keys[2 * a + 1] == keys[2 * b + 1] && a < b))
                  << "kept slot " << a << " ranks below dropped slot " << b;
            }
      }
    }
  }
  // The keys of a rank's slots: (expert, its probability).
  for (const int64_t N : {1, 13}) {
    const int64_t E = 6, k = 3;
    auto probs = rng.randn<F>({N, E});
    Routing r = random_routing(rng, N, k, E, all_experts(E));
    auto keys = fwd_pair<double>({N * k, 2});
    Cpu::moe_slot_keys<F>(keys.c.t(), probs.t(), r.idx.t());
    Ref::moe_slot_keys<F>(keys.r.t(), probs.t(), r.idx.t());
    EXPECT_TRUE(close("keys", keys, kExact));
    for (int64_t s = 0; s < N * k; ++s) {
      EXPECT_EQ(keys.c[2 * s], double(r.idx[s]));
      EXPECT_EQ(keys.c[2 * s + 1], double(probs[(s / k) * E + r.idx[s]]));
    }
  }
}

OP_CASE(CpuVsRef, RouterGatesStats, "router_gates: ref", "router_stats: ref", "load_balance_backward: ref") {
  Rng rng = test_rng();
  struct S {
    int64_t N, E, k;
  };
  for (S s : {S{1, 2, 1}, S{5, 8, 2}, S{37, 16, 4}, S{64, 64, 8}}) {
    SHAPE_TRACE("N=" << s.N << " E=" << s.E << " k=" << s.k);
    auto logits = separated_logits(rng, s.N, s.E, 4.0 / double(s.E));
    Buf<F> probs({s.N, s.E}), gate0({s.N, s.k}), lse({s.N});
    Buf<int32_t> idx({s.N, s.k});
    Ref::router_topk_forward(probs.t(), idx.t(), gate0.t(), lse.t(), logits.t());
    for (int64_t i = 0; i < s.N * s.k; i += 3) idx[i] = int32_t(rng.below(s.E));  // a choice, not the top-k
    auto gate = fwd_pair<F>({s.N, s.k});
    Cpu::router_gates(gate.c.t(), probs.t(), idx.t());
    Ref::router_gates(gate.r.t(), probs.t(), idx.t());
    EXPECT_TRUE(close("gate", gate, kReduce));

    auto stats = fwd_pair<double>({2 * s.E + 2});
    Cpu::router_stats<F>(stats.c.t(), probs.t(), lse.t(), idx.t());
    Ref::router_stats<F>(stats.r.t(), probs.t(), lse.t(), idx.t());
    EXPECT_TRUE(close("stats", stats, 1e-12));
    EXPECT_EQ(stats.c[2 * s.E + 1], double(s.N));
    double slots = 0;
    for (int64_t e = 0; e < s.E; ++e) slots += stats.c[e];
    EXPECT_EQ(slots, double(s.N * s.k));

    auto dprobs = grad_pair<F>(rng, {s.E});
    Cpu::load_balance_backward(dprobs.c.t(), stats.r.t(), s.k, 0.37);
    Ref::load_balance_backward(dprobs.r.t(), stats.r.t(), s.k, 0.37);
    EXPECT_TRUE(close("dprobs", dprobs, kElem));
  }
}

// =============================================================================
// 1b. the contract of ops.h: null gradient outputs, out-of-range indices
// =============================================================================

// An output of one op call: a forward output (starts as NaN, must be written)
// or a gradient output (starts random, is added into, may be null).
struct Out {
  std::string name;
  std::vector<int64_t> dims;
  bool grad;
};

// For each gradient output of `outs` in turn: call(Cpu{}, views) and
// call(Ref{}, views) with that one output null; every other output of cpu
// must still equal ref's.
template <class Call>
void null_grads_vs_ref(Rng& rng, const std::vector<Out>& outs, double thr, Call call) {
  for (size_t null = 0; null < outs.size(); ++null) {
    if (!outs[null].grad) continue;
    SHAPE_TRACE(outs[null].name << " null");
    std::vector<Pair<F>> bufs;
    for (const Out& o : outs) bufs.push_back(o.grad ? grad_pair<F>(rng, o.dims) : fwd_pair<F>(o.dims));
    auto views = [&](bool cpu) {
      std::vector<Tensor<F>> v;
      for (size_t i = 0; i < outs.size(); ++i)
        v.push_back(i == null ? Tensor<F>{} : (cpu ? bufs[i].c : bufs[i].r).t());
      return v;
    };
    call(Cpu{}, views(true));
    call(Ref{}, views(false));
    for (size_t i = 0; i < outs.size(); ++i)
      if (i != null) {
        EXPECT_TRUE(close(outs[i].name, bufs[i], thr));
      }
  }
}

OP_CASE(NullGrad, Linear, "linear_backward: null:dx null:dW null:db") {
  Rng rng = test_rng();
  const int64_t N = 7, in = 9, out = 5;
  auto x = rng.randn<F>({N, in}), W = rng.randn<F>({out, in}), dy = rng.randn<F>({N, out});
  null_grads_vs_ref(rng, {{"dx", {N, in}, true}, {"dW", {out, in}, true}, {"db", {out}, true}}, kGemm,
                    [&](auto B, std::vector<Tensor<F>> o) {
                      decltype(B)::linear_backward(o[0], o[1], o[2], dy.t(), x.t(), W.t());
                    });
}

OP_CASE(NullGrad, Embedding, "embedding_backward: null:dW") {
  Rng rng = test_rng();
  auto tokens = rng.ints({6}, 4);
  auto dout = rng.randn<F>({6, 3});
  null_grads_vs_ref(rng, {{"dW", {4, 3}, true}}, kElem, [&](auto B, std::vector<Tensor<F>> o) {
    decltype(B)::embedding_backward(o[0], tokens.t(), dout.t());
  });
}

OP_CASE(NullGrad, RmsNorm, "rmsnorm_backward: null:dx null:dw") {
  Rng rng = test_rng();
  const int64_t N = 5, d = 11;
  auto x = rng.randn<F>({N, d}), w = rng.randn<F>({d}, 0.2, 1.0), dout = rng.randn<F>({N, d});
  Buf<F> out({N, d}), rstd({N});
  Ref::rmsnorm_forward(out.t(), rstd.t(), x.t(), w.t(), 1e-5);
  null_grads_vs_ref(rng, {{"dx", {N, d}, true}, {"dw", {d}, true}}, kReduce, [&](auto B, std::vector<Tensor<F>> o) {
    decltype(B)::rmsnorm_backward(o[0], o[1], dout.t(), x.t(), w.t(), rstd.t());
  });
}

OP_CASE(NullGrad, Attention, "attention_backward: null:dq null:dk null:dv") {
  Rng rng = test_rng();
  for (const std::vector<int64_t>& qs : {std::vector<int64_t>{2, 5, 3, 4}, std::vector<int64_t>{1, 100, 2, 44}}) {
    SHAPE_TRACE("S=" << qs[1]);
    auto q = rng.randn<F>(qs), k = rng.randn<F>(qs), v = rng.randn<F>(qs), dout = rng.randn<F>(qs);
    Buf<F> out(qs), lse({qs[0], qs[2], qs[1]});
    auto scratch = attention_scratch(qs[1], 2);
    Ref::attention_forward(out.t(), lse.t(), q.t(), k.t(), v.t());
    null_grads_vs_ref(rng, {{"dq", qs, true}, {"dk", qs, true}, {"dv", qs, true}}, kGemm,
                      [&](auto B, std::vector<Tensor<F>> o) {
                        decltype(B)::attention_backward(o[0], o[1], o[2], scratch.t(), dout.t(), out.t(), lse.t(),
                                                        q.t(), k.t(), v.t());
                      });
    EXPECT_TRUE(guards_intact("scratch", scratch));
  }
}

OP_CASE(NullGrad, SwigluTanh, "swiglu_backward: null:da null:db", "tanh_backward: null:dx") {
  Rng rng = test_rng();
  const int64_t N = 6, f = 13;
  auto a = rng.randn<F>({N, f}, 3.0), b = rng.randn<F>({N, f}), dh = rng.randn<F>({N, f});
  null_grads_vs_ref(rng, {{"da", {N, f}, true}, {"db", {N, f}, true}}, kElem, [&](auto B, std::vector<Tensor<F>> o) {
    decltype(B)::swiglu_backward(o[0], o[1], dh.t(), a.t(), b.t());
  });
  Buf<F> y({N, f});
  Ref::tanh_forward(y.t(), a.t());
  null_grads_vs_ref(rng, {{"dx", {N, f}, true}}, kElem, [&](auto B, std::vector<Tensor<F>> o) {
    decltype(B)::tanh_backward(o[0], dh.t(), y.t());
  });
}

OP_CASE(NullGrad, Gelu, "gelu_backward: null:dx") {
  Rng rng = test_rng();
  const int64_t N = 6, f = 13;
  auto x = rng.randn<F>({N, f}, 3.0), dy = rng.randn<F>({N, f});
  null_grads_vs_ref(rng, {{"dx", {N, f}, true}}, kElem, [&](auto B, std::vector<Tensor<F>> o) {
    decltype(B)::gelu_backward(o[0], dy.t(), x.t());
  });
}

OP_CASE(NullGrad, L2NormExpScale, "l2norm_backward: null:dx", "exp_scale_backward: null:dx null:dlog_scale") {
  Rng rng = test_rng();
  const int64_t N = 6, C = 7;
  auto x = rng.randn<F>({N, C}), dy = rng.randn<F>({N, C}), s = rng.randn<F>({1}, 0.1, 0.5);
  Buf<F> y({N, C}), norm({N});
  Ref::l2norm_forward(y.t(), norm.t(), x.t(), 1e-12);
  null_grads_vs_ref(rng, {{"dx", {N, C}, true}}, kReduce, [&](auto B, std::vector<Tensor<F>> o) {
    decltype(B)::l2norm_backward(o[0], dy.t(), y.t(), norm.t(), 1e-12);
  });
  null_grads_vs_ref(rng, {{"dx", {N, C}, true}, {"dlog_scale", {1}, true}}, kReduce,
                    [&](auto B, std::vector<Tensor<F>> o) {
                      decltype(B)::exp_scale_backward(o[0], o[1], dy.t(), x.t(), s.t(), 4.6);
                    });
}

OP_CASE(NullGrad, Gru, "gru_backward: null:dgi null:dgh null:dh") {
  Rng rng = test_rng();
  const int64_t N = 5, p = 7;
  auto gi = rng.randn<F>({N, 3 * p}, 1.5), gh = rng.randn<F>({N, 3 * p}, 1.5), h = rng.randn<F>({N, p});
  auto dhnew = rng.randn<F>({N, p});
  Buf<F> hnew({N, p}), gates({N, 3 * p});
  Ref::gru_forward(hnew.t(), gates.t(), gi.t(), gh.t(), h.t());
  null_grads_vs_ref(rng, {{"dgi", {N, 3 * p}, true}, {"dgh", {N, 3 * p}, true}, {"dh", {N, p}, true}}, kElem,
                    [&](auto B, std::vector<Tensor<F>> o) {
                      decltype(B)::gru_backward(o[0], o[1], o[2], dhnew.t(), gates.t(), gh.t(), h.t());
                    });
}

OP_CASE(NullGrad, Lstm, "lstm_backward: null:dpre null:dc") {
  Rng rng = test_rng();
  const int64_t N = 5, p = 7;
  auto gi = rng.randn<F>({N, 4 * p}, 1.5), gh = rng.randn<F>({N, 4 * p}, 1.5), c = rng.randn<F>({N, p});
  auto dhnew = rng.randn<F>({N, p}), dcnew = rng.randn<F>({N, p});
  Buf<F> hnew({N, p}), cnew({N, p}), gates({N, 4 * p});
  Ref::lstm_forward(hnew.t(), cnew.t(), gates.t(), gi.t(), gh.t(), c.t());
  null_grads_vs_ref(rng, {{"dpre", {N, 4 * p}, true}, {"dc", {N, p}, true}}, kElem,
                    [&](auto B, std::vector<Tensor<F>> o) {
                      decltype(B)::lstm_backward(o[0], o[1], dhnew.t(), dcnew.t(), gates.t(), c.t(), cnew.t());
                    });
}

OP_CASE(NullGrad, RouterTopk, "router_topk_backward: null:dlogits") {
  Rng rng = test_rng();
  const int64_t N = 5, E = 6, k = 2;
  auto logits = separated_logits(rng, N, E, 0.6);
  Buf<F> probs({N, E}), gate({N, k}), lse({N});
  Buf<int32_t> idx({N, k});
  Ref::router_topk_forward(probs.t(), idx.t(), gate.t(), lse.t(), logits.t());
  auto dgate = rng.randn<F>({N, k}), extra = rng.randn<F>({E});
  null_grads_vs_ref(rng, {{"dlogits", {N, E}, true}}, kReduce, [&](auto B, std::vector<Tensor<F>> o) {
    decltype(B)::router_topk_backward(o[0], dgate.t(), extra.t(), 0.3, probs.t(), idx.t(), lse.t());
  });
}

OP_CASE(NullGrad, Experts, "experts_backward: null:dxs null:dW1 null:dW3 null:dW2") {
  Rng rng = test_rng();
  const int64_t d = 6, f = 5, E = 4;
  auto offsets = offsets_from_counts({3, 0, 4, 2});
  const int64_t N = offsets[E];
  auto xs = rng.randn<F>({N, d}), dys = rng.randn<F>({N, d});
  auto W1 = rng.randn<F>({E, f, d}, 0.3), W3 = rng.randn<F>({E, f, d}, 0.3), W2 = rng.randn<F>({E, d, f}, 0.3);
  Buf<F> ys({N, d}), a({N, f}), b({N, f}), h({N, f}), sa({N, f}), sb({N, f});
  Ref::experts_forward(ys.t(), a.t(), b.t(), h.t(), xs.t(), offsets.t(), W1.t(), W3.t(), W2.t());
  null_grads_vs_ref(rng,
                    {{"dxs", {N, d}, true}, {"dW1", {E, f, d}, true}, {"dW3", {E, f, d}, true},
                     {"dW2", {E, d, f}, true}},
                    kGemm, [&](auto B, std::vector<Tensor<F>> o) {
                      decltype(B)::experts_backward(o[0], o[1], o[2], o[3], sa.t(), sb.t(), dys.t(), xs.t(),
                                                    offsets.t(), a.t(), b.t(), h.t(), W1.t(), W3.t(), W2.t());
                    });
}

OP_CASE(NullGrad, CombineGather, "moe_combine_backward: null:dys null:dgate", "moe_gather_backward: null:dx") {
  Rng rng = test_rng();
  Routing r = random_routing(rng, 9, 2, 6, {1, 2, 4});
  const int64_t T = r.T, k = r.k, N = T * k, d = 7;
  auto ys = rng.randn<F>({N, d}), gate = rng.randn<F>({T, k}), dout = rng.randn<F>({T, d});
  null_grads_vs_ref(rng, {{"dys", {N, d}, true}, {"dgate", {T, k}, true}}, kReduce,
                    [&](auto B, std::vector<Tensor<F>> o) {
                      decltype(B)::moe_combine_backward(o[0], o[1], dout.t(), ys.t(), r.slot_of.t(), gate.t());
                    });
  null_grads_vs_ref(rng, {{"dx", {T, d}, true}}, kElem, [&](auto B, std::vector<Tensor<F>> o) {
    decltype(B)::moe_gather_backward(o[0], ys.t(), r.slot_of.t());
  });
}

OP_CASE(NullGrad, CrossEntropy, "cross_entropy: null:dlogits") {
  Rng rng = test_rng();
  const int64_t N = 6, V = 17;
  auto logits = rng.randn<F>({N, V}, 3.0);
  auto targets = rng.ints({N}, V);
  null_grads_vs_ref(rng, {{"losses", {N}, false}, {"dlogits", {N, V}, true}}, kReduce,
                    [&](auto B, std::vector<Tensor<F>> o) {
                      decltype(B)::cross_entropy(o[0], o[1], logits.t(), targets.t(), 0.5);
                    });
}

OP_CASE(NullGrad, LoadBalance, "load_balance_backward: null:dprobs") {
  Rng rng = test_rng();
  Buf<double> stats({2 * 4 + 2});
  for (int64_t i = 0; i < 4; ++i) stats[i] = double(i + 1), stats[4 + i] = 0.5 * double(i);
  stats[9] = 5.0;
  null_grads_vs_ref(rng, {{"dprobs", {4}, true}}, kElem, [&](auto B, std::vector<Tensor<F>> o) {
    decltype(B)::load_balance_backward(o[0], stats.t(), 2, 0.1);
  });
}

// call() must throw rmoe::Error whose message names the op, the bad index and
// the bound.
template <class Call>
::testing::AssertionResult rejects(Call call, const std::string& op, int64_t bad, int64_t bound) {
  try {
    call();
  } catch (const rmoe::Error& e) {
    const std::string m = e.what();
    for (const std::string& want : {op, std::to_string(bad), std::to_string(bound)})
      if (m.find(want) == std::string::npos)
        return ::testing::AssertionFailure() << "the error does not name '" << want << "': " << m;
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << op << " accepted the index " << bad << " (bound " << bound << ")";
}

template <class B>
class BadIndex : public ::testing::Test {};
TYPED_TEST_SUITE(BadIndex, Backends, BackendName);

OP_TYPED_CASE(BadIndex, Embedding, "embedding_forward: index:tokens", "embedding_backward: index:tokens") {
  using B = TypeParam;
  const int64_t V = 5, d = 3, N = 4;
  Buf<F> W({V, d}), out({N, d}), dW({V, d}), dout({N, d});
  for (int32_t bad : {int32_t(V), -1}) {
    Buf<int32_t> tokens({N});
    tokens[2] = bad;
    EXPECT_TRUE(rejects([&] { B::embedding_forward(out.t(), tokens.t(), W.t()); }, "embedding_forward", bad, V));
    EXPECT_TRUE(rejects([&] { B::embedding_backward(dW.t(), tokens.t(), dout.t()); }, "embedding_backward", bad, V));
  }
}

OP_TYPED_CASE(BadIndex, CrossEntropy, "cross_entropy: index:targets") {
  using B = TypeParam;
  const int64_t N = 3, V = 4;
  Buf<F> logits({N, V}), losses({N}), dlogits({N, V});
  for (int32_t bad : {int32_t(V), -1}) {
    Buf<int32_t> targets({N});
    targets[1] = bad;
    EXPECT_TRUE(rejects([&] { B::cross_entropy(losses.t(), dlogits.t(), logits.t(), targets.t(), 1.0); },
                        "cross_entropy", bad, V));
    EXPECT_TRUE(rejects([&] { B::cross_entropy(losses.t(), Tensor<F>{}, logits.t(), targets.t(), 1.0); },
                        "cross_entropy", bad, V));
  }
}

OP_TYPED_CASE(BadIndex, RouterTopk, "router_topk_backward: index:idx") {
  using B = TypeParam;
  const int64_t N = 3, E = 4, k = 2;
  Buf<F> probs({N, E}, 0.25f), lse({N}), dgate({N, k}), dlogits({N, E});
  for (int32_t bad : {int32_t(E), -1}) {
    Buf<int32_t> idx({N, k});
    for (int64_t i = 0; i < N * k; ++i) idx[i] = int32_t(i % E);
    idx[3] = bad;
    EXPECT_TRUE(rejects([&] { B::router_topk_backward(dlogits.t(), dgate.t(), Tensor<F>{}, 0.1, probs.t(), idx.t(),
                                                      lse.t()); },
                        "router_topk_backward", bad, E));
    // idx is checked even when no dgate needs it.
    EXPECT_TRUE(rejects([&] { B::router_topk_backward(dlogits.t(), Tensor<F>{}, Tensor<F>{}, 0.1, probs.t(), idx.t(),
                                                      lse.t()); },
                        "router_topk_backward", bad, E));
  }
}

// offsets must run 0 = offsets[0] <= ... <= offsets[E] = N: a last entry past
// the rows, and a negative entry, are both rejected.
OP_TYPED_CASE(BadIndex, Experts, "experts_forward: index:offsets", "experts_backward: index:offsets") {
  using B = TypeParam;
  const int64_t d = 2, f = 3, E = 3, N = 5;
  Buf<F> xs({N, d}), ys({N, d}), a({N, f}), b({N, f}), h({N, f}), W13({E, f, d}), W2({E, d, f});
  Buf<F> dxs({N, d}), dW13({E, f, d}), dW2({E, d, f}), sa({N, f}), sb({N, f});
  for (int64_t bad : {N + 1, int64_t(-1)}) {
    auto offsets = offsets_from_counts({2, 1, 2});
    offsets[bad < 0 ? 1 : E] = bad;
    EXPECT_TRUE(rejects([&] { B::experts_forward(ys.t(), a.t(), b.t(), h.t(), xs.t(), offsets.t(), W13.t(), W13.t(),
                                                 W2.t()); },
                        "experts_forward", bad, N));
    EXPECT_TRUE(rejects([&] { B::experts_backward(dxs.t(), dW13.t(), dW13.t(), dW2.t(), sa.t(), sb.t(), ys.t(), xs.t(),
                                                  offsets.t(), a.t(), b.t(), h.t(), W13.t(), W13.t(), W2.t()); },
                        "experts_backward", bad, N));
  }
}

OP_TYPED_CASE(BadIndex, GatherCombine, "moe_gather: index:slot_token", "moe_combine: index:slot_of",
              "moe_combine_backward: index:slot_of", "moe_gather_backward: index:slot_of") {
  using B = TypeParam;
  const int64_t T = 3, k = 2, N = T * k, d = 2;
  Buf<F> x({T, d}), xs({N, d}), ys({N, d}), gate({T, k}), out({T, d}), dys({N, d}), dgate({T, k}), dx({T, d});
  for (int64_t sign : {1, -1}) {
    Routing r = make_routing(T, k, 2, {0, 1, 1, 0, 0, 1});
    // slot_of = -1 is a dropped slot (capacity), so the negative bad slot is -2.
    const int32_t bad_token = sign > 0 ? int32_t(T) : -1, bad_slot = sign > 0 ? int32_t(N) : -2;
    r.slot_token[4] = bad_token;
    r.slot_of[5] = bad_slot;
    EXPECT_TRUE(rejects([&] { B::moe_gather(xs.t(), x.t(), r.slot_token.t()); }, "moe_gather", bad_token, T));
    EXPECT_TRUE(rejects([&] { B::moe_combine(out.t(), ys.t(), r.slot_of.t(), gate.t()); }, "moe_combine", bad_slot,
                        N));
    EXPECT_TRUE(rejects([&] { B::moe_combine_backward(dys.t(), dgate.t(), out.t(), ys.t(), r.slot_of.t(), gate.t()); },
                        "moe_combine_backward", bad_slot, N));
    EXPECT_TRUE(rejects([&] { B::moe_gather_backward(dx.t(), ys.t(), r.slot_of.t()); }, "moe_gather_backward",
                        bad_slot, N));
  }
}

OP_TYPED_CASE(BadIndex, RouterIndices, "router_gates: index:idx", "router_stats: index:idx",
              "moe_route_plan: index:idx") {
  using B = TypeParam;
  const int64_t N = 3, E = 4, k = 2;
  Buf<F> probs({N, E}, 0.25f), lse({N}), gate({N, k});
  Buf<double> stats({2 * E + 2});
  Buf<int64_t> offsets({E + 1});
  Buf<int32_t> slot_token({N * k}), slot_of({N, k});
  for (int32_t bad : {int32_t(E), -1}) {
    Buf<int32_t> idx({N, k});
    for (int64_t i = 0; i < N * k; ++i) idx[i] = int32_t(i % E);
    idx[5] = bad;
    EXPECT_TRUE(rejects([&] { B::router_gates(gate.t(), probs.t(), idx.t()); }, "router_gates", bad, E));
    EXPECT_TRUE(rejects([&] { B::template router_stats<F>(stats.t(), probs.t(), lse.t(), idx.t()); },
                        "router_stats", bad, E));
    EXPECT_TRUE(rejects([&] { B::moe_route_plan(offsets.t(), slot_token.t(), slot_of.t(), idx.t(), {}); },
                        "moe_route_plan", bad, E));
  }
}

OP_TYPED_CASE(BadIndex, Capacity, "moe_route_plan: index:keep", "moe_slot_keys: index:idx") {
  using B = TypeParam;
  const int64_t N = 3, E = 4, k = 2;
  Buf<F> probs({N, E}, 0.25f);
  Buf<double> keys({N * k, 2});
  Buf<int64_t> offsets({E + 1}), dropped({1});
  Buf<int32_t> slot_token({N * k}), slot_of({N, k}), idx({N, k}), keep({N, k}, 1);
  for (int64_t i = 0; i < N * k; ++i) idx[i] = int32_t(i % E);
  for (int32_t bad : {int32_t(2), -1}) {
    Buf<int32_t> keep_bad = keep;
    keep_bad[3] = bad;
    EXPECT_TRUE(rejects([&] { B::moe_route_plan(offsets.t(), slot_token.t(), slot_of.t(), idx.t(), keep_bad.t()); },
                        "moe_route_plan", bad, 2));
  }
  for (int32_t bad : {int32_t(E), -1}) {
    Buf<int32_t> idx_bad = idx;
    idx_bad[4] = bad;
    EXPECT_TRUE(rejects([&] { B::template moe_slot_keys<F>(keys.t(), probs.t(), idx_bad.t()); }, "moe_slot_keys",
                        bad, E));
    Buf<double> keys_bad({N * k, 2}, 0.5);
    for (int64_t g = 0; g < N * k; ++g) keys_bad[2 * g] = double(g % E);
    keys_bad[2 * 2] = double(bad);
    EXPECT_TRUE(rejects([&] { B::moe_capacity_keep(keep.t(), dropped.t(), keys_bad.t(), 0, 1, E); },
                        "moe_capacity_keep", bad, E));
  }
}

// =============================================================================
// 2. finite differences, double, both backends
// =============================================================================

using D = double;
constexpr double kFdEps = 1e-6;
constexpr double kFdTol = 1e-6;

template <class B>
class Fd : public ::testing::Test {};
TYPED_TEST_SUITE(Fd, Backends, BackendName);

double dot(const Buf<D>& a, const Buf<D>& b) {
  double s = 0.0;
  for (int64_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// What a backward added: after - before (gradients start from random values).
std::vector<double> added(const Buf<D>& after, const Buf<D>& before) {
  std::vector<double> g(after.size());
  for (int64_t i = 0; i < after.size(); ++i) g[i] = after[i] - before[i];
  return g;
}

// Central differences of loss() over every element of x, against g.
template <class L>
::testing::AssertionResult fd_check(const std::string& what, Buf<D>& x,
                                    const std::vector<double>& g, L&& loss) {
  double maxdiff = 0.0, scale = 0.0, worst_fd = 0.0;
  int64_t worst = -1;
  for (int64_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + kFdEps;
    const double lp = loss();
    x[i] = x0 - kFdEps;
    const double lm = loss();
    x[i] = x0;
    const double fd = (lp - lm) / (2 * kFdEps);
    scale = std::max({scale, std::abs(fd), std::abs(g[i])});
    if (!(std::abs(fd - g[i]) <= maxdiff)) maxdiff = std::abs(fd - g[i]), worst = i, worst_fd = fd;
  }
  if (!(scale > 0.0))
    return ::testing::AssertionFailure() << "d" << what << ": gradient is all zero (vacuous test)";
  if (maxdiff <= kFdTol * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "d" << what << ": max |analytic - fd| " << maxdiff << " > " << kFdTol << " * " << scale
         << "; worst " << what << index_str(x.dims, worst) << ": analytic " << g[worst] << ", fd "
         << worst_fd;
}

OP_TYPED_CASE(Fd, Linear, "linear_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t N = 3, in = 5, out = 4;
  for (bool bias : {true, false}) {
    SHAPE_TRACE("bias=" << bias);
    auto x = rng.randn<D>({N, in}), W = rng.randn<D>({out, in}), b = rng.randn<D>({out});
    auto R = rng.randn<D>({N, out});
    Buf<D> y({N, out});
    auto loss = [&] {
      B::linear_forward(y.t(), x.t(), W.t(), bias ? b.t() : Tensor<D>{});
      return dot(y, R);
    };
    auto dx0 = rng.randn<D>({N, in}), dW0 = rng.randn<D>({out, in}), db0 = rng.randn<D>({out});
    auto dx = dx0, dW = dW0, db = db0;
    B::linear_backward(dx.t(), dW.t(), bias ? db.t() : Tensor<D>{}, R.t(), x.t(), W.t());
    EXPECT_TRUE(fd_check("x", x, added(dx, dx0), loss));
    EXPECT_TRUE(fd_check("W", W, added(dW, dW0), loss));
    if (bias) {
      EXPECT_TRUE(fd_check("b", b, added(db, db0), loss));
    }
  }
}

OP_TYPED_CASE(Fd, Embedding, "embedding_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t V = 5, d = 3;
  Buf<int32_t> tokens({6});
  const int32_t toks[] = {2, 0, 2, 4, 2, 1};  // repeats; token 3 unused
  std::copy(toks, toks + 6, tokens.data());
  auto W = rng.randn<D>({V, d}), R = rng.randn<D>({6, d});
  Buf<D> out({6, d});
  auto loss = [&] {
    B::embedding_forward(out.t(), tokens.t(), W.t());
    return dot(out, R);
  };
  auto dW0 = rng.randn<D>({V, d});
  auto dW = dW0;
  B::embedding_backward(dW.t(), tokens.t(), R.t());
  EXPECT_TRUE(fd_check("W", W, added(dW, dW0), loss));
}

OP_TYPED_CASE(Fd, RmsNorm, "rmsnorm_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t N = 3, d = 6;
  auto x = rng.randn<D>({N, d}), w = rng.randn<D>({d}, 0.3, 1.0), R = rng.randn<D>({N, d});
  Buf<D> out({N, d}), rstd({N});
  auto loss = [&] {
    B::rmsnorm_forward(out.t(), rstd.t(), x.t(), w.t(), 1e-5);
    return dot(out, R);
  };
  loss();  // saves rstd at the unperturbed point
  auto dx0 = rng.randn<D>({N, d}), dw0 = rng.randn<D>({d});
  auto dx = dx0, dw = dw0;
  B::rmsnorm_backward(dx.t(), dw.t(), R.t(), x.t(), w.t(), rstd.t());
  EXPECT_TRUE(fd_check("x", x, added(dx, dx0), loss));
  EXPECT_TRUE(fd_check("w", w, added(dw, dw0), loss));
}

// rope is linear and orthogonal, so its backward (the inverse rotation) must be
// its exact adjoint and its inverse.
OP_TYPED_CASE(Fd, RopeAdjoint, "rope_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  for (double theta : {1e4, 100.0}) {
    SHAPE_TRACE("theta=" << theta);
    const std::vector<int64_t> dims{2, 6, 3, 8};
    auto x = rng.randn<D>(dims), y = rng.randn<D>(dims);
    auto rx = x, ry = y;
    B::rope_forward(rx.t(), theta);
    B::rope_backward(ry.t(), theta);
    EXPECT_NEAR(dot(rx, y), dot(x, ry), 1e-12 * std::sqrt(dot(x, x) * dot(y, y)));
    auto back = rx;
    B::rope_backward(back.t(), theta);
    double maxdiff = 0.0;
    for (int64_t i = 0; i < x.size(); ++i) maxdiff = std::max(maxdiff, std::abs(back[i] - x[i]));
    EXPECT_LT(maxdiff, 1e-13) << "rope_backward(rope_forward(x)) != x";
    EXPECT_TRUE(guards_intact("rope(x)", rx));
    EXPECT_TRUE(guards_intact("rope_backward(y)", ry));
  }
}

OP_TYPED_CASE(Fd, Attention, "attention_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  // One block, and (cpu) several blocks with a partial last one.
  for (const std::vector<int64_t>& qs : {std::vector<int64_t>{2, 5, 2, 4}, std::vector<int64_t>{1, 70, 1, 3}}) {
    SHAPE_TRACE("S=" << qs[1]);
    const int64_t Bn = qs[0], S = qs[1], H = qs[2];
    auto q = rng.randn<D>(qs), k = rng.randn<D>(qs), v = rng.randn<D>(qs), R = rng.randn<D>(qs);
    Buf<D> out(qs), lse({Bn, H, S});
    auto loss = [&] {
      B::attention_forward(out.t(), lse.t(), q.t(), k.t(), v.t());
      return dot(out, R);
    };
    loss();
    auto dq0 = rng.randn<D>(qs), dk0 = rng.randn<D>(qs), dv0 = rng.randn<D>(qs);
    auto dq = dq0, dk = dk0, dv = dv0;
    Buf<D> scratch({flash::cpu_scratch_elements(S, 2)});
    B::attention_backward(dq.t(), dk.t(), dv.t(), scratch.t(), R.t(), out.t(), lse.t(), q.t(), k.t(), v.t());
    EXPECT_TRUE(fd_check("q", q, added(dq, dq0), loss));
    EXPECT_TRUE(fd_check("k", k, added(dk, dk0), loss));
    EXPECT_TRUE(fd_check("v", v, added(dv, dv0), loss));
  }
}

OP_TYPED_CASE(Fd, Swiglu, "swiglu_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t N = 3, f = 7;
  auto a = rng.randn<D>({N, f}, 2.0), b = rng.randn<D>({N, f}), R = rng.randn<D>({N, f});
  Buf<D> h({N, f});
  auto loss = [&] {
    B::swiglu_forward(h.t(), a.t(), b.t());
    return dot(h, R);
  };
  auto da0 = rng.randn<D>({N, f}), db0 = rng.randn<D>({N, f});
  auto da = da0, db = db0;
  B::swiglu_backward(da.t(), db.t(), R.t(), a.t(), b.t());
  EXPECT_TRUE(fd_check("a", a, added(da, da0), loss));
  EXPECT_TRUE(fd_check("b", b, added(db, db0), loss));
}

OP_TYPED_CASE(Fd, Tanh, "tanh_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  auto x = rng.randn<D>({3, 7}), R = rng.randn<D>({3, 7});
  Buf<D> y({3, 7});
  auto loss = [&] {
    B::tanh_forward(y.t(), x.t());
    return dot(y, R);
  };
  loss();
  auto dx0 = rng.randn<D>({3, 7});
  auto dx = dx0;
  B::tanh_backward(dx.t(), R.t(), y.t());
  EXPECT_TRUE(fd_check("x", x, added(dx, dx0), loss));
}

OP_TYPED_CASE(Fd, Gelu, "gelu_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  auto x = rng.randn<D>({3, 7}, 2.0), R = rng.randn<D>({3, 7});
  Buf<D> y({3, 7});
  auto loss = [&] {
    B::gelu_forward(y.t(), x.t());
    return dot(y, R);
  };
  auto dx0 = rng.randn<D>({3, 7});
  auto dx = dx0;
  B::gelu_backward(dx.t(), R.t(), x.t());
  EXPECT_TRUE(fd_check("x", x, added(dx, dx0), loss));
}

// Rows of norm 1..3 and one of norm ~0.02 < eps = 0.1 (clamped: y = x / eps).
OP_TYPED_CASE(Fd, L2Norm, "l2norm_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t N = 4, C = 5;
  const double eps = 0.1;
  auto x = rng.randn<D>({N, C}), R = rng.randn<D>({N, C});
  for (int64_t c = 0; c < C; ++c) x[2 * C + c] *= 0.01;
  Buf<D> y({N, C}), norm({N});
  auto loss = [&] {
    B::l2norm_forward(y.t(), norm.t(), x.t(), eps);
    return dot(y, R);
  };
  loss();
  ASSERT_EQ(norm[2], eps);  // the clamped row
  ASSERT_GT(norm[0], eps);
  auto dx0 = rng.randn<D>({N, C});
  auto dx = dx0;
  B::l2norm_backward(dx.t(), R.t(), y.t(), norm.t(), eps);
  EXPECT_TRUE(fd_check("x", x, added(dx, dx0), loss));
}

// s below the clamp (gradient y . dy) and above it (no gradient for s).
OP_TYPED_CASE(Fd, ExpScale, "exp_scale_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const double mx = 1.0;
  for (double s0 : {0.3, 1.4}) {
    SHAPE_TRACE("log_scale=" << s0);
    auto x = rng.randn<D>({3, 4}), R = rng.randn<D>({3, 4});
    Buf<D> s({1}, s0), y({3, 4});
    auto loss = [&] {
      B::exp_scale_forward(y.t(), x.t(), s.t(), mx);
      return dot(y, R);
    };
    loss();
    auto dx0 = rng.randn<D>({3, 4}), ds0 = rng.randn<D>({1});
    auto dx = dx0, ds = ds0;
    B::exp_scale_backward(dx.t(), ds.t(), R.t(), y.t(), s.t(), mx);
    EXPECT_TRUE(fd_check("x", x, added(dx, dx0), loss));
    if (s0 <= mx) {
      EXPECT_TRUE(fd_check("log_scale", s, added(ds, ds0), loss));
    } else {  // clamped: the loss does not move with s, and no gradient is added
      EXPECT_EQ(ds[0], ds0[0]);
      const double l0 = loss();
      s[0] = s0 + 0.05;
      EXPECT_EQ(loss(), l0);
      s[0] = s0;
    }
  }
}

OP_TYPED_CASE(Fd, Gru, "gru_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t N = 3, p = 4;
  auto gi = rng.randn<D>({N, 3 * p}), gh = rng.randn<D>({N, 3 * p}), h = rng.randn<D>({N, p});
  auto R = rng.randn<D>({N, p});
  Buf<D> hnew({N, p}), gates({N, 3 * p});
  auto loss = [&] {
    B::gru_forward(hnew.t(), gates.t(), gi.t(), gh.t(), h.t());
    return dot(hnew, R);
  };
  loss();
  auto dgi0 = rng.randn<D>({N, 3 * p}), dgh0 = rng.randn<D>({N, 3 * p}), dh0 = rng.randn<D>({N, p});
  auto dgi = dgi0, dgh = dgh0, dh = dh0;
  B::gru_backward(dgi.t(), dgh.t(), dh.t(), R.t(), gates.t(), gh.t(), h.t());
  EXPECT_TRUE(fd_check("gi", gi, added(dgi, dgi0), loss));
  EXPECT_TRUE(fd_check("gh", gh, added(dgh, dgh0), loss));
  EXPECT_TRUE(fd_check("h", h, added(dh, dh0), loss));
}

// L = sum(hnew * R) + sum(cnew * Rc): both outputs of the cell reach the loss
// (cnew feeds the layer above), so dhnew = R, dcnew = Rc. gi and gh enter
// only as gi + gh: dpre is the gradient of each.
OP_TYPED_CASE(Fd, Lstm, "lstm_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t N = 3, p = 4;
  auto gi = rng.randn<D>({N, 4 * p}), gh = rng.randn<D>({N, 4 * p}), c = rng.randn<D>({N, p});
  auto R = rng.randn<D>({N, p}), Rc = rng.randn<D>({N, p});
  Buf<D> hnew({N, p}), cnew({N, p}), gates({N, 4 * p});
  auto loss = [&] {
    B::lstm_forward(hnew.t(), cnew.t(), gates.t(), gi.t(), gh.t(), c.t());
    return dot(hnew, R) + dot(cnew, Rc);
  };
  loss();
  auto dpre0 = rng.randn<D>({N, 4 * p}), dc0 = rng.randn<D>({N, p});
  auto dpre = dpre0, dc = dc0;
  B::lstm_backward(dpre.t(), dc.t(), R.t(), Rc.t(), gates.t(), c.t(), cnew.t());
  EXPECT_TRUE(fd_check("gi", gi, added(dpre, dpre0), loss));
  EXPECT_TRUE(fd_check("gh", gh, added(dpre, dpre0), loss));
  EXPECT_TRUE(fd_check("c", c, added(dc, dc0), loss));
}

// L = sum(gate * Rg) + sum_{n,e} probs[n,e] Re[e] + z * sum(lse^2), each term
// on or off; logits far from ties so no perturbation changes the top-k.
OP_TYPED_CASE(Fd, RouterTopk, "router_topk_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t N = 4, E = 6, k = 2;
  auto lf = separated_logits(rng, N, E, 0.6);
  Buf<D> logits({N, E});
  for (int64_t i = 0; i < logits.size(); ++i) logits[i] = lf[i];
  auto Rg = rng.randn<D>({N, k}), Re = rng.randn<D>({E});
  for (int path : {0, 1, 2, 3}) {  // all; dgate only; dprobs_extra only; z-loss only
    SHAPE_TRACE("path=" << path);
    const bool use_g = path == 0 || path == 1, use_e = path == 0 || path == 2;
    const double z = path == 0 || path == 3 ? 0.37 : 0.0;
    Buf<D> probs({N, E}), gate({N, k}), lse({N});
    Buf<int32_t> idx({N, k}), idx0({N, k});
    bool selection_changed = false;
    auto loss = [&] {
      B::router_topk_forward(probs.t(), idx.t(), gate.t(), lse.t(), logits.t());
      selection_changed |= idx.mem != idx0.mem;
      double L = use_g ? dot(gate, Rg) : 0.0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t e = 0; e < E; ++e) L += use_e ? probs[n * E + e] * Re[e] : 0.0;
      for (int64_t n = 0; n < N; ++n) L += z * lse[n] * lse[n];
      return L;
    };
    B::router_topk_forward(probs.t(), idx0.t(), gate.t(), lse.t(), logits.t());
    auto dl0 = rng.randn<D>({N, E});
    auto dl = dl0;
    B::router_topk_backward(dl.t(), use_g ? Rg.t() : Tensor<D>{}, use_e ? Re.t() : Tensor<D>{}, z,
                            probs.t(), idx0.t(), lse.t());
    EXPECT_TRUE(fd_check("logits", logits, added(dl, dl0), loss));
    EXPECT_FALSE(selection_changed) << "a perturbation changed the top-k: logits too close";
  }
}

OP_TYPED_CASE(Fd, Experts, "experts_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t d = 4, f = 3, E = 4;
  auto offsets = offsets_from_counts({3, 0, 4, 0});
  const int64_t N = 7;
  auto xs = rng.randn<D>({N, d}), R = rng.randn<D>({N, d});
  auto W1 = rng.randn<D>({E, f, d}, 0.7), W3 = rng.randn<D>({E, f, d}, 0.7);
  auto W2 = rng.randn<D>({E, d, f}, 0.7);
  Buf<D> ys({N, d}), a({N, f}), b({N, f}), h({N, f});
  auto loss = [&] {
    B::experts_forward(ys.t(), a.t(), b.t(), h.t(), xs.t(), offsets.t(), W1.t(), W3.t(), W2.t());
    return dot(ys, R);
  };
  loss();
  auto dxs0 = rng.randn<D>({N, d}), dW10 = rng.randn<D>({E, f, d}), dW30 = rng.randn<D>({E, f, d});
  auto dW20 = rng.randn<D>({E, d, f});
  auto dxs = dxs0, dW1 = dW10, dW3 = dW30, dW2 = dW20;
  Buf<D> sa({N, f}), sb({N, f});
  B::experts_backward(dxs.t(), dW1.t(), dW3.t(), dW2.t(), sa.t(), sb.t(), R.t(), xs.t(),
                      offsets.t(), a.t(), b.t(), h.t(), W1.t(), W3.t(), W2.t());
  EXPECT_TRUE(fd_check("xs", xs, added(dxs, dxs0), loss));
  EXPECT_TRUE(fd_check("W1", W1, added(dW1, dW10), loss));
  EXPECT_TRUE(fd_check("W3", W3, added(dW3, dW30), loss));
  EXPECT_TRUE(fd_check("W2", W2, added(dW2, dW20), loss));
}

OP_TYPED_CASE(Fd, GatherCombine, "moe_gather_backward: fd", "moe_combine_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t T = 5, k = 2, E = 4, d = 3, N = T * k;
  Routing r = random_routing(rng, T, k, E, {0, 2, 3});
  auto x = rng.randn<D>({T, d}), Rs = rng.randn<D>({N, d});
  Buf<D> xs({N, d});
  auto gather_loss = [&] {
    B::moe_gather(xs.t(), x.t(), r.slot_token.t());
    return dot(xs, Rs);
  };
  auto dx0 = rng.randn<D>({T, d});
  auto dx = dx0;
  B::moe_gather_backward(dx.t(), Rs.t(), r.slot_of.t());
  EXPECT_TRUE(fd_check("x (gather)", x, added(dx, dx0), gather_loss));

  auto ys = rng.randn<D>({N, d}), gate = rng.randn<D>({T, k}), Rt = rng.randn<D>({T, d});
  Buf<D> out({T, d});
  auto combine_loss = [&] {
    B::moe_combine(out.t(), ys.t(), r.slot_of.t(), gate.t());
    return dot(out, Rt);
  };
  auto dys0 = rng.randn<D>({N, d}), dgate0 = rng.randn<D>({T, k});
  auto dys = dys0, dgate = dgate0;
  B::moe_combine_backward(dys.t(), dgate.t(), Rt.t(), ys.t(), r.slot_of.t(), gate.t());
  EXPECT_TRUE(fd_check("ys (combine)", ys, added(dys, dys0), combine_loss));
  EXPECT_TRUE(fd_check("gate (combine)", gate, added(dgate, dgate0), combine_loss));
}

OP_TYPED_CASE(Fd, CrossEntropy, "cross_entropy: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t N = 4, V = 7;
  const double scale = 0.25;
  auto logits = rng.randn<D>({N, V}, 2.0);
  Buf<int32_t> targets({N});
  const int32_t tg[] = {3, 0, 6, 3};
  std::copy(tg, tg + N, targets.data());
  Buf<D> losses({N});
  auto loss = [&] {
    B::cross_entropy(losses.t(), Tensor<D>{}, logits.t(), targets.t(), 0.0);
    double L = 0.0;
    for (int64_t n = 0; n < N; ++n) L += losses[n];
    return L * scale;
  };
  auto dl0 = rng.randn<D>({N, V});
  auto dl = dl0;
  B::cross_entropy(losses.t(), dl.t(), logits.t(), targets.t(), scale);
  EXPECT_TRUE(fd_check("logits", logits, added(dl, dl0), loss));
}

// L = sum(gate * Rg) with gate = router_gates(softmax(logits), idx0) for a
// fixed choice idx0 (not the top-k): router_topk_backward with that idx is its
// gradient.
OP_TYPED_CASE(Fd, RouterGates, "router_gates: fd", "router_topk_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t N = 4, E = 5, k = 2;
  auto logits = rng.randn<D>({N, E});
  auto Rg = rng.randn<D>({N, k});
  Buf<int32_t> idx0({N, k}), idx_scratch({N, k});
  const int32_t choice[] = {0, 3, 4, 1, 2, 0, 1, 4};
  std::copy(choice, choice + N * k, idx0.data());
  Buf<D> probs({N, E}), gate({N, k}), lse({N});
  auto loss = [&] {
    B::router_topk_forward(probs.t(), idx_scratch.t(), gate.t(), lse.t(), logits.t());
    B::router_gates(gate.t(), probs.t(), idx0.t());
    return dot(gate, Rg);
  };
  loss();
  auto dl0 = rng.randn<D>({N, E});
  auto dl = dl0;
  B::router_topk_backward(dl.t(), Rg.t(), Tensor<D>{}, 0.0, probs.t(), idx0.t(), lse.t());
  EXPECT_TRUE(fd_check("logits", logits, added(dl, dl0), loss));
}

// L = scale * sum_e f_e * stats[E+e] / Tg, stats = router_stats(probs, ...):
// load_balance_backward's dprobs[e] is dL/dprobs[n,e] for every row n.
OP_TYPED_CASE(Fd, LoadBalance, "load_balance_backward: fd") {
  using B = TypeParam;
  Rng rng = test_rng();
  const int64_t N = 5, E = 4, k = 2;
  const double scale = 0.7;
  auto probs = rng.randn<D>({N, E}, 0.2, 0.25), lse = rng.randn<D>({N});
  Buf<int32_t> idx({N, k});
  const int32_t choice[] = {0, 1, 1, 2, 3, 1, 0, 1, 2, 1};
  std::copy(choice, choice + N * k, idx.data());
  Buf<double> stats({2 * E + 2});
  auto loss = [&] {
    B::template router_stats<D>(stats.t(), probs.t(), lse.t(), idx.t());
    double L = 0;
    for (int64_t e = 0; e < E; ++e) L += scale * stats[e] / (double(N) * k) * stats[E + e] / double(N);
    return L;
  };
  loss();
  auto dp0 = rng.randn<D>({E});
  auto dp = dp0;
  B::load_balance_backward(dp.t(), stats.t(), k, scale);
  std::vector<double> per_row(N * E);  // the same d/dprobs[n,e] for every row
  for (int64_t n = 0; n < N; ++n)
    for (int64_t e = 0; e < E; ++e) per_row[n * E + e] = dp[e] - dp0[e];
  EXPECT_TRUE(fd_check("probs", probs, per_row, loss));
}

// =============================================================================
// 3. hand-worked values (double, both backends)
// =============================================================================

template <class B>
class Known : public ::testing::Test {};
TYPED_TEST_SUITE(Known, Backends, BackendName);

::testing::AssertionResult values(const std::string& what, const Buf<D>& got,
                                  const std::vector<double>& want, double tol = 1e-12) {
  if (auto g = guards_intact(what, got); !g) return g;
  for (int64_t i = 0; i < got.size(); ++i)
    if (!(std::abs(got[i] - want[i]) <= tol * std::max(1.0, std::abs(want[i]))))
      return ::testing::AssertionFailure()
             << what << index_str(got.dims, i) << " = " << got[i] << ", want " << want[i];
  return ::testing::AssertionSuccess();
}

Buf<D> from(std::vector<int64_t> dims, std::vector<double> v) {
  Buf<D> b(std::move(dims));
  std::copy(v.begin(), v.end(), b.data());
  return b;
}

TYPED_TEST(Known, LinearRmsNormSwigluGru) {
  using B = TypeParam;
  auto x = from({1, 2}, {1, 2}), W = from({3, 2}, {1, 0, 0, 1, 1, 1}), b = from({3}, {0.5, 0, -1});
  Buf<D> y({1, 3});
  B::linear_forward(y.t(), x.t(), W.t(), b.t());
  EXPECT_TRUE(values("y", y, {1.5, 2, 2}));

  auto xn = from({1, 2}, {3, 4}), w = from({2}, {1, 2});
  Buf<D> out({1, 2}), rstd({1});
  B::rmsnorm_forward(out.t(), rstd.t(), xn.t(), w.t(), 0.0);  // mean(x^2) = 12.5
  const double r = 1.0 / std::sqrt(12.5);
  EXPECT_TRUE(values("rstd", rstd, {r}));
  EXPECT_TRUE(values("out", out, {3 * r, 8 * r}));

  auto a = from({1, 2}, {1, 0}), bb = from({1, 2}, {2, 5});
  Buf<D> h({1, 2});
  B::swiglu_forward(h.t(), a.t(), bb.t());  // silu(1) * 2, silu(0) * 5
  EXPECT_TRUE(values("swiglu", h, {2.0 / (1.0 + std::exp(-1.0)), 0.0}));

  Buf<D> gi({1, 3}), gh({1, 3});
  auto hp = from({1, 1}, {0.5});
  gh[2] = 0.8;  // r = z = 1/2, n = tanh(0.4), h' = n/2 + 1/4
  Buf<D> hn({1, 1}), gates({1, 3});
  B::gru_forward(hn.t(), gates.t(), gi.t(), gh.t(), hp.t());
  EXPECT_TRUE(values("gates", gates, {0.5, 0.5, std::tanh(0.4)}));
  EXPECT_TRUE(values("hnew", hn, {0.5 * std::tanh(0.4) + 0.25}));
}

TYPED_TEST(Known, L2NormExpScale) {
  using B = TypeParam;
  auto x = from({2, 2}, {3, 4, 0, 0});
  Buf<D> y({2, 2}), norm({2});
  B::l2norm_forward(y.t(), norm.t(), x.t(), 1e-12);  // a zero row stays 0 (norm clamped to eps)
  EXPECT_TRUE(values("l2norm y", y, {0.6, 0.8, 0, 0}));
  EXPECT_TRUE(values("l2norm norm", norm, {5, 1e-12}));
  auto c = from({1, 2}, {1.5, -1});
  auto s = from({1}, {std::log(2.0)});
  Buf<D> z({1, 2});
  B::exp_scale_forward(z.t(), c.t(), s.t(), std::log(100.0));
  EXPECT_TRUE(values("exp_scale", z, {3, -2}));
  s[0] = 7;  // above the clamp: exp(log 100) = 100
  B::exp_scale_forward(z.t(), c.t(), s.t(), std::log(100.0));
  EXPECT_TRUE(values("exp_scale clamped", z, {150, -100}));
}

TYPED_TEST(Known, AddScaled) {
  using B = TypeParam;
  auto a = from({3}, {1, -2, 0.5}), b = from({3}, {4, 1, -1});
  Buf<D> y({3});
  B::add_scaled(y.t(), a.t(), b.t(), 0.25);
  EXPECT_TRUE(values("y", y, {2, -1.75, 0.25}));
}

// LSTM, PyTorch's (i, f, g, o) order: pre = gi + gh = (0, ln 3, 0.5, -ln 3) gives
// i = 1/2, f = 3/4, g = tanh(0.5), o = 1/4; c' = 3/4 * 2 + tanh(0.5)/2.
TYPED_TEST(Known, Lstm) {
  using B = TypeParam;
  auto gi = from({1, 4}, {0, std::log(3.0), 0.25, 0}), gh = from({1, 4}, {0, 0, 0.25, -std::log(3.0)});
  auto c = from({1, 1}, {2});
  Buf<D> hn({1, 1}), cn({1, 1}), gates({1, 4});
  B::lstm_forward(hn.t(), cn.t(), gates.t(), gi.t(), gh.t(), c.t());
  const double cw = 1.5 + 0.5 * std::tanh(0.5);
  EXPECT_TRUE(values("gates", gates, {0.5, 0.75, std::tanh(0.5), 0.25}));
  EXPECT_TRUE(values("cnew", cn, {cw}));
  EXPECT_TRUE(values("hnew", hn, {0.25 * std::tanh(cw)}));
}

TYPED_TEST(Known, Rope) {
  using B = TypeParam;
  // D = 2: the one pair rotates by s radians. D = 4, theta = 100: pair 1
  // (elements 1, 3) rotates by s * 100^(-1/2) = 0.1 s.
  Buf<D> x2({1, 3, 1, 2});
  for (int s = 0; s < 3; ++s) x2[2 * s] = 1.0;
  B::rope_forward(x2.t(), 1e4);
  EXPECT_TRUE(
      values("rope D=2", x2, {1, 0, std::cos(1.0), std::sin(1.0), std::cos(2.0), std::sin(2.0)}));
  Buf<D> x4({1, 4, 1, 4});
  x4[3 * 4 + 3] = 1.0;  // s = 3, element 3 (the second half of pair 1)
  B::rope_forward(x4.t(), 100.0);
  std::vector<double> want(16, 0.0);
  want[3 * 4 + 1] = -std::sin(0.3);
  want[3 * 4 + 3] = std::cos(0.3);
  EXPECT_TRUE(values("rope D=4", x4, want));
}

TYPED_TEST(Known, Attention) {
  using B = TypeParam;
  // B=1, S=3, H=1, D=4. q0 = q2 = 0 gives uniform weights; q1 . k1 / sqrt(4) = 1, q1 . k0 = 0.
  Buf<D> q({1, 3, 1, 4}), k({1, 3, 1, 4}), v({1, 3, 1, 4});
  q[4] = 2.0;
  k[4] = 1.0;
  for (int s = 0; s < 3; ++s) v[s * 4] = double(1 << (2 * s));  // v[:,0] = 1, 4, 16
  Buf<D> out({1, 3, 1, 4}), lse({1, 1, 3});
  B::attention_forward(out.t(), lse.t(), q.t(), k.t(), v.t());
  const double p1 = std::exp(1.0) / (1.0 + std::exp(1.0));
  // lse_i = log sum_{j<=i} exp(s_ij): scores (0), (0, 1), (0, 0, 0).
  EXPECT_TRUE(values("lse", lse, {0, std::log(1 + std::exp(1.0)), std::log(3.0)}));
  EXPECT_TRUE(values("out", out, {1, 0, 0, 0, (1 - p1) + 4 * p1, 0, 0, 0, 7, 0, 0, 0}));
}

TYPED_TEST(Known, RouterTopk) {
  using B = TypeParam;
  // Row 0: probs 1,2,3,4 / 10. Row 1: all tied -> lowest experts. Row 2: 1 and 2 tied on top.
  auto logits = from({3, 4}, {0, std::log(2.0), std::log(3.0), std::log(4.0),  //
                              0.5, 0.5, 0.5, 0.5,                              //
                              0, 5, 5, 1});
  Buf<D> probs({3, 4}), gate({3, 2}), lse({3});
  Buf<int32_t> idx({3, 2});
  B::router_topk_forward(probs.t(), idx.t(), gate.t(), lse.t(), logits.t());
  EXPECT_EQ(std::vector<int32_t>(idx.data(), idx.data() + 6),
            (std::vector<int32_t>{3, 2, 0, 1, 1, 2}));
  EXPECT_TRUE(guards_intact("idx", idx));
  EXPECT_TRUE(values("probs row 0", from({4}, {probs[0], probs[1], probs[2], probs[3]}),
                     {0.1, 0.2, 0.3, 0.4}));
  EXPECT_TRUE(values("gate", gate, {4.0 / 7, 3.0 / 7, 0.5, 0.5, 0.5, 0.5}));
  EXPECT_NEAR(lse[0], std::log(10.0), 1e-12);
  EXPECT_NEAR(lse[1], 0.5 + std::log(4.0), 1e-12);
}

TYPED_TEST(Known, ExpertsGatherCombineCrossEntropy) {
  using B = TypeParam;
  // E=2, d=f=1: expert e computes W2_e silu(W1_e x) (W3_e x).
  auto xs = from({2, 1}, {1, 1}), W1 = from({2, 1, 1}, {1, 2}), W3 = from({2, 1, 1}, {1, 1});
  auto W2 = from({2, 1, 1}, {1, 3});
  Buf<int64_t> offsets({3});
  offsets[0] = 0, offsets[1] = 1, offsets[2] = 2;
  Buf<D> ys({2, 1}), a({2, 1}), b({2, 1}), h({2, 1});
  B::experts_forward(ys.t(), a.t(), b.t(), h.t(), xs.t(), offsets.t(), W1.t(), W3.t(), W2.t());
  const double silu1 = 1.0 / (1.0 + std::exp(-1.0)), silu2 = 2.0 / (1.0 + std::exp(-2.0));
  EXPECT_TRUE(values("a", a, {1, 2}));
  EXPECT_TRUE(values("ys", ys, {silu1, 3 * silu2}));

  // Two tokens, k=2, slots sorted: token 0 -> slots 2, 0; token 1 -> slots 1, 3.
  Buf<int32_t> slot_of({2, 2}), slot_token({4});
  const int32_t so[] = {2, 0, 1, 3}, st[] = {0, 1, 0, 1};
  std::copy(so, so + 4, slot_of.data());
  std::copy(st, st + 4, slot_token.data());
  auto x = from({2, 1}, {10, 20});
  Buf<D> xg({4, 1});
  B::moe_gather(xg.t(), x.t(), slot_token.t());
  EXPECT_TRUE(values("gather", xg, {10, 20, 10, 20}));
  auto ysl = from({4, 1}, {1, 10, 100, 1000}), gate = from({2, 2}, {0.5, 0.25, 2, 3});
  Buf<D> out({2, 1});
  B::moe_combine(out.t(), ysl.t(), slot_of.t(), gate.t());
  EXPECT_TRUE(values("combine", out, {0.5 * 100 + 0.25 * 1, 2 * 10 + 3 * 1000}));

  auto logits = from({1, 4}, {0, 0, 0, 0});
  Buf<int32_t> target({1});
  target[0] = 2;
  Buf<D> loss({1}), dlogits({1, 4});
  B::cross_entropy(loss.t(), dlogits.t(), logits.t(), target.t(), 2.0);
  EXPECT_TRUE(values("ce loss", loss, {std::log(4.0)}));
  EXPECT_TRUE(values("ce dlogits", dlogits, {0.5, 0.5, -1.5, 0.5}));
}

TYPED_TEST(Known, RoutingPlan) {
  using B = TypeParam;
  // idx [3 tokens, k=2], E = 4: expert 0 <- (2,1); 1 <- (0,1), (1,0); 2 <- (0,0), (2,0); 3 <- (1,1).
  Buf<int32_t> idx({3, 2});
  const int32_t ch[] = {2, 1, 1, 3, 2, 0};
  std::copy(ch, ch + 6, idx.data());
  Buf<int64_t> offsets({5});
  Buf<int32_t> slot_token({6}), slot_of({3, 2});
  B::moe_route_plan(offsets.t(), slot_token.t(), slot_of.t(), idx.t(), {});
  EXPECT_EQ(std::vector<int64_t>(offsets.data(), offsets.data() + 5), (std::vector<int64_t>{0, 1, 3, 5, 6}));
  EXPECT_EQ(std::vector<int32_t>(slot_token.data(), slot_token.data() + 6), (std::vector<int32_t>{2, 0, 1, 0, 2, 1}));
  EXPECT_EQ(std::vector<int32_t>(slot_of.data(), slot_of.data() + 6), (std::vector<int32_t>{3, 1, 2, 5, 4, 0}));
  EXPECT_TRUE(guards_intact("offsets", offsets));
  EXPECT_TRUE(guards_intact("slot_token", slot_token));
  EXPECT_TRUE(guards_intact("slot_of", slot_of));
}

TYPED_TEST(Known, EmbeddingChecksTokenIds) {
  using B = TypeParam;
  auto W = from({3, 2}, {1, 2, 3, 4, 5, 6});
  Buf<D> out({2, 2});
  Buf<int32_t> tokens({2});
  tokens[0] = 2, tokens[1] = 0;
  B::embedding_forward(out.t(), tokens.t(), W.t());
  EXPECT_TRUE(values("out", out, {5, 6, 1, 2}));
  tokens[1] = 3;  // == V
  EXPECT_THROW(B::embedding_forward(out.t(), tokens.t(), W.t()), rmoe::Error);
  tokens[1] = -1;
  EXPECT_THROW(B::embedding_forward(out.t(), tokens.t(), W.t()), rmoe::Error);
}

// The oracle rejects inconsistent shapes and out-of-range indices instead of
// reading past a buffer.
TEST(RefChecks, RejectsBadShapesAndIndices) {
  Buf<D> x({2, 3}), W({4, 5}), y({2, 4});
  EXPECT_THROW(ref::linear_forward(y.t(), x.t(), W.t(), Tensor<D>{}), rmoe::Error);  // in 3 vs 5

  Buf<D> q({1, 4, 2, 2}), out({1, 4, 2, 2}), att_lse({1, 2, 3});  // lse [B, H, S] with S = 3, not 4
  EXPECT_THROW(ref::attention_forward(out.t(), att_lse.t(), q.t(), q.t(), q.t()), rmoe::Error);

  Buf<D> xs({3, 2}), ys({3, 2}), ab({3, 4}), W13({2, 4, 2}), W2({2, 2, 4});
  auto offsets = offsets_from_counts({1, 1});  // ends at 2, not N = 3
  EXPECT_THROW(ref::experts_forward(ys.t(), ab.t(), ab.t(), ab.t(), xs.t(), offsets.t(), W13.t(),
                                    W13.t(), W2.t()),
               rmoe::Error);

  Buf<D> logits({2, 3}), probs({2, 3}), gate({2, 4}), lse({2});
  Buf<int32_t> idx({2, 4});  // k = 4 > E = 3
  EXPECT_THROW(ref::router_topk_forward(probs.t(), idx.t(), gate.t(), lse.t(), logits.t()),
               rmoe::Error);

  Buf<D> losses({2});
  Buf<int32_t> targets({2});
  targets[1] = 3;  // == V
  EXPECT_THROW(ref::cross_entropy(losses.t(), Tensor<D>{}, logits.t(), targets.t(), 1.0),
               rmoe::Error);

  Buf<D> xg({2, 3});
  Buf<int32_t> slot_token({2});
  slot_token[0] = 2;  // only tokens 0, 1 exist
  EXPECT_THROW(ref::moe_gather(xg.t(), logits.t(), slot_token.t()), rmoe::Error);
}

// =============================================================================
// 4. the table is covered
// =============================================================================

TEST(OpTable, EveryOpHasItsCases) {
  std::set<std::string> names;
  for (const TableOp& op : table_ops()) {
    names.insert(op.name);
    std::set<std::string> want{"ref"};
    for (const auto& [type, param] : op.params) {
      if (type.rfind("Grad<", 0) == 0) want.insert({"fd", "null:" + param});
      if (type == "Tensor<const int32_t>" || type == "Tensor<const int64_t>") want.insert("index:" + param);
    }
    const auto& have = coverage()[op.name];
    for (const std::string& w : want)
      EXPECT_TRUE(have.count(w)) << op.name << " has no case checking '" << w
                                 << "': add one to tests/test_ops.cpp (OP_CASE)";
    for (const auto& [item, tests] : have)  // a claim must name a real output or input
      EXPECT_TRUE(want.count(item) || item == "fd")
          << tests.front() << " claims '" << item << "' of " << op.name << ", which is not a check of its own";
  }
  for (const auto& [op, items] : coverage())
    EXPECT_TRUE(names.count(op)) << "a case claims op '" << op << "', which is not in the table";
}

}  // namespace
