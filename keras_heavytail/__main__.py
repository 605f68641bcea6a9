"""`python -m keras_heavytail` runs the `keras-heavytail` command."""

import sys

from keras_heavytail.experiments.cli import main

sys.exit(main())
