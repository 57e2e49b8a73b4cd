// tf_mrc's native CPU kernels: the memory-lean ops of tf_mrc/ops/fused.py, each forward and each backward one
// pass over memory instead of a chain of stock elementwise ops, plus dropout with a bit mask and AdamW in one pass
// per variable. Built on the user's machine by tf_mrc/ops/native/__init__.py (g++ against the installed TF's
// headers, TF 1.13 and 2.x alike) and used on CPU for float32 and (TF 2) bfloat16 tensors; everything here has a
// composite twin in fused.py / training.py that the tests compare it with.
//
// Parallelism: every kernel splits its rows or elements over TF's intra-op thread pool (Shard); within a range,
// arithmetic runs on Eigen arrays (vectorized exp) or in plain loops the compiler vectorizes.
// Memory: an output takes over its main input's buffer where TF allows it (no other reader left), so a chain of
// these ops allocates little; every kernel reads a row or chunk before it writes the same place.
// Precision: arithmetic is float32 whatever the tensors' type; bfloat16 elements are widened on the way in and
// rounded to nearest even on the way out, as TF's Cast rounds (the composite ops cast around fp32 arithmetic).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/public/version.h"
#include "tensorflow/core/util/guarded_philox_random.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tf_mrc {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;

typedef Eigen::Array<float, Eigen::Dynamic, 1> Array;
typedef Eigen::Map<const Array> ConstRow;
typedef Eigen::Map<Array> Row;

// Split [0, total) over the intra-op threads; cost_per_unit in rough cycles lets Shard choose the block size.
template <typename Work>
void Parallel(OpKernelContext* ctx, int64_t total, int64_t cost_per_unit, Work work) {
  auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(threads->num_threads, threads->workers, total, cost_per_unit,
                    [&work](int64_t begin, int64_t end) { work(begin, end); });
}

const int64_t kChunk = 1024;  // elementwise kernels work through their range in chunks that stay in L1/L2

// Element types. float is read and written in place; bfloat16 (held as its raw 16 bits) goes through a float
// scratch array.
typedef uint16_t bf16;

template <typename T>
struct Elements;

template <>
struct Elements<float> {
  static ConstRow In(const float* data, int64_t n, Array* /* scratch */) { return ConstRow(data, n); }
  template <typename Values>
  static void Out(const Values& values, float* data, int64_t n) { Row(data, n) = values; }
};

template <>
struct Elements<bf16> {
  static ConstRow In(const bf16* data, int64_t n, Array* scratch) {
    scratch->resize(n);
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t bits = static_cast<uint32_t>(data[i]) << 16;
      std::memcpy(scratch->data() + i, &bits, sizeof(float));
    }
    return ConstRow(scratch->data(), n);
  }
  template <typename Values>
  static void Out(const Values& values, bf16* data, int64_t n) {
    const Array evaluated = values;
    for (int64_t i = 0; i < n; ++i) {
      uint32_t bits;
      std::memcpy(&bits, evaluated.data() + i, sizeof(float));
      if ((bits & 0x7fffffffu) > 0x7f800000u) {
        data[i] = static_cast<bf16>((bits >> 16) | 0x40u);  // NaN stays a (quiet) NaN
      } else {
        data[i] = static_cast<bf16>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);  // round to nearest even
      }
    }
  }
};

template <typename T>
const T* Data(const Tensor& tensor) {
  return reinterpret_cast<const T*>(tensor.tensor_data().data());
}

template <typename T>
T* MutableData(Tensor* tensor) {
  return reinterpret_cast<T*>(const_cast<char*>(tensor->tensor_data().data()));
}

// ---------------------------------------------------------------------------------------------------- GELU
// The three forms of fused.py: tanh (google BERT), erf (exact), sigmoid (x sigmoid(1.702 x)). The tanh form is
// spelled x sigmoid(2u) (= 0.5 x (1 + tanh u)), whose derivative s + 2 c x s (1 - s)(1 + 3 k x^2) has no 1 + tanh
// or 1 - tanh^2 to cancel. The erf form computes Phi(x) = 0.5 erfc(-x / sqrt 2) with Numerical Recipes' erfc
// (fractional error < 1.2e-7 everywhere), which, like fused.py's spelling, does not cancel for x << 0. Both
// vectorize (one exp per element).
const float kSqrt2OverPi = 0.7978845608028654f;
const float kTanhCubic = 0.044715f;
const float kInvSqrt2 = 0.7071067811865476f;
const float kInvSqrt2Pi = 0.3989422804014327f;
const float kSigmoidSlope = 1.702f;

enum GeluForm { kTanh, kErf, kSigmoid };

GeluForm ReadForm(OpKernelConstruction* ctx) {
  std::string form;
  tensorflow::Status status = ctx->GetAttr("form", &form);
  if (!status.ok()) ctx->SetStatus(status);
  return form == "erf" ? kErf : (form == "sigmoid" ? kSigmoid : kTanh);
}

// Phi(x) for a chunk, and exp(-x^2 / 2) (the normal density without its constant) as a by-product.
void NormalCdf(const ConstRow& x, Array* cdf, Array* density) {
  Array z = x.abs() * kInvSqrt2;
  Array t = 1.0f / (1.0f + 0.5f * z);
  Array poly = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f +
               t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
  *density = (-z * z).exp();
  Array half_erfc = 0.5f * t * (*density) * poly.exp();  // 0.5 erfc(|x| / sqrt 2) = Phi(-|x|)
  *cdf = (x >= 0.0f).select(1.0f - half_erfc, half_erfc);
}

template <typename T>
void GeluChunk(GeluForm form, const T* in, T* out, int64_t n) {
  Array scratch;
  ConstRow x = Elements<T>::In(in, n, &scratch);
  if (form == kTanh) {
    Elements<T>::Out(x / (1.0f + (-2.0f * kSqrt2OverPi * (x + kTanhCubic * x.cube())).exp()), out, n);
  } else if (form == kSigmoid) {
    Elements<T>::Out(x / (1.0f + (-kSigmoidSlope * x).exp()), out, n);
  } else {
    Array cdf, density;
    NormalCdf(x, &cdf, &density);
    Elements<T>::Out(x * cdf, out, n);
  }
}

template <typename T>
void GeluGradChunk(GeluForm form, const T* dy_in, const T* x_in, T* out, int64_t n) {
  Array dy_scratch, x_scratch;
  ConstRow dy = Elements<T>::In(dy_in, n, &dy_scratch), x = Elements<T>::In(x_in, n, &x_scratch);
  if (form == kTanh) {
    Array s = 1.0f / (1.0f + (-2.0f * kSqrt2OverPi * (x + kTanhCubic * x.cube())).exp());
    Elements<T>::Out(
        dy * (s + 2.0f * kSqrt2OverPi * x * s * (1.0f - s) * (1.0f + 3.0f * kTanhCubic * x.square())), out, n);
  } else if (form == kSigmoid) {
    Array s = 1.0f / (1.0f + (-kSigmoidSlope * x).exp());
    Elements<T>::Out(dy * s * (1.0f + kSigmoidSlope * x * (1.0f - s)), out, n);
  } else {
    Array cdf, density;
    NormalCdf(x, &cdf, &density);
    Elements<T>::Out(dy * (cdf + x * kInvSqrt2Pi * density), out, n);
  }
}

template <typename T>
class GeluOp : public OpKernel {
 public:
  explicit GeluOp(OpKernelConstruction* ctx) : OpKernel(ctx), form_(ReadForm(ctx)) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &y));
    const T* in = Data<T>(x);
    T* out = MutableData<T>(y);
    const GeluForm form = form_;
    const int64_t total = x.NumElements();
    Parallel(ctx, (total + kChunk - 1) / kChunk, kChunk * 40, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t start = c * kChunk;
        GeluChunk<T>(form, in + start, out + start, std::min<int64_t>(kChunk, total - start));
      }
    });
  }

 private:
  GeluForm form_;
};

template <typename T>
class GeluGradOp : public OpKernel {
 public:
  explicit GeluGradOp(OpKernelConstruction* ctx) : OpKernel(ctx), form_(ReadForm(ctx)) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    OP_REQUIRES(ctx, dy.shape() == x.shape(), InvalidArgument("TfMrcGeluGrad: dy and x differ in shape"));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &dx));
    const T* dy_in = Data<T>(dy);
    const T* x_in = Data<T>(x);
    T* out = MutableData<T>(dx);
    const GeluForm form = form_;
    const int64_t total = x.NumElements();
    Parallel(ctx, (total + kChunk - 1) / kChunk, kChunk * 60, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t start = c * kChunk;
        GeluGradChunk<T>(form, dy_in + start, x_in + start, out + start, std::min<int64_t>(kChunk, total - start));
      }
    });
  }

 private:
  GeluForm form_;
};

// ------------------------------------------------------------------------------------------ masked softmax
// probs = softmax(scores * scale + bias) over the last axis; scores [B, N, Tq, Tk], bias [B', N', Tq', Tk]
// (float32) with each of B', N', Tq' either 1 (broadcast) or equal to the scores' dimension (attention masks are
// [B, 1, 1, Tk] or [B, 1, Tq, Tk]). The gradient keeps only probs: dscores = scale * p * (dp - sum(dp * p)).

// The masked softmax's bias broadcast, shared by the two softmax forward kernels.
struct BiasRows {
  int64_t stride[3], heads, queries;

  tensorflow::Status Init(const Tensor& scores, const Tensor& bias) {
    if (scores.dims() != 4 || bias.dims() != 4) return InvalidArgument("masked softmax: scores and bias must be 4-D");
    if (bias.dim_size(3) != scores.dim_size(3)) {
      return InvalidArgument("masked softmax: bias and scores differ in their last dimension");
    }
    int64_t size = bias.dim_size(3);
    for (int d = 2; d >= 0; --d) {
      if (bias.dim_size(d) != 1 && bias.dim_size(d) != scores.dim_size(d)) {
        return InvalidArgument("masked softmax: bias does not broadcast to scores");
      }
      stride[d] = bias.dim_size(d) == 1 ? 0 : size;
      size *= bias.dim_size(d);
    }
    heads = scores.dim_size(1);
    queries = scores.dim_size(2);
    return tensorflow::Status();
  }

  int64_t Offset(int64_t row) const {
    const int64_t q = row % queries, n = (row / queries) % heads, b = row / (queries * heads);
    return b * stride[0] + n * stride[1] + q * stride[2];
  }
};

template <typename T>
class MaskedSoftmaxOp : public OpKernel {
 public:
  explicit MaskedSoftmaxOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& scores = ctx->input(0);
    const Tensor& bias = ctx->input(1);
    const float scale = ctx->input(2).scalar<float>()();
    BiasRows bias_rows;
    OP_REQUIRES_OK(ctx, bias_rows.Init(scores, bias));
    Tensor* probs = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, scores.shape(), &probs));
    const int64_t keys = scores.dim_size(3);
    const int64_t rows = scores.NumElements() / std::max<int64_t>(keys, 1);
    const T* in = Data<T>(scores);
    const float* bias_in = Data<float>(bias);
    T* out = MutableData<T>(probs);
    Parallel(ctx, rows, keys * 30, [&](int64_t begin, int64_t end) {
      Array scratch, p;
      for (int64_t r = begin; r < end; ++r) {
        p = Elements<T>::In(in + r * keys, keys, &scratch) * scale + ConstRow(bias_in + bias_rows.Offset(r), keys);
        p = (p - p.maxCoeff()).exp();
        Elements<T>::Out(p * (1.0f / p.sum()), out + r * keys, keys);
      }
    });
  }
};

template <typename T>
class MaskedSoftmaxGradOp : public OpKernel {
 public:
  explicit MaskedSoftmaxGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dprobs = ctx->input(0);
    const Tensor& probs = ctx->input(1);
    const float scale = ctx->input(2).scalar<float>()();
    OP_REQUIRES(ctx, dprobs.shape() == probs.shape(),
                InvalidArgument("TfMrcMaskedSoftmaxGrad: dprobs and probs differ in shape"));
    Tensor* dscores = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, probs.shape(), &dscores));
    const int64_t keys = probs.dims() ? probs.dim_size(probs.dims() - 1) : 1;
    const int64_t rows = probs.NumElements() / std::max<int64_t>(keys, 1);
    const T* dp_in = Data<T>(dprobs);
    const T* p_in = Data<T>(probs);
    T* out = MutableData<T>(dscores);
    Parallel(ctx, rows, keys * 8, [&](int64_t begin, int64_t end) {
      Array dp_scratch, p_scratch;
      for (int64_t r = begin; r < end; ++r) {
        ConstRow dp = Elements<T>::In(dp_in + r * keys, keys, &dp_scratch);
        ConstRow p = Elements<T>::In(p_in + r * keys, keys, &p_scratch);
        const float dot = (dp * p).sum();
        Elements<T>::Out((scale * p) * (dp - dot), out + r * keys, keys);
      }
    });
  }
};

// ------------------------------------------------------------------------------------- LayerNorm (+ residual)
// y = xhat * gamma + beta with xhat = (t - mean(t)) / sqrt(var(t) + epsilon), t = x (+ residual), over the last
// axis; the inputs are [x, residual, gamma, beta] or [x, gamma, beta] (x and residual of type T, gamma and beta
// float32). Outputs y, xhat (float32, as fused.py returns and keeps them) and rstd = 1 / sqrt(var + epsilon) per
// row: the gradient needs only xhat and rstd.

class LayerNormOp : public OpKernel {
 public:
  explicit LayerNormOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    OP_REQUIRES(ctx, ctx->num_inputs() <= 4, InvalidArgument("TfMrcLayerNorm: 3 or 4 inputs"));
    const bool with_residual = ctx->num_inputs() == 4;  // [x, residual, gamma, beta] or [x, gamma, beta]
    const tensorflow::DataType type = ctx->input(0).dtype();
    OP_REQUIRES(ctx, !with_residual || ctx->input(1).dtype() == type,
                InvalidArgument("TfMrcLayerNorm: x and residual differ in type"));
    OP_REQUIRES(ctx, ctx->input(ctx->num_inputs() - 2).dtype() == tensorflow::DT_FLOAT &&
                         ctx->input(ctx->num_inputs() - 1).dtype() == tensorflow::DT_FLOAT,
                InvalidArgument("TfMrcLayerNorm: gamma and beta must be float32"));
    if (type == tensorflow::DT_FLOAT) {
      Run<float>(ctx, with_residual);
#if TF_MAJOR_VERSION >= 2
    } else if (type == tensorflow::DT_BFLOAT16) {
      Run<bf16>(ctx, with_residual);
#endif
    } else {
      ctx->CtxFailure(InvalidArgument("TfMrcLayerNorm: x must be float32 or bfloat16"));
    }
  }

 private:
  template <typename T>
  void Run(OpKernelContext* ctx, bool with_residual) {
    const Tensor& x = ctx->input(0);
    const int first_param = with_residual ? 2 : 1;
    const Tensor& gamma = ctx->input(first_param);
    const Tensor& beta = ctx->input(first_param + 1);
    OP_REQUIRES(ctx, x.dims() >= 1, InvalidArgument("TfMrcLayerNorm: x must have a last axis"));
    const int64_t width = x.dim_size(x.dims() - 1);
    OP_REQUIRES(ctx, gamma.NumElements() == width && beta.NumElements() == width,
                InvalidArgument("TfMrcLayerNorm: gamma and beta must have the last axis' size"));
    const T* residual = nullptr;
    if (with_residual) {
      OP_REQUIRES(ctx, ctx->input(1).shape() == x.shape(),
                  InvalidArgument("TfMrcLayerNorm: x and residual differ in shape"));
      residual = Data<T>(ctx->input(1));
    }
    const int64_t rows = width ? x.NumElements() / width : 0;
    Tensor *y = nullptr, *xhat = nullptr, *rstd = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, x.shape(), &xhat));
    TensorShape row_shape = x.shape();
    row_shape.RemoveLastDims(1);
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, row_shape, &rstd));
    const T* in = Data<T>(x);
    ConstRow g(Data<float>(gamma), width), b(Data<float>(beta), width);
    float* y_out = MutableData<float>(y);
    float* xhat_out = MutableData<float>(xhat);
    float* rstd_out = MutableData<float>(rstd);
    const float epsilon = epsilon_;
    Parallel(ctx, rows, width * 12, [&](int64_t begin, int64_t end) {
      Array x_scratch, residual_scratch;
      for (int64_t r = begin; r < end; ++r) {
        Row normalized(xhat_out + r * width, width);
        normalized = Elements<T>::In(in + r * width, width, &x_scratch);
        if (residual != nullptr) normalized += Elements<T>::In(residual + r * width, width, &residual_scratch);
        normalized -= normalized.mean();
        const float inverse = 1.0f / std::sqrt(normalized.square().mean() + epsilon);
        normalized *= inverse;
        rstd_out[r] = inverse;
        Row(y_out + r * width, width) = normalized * g + b;
      }
    });
  }

  float epsilon_;
};

// dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy gamma; dgamma = sum over rows of dy xhat; dbeta = sum
// of dy. dy, xhat, rstd and gamma are float32; dx is T. Rows are split into fixed blocks, each summing dgamma /
// dbeta into its own slot, then the slots are added in block order: the result does not depend on the thread
// count.
template <typename T>
class LayerNormGradOp : public OpKernel {
 public:
  explicit LayerNormGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& xhat = ctx->input(1);
    const Tensor& rstd = ctx->input(2);
    const Tensor& gamma = ctx->input(3);
    OP_REQUIRES(ctx, dy.shape() == xhat.shape() && dy.dims() >= 1,
                InvalidArgument("TfMrcLayerNormGrad: dy and xhat differ in shape"));
    const int64_t width = dy.dim_size(dy.dims() - 1);
    const int64_t rows = width ? dy.NumElements() / width : 0;
    OP_REQUIRES(ctx, rstd.NumElements() == rows && gamma.NumElements() == width,
                InvalidArgument("TfMrcLayerNormGrad: rstd or gamma has the wrong size"));
    Tensor *dx = nullptr, *dgamma = nullptr, *dbeta = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, dy.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gamma.shape(), &dbeta));
    const int64_t block_rows = 64;
    const int64_t blocks = (rows + block_rows - 1) / block_rows;
    std::vector<float> partial(static_cast<size_t>(std::max<int64_t>(blocks, 1) * 2 * width), 0.0f);
    const float* dy_in = Data<float>(dy);
    const float* xhat_in = Data<float>(xhat);
    const float* rstd_in = Data<float>(rstd);
    ConstRow g(Data<float>(gamma), width);
    T* dx_out = MutableData<T>(dx);
    Parallel(ctx, blocks, block_rows * width * 16, [&](int64_t begin, int64_t end) {
      Array scaled(width);
      for (int64_t block = begin; block < end; ++block) {
        Row sum_dgamma(partial.data() + block * 2 * width, width);
        Row sum_dbeta(partial.data() + block * 2 * width + width, width);
        for (int64_t r = block * block_rows; r < std::min<int64_t>(rows, (block + 1) * block_rows); ++r) {
          ConstRow d(dy_in + r * width, width), h(xhat_in + r * width, width);
          sum_dgamma += d * h;  // before dx is written: dx may be dy's buffer (forwarded)
          sum_dbeta += d;
          scaled = d * g;
          const float mean_g = scaled.mean(), mean_gh = (scaled * h).mean();
          Elements<T>::Out(rstd_in[r] * (scaled - mean_g - h * mean_gh), dx_out + r * width, width);
        }
      }
    });
    Row dgamma_out(MutableData<float>(dgamma), width), dbeta_out(MutableData<float>(dbeta), width);
    dgamma_out.setZero();
    dbeta_out.setZero();
    for (int64_t block = 0; block < blocks; ++block) {
      dgamma_out += ConstRow(partial.data() + block * 2 * width, width);
      dbeta_out += ConstRow(partial.data() + block * 2 * width + width, width);
    }
  }
};

// ------------------------------------------------------------------------------------------------- dropout
// y = x / (1 - rate) where kept, else 0; the keep mask is returned packed 8 elements to a byte (bit i % 8 of byte
// i / 8), an eighth of a bool mask, and is all the gradient needs.
// Draws: each run takes a 64-bit key from Philox (TF's generator, seeded by the op's seed / seed2 attributes as
// TF's random ops are, so graph seeds make runs repeatable and every run draws afresh); element i's draw is the
// 16-bit slice i % 4 of SplitMix64(key + (i / 4 + 1) * golden gamma), SplittableRandom's output function, a
// counter-based generator that passes BigCrush, at two multiplies per four elements (Philox-4x32-10 takes twenty
// per eight), and vectorizable. Element i is kept when its draw is >= round(rate * 2^16): the drop probability
// is the rate to within 2^-17 (TF's float draws resolve 2^-23; the difference is far below any rate's meaning).
// Both directions work in words of 64 elements (8 mask bytes), so any split over threads gives the same result.

const int64_t kWord = 64;
const uint64_t kGoldenGamma = 0x9e3779b97f4a7c15ULL;

inline uint64_t SplitMix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Keep bits of 64 elements (bit j = element j) -> factor[j] = scale or 0.
inline void Factors(uint64_t keep, float scale, float* factor) {
#if defined(__AVX512F__)
  const __m512 scales = _mm512_set1_ps(scale);
  for (int q = 0; q < 4; ++q) {
    _mm512_storeu_ps(factor + 16 * q, _mm512_maskz_mov_ps(static_cast<__mmask16>(keep >> (16 * q)), scales));
  }
#else
  for (int j = 0; j < kWord; ++j) factor[j] = ((keep >> j) & 1) ? scale : 0.0f;
#endif
}

// The dropout of one run: its key, the 16-bit threshold and the keep scale.
struct DropoutDraws {
  uint64_t key;
  uint32_t threshold;
  float scale;

  DropoutDraws(tensorflow::GuardedPhiloxRandom* generator, float rate)
      : threshold(static_cast<uint32_t>(std::min(65535L, std::lround(double(rate) * 65536.0)))),
        scale(1.0f / (1.0f - rate)) {
    tensorflow::random::PhiloxRandom philox = generator->ReserveSamples128(1);
    const auto four = philox();
    key = (static_cast<uint64_t>(four[0]) << 32) | four[1];
  }

  // The keep bits of word ``word`` (elements word * 64 + j), factor[j] = scale or 0 for them, and their mask
  // bytes into bits[0 .. (count + 7) / 8).
  void Word(int64_t word, int64_t count, float* factor, uint8_t* bits) const {
    uint64_t draws[kWord / 4];  // 64 draws of 16 bits: draw j is bits 16 (j % 4) .. of draws[j / 4]
    const uint64_t counter = key + static_cast<uint64_t>(word) * (kWord / 4) * kGoldenGamma;
    for (int64_t k = 0; k < kWord / 4; ++k) draws[k] = SplitMix64(counter + (k + 1) * kGoldenGamma);
    uint16_t draw16[kWord];
    std::memcpy(draw16, draws, sizeof(draw16));  // little-endian: draw16[j] is draw j
    uint64_t keep = 0;
#if defined(__AVX512BW__)
    const __m512i thresholds = _mm512_set1_epi16(static_cast<int16_t>(static_cast<uint16_t>(threshold)));
    keep = static_cast<uint64_t>(_mm512_cmpge_epu16_mask(_mm512_loadu_si512(draw16), thresholds)) |
           (static_cast<uint64_t>(_mm512_cmpge_epu16_mask(_mm512_loadu_si512(draw16 + 32), thresholds)) << 32);
#else
    for (int j = 0; j < kWord; ++j) keep |= static_cast<uint64_t>(draw16[j] >= threshold) << j;
#endif
    Factors(keep, scale, factor);
    std::memcpy(bits, &keep, static_cast<size_t>((count + 7) / 8));
  }
};

// factor[j] = scale if element start + j is kept according to the packed mask, else 0 (start a multiple of 64).
inline void MaskFactors(const uint8_t* bits, int64_t start, int64_t count, float scale, float* factor) {
  uint64_t keep = 0;
  std::memcpy(&keep, bits + start / 8, static_cast<size_t>((count + 7) / 8));
  Factors(keep, scale, factor);
}

template <typename T>
class DropoutOp : public OpKernel {
 public:
  explicit DropoutOp(OpKernelConstruction* ctx) : OpKernel(ctx) { OP_REQUIRES_OK(ctx, generator_.Init(ctx)); }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const float rate = ctx->input(1).scalar<float>()();
    OP_REQUIRES(ctx, rate >= 0.0f && rate < 1.0f, InvalidArgument("TfMrcDropout: rate must be in [0, 1)"));
    const int64_t n = x.NumElements();
    Tensor *y = nullptr, *mask = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({(n + 7) / 8}), &mask));
    const DropoutDraws draws(&generator_, rate);
    const T* in = Data<T>(x);
    T* out = MutableData<T>(y);
    uint8_t* bits = MutableData<uint8_t>(mask);
    Parallel(ctx, (n + kWord - 1) / kWord, kWord * 4, [&](int64_t begin, int64_t end) {
      Array factor(kWord), scratch;
      for (int64_t word = begin; word < end; ++word) {
        const int64_t start = word * kWord, count = std::min<int64_t>(kWord, n - start);
        draws.Word(word, count, factor.data(), bits + start / 8);
        Elements<T>::Out(Elements<T>::In(in + start, count, &scratch) * factor.head(count), out + start, count);
      }
    });
  }

 private:
  tensorflow::GuardedPhiloxRandom generator_;
};

template <typename T>
class DropoutGradOp : public OpKernel {
 public:
  explicit DropoutGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& mask = ctx->input(1);
    const float rate = ctx->input(2).scalar<float>()();
    const int64_t n = dy.NumElements();
    OP_REQUIRES(ctx, mask.NumElements() == (n + 7) / 8,
                InvalidArgument("TfMrcDropoutGrad: the mask does not match dy's size"));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, dy.shape(), &dx));
    const float scale = 1.0f / (1.0f - rate);
    const T* in = Data<T>(dy);
    const uint8_t* bits = Data<uint8_t>(mask);
    T* out = MutableData<T>(dx);
    Parallel(ctx, (n + kWord - 1) / kWord, kWord * 2, [&](int64_t begin, int64_t end) {
      Array factor(kWord), scratch;
      for (int64_t word = begin; word < end; ++word) {
        const int64_t start = word * kWord, count = std::min<int64_t>(kWord, n - start);
        MaskFactors(bits, start, count, scale, factor.data());
        Elements<T>::Out(Elements<T>::In(in + start, count, &scratch) * factor.head(count), out + start, count);
      }
    });
  }
};

// --------------------------------------------------------------------------- masked softmax + dropout
// The attention probabilities and their dropout in one pass per row: outputs dropped = dropout(probs), probs and
// the packed mask, with exactly TfMrcMaskedSoftmax's probabilities and TfMrcDropout's draws for the same
// elements (so the gradient may recompute dropped from probs and the mask with TfMrcDropoutGrad). Rows must be a
// multiple of 64 keys long (whole mask words per row; the Python side checks). The gradient, from the dropped
// probabilities' gradient: dp = ddropped * mask / (1 - rate); dscores = scale * p * (dp - sum(dp * p)).

template <typename T>
class MaskedSoftmaxDropoutOp : public OpKernel {
 public:
  explicit MaskedSoftmaxDropoutOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, generator_.Init(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& scores = ctx->input(0);
    const Tensor& bias = ctx->input(1);
    const float scale = ctx->input(2).scalar<float>()();
    const float rate = ctx->input(3).scalar<float>()();
    OP_REQUIRES(ctx, rate >= 0.0f && rate < 1.0f,
                InvalidArgument("TfMrcMaskedSoftmaxDropout: rate must be in [0, 1)"));
    BiasRows bias_rows;
    OP_REQUIRES_OK(ctx, bias_rows.Init(scores, bias));
    const int64_t keys = scores.dim_size(3), n = scores.NumElements();
    OP_REQUIRES(ctx, keys % kWord == 0, InvalidArgument("TfMrcMaskedSoftmaxDropout: keys must be a multiple of 64"));
    Tensor *dropped = nullptr, *probs = nullptr, *mask = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, scores.shape(), &dropped));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, scores.shape(), &probs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({(n + 7) / 8}), &mask));
    const DropoutDraws draws(&generator_, rate);
    const T* in = Data<T>(scores);
    const float* bias_in = Data<float>(bias);
    T* dropped_out = MutableData<T>(dropped);
    T* probs_out = MutableData<T>(probs);
    uint8_t* bits = MutableData<uint8_t>(mask);
    Parallel(ctx, keys ? n / keys : 0, keys * 40, [&](int64_t begin, int64_t end) {
      Array scratch, p, factor(keys);
      for (int64_t r = begin; r < end; ++r) {
        ConstRow s = Elements<T>::In(in + r * keys, keys, &scratch);
        p = s * scale + ConstRow(bias_in + bias_rows.Offset(r), keys);
        p = (p - p.maxCoeff()).exp();
        Elements<T>::Out(p * (1.0f / p.sum()), probs_out + r * keys, keys);
        ConstRow stored = Elements<T>::In(probs_out + r * keys, keys, &scratch);  // as rounded to T
        for (int64_t w = 0; w < keys / kWord; ++w) {
          const int64_t start = r * keys + w * kWord;
          draws.Word(start / kWord, kWord, factor.data() + w * kWord, bits + start / 8);
        }
        Elements<T>::Out(stored * factor, dropped_out + r * keys, keys);
      }
    });
  }

 private:
  tensorflow::GuardedPhiloxRandom generator_;
};

template <typename T>
class MaskedSoftmaxDropoutGradOp : public OpKernel {
 public:
  explicit MaskedSoftmaxDropoutGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& ddropped = ctx->input(0);
    const Tensor& probs = ctx->input(1);
    const Tensor& mask = ctx->input(2);
    const float rate = ctx->input(3).scalar<float>()();
    const float scale = ctx->input(4).scalar<float>()();
    const int64_t n = probs.NumElements();
    OP_REQUIRES(ctx, ddropped.shape() == probs.shape() && probs.dims() >= 1 && mask.NumElements() == (n + 7) / 8,
                InvalidArgument("TfMrcMaskedSoftmaxDropoutGrad: shapes do not match"));
    const int64_t keys = probs.dim_size(probs.dims() - 1);
    OP_REQUIRES(ctx, keys % kWord == 0,
                InvalidArgument("TfMrcMaskedSoftmaxDropoutGrad: keys must be a multiple of 64"));
    Tensor* dscores = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, probs.shape(), &dscores));
    const float keep_scale = 1.0f / (1.0f - rate);
    const T* dd_in = Data<T>(ddropped);
    const T* p_in = Data<T>(probs);
    const uint8_t* bits = Data<uint8_t>(mask);
    T* out = MutableData<T>(dscores);
    Parallel(ctx, keys ? n / keys : 0, keys * 10, [&](int64_t begin, int64_t end) {
      Array dd_scratch, p_scratch, dp, factor(keys);
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t w = 0; w < keys / kWord; ++w) {
          MaskFactors(bits, r * keys + w * kWord, kWord, keep_scale, factor.data() + w * kWord);
        }
        dp = Elements<T>::In(dd_in + r * keys, keys, &dd_scratch) * factor;
        ConstRow p = Elements<T>::In(p_in + r * keys, keys, &p_scratch);
        const float dot = (dp * p).sum();
        Elements<T>::Out((scale * p) * (dp - dot), out + r * keys, keys);
      }
    });
  }
};

// ------------------------------------------------------------------------------------------- global norm
// sum of g^2 over every element of every input: the global norm's square in one op instead of an L2Loss per
// gradient and their sum. The elements of all inputs are cut into fixed blocks, summed per block in float, and
// the block sums added in block order in double: the result does not depend on the thread count.

class SumOfSquaresOp : public OpKernel {
 public:
  explicit SumOfSquaresOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const int64_t block = 1 << 16;
    std::vector<std::pair<int, int64_t>> blocks;  // (input, first element)
    for (int i = 0; i < ctx->num_inputs(); ++i) {
      for (int64_t start = 0; start < ctx->input(i).NumElements(); start += block) blocks.emplace_back(i, start);
    }
    std::vector<double> sums(blocks.size(), 0.0);
    Parallel(ctx, static_cast<int64_t>(blocks.size()), block * 2, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const Tensor& input = ctx->input(blocks[b].first);
        const int64_t start = blocks[b].second, n = std::min<int64_t>(block, input.NumElements() - start);
        sums[b] = ConstRow(Data<float>(input) + start, n).square().sum();
      }
    });
    Tensor* total = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &total));
    double sum = 0.0;
    for (double part : sums) sum += part;
    total->scalar<float>()() = static_cast<float>(sum);
  }
};

// ---------------------------------------------------------------------------------------------------- AdamW
// One pass per variable of google BERT's AdamWeightDecay with the clipping multiply folded in:
//   g = grad * grad_scale; m += (g - m)(1 - beta1); v += (g^2 - v)(1 - beta2);
//   var -= decay * var; var -= lr * m / (sqrt(v) + epsilon)
// the same operations in the same order as training.py's composite path (clip multiply, ApplyGradientDescent
// with delta = var, ApplyAdam with beta powers 0). ``decay`` is lr * weight_decay_rate, 0 for excluded variables.
// Two ops of one kernel: TfMrcApplyAdamWRef takes reference variables (updated in place, as ApplyAdam updates
// them), TfMrcApplyAdamW resource variables (a buffer some other tensor still shares is copied first, as TF's own
// apply ops do, so no reader sees a half-updated value). TF 1.13 does not let an op library ask whether a buffer
// is shared (Tensor::RefCountIsOne is private there), so the resource form exists on TF 2 only.

#if TF_MAJOR_VERSION >= 2
tensorflow::Status ResourceData(OpKernelContext* ctx, int input, int64_t size, float** data) {
  tensorflow::Var* var = nullptr;
  TF_RETURN_IF_ERROR(tensorflow::LookupResource(ctx, tensorflow::HandleFromInput(ctx, input), &var));
  tensorflow::core::ScopedUnref unref(var);
  Tensor* value = var->tensor();
  if (!value->IsInitialized() || value->dtype() != tensorflow::DT_FLOAT || value->NumElements() != size) {
    return InvalidArgument("TfMrcApplyAdamW: input ", input, " is not an initialized float variable of ", size,
                           " elements");
  }
  if (!value->RefCountIsOne()) {
    Tensor copy;
    TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_FLOAT, value->shape(), &copy));
    std::memcpy(copy.flat<float>().data(), value->flat<float>().data(), sizeof(float) * size);
    *value = copy;
  }
  *data = value->flat<float>().data();  // the variable keeps its buffer alive after the Unref of the lookup
  return tensorflow::Status();
}
#endif

tensorflow::Status RefData(OpKernelContext* ctx, int input, int64_t size, float** data) {
  Tensor value = ctx->mutable_input(input, false);
  if (!value.IsInitialized() || value.NumElements() != size) {
    return InvalidArgument("TfMrcApplyAdamWRef: input ", input, " is not an initialized variable of ", size,
                           " elements");
  }
  *data = value.flat<float>().data();
  return tensorflow::Status();
}

template <tensorflow::Status (*Data)(OpKernelContext*, int, int64_t, float**)>
class ApplyAdamWOp : public OpKernel {
 public:
  explicit ApplyAdamWOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(3);
    const int64_t n = grad.NumElements();
    float *w = nullptr, *m = nullptr, *v = nullptr;
    OP_REQUIRES_OK(ctx, Data(ctx, 0, n, &w));
    OP_REQUIRES_OK(ctx, Data(ctx, 1, n, &m));
    OP_REQUIRES_OK(ctx, Data(ctx, 2, n, &v));
    const float lr = ctx->input(4).scalar<float>()();
    const float decay = ctx->input(5).scalar<float>()();
    const float grad_scale = ctx->input(6).scalar<float>()();
    const float one_minus_beta1 = 1.0f - ctx->input(7).scalar<float>()();
    const float one_minus_beta2 = 1.0f - ctx->input(8).scalar<float>()();
    const float epsilon = ctx->input(9).scalar<float>()();
    const float* g_in = grad.flat<float>().data();
    // Captured by value: a scalar read through a reference could alias the stores, which keeps the loop scalar.
    Parallel(ctx, n, 24, [=](int64_t begin, int64_t end) {
      const float* __restrict gg = g_in;
      float* __restrict ww = w;
      float* __restrict mm = m;
      float* __restrict vv = v;
      const float scale = grad_scale, rate = lr, decay_rate = decay, b1 = one_minus_beta1, b2 = one_minus_beta2,
                  eps = epsilon;
      for (int64_t i = begin; i < end; ++i) {
        const float g = gg[i] * scale;
        const float m_new = mm[i] + (g - mm[i]) * b1;
        const float v_new = vv[i] + (g * g - vv[i]) * b2;
        mm[i] = m_new;
        vv[i] = v_new;
        const float decayed = ww[i] - decay_rate * ww[i];
        ww[i] = decayed - (m_new * rate) / (std::sqrt(v_new) + eps);
      }
    });
  }
};

}  // namespace tf_mrc

// -------------------------------------------------------------------------------------------- registrations
using tensorflow::Status;
using tensorflow::shape_inference::InferenceContext;

// Outputs 0 .. kMask - 1 have input 0's shape; output kMask is its packed keep mask, a byte per 8 elements.
template <int kMask>
Status ShapesWithMask(InferenceContext* c) {
  for (int i = 0; i < kMask; ++i) c->set_output(i, c->input(0));
  int64_t size = c->kUnknownDim;
  if (c->FullyDefined(c->input(0))) {
    size = 1;
    for (int i = 0; i < c->Rank(c->input(0)); ++i) size *= c->Value(c->Dim(c->input(0), i));
    size = (size + 7) / 8;
  }
  c->set_output(kMask, c->Vector(size));
  return Status();
}

REGISTER_OP("TfMrcGelu")
    .Input("x: T")
    .Output("y: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .Attr("form: {'tanh', 'erf', 'sigmoid'}")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TfMrcGeluGrad")
    .Input("dy: T")
    .Input("x: T")
    .Output("dx: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .Attr("form: {'tanh', 'erf', 'sigmoid'}")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TfMrcMaskedSoftmax")
    .Input("scores: T")
    .Input("bias: float")
    .Input("scale: float")
    .Output("probs: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TfMrcMaskedSoftmaxGrad")
    .Input("dprobs: T")
    .Input("probs: T")
    .Input("scale: float")
    .Output("dscores: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TfMrcLayerNorm")
    .Input("inputs: Tinputs")
    .Output("y: float")
    .Output("xhat: float")
    .Output("rstd: float")
    .Attr("Tinputs: list({float, bfloat16}) >= 3")
    .Attr("epsilon: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(0));
      tensorflow::shape_inference::ShapeHandle rows;
      TF_RETURN_IF_ERROR(c->Subshape(c->input(0), 0, -1, &rows));
      c->set_output(2, rows);
      return Status();
    });
REGISTER_OP("TfMrcLayerNormGrad")
    .Input("dy: float")
    .Input("xhat: float")
    .Input("rstd: float")
    .Input("gamma: float")
    .Output("dx: T")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(3));
      c->set_output(2, c->input(3));
      return Status();
    });
REGISTER_OP("TfMrcDropout")
    .Input("x: T")
    .Input("rate: float")
    .Output("y: T")
    .Output("mask: uint8")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .Attr("seed: int = 0")
    .Attr("seed2: int = 0")
    .SetIsStateful()
    .SetShapeFn(ShapesWithMask<1>);
REGISTER_OP("TfMrcMaskedSoftmaxDropout")
    .Input("scores: T")
    .Input("bias: float")
    .Input("scale: float")
    .Input("rate: float")
    .Output("dropped: T")
    .Output("probs: T")
    .Output("mask: uint8")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .Attr("seed: int = 0")
    .Attr("seed2: int = 0")
    .SetIsStateful()
    .SetShapeFn(ShapesWithMask<2>);
REGISTER_OP("TfMrcMaskedSoftmaxDropoutGrad")
    .Input("ddropped: T")
    .Input("probs: T")
    .Input("mask: uint8")
    .Input("rate: float")
    .Input("scale: float")
    .Output("dscores: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TfMrcDropoutGrad")
    .Input("dy: T")
    .Input("mask: uint8")
    .Input("rate: float")
    .Output("dx: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TfMrcSumOfSquares")
    .Input("inputs: N * float")
    .Output("sum: float")
    .Attr("N: int >= 1")
    .SetShapeFn(tensorflow::shape_inference::ScalarShape);
#if TF_MAJOR_VERSION >= 2
REGISTER_OP("TfMrcApplyAdamW")
    .Input("var: resource")
    .Input("m: resource")
    .Input("v: resource")
    .Input("grad: float")
    .Input("lr: float")
    .Input("decay: float")
    .Input("grad_scale: float")
    .Input("beta1: float")
    .Input("beta2: float")
    .Input("epsilon: float")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::NoOutputs);
#endif
REGISTER_OP("TfMrcApplyAdamWRef")
    .Input("var: Ref(float)")
    .Input("m: Ref(float)")
    .Input("v: Ref(float)")
    .Input("grad: float")
    .Input("lr: float")
    .Input("decay: float")
    .Input("grad_scale: float")
    .Input("beta1: float")
    .Input("beta2: float")
    .Input("epsilon: float")
    .SetShapeFn(tensorflow::shape_inference::NoOutputs);

// TfMrcLayerNorm's inputs are a typed list (x [, residual] of one type, gamma and beta float32): one kernel that
// dispatches on x's type.
#define TF_MRC_ELEMENTWISE_KERNELS(TYPE, RAW)                                                                     \
  REGISTER_KERNEL_BUILDER(Name("TfMrcGelu").Device(DEVICE_CPU).TypeConstraint<TYPE>("T"), tf_mrc::GeluOp<RAW>); \
  REGISTER_KERNEL_BUILDER(Name("TfMrcGeluGrad").Device(DEVICE_CPU).TypeConstraint<TYPE>("T"),                    \
                          tf_mrc::GeluGradOp<RAW>);                                                              \
  REGISTER_KERNEL_BUILDER(Name("TfMrcMaskedSoftmax").Device(DEVICE_CPU).TypeConstraint<TYPE>("T"),               \
                          tf_mrc::MaskedSoftmaxOp<RAW>);                                                         \
  REGISTER_KERNEL_BUILDER(Name("TfMrcMaskedSoftmaxGrad").Device(DEVICE_CPU).TypeConstraint<TYPE>("T"),           \
                          tf_mrc::MaskedSoftmaxGradOp<RAW>);                                                     \
  REGISTER_KERNEL_BUILDER(Name("TfMrcLayerNormGrad").Device(DEVICE_CPU).TypeConstraint<TYPE>("T"),               \
                          tf_mrc::LayerNormGradOp<RAW>);                                                         \
  REGISTER_KERNEL_BUILDER(Name("TfMrcDropout").Device(DEVICE_CPU).TypeConstraint<TYPE>("T"),                     \
                          tf_mrc::DropoutOp<RAW>);                                                               \
  REGISTER_KERNEL_BUILDER(Name("TfMrcDropoutGrad").Device(DEVICE_CPU).TypeConstraint<TYPE>("T"),                 \
                          tf_mrc::DropoutGradOp<RAW>);                                                           \
  REGISTER_KERNEL_BUILDER(Name("TfMrcMaskedSoftmaxDropout").Device(DEVICE_CPU).TypeConstraint<TYPE>("T"),        \
                          tf_mrc::MaskedSoftmaxDropoutOp<RAW>);                                                  \
  REGISTER_KERNEL_BUILDER(Name("TfMrcMaskedSoftmaxDropoutGrad").Device(DEVICE_CPU).TypeConstraint<TYPE>("T"),    \
                          tf_mrc::MaskedSoftmaxDropoutGradOp<RAW>);

using tensorflow::DEVICE_CPU;
TF_MRC_ELEMENTWISE_KERNELS(float, float)
REGISTER_KERNEL_BUILDER(Name("TfMrcLayerNorm").Device(DEVICE_CPU), tf_mrc::LayerNormOp);
REGISTER_KERNEL_BUILDER(Name("TfMrcSumOfSquares").Device(DEVICE_CPU), tf_mrc::SumOfSquaresOp);
#if TF_MAJOR_VERSION >= 2
TF_MRC_ELEMENTWISE_KERNELS(tensorflow::bfloat16, tf_mrc::bf16)
#endif
#if TF_MAJOR_VERSION >= 2
REGISTER_KERNEL_BUILDER(Name("TfMrcApplyAdamW").Device(tensorflow::DEVICE_CPU),
                        tf_mrc::ApplyAdamWOp<tf_mrc::ResourceData>);
#endif
REGISTER_KERNEL_BUILDER(Name("TfMrcApplyAdamWRef").Device(tensorflow::DEVICE_CPU),
                        tf_mrc::ApplyAdamWOp<tf_mrc::RefData>);
