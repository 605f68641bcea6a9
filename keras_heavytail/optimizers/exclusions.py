"""Which variables get noise: variable paths, exclusions, the paper's choice.

An exclusion is a regular expression matched (`re.search`) against a
variable's path; `exact_pattern` writes one for a given variable that still
matches after a save and reload, so exclusions live in the optimizer's
config. `paper_exclusions` names the variables the paper keeps noise-free.

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

import re

from keras_heavytail.pruning.graph import ModelGraph


def variable_path(variable):
    """A variable's path as exclusions match it: `model/layer/kernel`.

    Keras 3 variables have a `path`; inside a TensorFlow update step Keras
    passes the backing `tf.Variable`, and tf_keras has only names, both as
    `model/layer/kernel:0`: the `:0` is dropped so all three agree.
    """
    path = getattr(variable, "path", None) or variable.name
    return re.sub(r":\d+$", "", path)


def exact_pattern(path):
    """A pattern matching this variable before and after a save and reload.

    A Sequential model's variable paths start with the model's name
    (`sequential/out/kernel`), which a reloaded model drops (`out/kernel`);
    a functional model's (`keras.applications`: `Conv1/kernel`) never had
    it. So a leading component is dropped only from paths of three or more
    (`model/layer/variable`), and the rest must match a whole path suffix.
    """
    parts = path.split("/")
    rest = "/".join(parts[1:]) if len(parts) > 2 else path
    return "(^|/)" + re.escape(rest) + "$"


def paper_exclusions(model):
    """The variables that the paper keeps noise-free: output layer and first conv.

    Wan et al. (2024) perturb every weight matrix except the classifier's and
    the first convolution's. Pass the result to `exclude_from_noise`; the
    optimizer saves the exclusion (as variable paths) in its config.

    Args:
        model: a built Keras 3 or tf_keras model.

    "The classifier" is every output layer: the kernel layers whose units
    reach a model output unchanged (through activations, BatchNormalization
    or pooling), one per head; "the first convolution" is the first kernel
    layer with a spatial kernel. On `keras.applications.MobileNetV2` they
    are `Conv1` and `predictions`; on `ResNet50`, `conv1_conv` and
    `predictions`. Read the paths back to see what a model gets.

    Args:
        model: a built Keras 3 or tf_keras model.

    Returns:
        A list of variables (the kernels and biases of those layers).

    Example:

    >>> opt = HeavyTailSGD(learning_rate=0.01)
    >>> excluded = paper_exclusions(model)  # doctest: +SKIP
    >>> [v.path for v in excluded]  # doctest: +SKIP
    ['Conv1/kernel', 'predictions/kernel', 'predictions/bias']
    >>> opt.exclude_from_noise(excluded)  # doctest: +SKIP

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """
    layers = ModelGraph(model).noise_free_layers()
    return [v for layer in layers for v in layer.trainable_variables]


def variables_of(var_list):
    """The variables in `var_list`; a layer or model stands for its weights."""
    if var_list is None:
        return []
    if not isinstance(var_list, (list, tuple, set)):
        var_list = [var_list]
    variables = []
    for item in var_list:
        if hasattr(item, "weights") and not hasattr(item, "assign"):
            variables.extend(item.weights)  # a layer or a model
        elif hasattr(item, "shape") and (hasattr(item, "path") or hasattr(item, "name")):
            variables.append(item)
        else:
            raise ValueError(
                "`var_list` holds variables, layers or models; use `var_names` "
                f"for names and patterns. Received: {item!r}"
            )
    return variables
