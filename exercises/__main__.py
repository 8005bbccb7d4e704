"""`python -m exercises check NAME [FILE]`, from the repository root."""

import sys

from exercises.check import main

sys.exit(main(sys.argv[1:]))
