"""The mutant catalogue: the correct baselines, then one subclass per bug class a real BatchNorm has had.

Each mutant overrides one hook of :class:`mutants.baseline.BatchNorm` and says, as class attributes, the
bug (``bug``), where it happened (``origin``) and the upstream report (``link``); its docstring tells the
story. The GroupNorm and InstanceNorm baselines and mutants (``mutants.groupnorm``), then the LayerNorm and
RMSNorm ones (``mutants.layernorm``), follow them in :data:`IMPLEMENTATIONS`. Plug it in as any third party would:

    pytest conformance --impl mutants.catalogue:IMPLEMENTATIONS

The suite must fail every mutant somewhere and pass every baseline everywhere (``mutants.verdict``).
"""

from __future__ import annotations

import warnings

import numpy as np

from conformance.adapters.base import LayerSpec, State

from . import groupnorm, layernorm
from .baseline import BatchNorm
from .implementation import LayerImplementation

__all__ = ["IMPLEMENTATIONS", "MUTANTS"]


# -- construction --------------------------------------------------------------------------------

class RunningVarStartsAtZero(BatchNorm):
    """The running variance starts at 0 instead of 1: inference before any training divides by
    ``sqrt(eps)``. The seed notebook 002 of this project does it; d2l fixed it in PR #1591, Sonnet 2
    (#174), Chainer (#879) and Equinox (#955) had it."""

    bug = "running variance initialised to 0 instead of 1"
    origin = "d2l-en, Sonnet 2, Chainer, Equinox, the seed notebook 002"
    link = "https://github.com/d2l-ai/d2l-en/pull/1591"

    def initial_state(self, spec: LayerSpec) -> State:
        state = super().initial_state(spec)
        return state if state.running_var is None else state.replace(running_var=np.zeros(spec.num_features))


class EpsDropped(BatchNorm):
    """No eps at all: ncnn's BatchNorm divided by ``sqrt(var)`` until eps became a parameter."""

    bug = "eps not applied (normalizes by sqrt(var))"
    origin = "ncnn BatchNorm layer before PR #311"
    link = "https://github.com/Tencent/ncnn/issues/303"

    def hyperparameters(self, spec: LayerSpec) -> tuple[float, float | None]:
        return 0.0, spec.momentum


class MomentumFrozenAtOne(BatchNorm):
    """Momentum stored as 1.0 whatever the layer was built with: PyTorch's ONNX export wrote momentum
    1.0 for every BatchNorm, and pytorch2keras carried it into Keras layers whose moving statistics then
    never move (old-value convention)."""

    bug = "momentum stored as 1.0 instead of the given value"
    origin = "PyTorch ONNX export (#18525), pytorch2keras (#70)"
    link = "https://github.com/pytorch/pytorch/issues/18525"

    def hyperparameters(self, spec: LayerSpec) -> tuple[float, float | None]:
        return spec.eps, 1.0


# -- normalization -------------------------------------------------------------------------------

class EpsOutsideSqrt(BatchNorm):
    """``(x - mean) / (sqrt(var) + eps)`` instead of ``/ sqrt(var + eps)``: darknet's normalize_cpu,
    ncnn's first eps patch (review of PR #311), the group-norm reference code."""

    bug = "eps added outside the square root"
    origin = "darknet (PR #17), ncnn (PR #311 review)"
    link = "https://github.com/pjreddie/darknet/pull/17"

    def normalize(self, x, mean, var):
        r = 1 / (np.sqrt(var) + x.dtype.type(self.eps))
        return (x - mean) * r, r


class UnbiasedVarianceInNormalization(BatchNorm):
    """Training normalizes with the unbiased variance ``var * n / (n - 1)``: what MLX's fix for the
    running variance first did (zcbenz's review of PR #3817: "this PR seems to use it for training")."""

    bug = "training output normalized with the Bessel-corrected variance"
    origin = "MLX nn.BatchNorm, PR #3817 as first proposed"
    link = "https://github.com/ml-explore/mlx/pull/3817"

    def statistics(self, x):
        mean, var = super().statistics(x)
        n = self.values_per_channel(x)
        return mean, var * n / max(n - 1, 1)


class OnePassVariance(BatchNorm):
    """The variance as ``E[x^2] - E[x]^2`` in one pass: catastrophic cancellation on offset data (Keras
    3's torch backend still does it; keras-core PR #866 moved TF and JAX to two passes)."""

    bug = "one-pass variance E[x^2] - E[x]^2"
    origin = "Keras 3 backends before keras-core PR #866 (torch backend still)"
    link = "https://github.com/keras-team/keras-core/pull/866"

    def statistics(self, x):
        mean = self.channel_mean(x)
        return mean, self.channel_mean(x * x) - mean * mean


class PerLocationStatistics(BatchNorm):
    """Statistics over the batch axis only, one mean and variance per (channel, position) instead of
    per channel: "you compute mean and var for every batch, rather than for every channel"."""

    bug = "statistics per location (batch axis only) instead of per channel"
    origin = "deepnet (parasdahal/deepnet #11)"
    link = "https://github.com/parasdahal/deepnet/issues/11"
    statistic_axes = (0,)


class HalfPrecisionAccumulation(BatchNorm):
    """float16/bfloat16 input reduced in its own precision: the sum of squares overflows at production
    sizes (PyTorch's CPU kernel kept Half ``var_sum`` until PR #126525)."""

    bug = "float16/bfloat16 statistics accumulated in the input precision"
    origin = "PyTorch CPU batch_norm stats (PR #126525); onnxruntime, DirectML"
    link = "https://github.com/pytorch/pytorch/pull/126525"

    def compute_dtype(self, dtype):
        return np.dtype(dtype)


class Float64ComputedInFloat32(BatchNorm):
    """A float64 layer that computes in float32: Keras on JAX without ``jax_enable_x64`` (registered
    deviation of ``keras.jax``)."""

    bug = "float64 input computed in float32"
    origin = "Keras 3 on JAX (64-bit types disabled by default)"
    link = "https://docs.jax.dev/en/latest/notebooks/Common_Gotchas_in_JAX.html#double-64bit-precision"

    def compute_dtype(self, dtype):
        return np.dtype(np.float32)


class OutputPromotedToFloat32(BatchNorm):
    """float16/bfloat16 input returns float32: the float32 compute dtype leaks into the output, as
    mixed-precision BatchNorms did before casting back (oneflow PR #9388, apex #133)."""

    bug = "float16/bfloat16 input gives a float32 output"
    origin = "oneflow half inference (PR #9388), NVIDIA apex (#133)"
    link = "https://github.com/Oneflow-Inc/oneflow/pull/9388"

    def output_dtype(self, dtype):
        return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


# -- modes ---------------------------------------------------------------------------------------

class InferenceUsesBatchStatistics(BatchNorm):
    """Inference normalizes with the batch's statistics, the running ones never used: a model left in
    training mode for evaluation (facebookresearch/higher #55), or a layer that ignores the mode."""

    bug = "inference normalizes with batch statistics"
    origin = "facebookresearch/higher (#55)"
    link = "https://github.com/facebookresearch/higher/issues/55"

    def batch_mode(self, training):
        return True


class TrainingUsesRunningStatistics(BatchNorm):
    """Training normalizes with the running statistics (still updating them): "Always using running_mean
    and running_var?" (gbup-group/IEBN #3), Paddle's BatchNorm that always used global statistics in
    training (#56046)."""

    bug = "training normalizes with running statistics"
    origin = "IEBN (#3), PaddlePaddle BatchNorm (#56046)"
    link = "https://github.com/gbup-group/IEBN/issues/3"

    def batch_mode(self, training):
        return self.running_mean is None


class InferenceUpdatesRunningStatistics(BatchNorm):
    """The running statistics move in inference too: Batch Renormalization's PyTorch port updated them
    on every call (mf1024/Batch-Renormalization-PyTorch #1)."""

    bug = "inference updates the running statistics"
    origin = "Batch-Renormalization-PyTorch (#1)"
    link = "https://github.com/mf1024/Batch-Renormalization-PyTorch/issues/1"

    def updates_running(self, training):
        return self.running_mean is not None


class TrainableFalseIgnored(BatchNorm):
    """Keras ``trainable=False`` still normalizes with batch statistics and updates the moving ones, as
    Keras 2 did (keras-team/keras #6570; PR #9965 proposed the change that tf.keras made in TensorFlow 2.0:
    a frozen layer runs in inference mode)."""

    bug = "trainable=False ignored: batch statistics and updates in training"
    origin = "Keras 2 BatchNormalization (#9965, #6570)"
    link = "https://github.com/keras-team/keras/pull/9965"

    def effective_training(self, training):
        return training


# -- running statistics --------------------------------------------------------------------------

class MomentumWeightsOldValue(BatchNorm):
    """PyTorch's momentum applied to the old value, ``m * run + (1 - m) * batch`` (d2l's PyTorch chapter
    until PR #2213; pytorch-quantization-demo #17)."""

    bug = "momentum applied to the old value in the new-value convention"
    origin = "d2l-en PyTorch BatchNorm (PR #2213), pytorch-quantization-demo (#17)"
    link = "https://github.com/d2l-ai/d2l-en/pull/2213"

    def new_batch_weight(self):
        return 1 - super().new_batch_weight()


class RunningVarianceBiased(BatchNorm):
    """The running variance stores the biased batch variance where the convention stores the unbiased
    one (ttnn.batch_norm, tt-metal #55438; MLX before PR #3817)."""

    bug = "running variance without Bessel's correction"
    origin = "tt-metal ttnn.batch_norm (#55438), MLX (PR #3817)"
    link = "https://github.com/tenstorrent/tt-metal/issues/55438"

    def bessel_factor(self, count):
        return 1.0


class RunningVarianceUnbiasedInKeras(BatchNorm):
    """Keras' moving variance Bessel-corrected: the fused kernel of tf-keras does it, the non-fused path
    and Keras 3 do not (tensorflow #55545)."""

    bug = "Bessel-corrected moving variance where the convention stores the biased one"
    origin = "tf-keras fused=True vs fused=False (#55545)"
    link = "https://github.com/tensorflow/tensorflow/issues/55545"

    def update_running(self, mean, var, count):
        super().update_running(mean, var * count / max(count - 1, 1), count)


class BesselCountIsBatchSize(BatchNorm):
    """Bessel's factor with ``n`` the batch size instead of the values per channel (``N * H * W``), the
    question geohot raised on tinygrad PR #807 and mlpack's conv BatchNorm (PR #2474) got wrong first."""

    bug = "Bessel factor n/(n-1) with n = batch size, not values per channel"
    origin = "tinygrad BatchNorm2d (PR #807), mlpack (PR #2474)"
    link = "https://github.com/tinygrad/tinygrad/pull/807"

    def values_per_channel(self, x3):
        return x3.shape[0]


class BesselFactorInHalfPrecision(BatchNorm):
    """``n / (n - 1)`` computed in float16: NaN once ``n`` exceeds float16's range (XLA's batch norm
    expander, tensorflow PR #30230)."""

    bug = "Bessel factor computed in float16 (NaN for n > 65504)"
    origin = "XLA BatchNorm expander (tensorflow PR #30230)"
    link = "https://github.com/tensorflow/tensorflow/pull/30230"

    def bessel_factor(self, count):
        if self.input_dtype != np.float16:
            return super().bessel_factor(count)
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.float16(count) / np.float16(count - 1))


class FirstStepOverwritesRunningStatistics(BatchNorm):
    """The first training step replaces the running statistics with the batch's, ignoring their initial
    values (keras-team/keras #13117, #13214: the initializers were never used)."""

    bug = "first update overwrites the initial running statistics"
    origin = "Keras 2.2 BatchNormalization (#13117, #13214)"
    link = "https://github.com/keras-team/keras/issues/13214"

    updated = False

    def new_batch_weight(self):
        return super().new_batch_weight() if self.updated else 1.0

    def update_running(self, mean, var, count):
        super().update_running(mean, var, count)
        self.updated = True


class CounterNotIncremented(BatchNorm):
    """``num_batches_tracked`` never counts, so ``momentum=None`` (cumulative average, factor
    1/num_batches_tracked) keeps only the last batch (momentum=None unhandled: pytorch #31498)."""

    bug = "num_batches_tracked not incremented"
    origin = "SyncBatchNorm momentum=None (pytorch #31498)"
    link = "https://github.com/pytorch/pytorch/issues/31498"

    def update_running(self, mean, var, count):
        counter = self.num_batches_tracked
        super().update_running(mean, var, count)
        self.num_batches_tracked = counter


class CumulativeAverageOffByOne(BatchNorm):
    """The cumulative average's factor ``1 / (n + 1)`` for the n-th batch instead of ``1 / n``, the
    off-by-one cuDNN's comment on exponentialAverageFactor invites (soumith/cudnn.torch #91)."""

    bug = "cumulative moving average off by one (1/(n+1))"
    origin = "cuDNN exponentialAverageFactor (soumith/cudnn.torch #91)"
    link = "https://github.com/soumith/cudnn.torch/issues/91"

    def new_batch_weight(self):
        if self.momentum is None:
            return 1.0 / ((self.num_batches_tracked or 0) + 2)
        return super().new_batch_weight()


class CounterIncrementedInInference(BatchNorm):
    """``num_batches_tracked`` counts inference calls too, so a later cumulative average uses the wrong
    factor: buffers updated where no update is due (pytorch PR #38084)."""

    bug = "num_batches_tracked incremented in inference"
    origin = "PyTorch _BatchNorm buffer updates (PR #38084)"
    link = "https://github.com/pytorch/pytorch/pull/38084"

    def forward(self, x, training):
        y = super().forward(x, training)
        if not training and self.num_batches_tracked is not None:
            self.num_batches_tracked += 1
        return y


# -- input checks and side effects ---------------------------------------------------------------

class StateUpdatedBeforeRaising(BatchNorm):
    """Training on one value per channel updates the running statistics and then raises: tinygrad's
    BatchNorm assigned running_mean before the variance's division failed; PyTorch's module counts the
    rejected batch in num_batches_tracked (#1381)."""

    bug = "running statistics updated before raising on one value per channel"
    origin = "tinygrad BatchNorm, PyTorch _BatchNorm (#1381)"
    link = "https://github.com/pytorch/pytorch/issues/1381"

    def check_batch(self, x3):
        if self.running_mean is not None and self.values_per_channel(x3) == 1:
            mean = x3.astype(np.float64).mean(axis=(0, 2))
            self.update_running(mean, np.zeros_like(mean), 2)
        super().check_batch(x3)


class OneValuePerChannelAccepted(BatchNorm):
    """No check for one value per channel under Bessel's correction: the running variance becomes
    ``0 * 1/0`` (NaN). PyTorch added the error in PR #2961 (#1381)."""

    bug = "one value per channel accepted under Bessel's correction"
    origin = "PyTorch before PR #2961"
    link = "https://github.com/pytorch/pytorch/pull/2961"

    def check_batch(self, x3):
        if self.values_per_channel(x3) != 1:
            super().check_batch(x3)

    def bessel_factor(self, count):
        with np.errstate(divide="ignore"):
            return np.float64(count) / np.float64(count - 1)


class EmptyBatchAccepted(BatchNorm):
    """An empty batch is normalized with the mean of no values: NaN running statistics (Sonnet #125,
    Keras and tf-keras registered deviations)."""

    bug = "empty batch accepted: NaN running statistics"
    origin = "Sonnet (#125), Keras BatchNormalization"
    link = "https://github.com/google-deepmind/sonnet/issues/125"

    def check_batch(self, x3):
        if self.values_per_channel(x3) != 0:
            super().check_batch(x3)

    def statistics(self, x):
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # the mean of no values
            return super().statistics(x)

    def bessel_factor(self, count):
        return np.nan if count == 0 else super().bessel_factor(count)


class IntegerInputAccepted(BatchNorm):
    """Integer or boolean input silently converted instead of rejected (Chainer #5355: "no error on
    wrong shape or data type of the input")."""

    bug = "integer/boolean input accepted"
    origin = "Chainer BatchNormalization (#5355)"
    link = "https://github.com/chainer/chainer/issues/5355"

    def validate(self, x):
        return super().validate(x.astype(np.float32) if x.dtype.kind in "biu" else x)

    def output_dtype(self, dtype):
        return np.dtype(np.float32) if dtype.kind in "biu" else dtype


class InputModifiedInPlace(BatchNorm):
    """The output is written into the caller's input array, as in-place BatchNorms do to save memory
    (PaddlePaddle PR #9420, nntrainer PR #810), overwriting what the caller still holds."""

    bug = "caller's input overwritten in place"
    origin = "PaddlePaddle in-place batch_norm (PR #9420), nntrainer (PR #810)"
    link = "https://github.com/PaddlePaddle/Paddle/pull/9420"

    def forward(self, x, training):
        y = super().forward(x, training)
        if x.shape == y.shape and x.flags.writeable:
            x[...] = y.astype(x.dtype)
        return y


class NoRunningStatisticsKeepsBuffers(BatchNorm):
    """``track_running_stats=False`` still keeps running statistics (0 and 1), never updated, and
    inference normalizes with them instead of the batch's (PyTorch's buffers-with-the-flag-off case,
    PR #38084; complexPyTorch #6 checked the flag in training only)."""

    bug = "track_running_stats=False keeps running statistics and uses them in inference"
    origin = "PyTorch _BatchNorm (PR #38084), complexPyTorch (#6)"
    link = "https://github.com/pytorch/pytorch/pull/38084"

    def initial_state(self, spec: LayerSpec) -> State:
        c = spec.num_features
        return super().initial_state(spec).replace(running_mean=np.zeros(c), running_var=np.ones(c))

    def updates_running(self, training):
        return super().updates_running(training) and self.spec.track_running_stats


class AffineFalseKeepsParameters(BatchNorm):
    """``affine=False`` still creates gamma and beta (ones and zeros) and returns their gradients
    (bias_free_denoising #2: the argument was never stored; oneflow PR #8000 registered them)."""

    bug = "affine=False still has parameters and their gradients"
    origin = "bias_free_denoising BFBatchNorm2d (#2), oneflow (PR #8000)"
    link = "https://github.com/LabForComputationalVision/bias_free_denoising/issues/2"

    def initial_state(self, spec: LayerSpec) -> State:
        return super().initial_state(spec).replace(gamma=np.ones(spec.num_features), beta=np.zeros(spec.num_features))


# -- gradients -----------------------------------------------------------------------------------

class BackwardIgnoresBatchStatistics(BatchNorm):
    """Training-mode dx as if mean and variance were constants, ``dx = gamma * dy / sqrt(var + eps)``:
    CrypTen's batchnorm backward (PR #143)."""

    bug = "training dx ignores that mean and variance depend on x"
    origin = "CrypTen (PR #143)"
    link = "https://github.com/facebookresearch/CrypTen/pull/143"

    def backward_training(self, dy, xhat, r, gamma):
        return self.backward_inference(dy, xhat, r, gamma)


class DxMissingGamma(BatchNorm):
    """dx without the factor gamma (Knet.jl's CPU batchnorm backward, #288)."""

    bug = "dx missing the gamma factor"
    origin = "Knet.jl batchnorm4_back (#288)"
    link = "https://github.com/denizyuret/Knet.jl/issues/288"

    def backward_training(self, dy, xhat, r, gamma):
        return super().backward_training(dy, xhat, r, np.ones_like(gamma))


class DgammaScaledBySigma(BatchNorm):
    """``dgamma = sum(dy * (x - mean) * sqrt(var + eps))`` instead of ``/ sqrt(var + eps)``: XLA's
    BatchNormGrad documentation (tensorflow #14676)."""

    bug = "dgamma multiplied by sigma instead of divided"
    origin = "XLA BatchNormGrad semantics (tensorflow #14676)"
    link = "https://github.com/tensorflow/tensorflow/issues/14676"

    def parameter_gradients(self, dy, xhat):
        dgamma, dbeta = super().parameter_gradients(dy, xhat)
        return (None, None) if dgamma is None else (dgamma * self.saved["r"].reshape(-1) ** -2.0, dbeta)


class ParameterGradientsAveraged(BatchNorm):
    """dgamma and dbeta averaged over the batch instead of summed (proposed in cthorey/CS231 #9)."""

    bug = "dgamma/dbeta averaged instead of summed"
    origin = "cthorey/CS231 (#9)"
    link = "https://github.com/cthorey/CS231/issues/9"

    def parameter_gradients(self, dy, xhat):
        dgamma, dbeta = super().parameter_gradients(dy, xhat)
        n = max(self.values_per_channel(dy), 1)
        return (None, None) if dgamma is None else (dgamma / n, dbeta / n)


class InferenceBackwardUsesBatchStatistics(BatchNorm):
    """Inference-mode gradients through batch statistics while the forward used the running ones
    (torch/nn PR #768: backward of an evaluation-mode forward needed save_mean/save_std; Paddle's
    use_global_stats gradients)."""

    bug = "inference dx computed with batch statistics"
    origin = "torch/nn BatchNormalization (PR #768), PaddlePaddle (PR #14630)"
    link = "https://github.com/torch/nn/pull/768"

    def backward_inference(self, dy, xhat, r, gamma):
        x = self.saved["x"]
        if self.values_per_channel(x) < 2:
            return super().backward_inference(dy, xhat, r, gamma)
        return self.backward_training(dy, *self.normalize(x, *self.statistics(x)), gamma)


class DoubleBackwardStatisticsConstant(BatchNorm):
    """Second order with the batch statistics treated as constants when the backward is differentiated
    again: the saved mean and invstd carry no autograd history (pytorch #186256 at third order; the
    second-order JVP of #196699)."""

    bug = "double backward treats batch statistics as constants"
    origin = "PyTorch native_batch_norm higher orders (#186256, #196699)"
    link = "https://github.com/pytorch/pytorch/issues/186256"

    def tangents(self, r, xhat, vx):
        return r * vx, np.zeros_like(r)


# -- what only a sequence of calls, an unusual state or the caller's own writes show (the exploration) ---

_ARRAYS = ("gamma", "beta", "running_mean", "running_var")


class NegativeGammaSignLost(BatchNorm):
    """The scale is ``|gamma|``: InPlace-ABN takes the absolute value of the weight (to invert its output in
    the backward without dividing by zero), so a model trained with plain BatchNorm whose gammas went
    negative gives other outputs once loaded (mapillary/inplace_abn #92). Gammas start positive, and only
    training drives them negative."""

    bug = "scale by |gamma|: the sign of a negative gamma is lost"
    origin = "InPlace-ABN (mapillary/inplace_abn #92, #180)"
    link = "https://github.com/mapillary/inplace_abn/issues/92"

    def scale(self, channels: int) -> np.ndarray:
        return np.abs(super().scale(channels))


class BackwardRecoversInputFromOutput(BatchNorm):
    """The backward recovers ``xhat`` from the output, ``(y - beta) / gamma``, instead of keeping it: the
    memory saving of in-place activated BatchNorm (PaddlePaddle's inplace_abn op, PR #22806: "X should be
    calculated by inverse operation of batch_norm on Y"). Exact while gamma is away from zero; a gamma that
    training drove to zero gives NaN gradients."""

    bug = "backward recovers xhat from y / gamma (NaN gradients at gamma = 0)"
    origin = "in-place activated BatchNorm (PaddlePaddle PR #22806, InPlace-ABN)"
    link = "https://github.com/PaddlePaddle/Paddle/pull/22806"

    def forward(self, x, training):
        y = super().forward(x, training)
        saved, dtype = self.saved, self.saved["x"].dtype
        beta = self._column(np.zeros(saved["gamma"].shape) if self.beta is None else self.beta, dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            saved["xhat"] = (self._compute(self.view(y), dtype) - beta) / self._column(saved["gamma"], dtype)
        return y


class StateReadAliasesInternals(BatchNorm):
    """Reading the state returns the layer's own arrays, not copies: PyTorch's ``state_dict()`` holds
    references to the parameters and buffers (its docs gained a warning, PR #83104), so a caller that
    edits what it read (a checkpoint averaged in place, say) edits the model."""

    bug = "the state read shares memory with the layer's own arrays"
    origin = "PyTorch Module.state_dict (PR #83104)"
    link = "https://github.com/pytorch/pytorch/pull/83104"

    def get_state(self) -> State:
        return super().get_state().replace(**{name: getattr(self, name) for name in _ARRAYS})


class StateAssignmentKeepsCallerArrays(BatchNorm):
    """Assigning a state keeps the caller's arrays instead of copying them, so a caller that reuses its
    arrays changes the layer (executorch PR #4754: delegation consumed values from a state dict it had not
    copied)."""

    bug = "an assigned state shares memory with the caller's arrays"
    origin = "executorch (PR #4754)"
    link = "https://github.com/pytorch/executorch/pull/4754"

    def set_state(self, state: State) -> None:
        super().set_state(state)
        for name in _ARRAYS:
            value = state.get(name)
            if isinstance(value, np.ndarray) and value.dtype == np.float64:
                setattr(self, name, value)


class ParameterGradientsAccumulate(BatchNorm):
    """dgamma and dbeta are added to what earlier backward calls returned: the gradient buffers are never
    zeroed between calls (MXNet's BatchNorm with ``grad_req='add'``, apache/mxnet #18499; torch/cunn #212:
    forward and backward called several times gave wrong gradients)."""

    bug = "parameter gradients accumulate across backward calls"
    origin = "MXNet BatchNorm grad_req='add' (#18499), torch/cunn (PR #212)"
    link = "https://github.com/apache/mxnet/issues/18499"

    def parameter_gradients(self, dy, xhat):
        dgamma, dbeta = super().parameter_gradients(dy, xhat)
        if dgamma is None:
            return dgamma, dbeta
        total = getattr(self, "_total", None)
        self._total = (dgamma, dbeta) if total is None else (total[0] + dgamma, total[1] + dbeta)
        return self._total[0].copy(), self._total[1].copy()


class HalfPrecisionRunningStatistics(BatchNorm):
    """Inference casts the running statistics to the input's dtype before normalizing: a running
    variance past float16's largest value (65504) becomes infinite and the output silently collapses to
    beta (apple/coreai-torch PR #54: "turning any running_var above the fp16 max of 65504 into inf")."""

    bug = "running statistics cast to float16 for half-precision inference"
    origin = "coreai-torch fp16 batch norm (PR #54)"
    link = "https://github.com/apple/coreai-torch/pull/54"

    def held_statistics(self, input_dtype, dtype):
        return tuple(self._column(np.asarray(a).astype(input_dtype), dtype)
                     for a in (self.running_mean, self.running_var))


class FoldedStatisticsCached(BatchNorm):
    """Inference folds the running statistics once and keeps them until a training step changes them: a
    state assigned in between (a checkpoint loaded, weights averaged) is not seen (AiDotNet PR #1505: a
    cache keyed by the array's identity went stale when BatchNorm folding changed the weights in place)."""

    bug = "inference keeps statistics folded before a state was assigned"
    origin = "AiDotNet BatchNorm folding (PR #1505)"
    link = "https://github.com/ooples/AiDotNet/pull/1505"

    def held_statistics(self, input_dtype, dtype):
        folded = getattr(self, "_folded", None)
        if folded is None or folded[0].dtype != dtype:
            self._folded = folded = super().held_statistics(input_dtype, dtype)
        return folded

    def update_running(self, mean, var, count):
        super().update_running(mean, var, count)
        self._folded = None


class NonContiguousInputMisread(BatchNorm):
    """The input's memory is read in its storage order as if it were C-ordered: a Fortran-ordered (or
    transposed) array comes out permuted (PyTorch #63224: BatchNorm2d permuted the data of a non-contiguous
    input)."""

    bug = "non-contiguous input read in memory order"
    origin = "PyTorch BatchNorm2d on non-contiguous input (#63224)"
    link = "https://github.com/pytorch/pytorch/issues/63224"

    def view(self, a):
        return super().view(np.ravel(a, order="K").reshape(a.shape))


class ReductionDropsPartialBlock(BatchNorm):
    """The batch statistics are reduced in blocks of 1024 values per channel and a last, partial block is
    never read (MIOpen PR #916: elements past the work-group size "will never be accessed"). Exact when the
    values per channel are a multiple of the block, as in every power-of-two production shape."""

    bug = "statistics skip the values past the last full block of 1024"
    origin = "MIOpen spatial BatchNorm (PR #916)"
    link = "https://github.com/ROCm/MIOpen/pull/916"

    block = 1024

    def statistics(self, x):
        n = x.shape[0] * x.shape[2]
        if n <= self.block or n % self.block == 0:
            return super().statistics(x)
        values = np.moveaxis(x, 1, 0).reshape(x.shape[1], n)[:, : n // self.block * self.block]
        mean = values.mean(axis=1, keepdims=True)
        var = ((values - mean) ** 2).mean(axis=1)
        return mean.reshape(1, -1, 1), var.reshape(1, -1, 1)


class SavedStatisticsReused(BatchNorm):
    """The backward takes the inverse standard deviation saved by the first training call of that shape,
    a buffer filled once and reused ("save_mean / save_std filled in place", which made BatchNorm's
    backward non-reentrant: PyTorch PR #2268)."""

    bug = "backward reuses the inverse std saved by an earlier training call"
    origin = "PyTorch BatchNorm backward (PR #2268)"
    link = "https://github.com/pytorch/pytorch/pull/2268"

    def backward_training(self, dy, xhat, r, gamma):
        saved = getattr(self, "_saved_r", None)
        if saved is None or saved.shape != r.shape:
            self._saved_r = saved = r
        return super().backward_training(dy, xhat, saved, gamma)


MUTANTS: dict[str, tuple[type[BatchNorm], str]] = {
    "running_var_starts_at_zero": (RunningVarStartsAtZero, "torch"),
    "eps_dropped": (EpsDropped, "torch"),
    "momentum_frozen_at_one": (MomentumFrozenAtOne, "keras"),
    "eps_outside_sqrt": (EpsOutsideSqrt, "torch"),
    "unbiased_variance_in_normalization": (UnbiasedVarianceInNormalization, "torch"),
    "one_pass_variance": (OnePassVariance, "keras"),
    "per_location_statistics": (PerLocationStatistics, "torch"),
    "half_precision_accumulation": (HalfPrecisionAccumulation, "torch"),
    "float64_computed_in_float32": (Float64ComputedInFloat32, "keras"),
    "output_promoted_to_float32": (OutputPromotedToFloat32, "torch"),
    "inference_uses_batch_statistics": (InferenceUsesBatchStatistics, "torch"),
    "training_uses_running_statistics": (TrainingUsesRunningStatistics, "torch"),
    "inference_updates_running_statistics": (InferenceUpdatesRunningStatistics, "torch"),
    "trainable_false_ignored": (TrainableFalseIgnored, "keras"),
    "momentum_weights_old_value": (MomentumWeightsOldValue, "torch"),
    "running_variance_biased": (RunningVarianceBiased, "torch"),
    "running_variance_unbiased_in_keras": (RunningVarianceUnbiasedInKeras, "keras"),
    "bessel_count_is_batch_size": (BesselCountIsBatchSize, "torch"),
    "bessel_factor_in_half_precision": (BesselFactorInHalfPrecision, "torch"),
    "first_step_overwrites_running_statistics": (FirstStepOverwritesRunningStatistics, "keras"),
    "counter_not_incremented": (CounterNotIncremented, "torch"),
    "cumulative_average_off_by_one": (CumulativeAverageOffByOne, "torch"),
    "counter_incremented_in_inference": (CounterIncrementedInInference, "torch"),
    "state_updated_before_raising": (StateUpdatedBeforeRaising, "torch"),
    "one_value_per_channel_accepted": (OneValuePerChannelAccepted, "torch"),
    "empty_batch_accepted": (EmptyBatchAccepted, "keras"),
    "integer_input_accepted": (IntegerInputAccepted, "torch"),
    "input_modified_in_place": (InputModifiedInPlace, "torch"),
    "no_running_statistics_keeps_buffers": (NoRunningStatisticsKeepsBuffers, "torch"),
    "affine_false_keeps_parameters": (AffineFalseKeepsParameters, "torch"),
    "backward_ignores_batch_statistics": (BackwardIgnoresBatchStatistics, "torch"),
    "dx_missing_gamma": (DxMissingGamma, "torch"),
    "dgamma_scaled_by_sigma": (DgammaScaledBySigma, "torch"),
    "parameter_gradients_averaged": (ParameterGradientsAveraged, "torch"),
    "inference_backward_uses_batch_statistics": (InferenceBackwardUsesBatchStatistics, "torch"),
    "double_backward_statistics_constant": (DoubleBackwardStatisticsConstant, "torch"),
    "negative_gamma_sign_lost": (NegativeGammaSignLost, "torch"),
    "backward_recovers_input_from_output": (BackwardRecoversInputFromOutput, "torch"),
    "state_read_aliases_internals": (StateReadAliasesInternals, "torch"),
    "state_assignment_keeps_caller_arrays": (StateAssignmentKeepsCallerArrays, "keras"),
    "parameter_gradients_accumulate": (ParameterGradientsAccumulate, "torch"),
    "half_precision_running_statistics": (HalfPrecisionRunningStatistics, "torch"),
    "folded_statistics_cached": (FoldedStatisticsCached, "keras"),
    "non_contiguous_input_misread": (NonContiguousInputMisread, "torch"),
    "reduction_drops_partial_block": (ReductionDropsPartialBlock, "keras"),
    "saved_statistics_reused": (SavedStatisticsReused, "torch"),
}

# The BatchNorm baselines and mutants, then the GroupNorm/InstanceNorm ones (``mutants.groupnorm``) and the
# LayerNorm/RMSNorm ones (``mutants.layernorm``): one entry point.
IMPLEMENTATIONS = [LayerImplementation(BatchNorm, "torch"), LayerImplementation(BatchNorm, "keras")] + [
    LayerImplementation(layer, convention, name) for name, (layer, convention) in MUTANTS.items()
] + groupnorm.IMPLEMENTATIONS + layernorm.IMPLEMENTATIONS
