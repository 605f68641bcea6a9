"""The symmetric alpha-stable law as a TensorFlow Probability distribution.

TFP has no stable distribution; this one samples with the Chambers-Mallows-
Stuck transform of `keras_heavytail.optimizers.noise`. TensorFlow only.
"""

import math

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import tensor_util

from keras_heavytail.optimizers.noise import UNIFORM_FLOOR
from keras_heavytail.optimizers.noise import cms_symmetric

tfd = tfp.distributions


class SymmetricStable(tfd.Distribution):
    """The symmetric alpha-stable distribution, as a TFP distribution.

    TensorFlow Probability has no stable law; this one samples with the same
    Chambers-Mallows-Stuck transform as `symmetric_stable`, under TFP's
    conventions: stateless seeds through `tfp.random.sanitize_seed`,
    broadcasting batch shapes of `alpha`, `scale` and `loc`, and moments that
    say when they do not exist. TensorFlow only.

    ```python
    X = loc + scale * Z,  Z ~ SaS(alpha, 1),  E exp(itZ) = exp(-|t|**alpha)
    ```

    There is no closed-form density for general alpha, so `log_prob` is not
    implemented; `mean` is `loc` for alpha > 1 and undefined (NaN, or an
    error with `allow_nan_stats=False`) otherwise; `variance` is
    `2 * scale**2` at alpha=2 and infinite below.

    Args:
        alpha: float tensor in (0, 2], the stability index. Defaults to none;
            required.
        scale: positive float tensor. Defaults to `1.0`.
        loc: float tensor, the centre. Defaults to `0.0`.
        validate_args: check parameters at run time. Defaults to `False`.
        allow_nan_stats: return NaN for undefined moments instead of raising.
            Defaults to `True`.
        name: Defaults to `"SymmetricStable"`.

    Example:

    >>> dist = SymmetricStable(alpha=[1.5, 2.0], scale=0.1)
    >>> dist.sample(3, seed=(0, 1)).shape
    TensorShape([3, 2])

    References:
        - [Samorodnitsky & Taqqu, 1994, Stable Non-Gaussian Random Processes](https://doi.org/10.1201/9780203738818)
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """

    def __init__(
        self,
        alpha,
        scale=1.0,
        loc=0.0,
        validate_args=False,
        allow_nan_stats=True,
        name="SymmetricStable",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([alpha, scale, loc], tf.float32)
            self._alpha = tensor_util.convert_nonref_to_tensor(alpha, dtype=dtype)
            self._scale = tensor_util.convert_nonref_to_tensor(scale, dtype=dtype)
            self._loc = tensor_util.convert_nonref_to_tensor(loc, dtype=dtype)
            super().__init__(
                dtype=dtype,
                reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                validate_args=validate_args,
                allow_nan_stats=allow_nan_stats,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(
            alpha=tfp.util.ParameterProperties(),
            scale=tfp.util.ParameterProperties(),
            loc=tfp.util.ParameterProperties(),
        )

    @property
    def alpha(self):
        return self._alpha

    @property
    def scale(self):
        return self._scale

    @property
    def loc(self):
        return self._loc

    def _event_shape(self):
        return tf.TensorShape([])

    def _event_shape_tensor(self):
        return tf.constant([], dtype=tf.int32)

    def _sample_n(self, n, seed=None):
        seed = tfp.random.sanitize_seed(seed, salt="SymmetricStable")
        u_seed, w_seed = tfp.random.split_seed(seed, n=2)
        alpha = tf.convert_to_tensor(self.alpha)
        shape = ps.concat([[n], self._batch_shape_tensor()], axis=0)
        v = tf.random.stateless_uniform(shape, u_seed, UNIFORM_FLOOR, 1.0, dtype=self.dtype)
        u = math.pi * (v - 0.5)
        w = tf.random.stateless_uniform(shape, w_seed, UNIFORM_FLOOR, 1.0, dtype=self.dtype)
        z = cms_symmetric(tf.math, u, -tf.math.log(w), alpha)
        return self.loc + self.scale * z

    def _mean(self):
        loc = tf.broadcast_to(self.loc, self._batch_shape_tensor())
        alpha = tf.broadcast_to(self.alpha, tf.shape(loc))
        if not self.allow_nan_stats:
            checks = [
                tf.debugging.assert_greater(
                    alpha,
                    tf.ones([], self.dtype),
                    message="The mean is undefined for alpha <= 1.",
                )
            ]
            with tf.control_dependencies(checks):
                return tf.identity(loc)
        return tf.where(alpha > 1.0, loc, tf.constant(float("nan"), self.dtype))

    def _variance(self):
        scale = tf.broadcast_to(self.scale, self._batch_shape_tensor())
        alpha = tf.broadcast_to(self.alpha, tf.shape(scale))
        inf = tf.constant(float("inf"), self.dtype)
        return tf.where(alpha >= 2.0, 2.0 * tf.square(scale), inf)

    def _stddev(self):
        return tf.sqrt(self._variance())

    def _mode(self):
        return tf.broadcast_to(self.loc, self._batch_shape_tensor())

    def _default_event_space_bijector(self):
        return tfp.bijectors.Identity(validate_args=self.validate_args)

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args:
            return []
        assertions = []
        if is_init != tensor_util.is_ref(self.alpha):
            alpha = tf.convert_to_tensor(self.alpha)
            assertions += [
                tf.debugging.assert_positive(alpha, message="`alpha` must be > 0."),
                tf.debugging.assert_less_equal(
                    alpha, tf.constant(2.0, self.dtype), message="`alpha` must be <= 2."
                ),
            ]
        if is_init != tensor_util.is_ref(self.scale):
            assertions.append(
                tf.debugging.assert_positive(
                    self.scale, message="`scale` must be positive."
                )
            )
        return assertions
