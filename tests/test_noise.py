"""Tests of the alpha-stable samplers, in three tiers (see STYLE.md, 8).

(a) same-seed identities, (b) closed-form special cases (alpha=2 Gaussian,
alpha=1 Cauchy), (c) fixed-seed Kolmogorov-Smirnov tests against
`scipy.stats.levy_stable`.

Tolerance of the KS tests: the statistic D must stay below 1.95 / sqrt(n),
the 0.1% critical value of the one-sample KS test. A correct sampler fails it
for one seed in a thousand; the seeds are fixed, so each test is
deterministic and a failure means the distribution moved.
"""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import ks_ok
from scipy import stats

import keras_heavytail as kht
from keras_heavytail.optimizers import noise

N = 20000
ALPHAS = [0.8, 1.0, 1.5, 1.75, 2.0]


def sas_cdf(alpha, scale=1.0, loc=0.0):
    return stats.levy_stable(alpha, 0.0, loc=loc, scale=scale).cdf


# (a) identities ------------------------------------------------------------


def test_same_seed_same_samples_and_other_seed_other_samples():
    a = kht.optimizers.symmetric_stable((1000,), 1.5, seed=7)
    b = kht.optimizers.symmetric_stable((1000,), 1.5, seed=7)
    c = kht.optimizers.symmetric_stable((1000,), 1.5, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_scale_multiplies_unit_noise(alpha):
    unit = kht.optimizers.symmetric_stable((500,), alpha, seed=3)
    scaled = kht.optimizers.symmetric_stable((500,), alpha, scale=0.25, seed=3)
    np.testing.assert_array_equal(scaled, np.asarray(unit) * np.float32(0.25))


def test_stateless_seed_tensor_is_accepted_and_deterministic():
    seed = tf.constant([4, 2], dtype=tf.int32)
    np.testing.assert_array_equal(
        kht.optimizers.symmetric_stable((10,), 1.2, seed=seed),
        kht.optimizers.symmetric_stable((10,), 1.2, seed=seed),
    )


def test_seed_generator_advances():
    gen = keras.random.SeedGenerator(1)
    a = kht.optimizers.symmetric_stable((10,), 1.2, seed=gen)
    b = kht.optimizers.symmetric_stable((10,), 1.2, seed=gen)
    assert not np.allclose(a, b)


@pytest.mark.parametrize("alpha", [0.5, 0.8, 1.0, 1.5, 2.0])
def test_float32_samples_are_finite(alpha):
    x = np.asarray(kht.optimizers.symmetric_stable((10**6,), alpha, seed=0, dtype="float32"))
    assert np.isfinite(x).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_dtype(dtype):
    x = kht.optimizers.symmetric_stable((4,), 1.5, seed=0, dtype=dtype)
    assert keras.backend.standardize_dtype(x.dtype) == dtype


# (b) closed forms ----------------------------------------------------------


def test_alpha_2_is_gaussian_with_variance_two_scale_squared():
    x = kht.optimizers.symmetric_stable((N,), 2.0, scale=0.5, seed=11)
    ks_ok(x, stats.norm(0.0, math.sqrt(2.0) * 0.5).cdf)


def test_alpha_1_is_cauchy():
    x = kht.optimizers.symmetric_stable((N,), 1.0, scale=3.0, seed=12)
    ks_ok(x, stats.cauchy(0.0, 3.0).cdf)


def test_general_formula_is_exact_at_alpha_1():
    # The CMS transform with a tensor alpha=1 reduces to tan(U): no special
    # case is needed for the TFP class.
    u = np.linspace(-1.5, 1.5, 7).astype("float32")
    w = np.linspace(0.1, 3, 7).astype("float32")
    got = noise.cms_symmetric(tf.math, u, w, tf.constant(1.0))
    np.testing.assert_allclose(got, np.tan(u), rtol=1e-5)


def test_positive_stable_at_a_1_is_one():
    np.testing.assert_array_equal(kht.optimizers.positive_stable((3,), 1.0, seed=0), np.ones(3))


# (c) against scipy ---------------------------------------------------------


@pytest.mark.parametrize("alpha", ALPHAS)
def test_symmetric_stable_matches_scipy(alpha):
    x = kht.optimizers.symmetric_stable((N,), alpha, seed=100 + int(alpha * 100))
    ks_ok(x, sas_cdf(alpha))


@pytest.mark.parametrize("a", [0.6, 0.8, 0.9])
def test_positive_stable_matches_scipy(a):
    x = kht.optimizers.positive_stable((N,), a, seed=5)
    scale = math.cos(math.pi * a / 2) ** (1 / a)
    ks_ok(x, stats.levy_stable(a, 1.0, scale=scale).cdf)


@pytest.mark.parametrize("structure", ["entry", "neuron", "elliptical"])
@pytest.mark.parametrize("alpha", [1.5, 1.75])
def test_structured_noise_marginals_are_sas(structure, alpha):
    x = np.asarray(kht.optimizers.stable_noise((3, N), alpha, structure, seed=21))
    ks_ok(x[0], sas_cdf(alpha))  # one entry per unit: independent draws


def test_neuron_noise_is_constant_along_fan_in():
    x = np.asarray(kht.optimizers.stable_noise((3, 3, 5, 7), 1.5, "neuron", seed=1))
    np.testing.assert_array_equal(x, np.broadcast_to(x[:1, :1, :1, :], x.shape))


def test_neuron_noise_follows_the_unit_axes_it_is_given():
    # A transposed kernel (h, w, out, in) has its units on axis -2; a
    # depthwise one (h, w, channels, multiplier) on the last two.
    x = np.asarray(kht.optimizers.stable_noise((3, 3, 5, 7), 1.5, "neuron", seed=1, unit_axes=(-2,)))
    np.testing.assert_array_equal(x, np.broadcast_to(x[:1, :1, :, :1], x.shape))
    assert len(np.unique(x[0, 0, :, 0])) == 5
    x = np.asarray(kht.optimizers.stable_noise((3, 3, 4, 2), 1.5, "neuron", seed=1, unit_axes=(-2, -1)))
    np.testing.assert_array_equal(x, np.broadcast_to(x[:1, :1], x.shape))
    assert len(np.unique(x[0, 0])) == 8


@pytest.mark.parametrize("bad", [(4,), (), "-1", (-1.0,), None])
def test_bad_unit_axes_are_repeated(bad):
    with pytest.raises(ValueError, match=f"Received: unit_axes={re.escape(repr(bad))}"):
        kht.optimizers.stable_noise((3, 3), 1.5, "neuron", unit_axes=bad)


def test_elliptical_noise_shares_its_scale_within_a_unit():
    # Entries of one unit share the mixing variable A, so their magnitudes
    # are correlated; entries of different units are independent.
    x = np.abs(np.asarray(kht.optimizers.stable_noise((2, 4000), 1.2, "elliptical", seed=2)))
    logs = np.log(x)
    within = np.corrcoef(logs[0], logs[1])[0, 1]
    across = np.corrcoef(logs[0, :-1], logs[1, 1:])[0, 1]
    assert within > 0.3 and abs(across) < 0.05, (within, across)


@pytest.mark.parametrize("bad", [0.0, -1.0, 2.5, "1.5", True])
def test_bad_alpha_is_repeated(bad):
    with pytest.raises(ValueError, match=f"Received: alpha={bad!r}"):
        kht.optimizers.symmetric_stable((3,), bad)


def test_bad_structure_is_repeated():
    with pytest.raises(ValueError, match="Received: noise='row'"):
        kht.optimizers.stable_noise((3, 3), 1.5, "row")


# the TFP distribution --------------------------------------------------------


def test_distribution_matches_scipy_with_loc_and_scale():
    dist = kht.optimizers.SymmetricStable(alpha=1.3, scale=2.0, loc=-1.0)
    x = dist.sample(N, seed=(1, 2))
    ks_ok(x, sas_cdf(1.3, scale=2.0, loc=-1.0))


def test_distribution_is_a_tfp_distribution_with_batch_shape():
    import tensorflow_probability as tfp

    dist = kht.optimizers.SymmetricStable(alpha=[[1.5], [2.0]], scale=[0.1, 0.2, 0.3])
    assert isinstance(dist, tfp.distributions.Distribution)
    assert dist.batch_shape == (2, 3)
    assert dist.sample((4, 5), seed=(0, 1)).shape == (4, 5, 2, 3)
    np.testing.assert_array_equal(
        dist.sample(3, seed=(0, 1)), dist.sample(3, seed=(0, 1))
    )


def test_distribution_moments():
    dist = kht.optimizers.SymmetricStable(alpha=[0.9, 1.0, 1.5, 2.0], scale=3.0, loc=1.0)
    mean = np.asarray(dist.mean())
    assert np.isnan(mean[:2]).all()
    np.testing.assert_array_equal(mean[2:], [1.0, 1.0])
    np.testing.assert_array_equal(dist.variance(), [np.inf, np.inf, np.inf, 18.0])
    np.testing.assert_allclose(dist.stddev()[3], np.sqrt(18.0), rtol=1e-6)
    np.testing.assert_array_equal(dist.mode(), [1.0] * 4)


def test_distribution_strict_stats_raise():
    dist = kht.optimizers.SymmetricStable(alpha=1.0, allow_nan_stats=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="undefined"):
        dist.mean()


def test_distribution_validate_args():
    with pytest.raises(tf.errors.InvalidArgumentError, match="alpha"):
        kht.optimizers.SymmetricStable(alpha=2.5, validate_args=True).sample(1, seed=(0, 0))


def test_an_eager_call_is_the_traced_sampler_and_follows_each_seed():
    # An eager call runs a function compiled once per (shape, alpha, dtype):
    # it must give the traced call's numbers (to float rounding), and a second
    # call must read its own seed and scale, not ones frozen at the first.
    seed, scale = tf.constant([7, 1]), tf.constant(0.5)
    eager = kht.optimizers.symmetric_stable((4, 300), 1.6, scale=scale, seed=seed)
    traced = tf.function(
        lambda s, c: kht.optimizers.symmetric_stable((4, 300), 1.6, scale=c, seed=s)
    )(seed, scale)
    np.testing.assert_allclose(eager, traced, rtol=1e-5, atol=1e-6)
    doubled = kht.optimizers.symmetric_stable((4, 300), 1.6, scale=tf.constant(1.0), seed=seed)
    np.testing.assert_allclose(doubled, 2 * np.asarray(eager), rtol=1e-5, atol=1e-6)
    other = kht.optimizers.symmetric_stable((4, 300), 1.6, scale=scale, seed=tf.constant([8, 1]))
    assert not np.allclose(other, eager)
