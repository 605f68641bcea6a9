"""The `keras-heavytail` console command's launcher.

It lives outside the `keras_heavytail` package so that it runs before the
package's `__init__`: it quiets TensorFlow's C++ logs and asks the package
to load lazily (`KERAS_HEAVYTAIL_LAZY=1`), so `keras-heavytail --help`
imports no Keras or TensorFlow. The command itself is
`keras_heavytail.experiments.cli`.
"""

import os


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["KERAS_HEAVYTAIL_LAZY"] = "1"
    from keras_heavytail.experiments import cli

    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
