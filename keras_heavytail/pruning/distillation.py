"""Knowledge distillation as a Keras loss, for fine-tuning a pruned model.

    loss = (1 - w) * CE(y, student) + w * T**2 * KL(softmax(t / T) || softmax(s / T))

`y_true` packs the integer label in column 0 and the teacher's logits in
the rest, so `model.fit` on every backend trains with it unchanged.

References:
    - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531)
"""

import keras
import numpy as np
from keras import ops

from keras_heavytail import checks


def as_logits(outputs, from_logits):
    """Logits of a classifier's outputs (the log of probabilities)."""
    outputs = np.asarray(outputs, "float32")
    return outputs if from_logits else np.log(np.clip(outputs, 1e-12, 1.0))


@keras.saving.register_keras_serializable(package="keras_heavytail")
class DistillationLoss(keras.losses.Loss):
    """Cross-entropy on labels plus KL divergence to a teacher's soft outputs.

    Args:
        temperature: softens both distributions. Defaults to `4.0`.
        weight: the distillation term's weight in [0, 1]. Defaults to `0.5`.
        from_logits: whether the student outputs logits. Defaults to `True`.
        name: the loss's name. Defaults to `"distillation"`.
    """

    def __init__(self, temperature=4.0, weight=0.5, from_logits=True, name="distillation",
                 **kwargs):  # fmt: skip
        temperature = checks.check_positive(temperature, "temperature")
        weight = checks.check_fraction(weight, "weight")
        super().__init__(name=name, **kwargs)
        self.temperature = temperature
        self.weight = weight
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true[:, 0], "int32")
        teacher = y_true[:, 1:]
        student = y_pred if self.from_logits else ops.log(ops.clip(y_pred, 1e-12, 1.0))
        ce = keras.losses.sparse_categorical_crossentropy(labels, student, from_logits=True)
        if not self.weight:
            return ce
        t = self.temperature
        soft_teacher = ops.softmax(teacher / t, axis=-1)
        log_student = ops.log_softmax(student / t, axis=-1)
        log_teacher = ops.log_softmax(teacher / t, axis=-1)
        kl = ops.sum(soft_teacher * (log_teacher - log_student), axis=-1)
        return (1.0 - self.weight) * ce + self.weight * t * t * kl

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "weight": self.weight,
            "from_logits": self.from_logits,
        }
