// tf_mrc's native CPU kernels: the memory-lean ops of tf_mrc/ops/fused.py, each forward and each backward one
// pass over memory instead of a chain of stock elementwise ops, plus dropout with a bit mask and AdamW in one pass
// per variable. Built on the user's machine by tf_mrc/ops/native/__init__.py (g++ against the installed TF's
// headers, TF 1.13 and 2.x alike) and used only for float32 on CPU; everything here has a composite twin in
// fused.py / training.py that the tests compare it with.
//
// Parallelism: every kernel splits its rows or elements over TF's intra-op thread pool (Shard); within a range,
// arithmetic runs on Eigen arrays (vectorized exp / tanh) or in plain loops the compiler vectorizes.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

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
namespace shape_inference = tensorflow::shape_inference;

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

void GeluChunk(GeluForm form, const float* in, float* out, int64_t n) {
  ConstRow x(in, n);
  Row y(out, n);
  if (form == kTanh) {
    y = x / (1.0f + (-2.0f * kSqrt2OverPi * (x + kTanhCubic * x.cube())).exp());
  } else if (form == kSigmoid) {
    y = x / (1.0f + (-kSigmoidSlope * x).exp());
  } else {
    Array cdf, density;
    NormalCdf(x, &cdf, &density);
    y = x * cdf;
  }
}

void GeluGradChunk(GeluForm form, const float* dy_in, const float* x_in, float* out, int64_t n) {
  ConstRow dy(dy_in, n), x(x_in, n);
  Row dx(out, n);
  if (form == kTanh) {
    Array s = 1.0f / (1.0f + (-2.0f * kSqrt2OverPi * (x + kTanhCubic * x.cube())).exp());
    dx = dy * (s + 2.0f * kSqrt2OverPi * x * s * (1.0f - s) * (1.0f + 3.0f * kTanhCubic * x.square()));
  } else if (form == kSigmoid) {
    Array s = 1.0f / (1.0f + (-kSigmoidSlope * x).exp());
    dx = dy * s * (1.0f + kSigmoidSlope * x * (1.0f - s));
  } else {
    Array cdf, density;
    NormalCdf(x, &cdf, &density);
    dx = dy * (cdf + x * kInvSqrt2Pi * density);
  }
}

class GeluOp : public OpKernel {
 public:
  explicit GeluOp(OpKernelConstruction* ctx) : OpKernel(ctx), form_(ReadForm(ctx)) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    const float* in = x.flat<float>().data();
    float* out = y->flat<float>().data();
    const GeluForm form = form_;
    Parallel(ctx, (x.NumElements() + kChunk - 1) / kChunk, kChunk * 40, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t start = c * kChunk, n = std::min<int64_t>(kChunk, x.NumElements() - start);
        GeluChunk(form, in + start, out + start, n);
      }
    });
  }

 private:
  GeluForm form_;
};

class GeluGradOp : public OpKernel {
 public:
  explicit GeluGradOp(OpKernelConstruction* ctx) : OpKernel(ctx), form_(ReadForm(ctx)) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    OP_REQUIRES(ctx, dy.shape() == x.shape(), InvalidArgument("TfMrcGeluGrad: dy and x differ in shape"));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    const float* dy_in = dy.flat<float>().data();
    const float* x_in = x.flat<float>().data();
    float* out = dx->flat<float>().data();
    const GeluForm form = form_;
    Parallel(ctx, (x.NumElements() + kChunk - 1) / kChunk, kChunk * 60, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t start = c * kChunk, n = std::min<int64_t>(kChunk, x.NumElements() - start);
        GeluGradChunk(form, dy_in + start, x_in + start, out + start, n);
      }
    });
  }

 private:
  GeluForm form_;
};

// ------------------------------------------------------------------------------------------ masked softmax
// probs = softmax(scores * scale + bias) over the last axis; scores [B, N, Tq, Tk], bias [B', N', Tq', Tk] with
// each of B', N', Tq' either 1 (broadcast) or equal to the scores' dimension (attention masks are [B, 1, 1, Tk]
// or [B, 1, Tq, Tk]). The gradient keeps only probs: dscores = scale * p * (dp - sum(dp * p)).

class MaskedSoftmaxOp : public OpKernel {
 public:
  explicit MaskedSoftmaxOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& scores = ctx->input(0);
    const Tensor& bias = ctx->input(1);
    const Tensor& scale_tensor = ctx->input(2);
    OP_REQUIRES(ctx, scores.dims() == 4 && bias.dims() == 4,
                InvalidArgument("TfMrcMaskedSoftmax: scores and bias must be 4-D"));
    int64_t bias_stride[3];
    int64_t stride = bias.dim_size(3);
    OP_REQUIRES(ctx, bias.dim_size(3) == scores.dim_size(3),
                InvalidArgument("TfMrcMaskedSoftmax: bias and scores differ in their last dimension"));
    for (int d = 2; d >= 0; --d) {
      OP_REQUIRES(ctx, bias.dim_size(d) == 1 || bias.dim_size(d) == scores.dim_size(d),
                  InvalidArgument("TfMrcMaskedSoftmax: bias does not broadcast to scores"));
      bias_stride[d] = bias.dim_size(d) == 1 ? 0 : stride;
      stride *= bias.dim_size(d);
    }
    Tensor* probs = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, scores.shape(), &probs));
    const float scale = scale_tensor.scalar<float>()();
    const int64_t heads = scores.dim_size(1), queries = scores.dim_size(2), keys = scores.dim_size(3);
    const int64_t rows = scores.NumElements() / std::max<int64_t>(keys, 1);
    const float* in = scores.flat<float>().data();
    const float* bias_in = bias.flat<float>().data();
    float* out = probs->flat<float>().data();
    Parallel(ctx, rows, keys * 30, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t q = r % queries, n = (r / queries) % heads, b = r / (queries * heads);
        ConstRow s(in + r * keys, keys);
        ConstRow m(bias_in + b * bias_stride[0] + n * bias_stride[1] + q * bias_stride[2], keys);
        Row p(out + r * keys, keys);
        p = s * scale + m;
        p = (p - p.maxCoeff()).exp();
        p *= 1.0f / p.sum();
      }
    });
  }
};

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
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, probs.shape(), &dscores));
    const int64_t keys = probs.dims() ? probs.dim_size(probs.dims() - 1) : 1;
    const int64_t rows = probs.NumElements() / std::max<int64_t>(keys, 1);
    const float* dp_in = dprobs.flat<float>().data();
    const float* p_in = probs.flat<float>().data();
    float* out = dscores->flat<float>().data();
    Parallel(ctx, rows, keys * 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        ConstRow dp(dp_in + r * keys, keys), p(p_in + r * keys, keys);
        Row dx(out + r * keys, keys);
        const float dot = (dp * p).sum();
        dx = (scale * p) * (dp - dot);
      }
    });
  }
};

// ------------------------------------------------------------------------------------- LayerNorm (+ residual)
// y = xhat * gamma + beta with xhat = (t - mean(t)) / sqrt(var(t) + epsilon), t = x (+ residual), over the last
// axis; the inputs are [x, residual, gamma, beta] or [x, gamma, beta]. Outputs y, xhat and rstd = 1 / sqrt(var + epsilon) per row: the gradient needs only xhat and rstd.

class LayerNormOp : public OpKernel {
 public:
  explicit LayerNormOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, ctx->num_inputs() <= 4, InvalidArgument("TfMrcLayerNorm: 3 or 4 inputs"));
    const bool with_residual = ctx->num_inputs() == 4;  // [x, residual, gamma, beta] or [x, gamma, beta]
    const int first_param = with_residual ? 2 : 1;
    const Tensor& gamma = ctx->input(first_param);
    const Tensor& beta = ctx->input(first_param + 1);
    OP_REQUIRES(ctx, x.dims() >= 1, InvalidArgument("TfMrcLayerNorm: x must have a last axis"));
    const int64_t width = x.dim_size(x.dims() - 1);
    OP_REQUIRES(ctx, gamma.NumElements() == width && beta.NumElements() == width,
                InvalidArgument("TfMrcLayerNorm: gamma and beta must have the last axis' size"));
    const float* residual = nullptr;
    if (with_residual) {
      OP_REQUIRES(ctx, ctx->input(1).shape() == x.shape(),
                  InvalidArgument("TfMrcLayerNorm: x and residual differ in shape"));
      residual = ctx->input(1).flat<float>().data();
    }
    const int64_t rows = width ? x.NumElements() / width : 0;
    Tensor *y = nullptr, *xhat = nullptr, *rstd = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, x.shape(), &xhat));
    TensorShape row_shape = x.shape();
    row_shape.RemoveLastDims(1);
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, row_shape, &rstd));
    const float* in = x.flat<float>().data();
    ConstRow g(gamma.flat<float>().data(), width), b(beta.flat<float>().data(), width);
    float* y_out = y->flat<float>().data();
    float* xhat_out = xhat->flat<float>().data();
    float* rstd_out = rstd->flat<float>().data();
    const float epsilon = epsilon_;
    Parallel(ctx, rows, width * 12, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        Row normalized(xhat_out + r * width, width);
        if (residual != nullptr) {
          normalized = ConstRow(in + r * width, width) + ConstRow(residual + r * width, width);
        } else {
          normalized = ConstRow(in + r * width, width);
        }
        normalized -= normalized.mean();
        const float inverse = 1.0f / std::sqrt(normalized.square().mean() + epsilon);
        normalized *= inverse;
        rstd_out[r] = inverse;
        Row(y_out + r * width, width) = normalized * g + b;
      }
    });
  }

 private:
  float epsilon_;
};

// dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy gamma; dgamma = sum over rows of dy xhat; dbeta = sum
// of dy. Rows are split into fixed blocks, each summing dgamma / dbeta into its own slot, then the slots are added
// in block order: the result does not depend on the thread count.
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
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, dy.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gamma.shape(), &dbeta));
    const int64_t block_rows = 64;
    const int64_t blocks = (rows + block_rows - 1) / block_rows;
    std::vector<float> partial(static_cast<size_t>(std::max<int64_t>(blocks, 1) * 2 * width), 0.0f);
    const float* dy_in = dy.flat<float>().data();
    const float* xhat_in = xhat.flat<float>().data();
    const float* rstd_in = rstd.flat<float>().data();
    ConstRow g(gamma.flat<float>().data(), width);
    float* dx_out = dx->flat<float>().data();
    Parallel(ctx, blocks, block_rows * width * 16, [&](int64_t begin, int64_t end) {
      Array scaled(width);
      for (int64_t block = begin; block < end; ++block) {
        Row sum_dgamma(partial.data() + block * 2 * width, width);
        Row sum_dbeta(partial.data() + block * 2 * width + width, width);
        for (int64_t r = block * block_rows; r < std::min<int64_t>(rows, (block + 1) * block_rows); ++r) {
          ConstRow d(dy_in + r * width, width), h(xhat_in + r * width, width);
          scaled = d * g;
          const float mean_g = scaled.mean(), mean_gh = (scaled * h).mean();
          Row(dx_out + r * width, width) = rstd_in[r] * (scaled - mean_g - h * mean_gh);
          sum_dgamma += d * h;
          sum_dbeta += d;
        }
      }
    });
    Row dgamma_out(dgamma->flat<float>().data(), width), dbeta_out(dbeta->flat<float>().data(), width);
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

const int64_t kWord = 64;
const uint64_t kGoldenGamma = 0x9e3779b97f4a7c15ULL;

inline uint64_t SplitMix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class DropoutOp : public OpKernel {
 public:
  explicit DropoutOp(OpKernelConstruction* ctx) : OpKernel(ctx) { OP_REQUIRES_OK(ctx, generator_.Init(ctx)); }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const float rate = ctx->input(1).scalar<float>()();
    OP_REQUIRES(ctx, rate >= 0.0f && rate < 1.0f, InvalidArgument("TfMrcDropout: rate must be in [0, 1)"));
    const int64_t n = x.NumElements();
    Tensor *y = nullptr, *mask = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({(n + 7) / 8}), &mask));
    tensorflow::random::PhiloxRandom philox = generator_.ReserveSamples128(1);
    const auto four = philox();
    const uint64_t key = (static_cast<uint64_t>(four[0]) << 32) | four[1];
    const uint32_t threshold = static_cast<uint32_t>(std::lround(double(rate) * 65536.0));
    const float scale = 1.0f / (1.0f - rate);
    const float* in = x.flat<float>().data();
    float* out = y->flat<float>().data();
    uint8_t* bits = mask->flat<uint8_t>().data();
    Parallel(ctx, (n + kWord - 1) / kWord, kWord * 4, [&](int64_t begin, int64_t end) {
      uint64_t draws[kWord / 4];
      float factor[kWord];
      for (int64_t word = begin; word < end; ++word) {
        const uint64_t counter = key + static_cast<uint64_t>(word) * (kWord / 4) * kGoldenGamma;
        for (int64_t k = 0; k < kWord / 4; ++k) draws[k] = SplitMix64(counter + (k + 1) * kGoldenGamma);
        for (int64_t j = 0; j < kWord; ++j) {
          factor[j] = static_cast<uint32_t>((draws[j >> 2] >> (16 * (j & 3))) & 0xffff) >= threshold ? scale : 0.0f;
        }
        const int64_t start = word * kWord, count = std::min<int64_t>(kWord, n - start);
        for (int64_t j = 0; j < count; ++j) out[start + j] = in[start + j] * factor[j];
        for (int64_t byte = 0; byte < (count + 7) / 8; ++byte) {
          uint8_t packed = 0;
          for (int j = 0; j < 8; ++j) packed |= static_cast<uint8_t>(factor[8 * byte + j] != 0.0f) << j;
          bits[start / 8 + byte] = packed;
        }
      }
    });
  }

 private:
  tensorflow::GuardedPhiloxRandom generator_;
};

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
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, dy.shape(), &dx));
    const float scale = 1.0f / (1.0f - rate);
    const float* in = dy.flat<float>().data();
    const uint8_t* bits = mask.flat<uint8_t>().data();
    float* out = dx->flat<float>().data();
    Parallel(ctx, (n + 7) / 8, 8 * 2, [&](int64_t begin, int64_t end) {
      for (int64_t byte = begin; byte < end; ++byte) {
        const int64_t start = byte * 8, count = std::min<int64_t>(8, n - start);
        for (int64_t j = 0; j < count; ++j) out[start + j] = ((bits[byte] >> j) & 1) ? in[start + j] * scale : 0.0f;
      }
    });
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
    Parallel(ctx, n, 24, [&](int64_t begin, int64_t end) {
      const float* __restrict gg = g_in;
      float* __restrict ww = w;
      float* __restrict mm = m;
      float* __restrict vv = v;
      for (int64_t i = begin; i < end; ++i) {
        const float g = gg[i] * grad_scale;
        const float m_new = mm[i] + (g - mm[i]) * one_minus_beta1;
        const float v_new = vv[i] + (g * g - vv[i]) * one_minus_beta2;
        mm[i] = m_new;
        vv[i] = v_new;
        const float decayed = ww[i] - decay * ww[i];
        ww[i] = decayed - (m_new * lr) / (std::sqrt(v_new) + epsilon);
      }
    });
  }
};

}  // namespace tf_mrc

// -------------------------------------------------------------------------------------------- registrations
using tensorflow::Status;
using tensorflow::shape_inference::InferenceContext;

REGISTER_OP("TfMrcGelu")
    .Input("x: float")
    .Output("y: float")
    .Attr("form: {'tanh', 'erf', 'sigmoid'}")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TfMrcGeluGrad")
    .Input("dy: float")
    .Input("x: float")
    .Output("dx: float")
    .Attr("form: {'tanh', 'erf', 'sigmoid'}")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TfMrcMaskedSoftmax")
    .Input("scores: float")
    .Input("bias: float")
    .Input("scale: float")
    .Output("probs: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TfMrcMaskedSoftmaxGrad")
    .Input("dprobs: float")
    .Input("probs: float")
    .Input("scale: float")
    .Output("dscores: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TfMrcLayerNorm")
    .Input("inputs: N * float")
    .Output("y: float")
    .Output("xhat: float")
    .Output("rstd: float")
    .Attr("N: int >= 3")
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
    .Output("dx: float")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(3));
      c->set_output(2, c->input(3));
      return Status();
    });
REGISTER_OP("TfMrcDropout")
    .Input("x: float")
    .Input("rate: float")
    .Output("y: float")
    .Output("mask: uint8")
    .Attr("seed: int = 0")
    .Attr("seed2: int = 0")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      int64_t size = c->kUnknownDim;
      if (c->FullyDefined(c->input(0))) {
        size = 1;
        for (int i = 0; i < c->Rank(c->input(0)); ++i) size *= c->Value(c->Dim(c->input(0), i));
        size = (size + 7) / 8;
      }
      c->set_output(1, c->Vector(size));
      return Status();
    });
REGISTER_OP("TfMrcDropoutGrad")
    .Input("dy: float")
    .Input("mask: uint8")
    .Input("rate: float")
    .Output("dx: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
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

REGISTER_KERNEL_BUILDER(Name("TfMrcGelu").Device(tensorflow::DEVICE_CPU), tf_mrc::GeluOp);
REGISTER_KERNEL_BUILDER(Name("TfMrcGeluGrad").Device(tensorflow::DEVICE_CPU), tf_mrc::GeluGradOp);
REGISTER_KERNEL_BUILDER(Name("TfMrcMaskedSoftmax").Device(tensorflow::DEVICE_CPU), tf_mrc::MaskedSoftmaxOp);
REGISTER_KERNEL_BUILDER(Name("TfMrcMaskedSoftmaxGrad").Device(tensorflow::DEVICE_CPU), tf_mrc::MaskedSoftmaxGradOp);
REGISTER_KERNEL_BUILDER(Name("TfMrcLayerNorm").Device(tensorflow::DEVICE_CPU), tf_mrc::LayerNormOp);
REGISTER_KERNEL_BUILDER(Name("TfMrcLayerNormGrad").Device(tensorflow::DEVICE_CPU), tf_mrc::LayerNormGradOp);
REGISTER_KERNEL_BUILDER(Name("TfMrcDropout").Device(tensorflow::DEVICE_CPU), tf_mrc::DropoutOp);
REGISTER_KERNEL_BUILDER(Name("TfMrcDropoutGrad").Device(tensorflow::DEVICE_CPU), tf_mrc::DropoutGradOp);
#if TF_MAJOR_VERSION >= 2
REGISTER_KERNEL_BUILDER(Name("TfMrcApplyAdamW").Device(tensorflow::DEVICE_CPU),
                        tf_mrc::ApplyAdamWOp<tf_mrc::ResourceData>);
#endif
REGISTER_KERNEL_BUILDER(Name("TfMrcApplyAdamWRef").Device(tensorflow::DEVICE_CPU),
                        tf_mrc::ApplyAdamWOp<tf_mrc::RefData>);
